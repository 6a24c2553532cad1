// Pure: ServicePlans -> an iptables-restore program (kube-proxy's rule shapes, in flatnet's own chains).
//
// nat:    PREROUTING/OUTPUT -> P-SERVICES (ClusterIP tree, externalIPs, LB VIPs, then -> P-NODEPORTS last)
//         POSTROUTING -> P-POSTROUTING (MASQUERADE packets carrying the masquerade mark)
//         P-MARK-MASQ sets the mark; per service port: P-SVC-<h> (cluster-wide endpoints), P-XLB-<h> (local
//         endpoints), P-EXT-<h> (external traffic policy), P-FW-<h> (loadBalancerSourceRanges), P-SEP-<h> (endpoint)
// filter: INPUT/FORWARD/OUTPUT -> P-SERVICES (REJECT services without endpoints, DROP internal-Local without any),
//         P-EXTERNAL-SERVICES (same for NodePorts, externalIPs and LB IPs), P-PROXY-FIREWALL (sourceRanges),
//         P-NODEPORTS (accept health-check node ports), P-FORWARD (accept marked and established forwarded traffic),
//         P-FIREWALL (CVE-2020-8558: localnet guard when localhost NodePorts are on)
// P-PROXY-CANARY exists in mangle, nat and filter; if someone flushes our chains it disappears and we resync fully.
//
// ClusterIP tree (nat only). kube-proxy puts one rule per cluster IP in P-SERVICES, so a new connection walks every
// service. Here P-SERVICES starts with one jump per level-1 bucket in use, and each cluster-IP rule (same comment,
// match and target as kube-proxy's) lives in a leaf chain:
//   P-SERVICES  -d 10.96.16.0/20 -j P-SVCT-0A601          level 1: the /20 (IPv4) or /116 (IPv6) of the cluster IP
//   P-SVCT-0A601 -d 10.96.17.0/24 -j P-SVCL-0A6011        level 2: the /24 (IPv4) or /120 (IPv6)
//   P-SVCL-0A6011 -m comment ... -d 10.96.17.5/32 -p tcp -m tcp --dport 80 -j P-SVC-<h>
// so a new connection evaluates at most (level-1 buckets) + 16 + (rules of one leaf) rules, whatever the number of
// services (a /12 service CIDR has at most 256 level-1 buckets of 16 leaves; IPv6 splits the low 12 bits as 4 + 8).
// IPv4 bucket names are the hex of the prefix bits (5 digits for the /20, 6 for the /24); IPv6 ones are the first 12
// characters of hash16 of the prefix. The jumps are -j, not -g: a packet no leaf rule matches returns and continues
// with the externalIP/LB rules and the NodePorts rule. Filter-table rules, externalIPs, LB IPs and NodePorts stay flat.
//
// A full program declares (flushes) and rewrites every chain, including every bucket in use; a partial one edits the
// top-level chains and the buckets rule by rule (a service's cluster-IP rule is -D/-I'ed in its leaf), rewrites only
// the per-service chains of changed ServicePorts, keeps the others as they are, and flushes+deletes stale chains.
// A partial sync that needs a bucket that does not exist yet declares only that chain (declaring an existing chain
// would flush it) and inserts its jump in the parent. Buckets emptied by partial syncs stay (owned, still referenced)
// until the next full sync, which does not write them, so the stale-chain logic deletes them.

import { createHash } from 'node:crypto';
import { canonicalCidr, cidrContainsText, familyOf, formatCidr, parseIP } from '../../../../lib/net/ip.ts';
import type { Endpoint, IpFamily, ProxyConfigView, SyncInput } from '../../model/types.ts';

export interface RuleOptions {
  /** chain name prefix, at most 7 characters (default FLATNET) */
  chainPrefix?: string;
  /** NodePorts on 127.0.0.1 (IPv4 only; needs route_localnet=1, adds the CVE-2020-8558 guard). Default false. */
  localhostNodePorts?: boolean;
  /** full syncs with more services than this write per-service chains in chunks of this many (0 = never); 1000 */
  chunkServices?: number;
}

export type Table = 'filter' | 'nat' | 'mangle';

export interface RenderResult {
  /** all programs concatenated (what a single-transaction reader such as the tracer sees) */
  text: string;
  /**
   * the programs to apply in order, one transaction each: for big full syncs, chunks of per-service chains first
   * (each service's chains within one chunk, unreferenced or consistently rewritten), then the main program with the
   * shared chains, jumps and stale-chain deletions. iptables-nft-restore is superlinear in (rules x chains) per
   * transaction, so chunking keeps a 10k-service full sync linear. Otherwise a single program.
   */
  programs: string[];
  /** every chain flatnet owns after this program, by table */
  chains: Record<Table, Set<string>>;
  /** chains flushed and deleted by this program */
  deleted: Record<Table, string[]>;
  /** number of per-service chains written */
  chainsWritten: number;
  /** per ServicePort key, its rules in the top-level chains (feed back as RenderState.top for the next partial) */
  top: Map<string, TopRule[]>;
  /** the ClusterIP tree's bucket chains (nat) present after this program; a subset of chains.nat */
  buckets: Set<string>;
}

/** One rule of a service in a shared top-level chain or ClusterIP leaf chain, as `-A CHAIN spec`. */
export interface TopRule {
  table: Table;
  line: string;
}

/** What the kernel holds after the last successful program (from the previous RenderResult). */
export interface RenderState {
  /**
   * chains flatnet owns now, per table. Partial syncs take the ClusterIP buckets that exist from here (a bucket chain
   * exists exactly when its parent's jump to it does), so it must list every bucket chain in the kernel.
   */
  chains?: Partial<Record<Table, ReadonlySet<string>>>;
  /** per-service top-level rules now in the kernel; required for partial syncs */
  top?: ReadonlyMap<string, TopRule[]>;
  /** jumps from built-in chains to insert (those found missing); inserted at the top, keeping builtinJumps order */
  insertJumps?: readonly BuiltinJump[];
}

/** Partial sync: replace a service's rules in the shared chains without flushing them (-D old, -I new at the top). */
function editTop(w: Writer, old: readonly TopRule[], next: readonly TopRule[]): void {
  const k = (r: TopRule): string => `${r.table} ${r.line}`;
  const keep = new Set(next.map(k));
  const had = new Set(old.map(k));
  for (const r of old) if (!keep.has(k(r))) w.add(r.table, '-D' + r.line.slice(2));
  for (const r of next) {
    if (had.has(k(r))) continue;
    const sp = r.line.indexOf(' ', 3);
    w.add(r.table, `-I ${r.line.slice(3, sp)} 1${r.line.slice(sp)}`);
  }
}

export interface Names {
  services: string;
  externalServices: string;
  nodePorts: string;
  postrouting: string;
  markMasq: string;
  forward: string;
  firewall: string;
  proxyFirewall: string;
  canary: string;
}

export function topNames(prefix = 'FLATNET'): Names {
  if (prefix.length > 7) throw new Error(`chain prefix ${prefix} longer than 7 characters`);
  return {
    services: `${prefix}-SERVICES`,
    externalServices: `${prefix}-EXTERNAL-SERVICES`,
    nodePorts: `${prefix}-NODEPORTS`,
    postrouting: `${prefix}-POSTROUTING`,
    markMasq: `${prefix}-MARK-MASQ`,
    forward: `${prefix}-FORWARD`,
    firewall: `${prefix}-FIREWALL`,
    proxyFirewall: `${prefix}-PROXY-FIREWALL`,
    canary: `${prefix}-PROXY-CANARY`,
  };
}

/** Jumps from built-in chains into ours, in order; the proxier ensures them (iptables -C / -I). */
export interface BuiltinJump {
  table: Table;
  chain: string;
  args: string[];
}

export function builtinJumps(prefix = 'FLATNET'): BuiltinJump[] {
  const n = topNames(prefix);
  const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];
  const c = (s: string) => ['-m', 'comment', '--comment', s];
  return [
    { table: 'nat', chain: 'PREROUTING', args: [...c('flatnet service portals'), '-j', n.services] },
    { table: 'nat', chain: 'OUTPUT', args: [...c('flatnet service portals'), '-j', n.services] },
    { table: 'nat', chain: 'POSTROUTING', args: [...c('flatnet postrouting rules'), '-j', n.postrouting] },
    { table: 'filter', chain: 'INPUT', args: [...NEW, ...c('flatnet load balancer firewall'), '-j', n.proxyFirewall] },
    { table: 'filter', chain: 'INPUT', args: [...c('flatnet health check service ports'), '-j', n.nodePorts] },
    { table: 'filter', chain: 'INPUT', args: [...NEW, ...c('flatnet external services'), '-j', n.externalServices] },
    { table: 'filter', chain: 'INPUT', args: [...NEW, ...c('flatnet service portals'), '-j', n.services] },
    { table: 'filter', chain: 'INPUT', args: [...c('flatnet firewall'), '-j', n.firewall] },
    { table: 'filter', chain: 'FORWARD', args: [...NEW, ...c('flatnet load balancer firewall'), '-j', n.proxyFirewall] },
    { table: 'filter', chain: 'FORWARD', args: [...c('flatnet forwarding rules'), '-j', n.forward] },
    { table: 'filter', chain: 'FORWARD', args: [...NEW, ...c('flatnet service portals'), '-j', n.services] },
    { table: 'filter', chain: 'FORWARD', args: [...NEW, ...c('flatnet external services'), '-j', n.externalServices] },
    { table: 'filter', chain: 'OUTPUT', args: [...NEW, ...c('flatnet load balancer firewall'), '-j', n.proxyFirewall] },
    { table: 'filter', chain: 'OUTPUT', args: [...NEW, ...c('flatnet service portals'), '-j', n.services] },
    { table: 'filter', chain: 'OUTPUT', args: [...NEW, ...c('flatnet external services'), '-j', n.externalServices] },
    { table: 'filter', chain: 'OUTPUT', args: [...c('flatnet firewall'), '-j', n.firewall] },
  ];
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const hashCache = new Map<string, string>();

/** 16 base32 characters of sha256(s), as kube-proxy names its chains. */
export function hash16(s: string): string {
  const hit = hashCache.get(s);
  if (hit) return hit;
  const d = createHash('sha256').update(s).digest();
  let out = '';
  let bits = 0;
  let val = 0;
  for (let i = 0; out.length < 16; i++) {
    val = (val << 8) | d[i]!;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += B32[(val >>> (bits - 5)) & 31];
      bits -= 5;
    }
    val &= (1 << bits) - 1;
  }
  if (hashCache.size > 500_000) hashCache.clear();
  hashCache.set(s, out);
  return out;
}

/** The two buckets of a cluster IP in the ClusterIP tree: level 1 (in P-SERVICES) and the leaf (in level 1). */
export interface ClusterIPBuckets {
  l1: string;
  l1Cidr: string;
  leaf: string;
  leafCidr: string;
}

const bucketCache = new Map<string, ClusterIPBuckets | null>();

/** Bucket chains of a cluster IP (IPv4: /20 and /24; IPv6: /116 and /120); undefined if it does not parse. */
export function clusterIPBuckets(ip: string, prefix = 'FLATNET'): ClusterIPBuckets | undefined {
  const ck = `${prefix} ${ip}`;
  const hit = bucketCache.get(ck);
  if (hit !== undefined) return hit ?? undefined;
  let b: ClusterIPBuckets | null = null;
  const addr = parseIP(ip);
  if (addr?.family === 4 && !ip.includes(':')) {
    const n = Number(addr.value);
    const quad = (x: number): string => [24, 16, 8, 0].map((sh) => (x >>> sh) & 255).join('.');
    const hex = (x: number, w: number): string => x.toString(16).toUpperCase().padStart(w, '0');
    b = {
      l1: `${prefix}-SVCT-${hex(n >>> 12, 5)}`,
      l1Cidr: `${quad((n & 0xfffff000) >>> 0)}/20`,
      leaf: `${prefix}-SVCL-${hex(n >>> 8, 6)}`,
      leafCidr: `${quad((n & 0xffffff00) >>> 0)}/24`,
    };
  } else if (addr?.family === 6) {
    const l1Cidr = formatCidr(canonicalCidr({ ip: addr, prefix: 116 }));
    const leafCidr = formatCidr(canonicalCidr({ ip: addr, prefix: 120 }));
    b = {
      l1: `${prefix}-SVCT-${hash16(l1Cidr).slice(0, 12)}`,
      l1Cidr,
      leaf: `${prefix}-SVCL-${hash16(leafCidr).slice(0, 12)}`,
      leafCidr,
    };
  }
  if (bucketCache.size > 200_000) bucketCache.clear();
  bucketCache.set(ck, b);
  return b ?? undefined;
}

/** Is this one of the ClusterIP tree's bucket chains? */
export function isBucketChain(chain: string, prefix = 'FLATNET'): boolean {
  return chain.startsWith(`${prefix}-SVCT-`) || chain.startsWith(`${prefix}-SVCL-`);
}

export interface ServiceChains {
  svc: string;
  xlb: string;
  ext: string;
  fw: string;
}

export function serviceChains(key: string, prefix = 'FLATNET'): ServiceChains {
  const h = hash16(key);
  return { svc: `${prefix}-SVC-${h}`, xlb: `${prefix}-XLB-${h}`, ext: `${prefix}-EXT-${h}`, fw: `${prefix}-FW-${h}` };
}

export function endpointChain(key: string, ep: Endpoint, prefix = 'FLATNET'): string {
  return `${prefix}-SEP-${hash16(`${key}|${ep.ip}|${ep.port}`)}`;
}

const hostBits = (f: IpFamily): string => (f === 4 ? '/32' : '/128');
const withMask = (ip: string, f: IpFamily): string => (ip.includes('/') ? ip : ip + hostBits(f));
const hostPort = (ip: string, port: number, f: IpFamily): string => (f === 6 ? `[${ip}]:${port}` : `${ip}:${port}`);

/** Returns [ifLocal, ifNotLocal] match fragments, or undefined when detect-local is not possible for this family. */
export function localDetector(config: ProxyConfigView, podCIDRs: readonly string[], family: IpFamily): [string, string] | undefined {
  switch (config.detectLocalMode) {
    case 'ClusterCIDR': {
      const c = config.clusterCIDRs.find((x) => familyOf(x) === family);
      return c ? [`-s ${c}`, `! -s ${c}`] : undefined;
    }
    case 'NodeCIDR': {
      const c = podCIDRs.find((x) => familyOf(x) === family);
      return c ? [`-s ${c}`, `! -s ${c}`] : undefined;
    }
    case 'BridgeInterface':
      return config.detectLocalInterface ? [`-i ${config.detectLocalInterface}`, `! -i ${config.detectLocalInterface}`] : undefined;
    case 'InterfaceNamePrefix':
      return config.detectLocalInterface ? [`-i ${config.detectLocalInterface}+`, `! -i ${config.detectLocalInterface}+`] : undefined;
    default:
      return undefined;
  }
}

function comment(s: string): string {
  return `-m comment --comment "${s.replace(/["\\]/g, '')}"`;
}

function portMatch(proto: string, port: number): string {
  const p = proto.toLowerCase();
  return `-p ${p} -m ${p} --dport ${port}`;
}

class Writer {
  readonly chains: Record<Table, string[]> = { filter: [], nat: [], mangle: [] };
  /** rules before all others (the ClusterIP tree's jumps, ahead of the externalIP/LB rules in P-SERVICES) */
  readonly head: Record<Table, string[]> = { filter: [], nat: [], mangle: [] };
  readonly rules: Record<Table, string[]> = { filter: [], nat: [], mangle: [] };
  readonly tail: Record<Table, string[]> = { filter: [], nat: [], mangle: [] };
  declare(t: Table, c: string): void {
    this.chains[t].push(`:${c} - [0:0]`);
  }
  add(t: Table, line: string): void {
    this.rules[t].push(line);
  }
  render(): string {
    const out: string[] = [];
    for (const t of ['mangle', 'filter', 'nat'] as const) {
      if (!this.chains[t].length && !this.head[t].length && !this.rules[t].length && !this.tail[t].length) continue;
      // (no spread into push: programs reach hundreds of thousands of lines)
      out.push(`*${t}`);
      for (const part of [this.chains[t], this.head[t], this.rules[t], this.tail[t]]) for (const l of part) out.push(l);
      out.push('COMMIT');
    }
    return out.join('\n') + '\n';
  }
}

/**
 * Render the program for one family. `existing` is the set of chains flatnet owns in the kernel now (from the last
 * sync, or iptables-save on start-up); chains in it that the new state lacks are flushed and deleted. In a partial
 * sync (input.full false) per-service chains of ServicePorts not in input.changed are assumed present and kept.
 */
export function renderRules(input: SyncInput, opts: RuleOptions = {}, state?: RenderState): RenderResult {
  const existing = state?.chains;
  const prefix = opts.chainPrefix ?? 'FLATNET';
  const n = topNames(prefix);
  const fam = input.family;
  const cfg = input.config;
  const mark = `0x${(1 << cfg.masqueradeBit).toString(16)}`;
  const markMatch = `${mark}/${mark}`;
  const w = new Writer();
  const owned: Record<Table, Set<string>> = { filter: new Set(), nat: new Set(), mangle: new Set() };
  let chainsWritten = 0;

  const topChains: [Table, string][] = [
    ['mangle', n.canary],
    ['filter', n.canary],
    ['filter', n.services],
    ['filter', n.externalServices],
    ['filter', n.nodePorts],
    ['filter', n.forward],
    ['filter', n.firewall],
    ['filter', n.proxyFirewall],
    ['nat', n.canary],
    ['nat', n.services],
    ['nat', n.nodePorts],
    ['nat', n.postrouting],
    ['nat', n.markMasq],
  ];
  for (const [t, c] of topChains) {
    if (input.full) w.declare(t, c);
    owned[t].add(c);
  }

  const detector = localDetector(cfg, input.node.podCIDRs, fam);
  const rejectWith = (proto: string): string =>
    proto === 'TCP' ? '-j REJECT --reject-with tcp-reset' : fam === 4 ? '-j REJECT --reject-with icmp-port-unreachable' : '-j REJECT --reject-with icmp6-port-unreachable';

  // static rules (full syncs only: a partial sync leaves the top-level chains in place and edits them rule by rule)
  const st = (t: Table, line: string): void => {
    if (input.full) w.add(t, line);
  };
  st('nat', `-A ${n.markMasq} -j MARK --or-mark ${mark}`);
  st('nat', `-A ${n.postrouting} -m mark ! --mark ${markMatch} -j RETURN`);
  st('nat', `-A ${n.postrouting} -j MARK --xor-mark ${mark}`);
  st('nat', `-A ${n.postrouting} ${comment('flatnet service traffic requiring SNAT')} -j MASQUERADE --random-fully`);
  st('filter', `-A ${n.forward} -m conntrack --ctstate INVALID -j DROP`);
  st('filter', `-A ${n.forward} ${comment('flatnet forwarding rules')} -m mark --mark ${markMatch} -j ACCEPT`);
  st('filter', `-A ${n.forward} ${comment('flatnet forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`);
  const localhostNP = !!opts.localhostNodePorts && fam === 4;
  if (localhostNP) {
    st(
      'filter',
      `-A ${n.firewall} ${comment('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    );
  }

  // ClusterIP tree: full syncs write every bucket in use; partial ones create the missing buckets they need and keep
  // every existing one (an emptied bucket is still referenced by its parent's jump until the next full sync)
  const bucketsUsed = new Map<string, ClusterIPBuckets>(); // leaf chain -> buckets (full syncs)
  const buckets = new Set<string>();
  if (!input.full) for (const c of existing?.nat ?? []) if (isBucketChain(c, prefix)) buckets.add(c);
  const useBucket = (b: ClusterIPBuckets, write: boolean): void => {
    if (input.full) {
      bucketsUsed.set(b.leaf, b);
      return;
    }
    if (!write) return;
    if (!buckets.has(b.l1)) {
      buckets.add(b.l1);
      w.declare('nat', b.l1);
      w.head.nat.push(`-I ${n.services} 1 -d ${b.l1Cidr} -j ${b.l1}`);
    }
    if (!buckets.has(b.leaf)) {
      buckets.add(b.leaf);
      w.declare('nat', b.leaf);
      w.head.nat.push(`-A ${b.l1} -d ${b.leafCidr} -j ${b.leaf}`);
    }
  };

  const topOut = new Map<string, TopRule[]>();
  const chunk = opts.chunkServices ?? 1000;
  const chunks: Writer[] = [];
  let servicesChunked = 0;
  const prev = state?.top;
  const keys = [...input.plans.keys()].sort();
  for (const key of keys) {
    const plan = input.plans.get(key)!;
    const s = plan.svc;
    if (s.family !== fam) continue;
    const write = input.full || input.changed.has(key);
    const ch = serviceChains(key, prefix);
    const name = `${s.namespace}/${s.name}${s.portName ? ':' + s.portName : ''}`;
    const pm = portMatch(s.protocol, s.port);
    const clusterWide = plan.clusterWideEndpoints ?? plan.clusterEndpoints;
    const hasAny = plan.hasAnyEndpoints ?? (plan.clusterEndpoints.length > 0 || plan.hasEndpointsElsewhere);
    const localEps = s.internalTrafficPolicyLocal ? plan.clusterEndpoints : plan.localEndpoints;
    const vips = s.loadBalancerIPs.filter((l) => l.ipMode === 'VIP').map((l) => l.ip);
    const external = s.nodePort > 0 || s.externalIPs.length > 0 || vips.length > 0;
    const internalLocal = s.internalTrafficPolicyLocal;
    const hasInternal = plan.clusterEndpoints.length > 0;
    const externalLocal = s.externalTrafficPolicyLocal && external;
    const hasExternal = externalLocal ? plan.localEndpoints.length > 0 : hasAny;

    const usesSvc = hasAny && (!internalLocal || external);
    const usesXlb = localEps.length > 0 && (internalLocal || externalLocal);
    const usesExt = hasAny && external;
    const usesFw = usesExt && vips.length > 0 && s.loadBalancerSourceRanges.length > 0;
    const internalChain = internalLocal ? ch.xlb : ch.svc;
    const tops: TopRule[] = [];
    const top = (t: Table, line: string): void => {
      tops.push({ table: t, line });
    };

    // --- top-level nat
    if (hasInternal) {
      const b = clusterIPBuckets(s.clusterIP, prefix);
      if (b) useBucket(b, write);
      top('nat', `-A ${b ? b.leaf : n.services} ${comment(`${name} cluster IP`)} -d ${withMask(s.clusterIP, fam)} ${pm} -j ${internalChain}`);
    }
    if (usesExt) {
      for (const ip of s.externalIPs) {
        top('nat', `-A ${n.services} ${comment(`${name} external IP`)} -d ${withMask(ip, fam)} ${pm} -j ${ch.ext}`);
      }
      for (const ip of vips) {
        top('nat', `-A ${n.services} ${comment(`${name} loadbalancer IP`)} -d ${withMask(ip, fam)} ${pm} -j ${usesFw ? ch.fw : ch.ext}`);
      }
      if (s.nodePort > 0) {
        top('nat', `-A ${n.nodePorts} ${comment(name)} ${portMatch(s.protocol, s.nodePort)} -j ${ch.ext}`);
      }
    }

    // --- filter
    if (!hasAny) {
      const c = comment(`${name} has no endpoints`);
      top('filter', `-A ${n.services} ${c} -d ${withMask(s.clusterIP, fam)} ${pm} ${rejectWith(s.protocol)}`);
      for (const ip of [...s.externalIPs, ...vips]) {
        top('filter', `-A ${n.externalServices} ${c} -d ${withMask(ip, fam)} ${pm} ${rejectWith(s.protocol)}`);
      }
      if (s.nodePort > 0) {
        top('filter', `-A ${n.externalServices} ${c} -m addrtype --dst-type LOCAL ${portMatch(s.protocol, s.nodePort)} ${rejectWith(s.protocol)}`);
      }
    } else {
      if (!hasInternal) {
        top('filter', `-A ${n.services} ${comment(`${name} has no local endpoints`)} -d ${withMask(s.clusterIP, fam)} ${pm} -j DROP`);
      }
      if (!hasExternal) {
        const c = comment(`${name} has no local endpoints`);
        for (const ip of [...s.externalIPs, ...vips]) top('filter', `-A ${n.externalServices} ${c} -d ${withMask(ip, fam)} ${pm} -j DROP`);
        if (s.nodePort > 0) {
          top('filter', `-A ${n.externalServices} ${c} -m addrtype --dst-type LOCAL ${portMatch(s.protocol, s.nodePort)} -j DROP`);
        }
      }
    }
    if (usesFw) {
      for (const ip of vips) {
        top('filter', `-A ${n.proxyFirewall} ${comment(`${name} traffic not accepted by ${ch.fw}`)} -d ${withMask(ip, fam)} ${pm} -j DROP`);
      }
    }
    if (s.healthCheckNodePort > 0) {
      top('filter', `-A ${n.nodePorts} ${comment(`${name} health check node port`)} -p tcp -m tcp --dport ${s.healthCheckNodePort} -j ACCEPT`);
    }

    topOut.set(key, tops);
    if (input.full) for (const r of tops) w.add(r.table, r.line);
    else if (write) editTop(w, prev?.get(key) ?? [], tops);

    // --- per-service chains
    const wanted: string[] = [];
    const sepOf = (ep: Endpoint): string => endpointChain(key, ep, prefix);
    if (usesSvc) wanted.push(ch.svc);
    if (usesXlb) wanted.push(ch.xlb);
    if (usesExt) wanted.push(ch.ext);
    if (usesFw) wanted.push(ch.fw);
    const seps = new Map<string, Endpoint>();
    if (usesSvc) for (const ep of clusterWide) seps.set(sepOf(ep), ep);
    if (usesXlb) for (const ep of localEps) seps.set(sepOf(ep), ep);
    wanted.push(...seps.keys());
    for (const c of wanted) owned.nat.add(c);
    if (!write) continue;
    chainsWritten += wanted.length;
    // full syncs of big clusters: per-service chains go to chunk programs applied before the main one
    let sw = w;
    if (input.full && chunk > 0 && input.plans.size > chunk && wanted.length) {
      const idx = Math.floor(servicesChunked++ / chunk);
      if (!chunks[idx]) {
        chunks[idx] = new Writer();
        // chunk programs reference the top-level chains; create the missing ones (empty) without flushing others
        if (idx === 0) for (const [t, c] of topChains) if (!existing?.[t]?.has(c)) chunks[0]!.declare(t, c);
      }
      sw = chunks[idx]!;
    }
    for (const c of wanted) sw.declare('nat', c);

    const masqRule = (chain: string): void => {
      const dst = `-d ${withMask(s.clusterIP, fam)} ${pm}`;
      if (cfg.masqueradeAll) sw.add('nat', `-A ${chain} ${comment(`${name} cluster IP`)} ${dst} -j ${n.markMasq}`);
      else if (detector) sw.add('nat', `-A ${chain} ${comment(`${name} cluster IP`)} ${detector[1]} ${dst} -j ${n.markMasq}`);
    };
    const toEndpoints = (chain: string, eps: readonly Endpoint[]): void => {
      if (s.affinityTimeoutSeconds !== undefined) {
        for (const ep of eps) {
          const sep = sepOf(ep);
          sw.add('nat', `-A ${chain} ${comment(`${name} -> ${hostPort(ep.ip, ep.port, fam)}`)} -m recent --name ${sep} --rcheck --seconds ${s.affinityTimeoutSeconds} --reap -j ${sep}`);
        }
      }
      eps.forEach((ep, i) => {
        const sep = sepOf(ep);
        const left = eps.length - i;
        const stat = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(10)}` : '';
        sw.add('nat', `-A ${chain} ${comment(`${name} -> ${hostPort(ep.ip, ep.port, fam)}`)}${stat} -j ${sep}`);
      });
    };

    if (usesSvc) {
      if (!internalLocal) masqRule(ch.svc);
      toEndpoints(ch.svc, clusterWide);
    }
    if (usesXlb) {
      if (internalLocal) masqRule(ch.xlb);
      toEndpoints(ch.xlb, localEps);
    }
    if (usesExt) {
      if (!externalLocal) {
        sw.add('nat', `-A ${ch.ext} ${comment(`masquerade traffic for ${name} external destinations`)} -j ${n.markMasq}`);
      } else {
        if (detector) sw.add('nat', `-A ${ch.ext} ${comment(`pod traffic for ${name} external destinations`)} ${detector[0]} -j ${ch.svc}`);
        sw.add('nat', `-A ${ch.ext} ${comment(`masquerade LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j ${n.markMasq}`);
        sw.add('nat', `-A ${ch.ext} ${comment(`route LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j ${ch.svc}`);
      }
      if (hasExternal) sw.add('nat', `-A ${ch.ext} -j ${externalLocal ? ch.xlb : ch.svc}`);
    }
    if (usesFw) {
      const c = comment(`${name} loadbalancer IP`);
      let fromNode = false;
      for (const r of s.loadBalancerSourceRanges) {
        sw.add('nat', `-A ${ch.fw} ${c} -s ${r} -j ${ch.ext}`);
        if (input.node.ips.some((ip) => familyOf(ip) === fam && cidrContainsText(r, ip))) fromNode = true;
      }
      if (fromNode) for (const ip of vips) sw.add('nat', `-A ${ch.fw} ${c} -s ${withMask(ip, fam)} -j ${ch.ext}`);
      // whatever falls off the end was not DNATed and is dropped by the PROXY-FIREWALL filter chain
    }
    for (const [sep, ep] of seps) {
      const c = comment(name);
      sw.add('nat', `-A ${sep} ${c} -s ${withMask(ep.ip, fam)} -j ${n.markMasq}`);
      const aff = s.affinityTimeoutSeconds !== undefined ? ` -m recent --name ${sep} --set` : '';
      sw.add('nat', `-A ${sep} ${c}${aff} -p ${s.protocol.toLowerCase()} -m ${s.protocol.toLowerCase()} -j DNAT --to-destination ${hostPort(ep.ip, ep.port, fam)}`);
    }
  }

  if (!input.full) {
    for (const key of input.changed) {
      if (input.plans.get(key)?.svc.family === fam) continue;
      const old = prev?.get(key);
      if (old) editTop(w, old, []);
    }
  }

  if (input.full) {
    // level-1 jumps first in SERVICES (before the externalIP/LB rules written above in program order), then leaves
    const l1 = new Map<string, string>();
    const leaves = [...bucketsUsed.values()].sort((a, b) => (a.leaf < b.leaf ? -1 : a.leaf > b.leaf ? 1 : 0));
    for (const b of leaves) l1.set(b.l1, b.l1Cidr);
    for (const [c, cidr] of [...l1].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      w.declare('nat', c);
      w.head.nat.push(`-A ${n.services} -d ${cidr} -j ${c}`);
      buckets.add(c);
    }
    for (const b of leaves) {
      w.declare('nat', b.leaf);
      w.head.nat.push(`-A ${b.l1} -d ${b.leafCidr} -j ${b.leaf}`);
      buckets.add(b.leaf);
    }
  }
  for (const c of buckets) owned.nat.add(c);

  // NodePorts: last in SERVICES
  const npa = cfg.nodePortAddresses.filter((a) => a !== 'primary');
  const npTarget = `${comment('flatnet service nodeports; NOTE: this must be the last rule in this chain')}`;
  if (npa.length === 0) {
    for (const ip of input.node.ips.filter((ip) => familyOf(ip) === fam)) {
      st('nat', `-A ${n.services} ${npTarget} -d ${withMask(ip, fam)} -j ${n.nodePorts}`);
    }
    if (localhostNP) st('nat', `-A ${n.services} ${npTarget} -d 127.0.0.0/8 -j ${n.nodePorts}`);
  } else {
    for (const cidr of npa.filter((c) => familyOf(c) === fam)) {
      const all = cidr === '0.0.0.0/0' || cidr === '::/0';
      const lo = fam === 4 && !localhostNP ? ' ! -d 127.0.0.0/8' : '';
      st('nat', `-A ${n.services} ${npTarget}${all ? '' : ` -d ${cidr}`}${lo} -m addrtype --dst-type LOCAL -j ${n.nodePorts}`);
    }
  }

  // stale chains: flush (declare) then delete, after every reference to them has been rewritten
  const deleted: Record<Table, string[]> = { filter: [], nat: [], mangle: [] };
  for (const t of ['filter', 'nat', 'mangle'] as const) {
    for (const c of existing?.[t] ?? []) {
      if (owned[t].has(c) || !c.startsWith(prefix + '-')) continue;
      deleted[t].push(c);
    }
    deleted[t].sort();
    for (const c of deleted[t]) {
      w.declare(t, c);
      w.tail[t].push(`-X ${c}`);
    }
  }
  const jumps = state?.insertJumps ?? [];
  for (let i = jumps.length - 1; i >= 0; i--) {
    const j = jumps[i]!;
    w.tail[j.table].push(`-I ${j.chain} 1 ${j.args.map((a) => (/^[\w./:,!=+-]+$/.test(a) ? a : `"${a}"`)).join(' ')}`);
  }
  const programs = [...chunks.map((c) => c.render()), w.render()];
  return { text: programs.join(''), programs, chains: owned, deleted, chainsWritten, top: topOut, buckets };
}

