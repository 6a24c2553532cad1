// host-local configuration: NetConf.ipam + CNI_ARGS + args + runtimeConfig -> validated range sets. Pure.
import { CniError, ErrorCode, type NetConf, type Route } from '../../lib/cni/types.ts';
import {
  addIP,
  bitsOf,
  cidrContains,
  compareIP,
  formatCidr,
  formatIP,
  lastOf,
  networkOf,
  parseCidr,
  parseIP,
  type Cidr,
  type IP,
} from '../../lib/net/ip.ts';

export interface Range {
  /** canonical network */
  readonly subnet: Cidr;
  readonly rangeStart: IP;
  readonly rangeEnd: IP;
  readonly gateway: IP;
}

export type RangeSet = readonly Range[];

export interface HostLocalConfig {
  readonly name: string;
  readonly ranges: readonly RangeSet[];
  readonly routes: readonly Route[];
  readonly dataDir: string;
  readonly resolvConf?: string;
  /** requested addresses from CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips, de-duplicated */
  readonly requestedIPs: readonly IP[];
}

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';

const bad = (msg: string, details = ''): CniError => new CniError(ErrorCode.InvalidConfig, msg, details);

interface RawRange {
  subnet?: unknown;
  rangeStart?: unknown;
  rangeEnd?: unknown;
  gateway?: unknown;
}

function ipField(v: unknown, field: string): IP | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const ip = typeof v === 'string' ? parseIP(v) : undefined;
  if (!ip) throw bad(`invalid ${field} "${String(v)}"`, field);
  return ip;
}

export function rangeContains(r: Range, ip: IP): boolean {
  return cidrContains(r.subnet, ip) && compareIP(ip, r.rangeStart) >= 0 && compareIP(ip, r.rangeEnd) <= 0;
}

export function rangeSetContains(s: RangeSet, ip: IP): boolean {
  return s.some((r) => rangeContains(r, ip));
}

function rangesOverlap(a: Range, b: Range): boolean {
  return (
    a.subnet.ip.family === b.subnet.ip.family &&
    (rangeContains(a, b.rangeStart) || rangeContains(a, b.rangeEnd) || rangeContains(b, a.rangeStart) || rangeContains(b, a.rangeEnd))
  );
}

export function formatRange(r: Range): string {
  return `${formatIP(r.rangeStart)}-${formatIP(r.rangeEnd)}`;
}

export function formatRangeSet(s: RangeSet): string {
  return s.map(formatRange).join(',');
}

/** Validates one range the way the reference canonicalizes it. */
export function parseRange(raw: RawRange): Range {
  if (typeof raw !== 'object' || raw === null) throw bad('range must be an object');
  if (typeof raw.subnet !== 'string' || raw.subnet === '') throw bad('range is missing "subnet"', 'subnet');
  const c = parseCidr(raw.subnet);
  if (!c) throw bad(`invalid subnet "${raw.subnet}"`, 'subnet');
  const bits = bitsOf(c.ip.family);
  if (c.prefix > bits - 2) throw bad(`network ${raw.subnet} too small to allocate from`, 'subnet');
  const net = networkOf(c);
  if (net.value !== c.ip.value) {
    throw bad(`network ${raw.subnet} has host bits set; the network address is ${formatIP(net)}`, 'subnet');
  }
  const subnet: Cidr = { ip: net, prefix: c.prefix };
  const fam = c.ip.family;
  const sameFamily = (ip: IP | undefined, field: string): void => {
    if (ip && ip.family !== fam) throw bad(`${field} ${formatIP(ip)} is not in the address family of ${formatCidr(subnet)}`, field);
  };
  const gw = ipField(raw.gateway, 'gateway');
  sameFamily(gw, 'gateway');
  const start = ipField(raw.rangeStart, 'rangeStart');
  sameFamily(start, 'rangeStart');
  const end = ipField(raw.rangeEnd, 'rangeEnd');
  sameFamily(end, 'rangeEnd');
  if (start && !cidrContains(subnet, start)) throw bad(`rangeStart ${formatIP(start)} not in network ${formatCidr(subnet)}`, 'rangeStart');
  if (end && !cidrContains(subnet, end)) throw bad(`rangeEnd ${formatIP(end)} not in network ${formatCidr(subnet)}`, 'rangeEnd');
  // the last address: IPv4 excludes the broadcast address, IPv6 does not (as the reference)
  const last = lastOf(subnet);
  const defaultEnd = fam === 4 ? addIP(last, -1)! : last;
  const rangeStart = start ?? addIP(net, 1)!;
  const rangeEnd = end ?? defaultEnd;
  if (compareIP(rangeStart, rangeEnd) > 0) {
    throw bad(`rangeStart ${formatIP(rangeStart)} is after rangeEnd ${formatIP(rangeEnd)}`, 'rangeStart');
  }
  return { subnet, rangeStart, rangeEnd, gateway: gw ?? addIP(net, 1)! };
}

function parseRangeSet(raw: unknown, idx: number): RangeSet {
  if (!Array.isArray(raw) || raw.length === 0) throw bad(`ranges[${idx}] must be a non-empty array of ranges`, 'ranges');
  const set = raw.map((r) => parseRange(r as RawRange));
  const fam = set[0]!.subnet.ip.family;
  if (set.some((r) => r.subnet.ip.family !== fam)) throw bad(`ranges[${idx}]: mixed address families`, 'ranges');
  for (let i = 0; i < set.length; i++) {
    for (let j = i + 1; j < set.length; j++) {
      if (rangesOverlap(set[i]!, set[j]!)) {
        throw bad(`ranges[${idx}]: subnets ${formatRange(set[i]!)} and ${formatRange(set[j]!)} overlap`, 'ranges');
      }
    }
  }
  return set;
}

function parseRoutes(raw: unknown): Route[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw bad('routes must be an array', 'routes');
  return raw.map((r: unknown) => {
    if (typeof r !== 'object' || r === null) throw bad('route must be an object', 'routes');
    const o = r as Record<string, unknown>;
    if (typeof o.dst !== 'string' || !parseCidr(o.dst)) throw bad(`invalid route dst "${String(o.dst)}"`, 'routes');
    if (o.gw !== undefined && (typeof o.gw !== 'string' || !parseIP(o.gw))) throw bad(`invalid route gw "${String(o.gw)}"`, 'routes');
    return { ...(o as unknown as Route) };
  });
}

function parseRequested(items: unknown, source: string): IP[] {
  if (items === undefined || items === null) return [];
  if (!Array.isArray(items)) throw bad(`${source} must be an array of IPs`, source);
  return items.map((it: unknown) => {
    const s = typeof it === 'string' ? it : '';
    const ip = parseIP(s.includes('/') ? s.slice(0, s.indexOf('/')) : s);
    if (!ip || (s.includes('/') && !parseCidr(s))) throw bad(`invalid IP "${String(it)}" in ${source}`, source);
    return ip;
  });
}

/**
 * Builds the host-local config. `cniArgs` is the parsed CNI_ARGS (its IP= key may hold several comma-separated
 * addresses). Every problem is a CniError with code 7 (or 4 for CNI_ARGS) before anything touches the disk.
 */
export function loadConfig(conf: NetConf, cniArgs: Readonly<Record<string, string>>): HostLocalConfig {
  const ipam = conf.ipam as Record<string, unknown> | undefined;
  if (typeof ipam !== 'object' || ipam === null) throw bad('IPAM config missing "ipam" key', 'ipam');
  const rawSets: unknown[] = [];
  if (ipam.subnet !== undefined && ipam.subnet !== '') {
    rawSets.push([{ subnet: ipam.subnet, rangeStart: ipam.rangeStart, rangeEnd: ipam.rangeEnd, gateway: ipam.gateway }]);
  }
  if (ipam.ranges !== undefined) {
    if (!Array.isArray(ipam.ranges)) throw bad('ipam.ranges must be an array of range sets', 'ranges');
    rawSets.push(...(ipam.ranges as unknown[]));
  }
  if (rawSets.length === 0) throw bad('no IP ranges specified', 'ranges');
  const ranges = rawSets.map((s, i) => parseRangeSet(s, i));
  for (let i = 0; i < ranges.length; i++) {
    for (let j = i + 1; j < ranges.length; j++) {
      if (ranges[i]!.some((a) => ranges[j]!.some((b) => rangesOverlap(a, b)))) {
        throw bad(`range set ${i} overlaps with ${j}`, 'ranges');
      }
    }
  }
  if (ipam.dataDir !== undefined && (typeof ipam.dataDir !== 'string' || ipam.dataDir === '')) {
    throw bad('dataDir must be a non-empty string', 'dataDir');
  }
  if (ipam.resolvConf !== undefined && typeof ipam.resolvConf !== 'string') throw bad('resolvConf must be a string', 'resolvConf');

  const requested: IP[] = [];
  if (cniArgs.IP) {
    for (const s of cniArgs.IP.split(',')) {
      const ip = parseIP(s.trim());
      if (!ip) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS: invalid IP "${s}"`, 'CNI_ARGS');
      requested.push(ip);
    }
  }
  requested.push(...parseRequested(conf.args?.cni?.ips, 'args.cni.ips'));
  requested.push(...parseRequested(conf.runtimeConfig?.ips, 'runtimeConfig.ips'));
  const seen = new Set<string>();
  const requestedIPs = requested.filter((ip) => {
    const k = formatIP(ip);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });

  return {
    name: conf.name,
    ranges,
    routes: parseRoutes(ipam.routes),
    dataDir: (ipam.dataDir as string | undefined) ?? DEFAULT_DATA_DIR,
    resolvConf: (ipam.resolvConf as string | undefined) || undefined,
    requestedIPs,
  };
}
