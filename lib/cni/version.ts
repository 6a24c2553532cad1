// cniVersion handling: which versions we speak and how results move between the 0.3.x/0.4.0 and 1.x shapes.
// Internally every result is in the 1.1.0 shape; it is converted to the config's version only when written.
import { familyOf } from '../net/ip.ts';
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
