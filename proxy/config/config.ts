// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file + kube-proxy style flags. Flags override the file.
// Pure: parseConfigText / parseFlags / mergeConfig; only loadConfig reads a file.

import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { ProxyConfigView } from '../services/model/types.ts';

export type ProxyMode = 'iptables' | 'nftables' | 'ipvs';

export interface SyncSettings {
  minSyncPeriodMs: number;
  syncPeriodMs: number;
}

export interface DaemonConfig {
  mode: ProxyMode;
  clusterCIDRs: string[];
  bindAddress: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  hostnameOverride: string;
  kubeconfig: string;
  master: string;
  masqueradeAll: boolean;
  masqueradeBit: number;
  localhostNodePorts: boolean;
  /** sync periods of the selected mode's section */
  sync: SyncSettings;
  detectLocalMode: ProxyConfigView['detectLocalMode'];
  bridgeInterface: string;
  interfaceNamePrefix: string;
  nodePortAddresses: string[];
  /** conntrack section (kube-proxy sets sysctls from it; we keep it for reference) */
  conntrack: Record<string, unknown>;
  /** the nftables / ipvs sections, passed to those backends */
  nftables: Record<string, unknown>;
  ipvs: Record<string, unknown>;
  /** 'vxlan' | 'none' | undefined (= vxlan when the controller is present) */
  overlay: string | undefined;
  /** overlay section of the file (flatnet extension) */
  overlayConfig: Record<string, unknown>;
  /** the NetworkPolicy controller (flatnet extension: `networkPolicy.enabled`, `--network-policy`) */
  networkPolicy: boolean;
  /** networkPolicy section of the file (flatnet extension): enabled, table */
  networkPolicyConfig: Record<string, unknown>;
  /** service.kubernetes.io/service-proxy-name to serve ('' = only unlabelled services) */
  serviceProxyName: string;
  logLevel: string;
  cleanup: boolean;
  /** set the node's kernel settings (conntrack sysctls; br_netfilter for NetworkPolicy), then exit: the privileged init step */
  initNode: boolean;
  configFile: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const DEFAULTS: DaemonConfig = {
  mode: 'iptables',
  clusterCIDRs: [],
  bindAddress: '0.0.0.0',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  hostnameOverride: '',
  kubeconfig: '',
  master: '',
  masqueradeAll: false,
  masqueradeBit: 14,
  localhostNodePorts: false,
  sync: { minSyncPeriodMs: 1000, syncPeriodMs: 30000 },
  detectLocalMode: 'ClusterCIDR',
  bridgeInterface: '',
  interfaceNamePrefix: '',
  nodePortAddresses: [],
  conntrack: {},
  nftables: {},
  ipvs: {},
  overlay: undefined,
  overlayConfig: {},
  networkPolicy: true,
  networkPolicyConfig: {},
  serviceProxyName: '',
  logLevel: 'info',
  cleanup: false,
  initNode: false,
  configFile: '',
};

/** Go duration ("1s", "500ms", "1m30s", "2h") -> milliseconds. */
export function parseDuration(v: unknown, what: string): number {
  if (typeof v === 'number') return v * 1000;
  if (typeof v !== 'string') throw new ConfigError(`${what}: expected a duration, got ${JSON.stringify(v)}`);
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let consumed = 0;
  for (const m of v.matchAll(re)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  if (v === '0') return 0;
  if (consumed !== v.length || consumed === 0) throw new ConfigError(`${what}: invalid duration ${JSON.stringify(v)}`);
  return total;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(o: Obj, k: string, what: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${what}.${k}: expected a string`);
  return v;
}
function bool(o: Obj, k: string, what: string): boolean | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ConfigError(`${what}.${k}: expected a boolean`);
  return v;
}
function int(o: Obj, k: string, what: string): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(`${what}.${k}: expected an integer`);
  return v;
}

function checkMode(m: string): ProxyMode {
  if (m === '' ) return 'iptables';
  if (m === 'iptables' || m === 'nftables' || m === 'ipvs') return m;
  throw new ConfigError(`mode: unsupported proxy mode ${JSON.stringify(m)} (iptables, nftables, ipvs)`);
}

function checkDetectLocal(m: string): DaemonConfig['detectLocalMode'] {
  if (m === 'ClusterCIDR' || m === 'NodeCIDR' || m === 'BridgeInterface' || m === 'InterfaceNamePrefix') return m;
  throw new ConfigError(`detectLocalMode: unsupported ${JSON.stringify(m)}`);
}

const splitList = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** Parse a KubeProxyConfiguration document into a partial config. */
export function parseConfigText(text: string): Partial<DaemonConfig> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file is not valid YAML: ${(e as Error).message}`);
  }
  if (!isObj(doc)) throw new ConfigError('config file: expected a KubeProxyConfiguration object');
  if (doc.kind !== undefined && doc.kind !== 'KubeProxyConfiguration') throw new ConfigError(`config file: kind ${String(doc.kind)} is not KubeProxyConfiguration`);
  if (doc.apiVersion !== undefined && doc.apiVersion !== 'kubeproxy.config.k8s.io/v1alpha1') {
    throw new ConfigError(`config file: apiVersion ${String(doc.apiVersion)} is not kubeproxy.config.k8s.io/v1alpha1`);
  }
  const out: Partial<DaemonConfig> = {};
  const w = 'KubeProxyConfiguration';
  const mode = str(doc, 'mode', w);
  if (mode !== undefined) out.mode = checkMode(mode);
  const cc = str(doc, 'clusterCIDR', w);
  if (cc !== undefined) out.clusterCIDRs = splitList(cc);
  for (const k of ['bindAddress', 'healthzBindAddress', 'metricsBindAddress', 'hostnameOverride'] as const) {
    const v = str(doc, k, w);
    if (v !== undefined) out[k] = v;
  }
  if (isObj(doc.clientConnection)) {
    const kc = str(doc.clientConnection, 'kubeconfig', `${w}.clientConnection`);
    if (kc) out.kubeconfig = kc;
  }
  const section = (k: string): Obj => {
    const v = doc[k];
    if (v === undefined || v === null) return {};
    if (!isObj(v)) throw new ConfigError(`${w}.${k}: expected an object`);
    return v;
  };
  const ipt = section('iptables');
  const nft = section('nftables');
  const ipvs = section('ipvs');
  const modeSection = (out.mode ?? 'iptables') === 'nftables' ? nft : out.mode === 'ipvs' ? ipvs : ipt;
  const modeName = out.mode ?? 'iptables';
  const ma = bool(modeSection, 'masqueradeAll', `${w}.${modeName}`) ?? bool(ipt, 'masqueradeAll', `${w}.iptables`);
  if (ma !== undefined) out.masqueradeAll = ma;
  const mb = int(modeSection, 'masqueradeBit', `${w}.${modeName}`) ?? int(ipt, 'masqueradeBit', `${w}.iptables`);
  if (mb !== undefined) {
    if (mb < 0 || mb > 31) throw new ConfigError(`${w}.${modeName}.masqueradeBit: must be within 0..31`);
    out.masqueradeBit = mb;
  }
  const lnp = bool(ipt, 'localhostNodePorts', `${w}.iptables`);
  if (lnp !== undefined) out.localhostNodePorts = lnp;
  const sync: SyncSettings = { ...DEFAULTS.sync };
  if (modeSection.minSyncPeriod !== undefined) sync.minSyncPeriodMs = parseDuration(modeSection.minSyncPeriod, `${w}.${modeName}.minSyncPeriod`);
  if (modeSection.syncPeriod !== undefined) sync.syncPeriodMs = parseDuration(modeSection.syncPeriod, `${w}.${modeName}.syncPeriod`);
  if (sync.syncPeriodMs <= 0) throw new ConfigError(`${w}.${modeName}.syncPeriod: must be greater than 0`);
  if (sync.minSyncPeriodMs > sync.syncPeriodMs) throw new ConfigError(`${w}.${modeName}.minSyncPeriod must not exceed syncPeriod`);
  out.sync = sync;
  out.nftables = nft;
  out.ipvs = ipvs;
  const dl = str(doc, 'detectLocalMode', w);
  if (dl) out.detectLocalMode = checkDetectLocal(dl);
  if (isObj(doc.detectLocal)) {
    const bi = str(doc.detectLocal, 'bridgeInterface', `${w}.detectLocal`);
    if (bi !== undefined) out.bridgeInterface = bi;
    const ip = str(doc.detectLocal, 'interfaceNamePrefix', `${w}.detectLocal`);
    if (ip !== undefined) out.interfaceNamePrefix = ip;
  }
  if (doc.nodePortAddresses !== undefined && doc.nodePortAddresses !== null) {
    if (!Array.isArray(doc.nodePortAddresses) || doc.nodePortAddresses.some((x) => typeof x !== 'string')) {
      throw new ConfigError(`${w}.nodePortAddresses: expected a list of strings`);
    }
    out.nodePortAddresses = doc.nodePortAddresses as string[];
  }
  out.conntrack = section('conntrack');
  const overlay = section('overlay');
  out.overlayConfig = overlay;
  if (typeof overlay.type === 'string') out.overlay = overlay.type;
  const np = section('networkPolicy');
  out.networkPolicyConfig = np;
  if (np.enabled !== undefined) {
    if (typeof np.enabled !== 'boolean') throw new ConfigError(`${w}.networkPolicy.enabled: expected true or false`);
    out.networkPolicy = np.enabled;
  }
  const lvl = doc.logging;
  if (isObj(lvl) && typeof lvl.verbosity === 'number') out.logLevel = lvl.verbosity >= 4 ? 'debug' : 'info';
  return out;
}

export interface ParsedFlags {
  config: Partial<DaemonConfig>;
  help: boolean;
}

const FLAG_KEYS: Record<string, (c: Partial<DaemonConfig>, v: string) => void> = {
  config: (c, v) => (c.configFile = v),
  kubeconfig: (c, v) => (c.kubeconfig = v),
  master: (c, v) => (c.master = v),
  'hostname-override': (c, v) => (c.hostnameOverride = v),
  'cluster-cidr': (c, v) => (c.clusterCIDRs = splitList(v)),
  'proxy-mode': (c, v) => (c.mode = checkMode(v)),
  'healthz-bind-address': (c, v) => (c.healthzBindAddress = v),
  'metrics-bind-address': (c, v) => (c.metricsBindAddress = v),
  'bind-address': (c, v) => (c.bindAddress = v),
  'masquerade-all': (c, v) => (c.masqueradeAll = v !== 'false'),
  'iptables-masquerade-bit': (c, v) => (c.masqueradeBit = Number(v)),
  'iptables-localhost-nodeports': (c, v) => (c.localhostNodePorts = v !== 'false'),
  'nodeport-addresses': (c, v) => (c.nodePortAddresses = splitList(v)),
  'detect-local-mode': (c, v) => (c.detectLocalMode = checkDetectLocal(v)),
  'pod-bridge-interface': (c, v) => (c.bridgeInterface = v),
  'pod-interface-name-prefix': (c, v) => (c.interfaceNamePrefix = v),
  'service-proxy-name': (c, v) => (c.serviceProxyName = v),
  overlay: (c, v) => {
    if (v !== 'vxlan' && v !== 'none') throw new ConfigError(`--overlay: expected vxlan or none, got ${v}`);
    c.overlay = v;
  },
  'network-policy': (c, v) => {
    if (v !== 'true' && v !== 'false') throw new ConfigError(`--network-policy: expected true or false, got ${v}`);
    c.networkPolicy = v === 'true';
  },
  v: (c, v) => (c.logLevel = Number(v) >= 4 ? 'debug' : 'info'),
  cleanup: (c, v) => (c.cleanup = v !== 'false'),
  'init-node': (c, v) => (c.initNode = v !== 'false'),
};
const BOOL_FLAGS = new Set(['cleanup', 'init-node', 'masquerade-all', 'iptables-localhost-nodeports', 'network-policy', 'help']);

/** kube-proxy style flags: --name=value, --name value, boolean --name. Unknown flags are an error. */
export function parseFlags(argv: readonly string[]): ParsedFlags {
  const c: Partial<DaemonConfig> = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) throw new ConfigError(`unexpected argument ${a}`);
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'help' || name === 'h') {
      help = true;
      continue;
    }
    const set = FLAG_KEYS[name];
    if (!set) throw new ConfigError(`unknown flag --${name}`);
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else if (BOOL_FLAGS.has(name)) value = 'true';
    else {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`flag --${name} needs a value`);
      value = next;
    }
    set(c, value);
  }
  return { config: c, help };
}

/** defaults <- file <- flags */
export function mergeConfig(file: Partial<DaemonConfig>, flags: Partial<DaemonConfig>): DaemonConfig {
  const c: DaemonConfig = { ...DEFAULTS, ...file, ...flags };
  if (!Number.isInteger(c.masqueradeBit) || c.masqueradeBit < 0 || c.masqueradeBit > 31) throw new ConfigError('masqueradeBit must be within 0..31');
  if (c.detectLocalMode === 'BridgeInterface' && !c.bridgeInterface) throw new ConfigError('detectLocalMode BridgeInterface needs detectLocal.bridgeInterface');
  if (c.detectLocalMode === 'InterfaceNamePrefix' && !c.interfaceNamePrefix) throw new ConfigError('detectLocalMode InterfaceNamePrefix needs detectLocal.interfaceNamePrefix');
  return c;
}

/** Parse flags, read --config if given, merge. */
export function loadConfig(argv: readonly string[], read: (p: string) => string = (p) => readFileSync(p, 'utf8')): { config: DaemonConfig; help: boolean } {
  const flags = parseFlags(argv);
  let file: Partial<DaemonConfig> = {};
  if (flags.config.configFile) {
    let text: string;
    try {
      text = read(flags.config.configFile);
    } catch (e) {
      throw new ConfigError(`cannot read config file ${flags.config.configFile}: ${(e as Error).message}`);
    }
    file = parseConfigText(text);
  }
  return { config: mergeConfig(file, flags.config), help: flags.help };
}

/** The slice of the config the backends see. */
export function configView(c: DaemonConfig): ProxyConfigView {
  const v: ProxyConfigView = {
    clusterCIDRs: c.clusterCIDRs,
    detectLocalMode: c.detectLocalMode,
    masqueradeAll: c.masqueradeAll,
    masqueradeBit: c.masqueradeBit,
    nodePortAddresses: c.nodePortAddresses,
  };
  if (c.detectLocalMode === 'BridgeInterface') v.detectLocalInterface = c.bridgeInterface;
  if (c.detectLocalMode === 'InterfaceNamePrefix') v.detectLocalInterface = c.interfaceNamePrefix;
  return v;
}

/** "host:port" -> [host, port]; "" or "0" disables. */
export function splitHostPort(s: string): [string, number] | undefined {
  if (!s || s === '0') return undefined;
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(s);
  if (!m) throw new ConfigError(`invalid bind address ${JSON.stringify(s)} (host:port)`);
  return [m[1] || '0.0.0.0', Number(m[2])];
}
