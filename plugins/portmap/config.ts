// portmap configuration: NetConf (+ runtimeConfig.portMappings, prevResult) -> a validated, normalized PortMapConfig.
// Pure: no I/O. Every error is a CniError with code 7 (invalid config) naming the bad field.

import { CniError, ErrorCode, type CniResult, type NetConf } from '../../lib/cni/types.ts';
import { canonicalCidr, familyOf, formatCidr, formatIP, isUnspecified, parseCidr, parseIP, type Family } from '../../lib/net/ip.ts';

export type Protocol = 'tcp' | 'udp' | 'sctp';
import type { NetfilterBackend } from '../../lib/netfilter/backend.ts';

export type Backend = NetfilterBackend;

export interface Mapping {
  hostPort: number;
  containerPort: number;
  protocol: Protocol;
  /** canonical specific host address; undefined = every local address */
  hostIP?: string;
  /** families this mapping applies to: [4, 6] without hostIP, [4] for 0.0.0.0 or a v4 hostIP, [6] for :: or v6 */
  families: Family[];
}

export interface PortMapConfig {
  name: string;
  cniVersion: string;
  snat: boolean;
  masqAll: boolean;
  markMasqBit: number;
  externalSetMarkChain?: string;
  /** extra matches on the jump into the hostport chains, in the backend's own syntax */
  conditionsV4: string[];
  conditionsV6: string[];
  backend: Backend;
  mappings: Mapping[];
}

export const DEFAULT_MARK_BIT = 13;

const bad = (msg: string): CniError => new CniError(ErrorCode.InvalidConfig, `portmap: ${msg}`);

function optBool(conf: NetConf, key: string, dflt: boolean): boolean {
  const v = conf[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw bad(`${key} must be a boolean`);
  return v;
}

function optStrings(conf: NetConf, key: string): string[] {
  const v = conf[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad(`${key} must be an array of strings`);
  for (const s of v as string[]) if (/[\n\r]/.test(s)) throw bad(`${key} entries may not contain newlines`);
  return v as string[];
}

function port(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw bad(`invalid ${what} ${JSON.stringify(v)}: must be 1-65535`);
  return v;
}

const MAPPING_KEYS = ['hostPort', 'containerPort', 'protocol', 'hostIP'] as const;

/**
 * Runtimes built on Go (containerd 1.6's go-cni) send the mapping's keys as Go field names ("HostPort", "HostIP"),
 * and the reference plugin accepts them because Go's JSON decoding ignores case. Match keys the same way.
 */
function foldKeys(m: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    const known = MAPPING_KEYS.find((x) => x.toLowerCase() === k.toLowerCase());
    // an exact-case key wins over a differently cased duplicate, as in Go
    if (known && (out[known] === undefined || k === known)) out[known] = v;
  }
  return out;
}

/** Parse runtimeConfig.portMappings. */
export function parseMappings(raw: unknown): Mapping[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw bad('runtimeConfig.portMappings must be an array');
  const out: Mapping[] = [];
  for (const [i, e] of raw.entries()) {
    if (typeof e !== 'object' || e === null) throw bad(`portMappings[${i}] must be an object`);
    const m = foldKeys(e as Record<string, unknown>);
    const hostPort = port(m.hostPort, `portMappings[${i}].hostPort`);
    const containerPort = port(m.containerPort, `portMappings[${i}].containerPort`);
    const proto = m.protocol === undefined || m.protocol === '' ? 'tcp' : m.protocol;
    if (typeof proto !== 'string' || !['tcp', 'udp', 'sctp'].includes(proto.toLowerCase()))
      throw bad(`portMappings[${i}].protocol ${JSON.stringify(m.protocol)} is not tcp, udp or sctp`);
    const protocol = proto.toLowerCase() as Protocol;
    let hostIP: string | undefined;
    let families: Family[] = [4, 6];
    if (m.hostIP !== undefined && m.hostIP !== null && m.hostIP !== '') {
      const host = typeof m.hostIP === 'string' ? parseIP(m.hostIP) : undefined;
      if (!host || !familyOf(m.hostIP as string)) throw bad(`portMappings[${i}].hostIP ${JSON.stringify(m.hostIP)} is not an IP address`);
      families = [host.family];
      if (!isUnspecified(host)) hostIP = formatIP(host);
    }
    // duplicates are accepted, as by the reference: each gets its rule and the first one matches
    out.push({ hostPort, containerPort, protocol, ...(hostIP ? { hostIP } : {}), families });
  }
  return out;
}

/** The configured backend, validated; undefined when the config names none (the caller picks the default). */
export function configuredBackend(conf: NetConf): Backend | undefined {
  const b = conf.backend;
  if (b === undefined || b === null) return undefined;
  if (b !== 'iptables' && b !== 'nftables') throw bad(`backend ${JSON.stringify(b)} must be "iptables" or "nftables"`);
  return b;
}

/**
 * Which backend a list of conditions is written for, as the reference tells: iptables matches start with '-' or
 * '!' ("-d", "--sport", "! -s"), nftables expressions never do. undefined when empty.
 */
export function conditionsBackend(conditions: readonly string[]): Backend | undefined {
  const first = conditions[0];
  if (first === undefined || first === '') return undefined;
  return first[0] === '-' || first[0] === '!' ? 'iptables' : 'nftables';
}

/**
 * Validate the plugin's own keys and the runtime's port mappings. `defaultBackend` applies when the config names
 * no backend (the reference's default: iptables unless only nftables is usable, decided by the caller).
 */
export function parseConfig(conf: NetConf, defaultBackend: Backend = 'iptables'): PortMapConfig {
  const snat = optBool(conf, 'snat', true);
  const masqAll = optBool(conf, 'masqAll', false);
  const backend = configuredBackend(conf) ?? defaultBackend;
  const ext = conf.externalSetMarkChain;
  if (ext !== undefined && ext !== null && (typeof ext !== 'string' || !/^[^\s-][^\s]{0,27}$/.test(ext)))
    throw bad(`externalSetMarkChain ${JSON.stringify(ext)} is not a valid iptables chain name`);
  if (typeof ext === 'string' && conf.markMasqBit !== undefined && conf.markMasqBit !== null)
    throw bad('cannot specify externalSetMarkChain and markMasqBit');
  const bit = conf.markMasqBit ?? DEFAULT_MARK_BIT;
  if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < 0 || bit > 31) throw bad(`markMasqBit ${JSON.stringify(bit)} must be an integer 0-31`);
  const conditionsV4 = optStrings(conf, 'conditionsV4');
  const conditionsV6 = optStrings(conf, 'conditionsV6');
  // options written for the other backend are an error, as in the reference
  const other: Backend = backend === 'iptables' ? 'nftables' : 'iptables';
  const wrong = [
    ...(typeof ext === 'string' && other === 'iptables' ? ['externalSetMarkChain'] : []),
    ...(conditionsBackend(conditionsV4) === other ? ['conditionsV4'] : []),
    ...(conditionsBackend(conditionsV6) === other ? ['conditionsV6'] : []),
  ];
  if (wrong.length) throw bad(`${backend} backend was requested but configuration contains ${other}-specific options ${wrong.join(', ')}`);
  const rc = conf.runtimeConfig;
  const mappings = parseMappings(rc && typeof rc === 'object' ? (rc as Record<string, unknown>).portMappings : undefined);
  return {
    name: conf.name,
    cniVersion: conf.cniVersion,
    snat,
    masqAll,
    markMasqBit: bit,
    ...(typeof ext === 'string' ? { externalSetMarkChain: ext } : {}),
    conditionsV4,
    conditionsV6,
    backend,
    mappings,
  };
}

/** A container address from prevResult, in canonical text. */
export interface ContainerAddr {
  family: Family;
  ip: string;
  prefix: number;
  /** network/prefix */
  network: string;
}

/** Parses a prevResult address ("addr/prefix"); throws when it is not one. */
export function containerAddr(text: string): ContainerAddr {
  const c = parseCidr(text);
  if (!c) throw new Error(`invalid CIDR: ${text}`);
  return { family: c.ip.family, ip: formatIP(c.ip), prefix: c.prefix, network: formatCidr(canonicalCidr(c)) };
}

export interface ContainerIPs {
  v4?: ContainerAddr;
  v6?: ContainerAddr;
}

/**
 * The container's first IPv4 and first IPv6 address from prevResult, skipping addresses that belong to an interface
 * outside the sandbox or not named ifname (the host veth, the bridge).
 */
export function containerIPs(prev: CniResult, ifname: string): ContainerIPs {
  const out: ContainerIPs = {};
  for (const ip of prev.ips ?? []) {
    let c: ContainerAddr;
    try {
      c = containerAddr(ip.address);
    } catch {
      throw bad(`prevResult ip ${JSON.stringify(ip.address)} is not a CIDR`);
    }
    const key = c.family === 4 ? 'v4' : 'v6';
    if (out[key]) continue;
    if (ip.interface !== undefined && ip.interface !== null) {
      const itf = prev.interfaces?.[ip.interface];
      if (itf && (itf.name !== ifname || !itf.sandbox)) continue;
    }
    out[key] = c;
  }
  return out;
}
