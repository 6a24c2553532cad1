// The vxlan CNI meta-plugin, pure part: its config and the delegate (bridge + host-local) config built from the
// node's subnet file, flannel-style.
import { CniError, ErrorCode, type NetConf } from '../../lib/cni/types.ts';
import { DEFAULT_SUBNET_FILE, type SubnetEnv } from '../../lib/overlay/subnet-file.ts';

export const DEFAULT_DATA_DIR = '/var/lib/cni/flatnet';

export interface VxlanPluginConfig {
  subnetFile: string;
  /** where the delegated config of each attachment is kept (<dataDir>/<containerID>-<ifname>.json) */
  dataDir: string;
  /** keys merged over the defaults of the delegate (type, bridge, mtu, hairpinMode, isGateway, ...) */
  delegate: Record<string, unknown>;
  /** keys merged over the delegate's IPAM config (e.g. dataDir for host-local) */
  ipam: Record<string, unknown>;
}

function invalid(msg: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, `vxlan: ${msg}`);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parsePluginConfig(conf: NetConf): VxlanPluginConfig {
  const str = (key: string, def: string): string => {
    const v = conf[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' || v === '' || !v.startsWith('/')) throw invalid(`"${key}" must be an absolute path`);
    return v;
  };
  const delegate = conf.delegate ?? {};
  if (!isObj(delegate)) throw invalid('"delegate" must be an object');
  if (delegate.type !== undefined && (typeof delegate.type !== 'string' || delegate.type === '' || delegate.type === 'vxlan')) {
    throw invalid('"delegate.type" must name another plugin');
  }
  if (delegate.ipam !== undefined) throw invalid('"delegate.ipam" is not allowed: IPAM comes from the subnet file (use "ipam" for extra keys)');
  const ipam = conf.ipam ?? {};
  if (!isObj(ipam)) throw invalid('"ipam" must be an object');
  if (ipam.type !== undefined && typeof ipam.type !== 'string') throw invalid('"ipam.type" must be a string');
  return { subnetFile: str('subnetFile', DEFAULT_SUBNET_FILE), dataDir: str('dataDir', DEFAULT_DATA_DIR), delegate, ipam };
}

/**
 * The delegate's config: bridge (cni0) with the overlay MTU, hairpin on, this node as gateway (and default gateway),
 * source MAC and IP checks on, no masquerade when the overlay controller does it; host-local over the node's podCIDR(s) with a route to each
 * cluster CIDR. Runtime-provided keys (runtimeConfig, args, dns) pass through.
 */
export function delegateConf(conf: NetConf, cfg: VxlanPluginConfig, env: SubnetEnv): NetConf {
  if (!env.subnets.length) throw new CniError(ErrorCode.TryAgainLater, 'vxlan: the subnet file lists no podCIDR yet');
  const ipam: Record<string, unknown> = {
    type: 'host-local',
    ranges: env.subnets.map((s) => [{ subnet: s }]),
    routes: env.networks.map((n) => ({ dst: n })),
    ...cfg.ipam,
  };
  const out: NetConf = {
    cniVersion: conf.cniVersion,
    name: conf.name,
    type: 'bridge',
    bridge: 'cni0',
    mtu: env.mtu,
    hairpinMode: true,
    isGateway: true,
    isDefaultGateway: true,
    ipMasq: !env.ipMasq,
    // a pod may send only with its own MAC and addresses (opt out: "delegate": {"macspoofchk": false, "ipspoofchk": false})
    macspoofchk: true,
    ipspoofchk: true,
    ...cfg.delegate,
    ipam: ipam as NetConf['ipam'],
  };
  for (const k of ['runtimeConfig', 'args', 'dns', 'capabilities'] as const) {
    if (conf[k] !== undefined) out[k] = conf[k] as never;
  }
  return out;
}

/** File name for the saved delegate config of one attachment. */
export function savedConfName(containerId: string, ifname: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(containerId)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `vxlan: CNI_CONTAINERID ${JSON.stringify(containerId)} is not a valid ID`, 'CNI_CONTAINERID');
  }
  if (!/^[^/\s]{1,15}$/.test(ifname) || ifname === '.' || ifname === '..') {
    throw new CniError(ErrorCode.InvalidEnvironment, `vxlan: CNI_IFNAME ${JSON.stringify(ifname)} is not valid`, 'CNI_IFNAME');
  }
  return `${containerId}-${ifname}.json`;
}

/** What is kept on disk per attachment, so DEL/CHECK/GC work after restarts or subnet file changes. */
export interface SavedAttachment {
  containerID: string;
  ifname: string;
  conf: NetConf;
}

export function parseSaved(text: string): SavedAttachment | undefined {
  try {
    const v = JSON.parse(text) as Partial<SavedAttachment>;
    if (typeof v.containerID === 'string' && typeof v.ifname === 'string' && isObj(v.conf) && typeof v.conf.type === 'string') {
      return v as SavedAttachment;
    }
  } catch {
    /* corrupt */
  }
  return undefined;
}
