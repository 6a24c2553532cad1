// Small IP/CIDR helpers for the overlay (text formatting comes from lib/net).
import { isIPv4, isIPv6 } from 'node:net';
import { formatIP } from './ip.ts';

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** network address as a bigint (host bits cleared) */
  net: bigint;
  prefix: number;
  /** canonical text, e.g. 10.244.1.0/24 or fd00:10:244:1::/64 */
  text: string;
}

export function ipFamily(ip: string): Family | undefined {
  if (isIPv4(ip)) return 4;
  if (isIPv6(ip)) return 6;
  return undefined;
}

export function ipToBigInt(ip: string): bigint {
  if (isIPv4(ip)) {
    return ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  }
  if (!isIPv6(ip)) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  let s = ip;
  // embedded IPv4 tail (::ffff:1.2.3.4)
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4tail) {
    const v = ipToBigInt(v4tail[1]!);
    s = s.slice(0, -v4tail[1]!.length) + ((v >> 16n) & 0xffffn).toString(16) + ':' + (v & 0xffffn).toString(16);
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

export function bigIntToIp(v: bigint, family: Family): string {
  return formatIP({ family, value: v });
}

export function parseCidr(text: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) throw new Error(`invalid CIDR ${JSON.stringify(text)}`);
  const family = ipFamily(m[1]!);
  const prefix = Number(m[2]);
  if (!family) throw new Error(`invalid CIDR ${JSON.stringify(text)}: bad address`);
  const bits = family === 4 ? 32 : 128;
  if (prefix > bits) throw new Error(`invalid CIDR ${JSON.stringify(text)}: prefix too long`);
  const addr = ipToBigInt(m[1]!);
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
  const net = addr & mask;
  return { family, net, prefix, text: `${bigIntToIp(net, family)}/${prefix}` };
}

export function cidrContains(c: Cidr, ip: string): boolean {
  const f = ipFamily(ip);
  if (f !== c.family) return false;
  const bits = c.family === 4 ? 32 : 128;
  const shift = BigInt(bits - c.prefix);
  return ipToBigInt(ip) >> shift === c.net >> shift;
}

/** The network address itself (flannel's ".0" address given to the VXLAN device). */
export function networkAddress(c: Cidr): string {
  return bigIntToIp(c.net, c.family);
}

const V4_CANONICAL = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const canonCache = new Map<string, string>();

/** Canonical text of an IP (lower case, compressed) so kernel output and plans compare equal. */
export function canonicalIp(ip: string): string {
  if (V4_CANONICAL.test(ip)) return ip;
  const hit = canonCache.get(ip);
  if (hit !== undefined) return hit;
  const f = ipFamily(ip);
  if (!f) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  const c = bigIntToIp(ipToBigInt(ip), f);
  if (canonCache.size > 100_000) canonCache.clear();
  canonCache.set(ip, c);
  return c;
}
