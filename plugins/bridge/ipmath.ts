// Just enough IP arithmetic for the bridge plugin (BigInt based, IPv4 and IPv6). Pure.
import { formatIP } from '../../lib/net/ip.ts';

export interface Cidr {
  family: 4 | 6;
  /** the address as written (host bits kept) */
  addr: bigint;
  prefix: number;
}

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    v = (v << 8n) | BigInt(Number(p));
  }
  return v;
}

function parseV6(s: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail4: bigint | undefined;
  let str = s;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    tail4 = parseV4(s.slice(lastColon + 1));
    if (tail4 === undefined) return undefined;
    str = s.slice(0, lastColon + 1) + '0:0';
  }
  const halves = str.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const groups = halves.length === 2 ? [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail] : head;
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  if (tail4 !== undefined) v = (v & ~0xffffffffn) | tail4;
  return v;
}

export function parseIp(s: string): { family: 4 | 6; addr: bigint } | undefined {
  const v4 = parseV4(s);
  if (v4 !== undefined) return { family: 4, addr: v4 };
  const v6 = parseV6(s);
  if (v6 !== undefined) return { family: 6, addr: v6 };
  return undefined;
}

export function parseCidr(s: string): Cidr | undefined {
  const [ip, pfx, ...rest] = s.split('/');
  if (rest.length || ip === undefined || pfx === undefined || !/^\d{1,3}$/.test(pfx)) return undefined;
  const p = parseIp(ip);
  if (!p) return undefined;
  const prefix = Number(pfx);
  if (prefix > (p.family === 4 ? 32 : 128)) return undefined;
  return { family: p.family, addr: p.addr, prefix };
}

const bits = (f: 4 | 6): bigint => (f === 4 ? 32n : 128n);

function mask(f: 4 | 6, prefix: number): bigint {
  const all = (1n << bits(f)) - 1n;
  return all ^ ((1n << (bits(f) - BigInt(prefix))) - 1n);
}

export function formatIp(family: 4 | 6, v: bigint): string {
  return formatIP({ family, value: v });
}

/** Canonical text of an IP (v6 compressed), or the input when it does not parse. */
export function canonicalIp(s: string): string {
  const p = parseIp(s);
  return p ? formatIp(p.family, p.addr) : s;
}

/** Canonical addr/prefix (host bits kept). */
export function canonicalCidr(s: string): string {
  const c = parseCidr(s);
  return c ? `${formatIp(c.family, c.addr)}/${c.prefix}` : s;
}

/** Network of a CIDR: 10.1.0.5/24 -> 10.1.0.0/24 */
export function networkOf(c: Cidr): Cidr {
  return { family: c.family, addr: c.addr & mask(c.family, c.prefix), prefix: c.prefix };
}

export function cidrString(c: Cidr): string {
  return `${formatIp(c.family, c.addr)}/${c.prefix}`;
}

export function ipOf(c: Cidr): string {
  return formatIp(c.family, c.addr);
}

/** The reference's default gateway: network address + 1. */
export function firstHost(c: Cidr): string {
  return formatIp(c.family, networkOf(c).addr + 1n);
}

export function cidrContains(net: Cidr, ip: { family: 4 | 6; addr: bigint }): boolean {
  return net.family === ip.family && (ip.addr & mask(net.family, net.prefix)) === (net.addr & mask(net.family, net.prefix));
}
