// The overlay controller's configuration: parsed and validated from a plain object (the daemon's config section).
import { canonicalNetwork } from '../../lib/net/ip.ts';
import { DEFAULT_SUBNET_FILE } from '../../lib/overlay/subnet-file.ts';

export interface OverlayConfig {
  vni: number;
  /** VXLAN UDP port: 8472 (Linux/flannel default) or 4789 (IANA) or any other */
  port: number;
  /** default flatnet.<vni> */
  deviceName: string;
  /** plain routes via the peer's node IP when it sits on the same underlay subnet */
  directRouting: boolean;
  /** false = `ethtool -K <dev> tx off` after creating the device (checksum-offload bug workaround) */
  txChecksumOffload: boolean;
  /** overrides the computed MTU (underlay MTU - 50, - 70 for an IPv6 underlay) */
  mtu?: number;
  subnetFile: string;
  /** cluster CIDR(s); when empty, the podCIDRs of all known nodes stand in */
  clusterCIDRs: string[];
  /** egress masquerade of pod traffic leaving the cluster */
  masquerade: boolean;
  /** destinations never masqueraded besides the cluster CIDRs and node IPs */
  nonMasqueradeCIDRs: string[];
  /** nft table name (family inet) that holds the masquerade rules and the VXLAN source filter */
  masqueradeTable: string;
  /** accept VXLAN packets (UDP `port`) only from known node IPs; off = anyone on the underlay may send them */
  peerSourceFilter: boolean;
  /** full resync from kernel state every this many ms */
  resyncIntervalMs: number;
  /** the route protocol number marking routes the controller owns */
  routeProtocol: number;
  /** use the IPv6 InternalIP as the VTEP address even when an IPv4 one exists */
  preferIPv6Underlay: boolean;
  /** remove the device, routes, masquerade table and subnet file when stopped (default: keep, so restarts are seamless) */
  cleanupOnStop: boolean;
}

export const ANNOTATIONS = {
  backendType: 'flatnet.io/backend-type',
  vtepMac: 'flatnet.io/vtep-mac',
  publicIp: 'flatnet.io/public-ip',
  vni: 'flatnet.io/vni',
} as const;

function num(v: unknown, key: string, def: number, min: number, max: number): number {
  if (v === undefined || v === null) return def;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`overlay config: ${key} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return n;
}

function bool(v: unknown, key: string, def: boolean): boolean {
  if (v === undefined || v === null) return def;
  if (typeof v !== 'boolean') throw new Error(`overlay config: ${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, key: string, def: string): string {
  if (v === undefined || v === null) return def;
  if (typeof v !== 'string' || v === '') throw new Error(`overlay config: ${key} must be a non-empty string`);
  return v;
}

function cidrs(v: unknown, key: string): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) {
    throw new Error(`overlay config: ${key} must be a list of CIDRs`);
  }
  return list.map((c: string) => {
    try {
      return canonicalNetwork(c);
    } catch (e) {
      throw new Error(`overlay config: ${key}: ${(e as Error).message}`, { cause: e });
    }
  });
}

const KNOWN = new Set([
  'vni',
  'port',
  'deviceName',
  'directRouting',
  'txChecksumOffload',
  'mtu',
  'subnetFile',
  'clusterCIDRs',
  'clusterCIDR',
  'masquerade',
  'nonMasqueradeCIDRs',
  'masqueradeTable',
  'peerSourceFilter',
  'resyncIntervalMs',
  'routeProtocol',
  'preferIPv6Underlay',
  'cleanupOnStop',
  'backend',
  'type',
  // the deploy manifests' OverlayConfiguration document
  'apiVersion',
  'kind',
  'serviceCIDR',
  'serviceCIDRs',
]);

/**
 * Parses the overlay section. `nodeName` fills a `{node}` placeholder in subnetFile (one host running several
 * simulated nodes needs one file per node).
 */
export function parseOverlayConfig(raw: Record<string, unknown>, nodeName = ''): OverlayConfig {
  for (const k of Object.keys(raw)) {
    if (!KNOWN.has(k)) throw new Error(`overlay config: unknown key ${JSON.stringify(k)}`);
  }
  for (const k of ['backend', 'type']) {
    if (raw[k] !== undefined && raw[k] !== 'vxlan') {
      throw new Error(`overlay config: ${k} ${JSON.stringify(raw[k])} is not supported (only vxlan)`);
    }
  }
  const vni = num(raw.vni, 'vni', 1, 1, 16777215);
  const deviceName = str(raw.deviceName, 'deviceName', `flatnet.${vni}`);
  if (deviceName.length > 15 || /[\s/]/.test(deviceName)) {
    throw new Error(`overlay config: deviceName ${JSON.stringify(deviceName)} is not a valid interface name`);
  }
  const table = str(raw.masqueradeTable, 'masqueradeTable', 'flatnet_overlay');
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(table)) {
    throw new Error(`overlay config: masqueradeTable ${JSON.stringify(table)} is not a valid nft table name`);
  }
  if (raw.kind !== undefined && raw.kind !== 'OverlayConfiguration') {
    throw new Error(`overlay config: kind ${JSON.stringify(raw.kind)} is not OverlayConfiguration`);
  }
  // mtu 0 (or absent) = derive from the underlay
  const mtu = raw.mtu === undefined || raw.mtu === null || raw.mtu === 0 ? undefined : num(raw.mtu, 'mtu', 0, 576, 65535);
  const uniq = (l: string[]): string[] => [...new Set(l)];
  return {
    vni,
    port: num(raw.port, 'port', 8472, 1, 65535),
    deviceName,
    directRouting: bool(raw.directRouting, 'directRouting', false),
    txChecksumOffload: bool(raw.txChecksumOffload, 'txChecksumOffload', true),
    ...(mtu !== undefined ? { mtu } : {}),
    subnetFile: str(raw.subnetFile, 'subnetFile', DEFAULT_SUBNET_FILE).replaceAll('{node}', nodeName),
    clusterCIDRs: uniq([...cidrs(raw.clusterCIDRs, 'clusterCIDRs'), ...cidrs(raw.clusterCIDR, 'clusterCIDR')]),
    masquerade: bool(raw.masquerade, 'masquerade', true),
    // service CIDRs are exempt too (a ClusterIP is normally DNATed before POSTROUTING; this covers the rest)
    nonMasqueradeCIDRs: uniq([
      ...cidrs(raw.nonMasqueradeCIDRs, 'nonMasqueradeCIDRs'),
      ...cidrs(raw.serviceCIDRs, 'serviceCIDRs'),
      ...cidrs(raw.serviceCIDR, 'serviceCIDR'),
    ]),
    masqueradeTable: table,
    peerSourceFilter: bool(raw.peerSourceFilter, 'peerSourceFilter', true),
    resyncIntervalMs: num(raw.resyncIntervalMs, 'resyncIntervalMs', 3000, 100, 3_600_000),
    routeProtocol: num(raw.routeProtocol, 'routeProtocol', 77, 5, 254),
    preferIPv6Underlay: bool(raw.preferIPv6Underlay, 'preferIPv6Underlay', false),
    cleanupOnStop: bool(raw.cleanupOnStop, 'cleanupOnStop', false),
  };
}
