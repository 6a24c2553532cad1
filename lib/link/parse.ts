// Parsers for `ip -j` output. They validate just the fields flatnet reads and keep the rest out of sight.

export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope?: string;
  /** flags such as "tentative", "dadfailed", "permanent" as ip prints them (booleans) */
  tentative?: boolean;
}

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  address?: string;
  /** index of the peer (veth) or lower device, as `link_index` */
  linkIndex?: number;
  /** netns id of the peer when it lives in another namespace */
  linkNetnsid?: number;
  master?: string;
  promiscuity?: number;
  /** `-d`: linkinfo.info_kind (bridge, veth, vxlan...) */
  kind?: string;
  /** `-d`: linkinfo.info_slave_kind (bridge for a bridge port) */
  slaveKind?: string;
  /** `-d`: linkinfo.info_data */
  infoData?: Record<string, unknown>;
  /** `-d`: linkinfo.info_slave_data */
  slaveData?: Record<string, unknown>;
  addrs: AddrInfo[];
}

export interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  metric?: number;
  table?: string;
  type?: string;
  prefsrc?: string;
  mtu?: number;
  advmss?: number;
  family?: 'inet' | 'inet6';
}

type Json = Record<string, unknown>;

function asArray(text: string, what: string): Json[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(trimmed);
  } catch (e) {
    throw new Error(`cannot parse ip -j ${what} output: ${String(e)}`);
  }
  if (!Array.isArray(v)) throw new Error(`ip -j ${what}: expected an array`);
  return v.filter((x): x is Json => typeof x === 'object' && x !== null);
}

const str = (o: Json, k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
const num = (o: Json, k: string): number | undefined => (typeof o[k] === 'number' ? (o[k] as number) : undefined);
const obj = (o: Json, k: string): Json | undefined =>
  typeof o[k] === 'object' && o[k] !== null && !Array.isArray(o[k]) ? (o[k] as Json) : undefined;

/** Parse `ip -j [-d] link show` or `ip -j [-d] addr show`. Objects without ifname (e.g. empty addr entries) are skipped. */
export function parseLinks(text: string): LinkInfo[] {
  const out: LinkInfo[] = [];
  for (const o of asArray(text, 'link')) {
    const ifname = str(o, 'ifname');
    const ifindex = num(o, 'ifindex');
    if (ifname === undefined || ifindex === undefined) continue;
    const li = obj(o, 'linkinfo');
    const addrs: AddrInfo[] = [];
    const ai = Array.isArray(o['addr_info']) ? (o['addr_info'] as unknown[]) : [];
    for (const a of ai) {
      if (typeof a !== 'object' || a === null) continue;
      const aj = a as Json;
      const family = str(aj, 'family');
      const local = str(aj, 'local');
      const prefixlen = num(aj, 'prefixlen');
      if ((family !== 'inet' && family !== 'inet6') || !local || prefixlen === undefined) continue;
      addrs.push({ family, local, prefixlen, scope: str(aj, 'scope'), tentative: aj['tentative'] === true });
    }
    out.push({
      ifindex,
      ifname,
      flags: Array.isArray(o['flags']) ? (o['flags'] as unknown[]).map(String) : [],
      mtu: num(o, 'mtu') ?? 0,
      operstate: str(o, 'operstate') ?? 'UNKNOWN',
      address: str(o, 'address'),
      linkIndex: num(o, 'link_index'),
      linkNetnsid: num(o, 'link_netnsid'),
      master: str(o, 'master'),
      promiscuity: num(o, 'promiscuity'),
      kind: li ? str(li, 'info_kind') : undefined,
      slaveKind: li ? str(li, 'info_slave_kind') : undefined,
      infoData: li ? obj(li, 'info_data') : undefined,
      slaveData: li ? obj(li, 'info_slave_data') : undefined,
      addrs,
    });
  }
  return out;
}

/** Parse `ip -j route show` (any family, any table). `default` is normalised to 0.0.0.0/0 or ::/0. */
export function parseRoutes(text: string, family?: 'inet' | 'inet6'): RouteInfo[] {
  const out: RouteInfo[] = [];
  for (const o of asArray(text, 'route')) {
    let dst = str(o, 'dst');
    if (dst === undefined) continue;
    const fam = family ?? (dst.includes(':') || (str(o, 'gateway') ?? '').includes(':') ? 'inet6' : 'inet');
    if (dst === 'default') dst = fam === 'inet6' ? '::/0' : '0.0.0.0/0';
    else if (!dst.includes('/')) dst = `${dst}/${fam === 'inet6' ? 128 : 32}`;
    const metrics = Array.isArray(o['metrics']) ? (o['metrics'] as Json[]) : [];
    const metric0 = metrics.find((m) => typeof m === 'object' && m !== null) ?? {};
    out.push({
      dst,
      gateway: str(o, 'gateway'),
      dev: str(o, 'dev'),
      protocol: str(o, 'protocol'),
      scope: str(o, 'scope'),
      metric: num(o, 'metric'),
      table: str(o, 'table'),
      type: str(o, 'type'),
      prefsrc: str(o, 'prefsrc'),
      mtu: num(metric0, 'mtu'),
      advmss: num(metric0, 'advmss'),
      family: fam,
    });
  }
  return out;
}

/** True when `stderr` from ip says a device is missing. */
export function isNoSuchDevice(stderr: string): boolean {
  return /does not exist|Cannot find device|No such device/i.test(stderr);
}
