// IP and CIDR math for IPv4 and IPv6 on bigint, the one IP module of flatnet (plugins, IPAM, daemon). Pure; no Node
// APIs. Addresses are held as { family, value } where value is the unsigned integer of the address; the text helpers at
// the end work on strings for callers that keep addresses as text (rule renderers, kernel output).

export type Family = 4 | 6;

export interface IP {
  readonly family: Family;
  readonly value: bigint;
}

export interface Cidr {
  /** the address as written (may have host bits set) */
  readonly ip: IP;
  readonly prefix: number;
}

export const bitsOf = (f: Family): number => (f === 4 ? 32 : 128);
const maxOf = (f: Family): bigint => (1n << BigInt(bitsOf(f))) - 1n;

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    // Go's net.ParseIP rejects leading zeros ("010"), which would be ambiguous (octal)
    if (p.length > 1 && p[0] === '0') return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseV6(s: string): bigint | undefined {
  if (s.length === 0 || s.includes('%')) return undefined;
  let tail4: bigint | undefined;
  let text = s;
  // embedded IPv4 in the last 32 bits (e.g. ::ffff:1.2.3.4)
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.slice(lastColon + 1).includes('.')) {
    tail4 = parseV4(text.slice(lastColon + 1));
    if (tail4 === undefined) return undefined;
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = text.indexOf('::');
  if (dbl !== text.lastIndexOf('::')) return undefined;
  const parseGroups = (t: string): number[] | undefined => {
    if (t === '') return [];
    const out: number[] = [];
    for (const g of t.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (dbl >= 0) {
    const head = parseGroups(text.slice(0, dbl));
    const tail = parseGroups(text.slice(dbl + 2));
    if (!head || !tail) return undefined;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    const all = parseGroups(text);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  if (tail4 !== undefined) v = (v & ~0xffffffffn) | tail4;
  return v;
}

/** Parses an IPv4 or IPv6 address (no prefix). Returns undefined when invalid. */
export function parseIP(s: string): IP | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.trim();
  if (t.includes(':')) {
    const v = parseV6(t);
    if (v === undefined) return undefined;
    // IPv4-mapped addresses are IPv4 (as in Go's net.IP.To4)
    if (v >> 32n === 0xffffn) return { family: 4, value: v & 0xffffffffn };
    return { family: 6, value: v };
  }
  const v = parseV4(t);
  return v === undefined ? undefined : { family: 4, value: v };
}

/** Parses "addr/prefix". Host bits may be set (use network() to mask). */
export function parseCidr(s: string): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIP(s.slice(0, slash));
  const pfx = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(pfx)) return undefined;
  const prefix = Number(pfx);
  // an IPv4-mapped IPv6 CIDR is out of scope: reject rather than guess
  if (s.slice(0, slash).includes(':') && ip.family === 4) return undefined;
  if (prefix > bitsOf(ip.family)) return undefined;
  return { ip, prefix };
}

function v4String(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 0xffn)).join('.');
}

/** Canonical text form: dotted quad, or RFC 5952 for IPv6 (same as Go's net.IP.String()). */
export function formatIP(ip: IP): string {
  if (ip.family === 4) return v4String(ip.value);
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // longest run of zero groups (length >= 2), leftmost on ties
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestLen < 2) return hex(groups);
  return hex(groups.slice(0, bestStart)) + '::' + hex(groups.slice(bestStart + bestLen));
}

export const ipEq = (a: IP, b: IP): boolean => a.family === b.family && a.value === b.value;

/** -1, 0, 1; IPv4 sorts before IPv6. */
export function compareIP(a: IP, b: IP): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** ip + n (n may be negative); undefined when it leaves the family's address space. */
export function addIP(ip: IP, n: bigint | number): IP | undefined {
  const v = ip.value + BigInt(n);
  if (v < 0n || v > maxOf(ip.family)) return undefined;
  return { family: ip.family, value: v };
}

function hostMask(c: Cidr): bigint {
  return (1n << BigInt(bitsOf(c.ip.family) - c.prefix)) - 1n;
}

/** The network address (host bits cleared). */
export function networkOf(c: Cidr): IP {
  return { family: c.ip.family, value: c.ip.value & ~hostMask(c) & maxOf(c.ip.family) };
}

/** The last address of the block (the broadcast address in IPv4). */
export function lastOf(c: Cidr): IP {
  return { family: c.ip.family, value: networkOf(c).value | hostMask(c) };
}

/** The CIDR with host bits cleared. */
export function canonicalCidr(c: Cidr): Cidr {
  return { ip: networkOf(c), prefix: c.prefix };
}

export function cidrContains(c: Cidr, ip: IP): boolean {
  if (ip.family !== c.ip.family) return false;
  const n = networkOf(c).value;
  return ip.value >= n && ip.value <= (n | hostMask(c));
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, networkOf(b)) || cidrContains(b, networkOf(a));
}

/** Number of addresses in the block. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(bitsOf(c.ip.family) - c.prefix);
}

/** "network/prefix" in canonical form. */
export function formatCidr(c: Cidr): string {
  return `${formatIP(c.ip)}/${c.prefix}`;
}

/** Canonical text of an address string, or undefined when invalid. */
export function normalizeIP(s: string): string | undefined {
  const ip = parseIP(s);
  return ip ? formatIP(ip) : undefined;
}

/** Is this the unspecified address (0.0.0.0 or ::)? */
export const isUnspecified = (ip: IP): boolean => ip.value === 0n;

const V4_TEXT = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/**
 * The family of an address, or of a CIDR ("addr/prefix": the address part), written as text; undefined when it is
 * neither. IPv4-mapped IPv6 text counts as IPv6 here, as written.
 */
export function familyOf(text: string): Family | undefined {
  if (typeof text !== 'string') return undefined;
  const slash = text.indexOf('/');
  const a = slash < 0 ? text : text.slice(0, slash);
  if (!a.includes(':')) return V4_TEXT.test(a) ? 4 : undefined;
  return parseV6(a) === undefined ? undefined : 6;
}

/** Canonical text of an address (dotted quad, RFC 5952); throws when `text` is not an address. */
export function canonicalIP(text: string): string {
  if (V4_TEXT.test(text)) return text;
  const ip = parseIP(text);
  if (!ip) throw new Error(`invalid IP address ${JSON.stringify(text)}`);
  return formatIP(ip);
}

/** Parses "addr/prefix" or throws, naming the text. */
export function mustParseCidr(text: string): Cidr {
  const c = parseCidr(typeof text === 'string' ? text.trim() : text);
  if (!c) throw new Error(`invalid CIDR ${JSON.stringify(text)}`);
  return c;
}

/** "network/prefix" of a CIDR text, host bits cleared (10.1.0.5/24 -> 10.1.0.0/24); throws when invalid. */
export function canonicalNetwork(text: string): string {
  return formatCidr(canonicalCidr(mustParseCidr(text)));
}

/** Does the CIDR text contain the address text? False when either does not parse or the families differ. */
export function cidrContainsText(cidr: string, ip: string): boolean {
  const c = parseCidr(cidr);
  const a = parseIP(ip);
  return !!c && !!a && cidrContains(c, a);
}

/** An address as a single-host CIDR text: "10.0.0.1/32", "fd00::1/128"; throws when invalid. */
export function hostCidr(text: string): string {
  const ip = parseIP(text);
  if (!ip) throw new Error(`invalid IP address ${JSON.stringify(text)}`);
  return `${formatIP(ip)}/${bitsOf(ip.family)}`;
}

/** Canonical text of a CIDR with its host bits kept ("fd00:0::0005/64" -> "fd00::5/64"), or undefined when invalid. */
export function normalizeCidr(text: string): string | undefined {
  const c = parseCidr(text);
  return c ? formatCidr(c) : undefined;
}
