// cniVersion handling: which versions we speak and how results move between the 0.3.x/0.4.0 and 1.x shapes.
// Internally every result is in the 1.1.0 shape; it is converted to the config's version only when written.
import { familyOf, parseCidr, parseIP } from '../net/ip.ts';
import { CniError, ErrorCode, SUPPORTED_VERSIONS, type CniResult, type CniVersion, type IpConfig } from './types.ts';

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Compares dotted versions numerically: -1, 0, 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => Number(x) || 0);
  const pb = b.split('.').map((x) => Number(x) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

export const versionAtLeast = (v: string, min: string): boolean => compareVersions(v, min) >= 0;

const INTERFACE_1_1_ONLY = ['mtu', 'socketPath', 'pciID'] as const;
const ROUTE_1_1_ONLY = ['mtu', 'advmss', 'priority', 'table', 'scope'] as const;

function omit<T extends object>(o: T, keys: readonly string[]): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (!keys.includes(k)) out[k] = v;
  return out as T;
}

/**
 * Converts a result (any supported version's shape) into the 1.x shape: drops per-ip "version".
 * Throws CniError(DecodeFailure) when it is not an object.
 */
export function upgradeResult(raw: unknown): CniResult {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CniError(ErrorCode.DecodeFailure, 'result is not a JSON object');
  }
  const r = raw as Record<string, unknown>;
  if ('ip4' in r || 'ip6' in r) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'results older than cniVersion 0.3.0 are not supported');
  }
  const out: CniResult = { ...(r as unknown as CniResult) };
  if (Array.isArray(r.ips)) {
    out.ips = (r.ips as Array<IpConfig & { version?: string }>).map((ip) => omit(ip, ['version']));
  }
  return out;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIndex = (v: unknown, n: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < n;
const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');

/**
 * What is wrong with a (1.x-shaped) result's structure, or undefined: the checks Go's typed decoding of prevResult
 * makes (names are strings, addresses parse), plus interface indexes that point into interfaces. A result passed on
 * by a chained plugin must be one the runtime can read.
 */
export function resultShapeProblem(r: CniResult): string | undefined {
  const ifs: unknown = r.interfaces;
  if (ifs !== undefined && !(Array.isArray(ifs) && ifs.every((i) => isObj(i) && typeof i.name === 'string' && ['mac', 'sandbox'].every((k) => i[k] === undefined || typeof i[k] === 'string')))) {
    return 'interfaces must be a list of {name, mac?, sandbox?} with string values';
  }
  const n = Array.isArray(ifs) ? ifs.length : 0;
  const ips: unknown = r.ips;
  if (ips !== undefined) {
    if (!Array.isArray(ips)) return 'ips must be a list';
    for (const ip of ips) {
      if (!isObj(ip) || typeof ip.address !== 'string' || !parseCidr(ip.address)) return `ips: ${JSON.stringify(isObj(ip) ? ip.address : ip)} is not an address/prefix`;
      if (ip.gateway !== undefined && (typeof ip.gateway !== 'string' || !parseIP(ip.gateway))) return `ips: gateway ${JSON.stringify(ip.gateway)} is not an IP`;
      if (ip.interface !== undefined && ip.interface !== null && !isIndex(ip.interface, n)) return `ips: interface ${JSON.stringify(ip.interface)} is not an index into interfaces`;
    }
  }
  const routes: unknown = r.routes;
  if (routes !== undefined) {
    if (!Array.isArray(routes)) return 'routes must be a list';
    for (const rt of routes) {
      if (!isObj(rt) || typeof rt.dst !== 'string' || !parseCidr(rt.dst)) return `routes: dst ${JSON.stringify(isObj(rt) ? rt.dst : rt)} is not a CIDR`;
      if (rt.gw !== undefined && (typeof rt.gw !== 'string' || !parseIP(rt.gw))) return `routes: gw ${JSON.stringify(rt.gw)} is not an IP`;
    }
  }
  const dns: unknown = r.dns;
  if (dns !== undefined) {
    if (!isObj(dns)) return 'dns must be an object';
    for (const k of ['nameservers', 'search', 'options']) if (dns[k] !== undefined && !isStrings(dns[k])) return `dns.${k} must be a list of strings`;
    if (dns.domain !== undefined && typeof dns.domain !== 'string') return 'dns.domain must be a string';
  }
  return undefined;
}

/** Converts a 1.x-shaped result into the shape of `version` (which must be supported). */
export function convertResult(result: CniResult, version: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...result, cniVersion: version };
  const is11 = versionAtLeast(version, '1.1.0');
  const is1x = versionAtLeast(version, '1.0.0');
  if (result.interfaces) {
    out.interfaces = is11 ? result.interfaces : result.interfaces.map((i) => omit(i, INTERFACE_1_1_ONLY));
  }
  if (result.routes) {
    out.routes = is11 ? result.routes : result.routes.map((r) => omit(r, ROUTE_1_1_ONLY));
  }
  if (result.ips) {
    out.ips = is1x
      ? result.ips.map((ip) => omit(ip as IpConfig & { version?: string }, ['version']))
      : result.ips.map((ip) => {
          const { address, ...rest } = ip;
          return { version: familyOf(address) === 6 ? '6' : '4', address, ...rest };
        });
  }
  return out;
}
