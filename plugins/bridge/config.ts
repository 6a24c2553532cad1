// Bridge network configuration: NetConf (+ CNI_ARGS) -> a validated, fully-defaulted BridgeConfig. Pure.
import { CniError, ErrorCode, type Dns, type IpamConf, type NetConf } from '../../lib/cni/types.ts';
import { isValidIfname } from '../../lib/link/batch.ts';

export type MasqBackend = 'iptables' | 'nftables';

export interface BridgeConfig {
  name: string;
  cniVersion: string;
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  ipMasq: boolean;
  /** undefined: decided when masquerade is set up (iptables unless only nftables is usable, as the reference) */
  ipMasqBackend?: MasqBackend;
  /** 0 = kernel default */
  mtu: number;
  hairpinMode: boolean;
  promiscMode: boolean;
  vlan: number;
  /** sorted, unique trunk VLAN ids */
  vlanTrunk: number[];
  /** vlan filtering is on when vlan or vlanTrunk is configured (even an empty trunk list) */
  vlanFiltering: boolean;
  preserveDefaultVlan: boolean;
  enableDad: boolean;
  macSpoofCheck: boolean;
  /** flatnet's addition: drop IPv4/ARP/IPv6 from the container whose source is not one of its own addresses */
  ipSpoofCheck: boolean;
  disableContainerInterface: boolean;
  portIsolation: boolean;
  /** container MAC requested through CNI_ARGS MAC=, args.cni.mac or runtimeConfig.mac (last wins) */
  mac?: string;
  ipam?: IpamConf;
  dns?: Dns;
}

const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

export const DEFAULT_BRIDGE = 'cni0';

function invalid(msg: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, msg);
}

function bool(conf: NetConf, key: string): boolean {
  const v = conf[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw invalid(`bridge: "${key}" must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function int(conf: NetConf, key: string, min: number, max: number): number {
  const v = conf[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(`bridge: "${key}" must be an integer`);
  if (v < min || v > max) {
    if (key === 'vlan') throw invalid(`invalid VLAN ID ${v} (must be between 0 and 4094)`);
    throw invalid(`bridge: "${key}" must be between ${min} and ${max}, got ${v}`);
  }
  return v;
}

function normMac(v: unknown, where: string): string {
  if (typeof v !== 'string' || !MAC_RE.test(v.toLowerCase())) throw invalid(`bridge: invalid MAC address ${JSON.stringify(v)} in ${where}`);
  const mac = v.toLowerCase();
  if (parseInt(mac.slice(0, 2), 16) & 1) throw invalid(`bridge: MAC ${mac} in ${where} is a multicast address`);
  return mac;
}

/** vlanTrunk entries -> sorted unique ids; same rules as the reference (ranges need both ends, ids 1..4094). */
export function collectVlanTrunk(raw: unknown): number[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid('bridge: "vlanTrunk" must be a list');
  const ids = new Set<number>();
  const isId = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x);
  for (const item of raw as unknown[]) {
    if (typeof item !== 'object' || item === null) throw invalid('bridge: "vlanTrunk" entries must be objects');
    const { minID, maxID, id } = item as Record<string, unknown>;
    if (minID !== undefined && maxID !== undefined) {
      if (!isId(minID) || minID <= 0 || minID > 4094) throw invalid('incorrect trunk minID parameter');
      if (!isId(maxID) || maxID <= 0 || maxID > 4094) throw invalid('incorrect trunk maxID parameter');
      if (maxID < minID) throw invalid('minID is greater than maxID in trunk parameter');
      for (let v = minID; v <= maxID; v++) ids.add(v);
    } else if (minID === undefined && maxID !== undefined) {
      throw invalid('minID and maxID should be configured simultaneously, minID is missing');
    } else if (minID !== undefined && maxID === undefined) {
      throw invalid('minID and maxID should be configured simultaneously, maxID is missing');
    }
    if (id !== undefined) {
      if (!isId(id) || id <= 0 || id > 4094) throw invalid('incorrect trunk id parameter');
      ids.add(id);
    }
  }
  return [...ids].sort((a, b) => a - b);
}

/** Parse and validate. `cniArgs` is CNI_ARGS as key/value pairs. Throws CniError(7) naming the bad field. */
export function parseBridgeConfig(conf: NetConf, cniArgs: Record<string, string> = {}): BridgeConfig {
  const bridge = conf['bridge'] === undefined || conf['bridge'] === '' ? DEFAULT_BRIDGE : conf['bridge'];
  if (typeof bridge !== 'string' || !isValidIfname(bridge)) throw invalid(`bridge: invalid bridge name ${JSON.stringify(bridge)}`);
  const backendRaw = conf['ipMasqBackend'];
  if (backendRaw !== undefined && backendRaw !== null && backendRaw !== 'iptables' && backendRaw !== 'nftables') {
    throw invalid(`unknown ipmasq backend ${JSON.stringify(backendRaw)}`);
  }
  const vlan = int(conf, 'vlan', 0, 4094);
  const vlanTrunk = collectVlanTrunk(conf['vlanTrunk']);
  const isDefaultGateway = bool(conf, 'isDefaultGateway');
  const cfg: BridgeConfig = {
    name: conf.name,
    cniVersion: conf.cniVersion,
    bridge,
    isGateway: bool(conf, 'isGateway') || isDefaultGateway,
    isDefaultGateway,
    forceAddress: bool(conf, 'forceAddress'),
    ipMasq: bool(conf, 'ipMasq'),
    ...(backendRaw ? { ipMasqBackend: backendRaw as MasqBackend } : {}),
    mtu: int(conf, 'mtu', 0, 65535),
    hairpinMode: bool(conf, 'hairpinMode'),
    promiscMode: bool(conf, 'promiscMode'),
    vlan,
    vlanTrunk,
    vlanFiltering: vlan !== 0 || (conf['vlanTrunk'] !== undefined && conf['vlanTrunk'] !== null),
    preserveDefaultVlan: bool(conf, 'preserveDefaultVlan'),
    enableDad: bool(conf, 'enabledad'),
    macSpoofCheck: bool(conf, 'macspoofchk'),
    ipSpoofCheck: bool(conf, 'ipspoofchk'),
    disableContainerInterface: bool(conf, 'disableContainerInterface'),
    portIsolation: bool(conf, 'portIsolation'),
    ipam: conf.ipam && typeof conf.ipam.type === 'string' && conf.ipam.type !== '' ? conf.ipam : undefined,
    dns: conf.dns,
  };
  if (cfg.vlan !== 0 && cfg.bridge.length + 1 + String(cfg.vlan).length > 15 && cfg.isGateway) {
    throw invalid(`bridge: VLAN gateway interface name ${cfg.bridge}.${cfg.vlan} is longer than 15 characters`);
  }
  // MAC precedence as in the reference: CNI_ARGS, then args.cni.mac, then runtimeConfig.mac.
  const argMac = cniArgs['MAC'];
  if (argMac) cfg.mac = normMac(argMac, 'CNI_ARGS');
  if (conf.args?.cni?.mac) cfg.mac = normMac(conf.args.cni.mac, 'args.cni.mac');
  const rtMac = conf.runtimeConfig?.['mac'];
  if (rtMac) cfg.mac = normMac(rtMac, 'runtimeConfig.mac');
  return cfg;
}

/** Checks that only make sense for ADD (the reference rejects these combinations at ADD time). */
export function validateForAdd(cfg: BridgeConfig): void {
  if (cfg.ipam && cfg.disableContainerInterface) throw invalid('cannot use IPAM when DisableContainerInterface flag is set');
  if (cfg.hairpinMode && cfg.promiscMode) throw invalid('cannot set hairpin mode and promiscuous mode at the same time');
}
