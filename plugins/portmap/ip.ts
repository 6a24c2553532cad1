// Small IP helpers for portmap: parse, canonicalize (RFC 5952 for v6), network of a prefix.

import { isIPv4, isIPv6 } from 'node:net';

export type Family = 4 | 6;

function v4ToBig(ip: string): bigint {
  return ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

function bigToV4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
}

function v6ToBig(ip: string): bigint {
  let s = ip;
  const m = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (m) {
    const v4 = v4ToBig(m[1]!);
    s = s.slice(0, -m[1]!.length) + ((v4 >> 16n) & 0xffffn).toString(16) + ':' + (v4 & 0xffffn).toString(16);
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function bigToV6(n: bigint): string {
  const g = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt((7 - i) * 16)) & 0xffffn));
  // longest run (>= 2) of zero groups becomes '::'
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return hex.slice(0, best).join(':') + '::' + hex.slice(best + bestLen).join(':');
}

export function familyOf(ip: string): Family | undefined {
  if (isIPv4(ip)) return 4;
  if (isIPv6(ip)) return 6;
  return undefined;
}

/** Canonical text of an address (v6 compressed, lower case); throws on invalid input. */
export function canonicalIP(ip: string): string {
  const f = familyOf(ip);
  if (f === 4) return bigToV4(v4ToBig(ip));
  if (f === 6) return bigToV6(v6ToBig(ip));
  throw new Error(`invalid IP address: ${ip}`);
}

export function isUnspecified(ip: string): boolean {
  const f = familyOf(ip);
  return f === 4 ? v4ToBig(ip) === 0n : f === 6 ? v6ToBig(ip) === 0n : false;
}

export interface ParsedCidr {
  family: Family;
  /** the address, canonical */
  ip: string;
  prefix: number;
  /** network address/prefix, canonical */
  network: string;
}

/** Parse "addr/prefix" (an address with its prefix length, as in CNI results). */
export function parseCidr(cidr: string): ParsedCidr {
  const [addr, p, extra] = cidr.split('/');
  const family = addr ? familyOf(addr) : undefined;
  const bits = family === 4 ? 32 : 128;
  const prefix = p === undefined ? bits : Number(p);
  if (!family || extra !== undefined || !/^\d+$/.test(p ?? String(bits)) || prefix > bits) throw new Error(`invalid CIDR: ${cidr}`);
  const n = family === 4 ? v4ToBig(addr!) : v6ToBig(addr!);
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
  const net = n & mask;
  const str = family === 4 ? bigToV4 : bigToV6;
  return { family, ip: str(n), prefix, network: `${str(net)}/${prefix}` };
}
