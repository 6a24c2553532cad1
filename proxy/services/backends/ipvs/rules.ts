// IPVS backend: pure rendering of ServicePlans into the four programs IPVS mode needs.
//
// DESIGN (after kube-proxy's IPVS mode; deprecated upstream since 1.35, KEP-5495)
//   1. a dummy interface (`flatnet-ipvs0`) carries every ClusterIP, externalIP and LB ingress address (/32 or /128),
//      so the kernel accepts the packets locally and IPVS (LOCAL_IN) picks a real server; programmed with `ip -batch`.
//   2. `ipvsadm-restore`: one virtual server per service address and port (ClusterIP, externalIPs, LB ingress with
//      ipMode VIP, and every NodePort address), scheduler rr, persistence `-p <timeoutSeconds>` for ClientIP
//      affinity, real servers in masquerading mode (-m) with weight 1 (0 for terminating endpoints while ready ones
//      exist). eTP=Local external virtual servers only get local endpoints.
//   3. `ipset restore`: the sets the few iptables rules match on (FLATNET-*; FLATNET6-* for IPv6).
//   4. `iptables-restore --noflush`: fixed chains, depending only on the config: masquerade marking for ClusterIPs
//      (detect-local), external addresses and NodePorts (eTP=Cluster), hairpin (FLATNET-LOOP-BACK: dst,dst,src), the
//      loadBalancerSourceRanges firewall (filter INPUT), and the postrouting masquerade of marked packets.
// Full syncs read the kernel's current virtual servers (`ipvsadm -S -n`) and dummy addresses and emit the diff (never
// `ipvsadm -C`, which would cut every connection); ipsets are rebuilt under a temporary name and swapped in.
// Incremental syncs diff against the in-memory state of the last applied sync, for the changed services only.
// Services without endpoints keep a virtual server with no real servers: IPVS answers with ICMP port unreachable
// (a reject); kube-proxy's "drop when endpoints exist elsewhere" is not distinguished here.

import { cidrContainsText, familyOf } from '../../../../lib/net/ip.ts';
import type { Endpoint, IpFamily, ProxyConfigView, ServicePlan, SyncInput } from '../../model/types.ts';

export const DUMMY_IF = 'flatnet-ipvs0';

export type IpvsProto = 'tcp' | 'udp' | 'sctp';

export interface RealServer {
  addr: string;
  port: number;
  weight: number;
}

export interface VirtualServer {
  proto: IpvsProto;
  addr: string;
  port: number;
  scheduler: string;
  /** persistence timeout (seconds) for ClientIP affinity */
  persistence?: number;
  reals: RealServer[];
}

export function vsKey(proto: string, addr: string, port: number): string {
  return `${proto}|${addr}|${port}`;
}

function hostPort(addr: string, port: number): string {
  return familyOf(addr) === 6 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

const PROTO_FLAG: Record<IpvsProto, string> = { tcp: '-t', udp: '-u', sctp: '--sctp-service' };

// ---------------------------------------------------------------------------------------------------------------
// ipsets

export function setNames(family: IpFamily) {
  const p = family === 6 ? 'FLATNET6-' : 'FLATNET-';
  return {
    clusterIP: `${p}CLUSTER-IP`,
    loopBack: `${p}LOOP-BACK`,
    externalIP: `${p}EXTERNAL-IP`,
    externalIPLocal: `${p}EXTERNAL-IP-LOCAL`,
    loadBalancer: `${p}LOAD-BALANCER`,
    loadBalancerLocal: `${p}LOAD-BALANCER-LOCAL`,
    loadBalancerFW: `${p}LOAD-BALANCER-FW`,
    loadBalancerSourceCIDR: `${p}LOAD-BALANCER-SOURCE-CIDR`,
    nodePortTCP: `${p}NODE-PORT-TCP`,
    nodePortUDP: `${p}NODE-PORT-UDP`,
    nodePortSCTP: `${p}NODE-PORT-SCTP`,
    nodePortLocalTCP: `${p}NODE-PORT-LOCAL-TCP`,
    nodePortLocalUDP: `${p}NODE-PORT-LOCAL-UDP`,
    nodePortLocalSCTP: `${p}NODE-PORT-LOCAL-SCTP`,
  };
}

/** name -> `create` arguments (type and options) */
export function setTypes(family: IpFamily): [string, string][] {
  const n = setNames(family);
  const fam = family === 6 ? 'family inet6' : 'family inet';
  const ipPort = `hash:ip,port ${fam}`;
  return [
    [n.clusterIP, ipPort],
    [n.loopBack, `hash:ip,port,ip ${fam}`],
    [n.externalIP, ipPort],
    [n.externalIPLocal, ipPort],
    [n.loadBalancer, ipPort],
    [n.loadBalancerLocal, ipPort],
    [n.loadBalancerFW, ipPort],
    [n.loadBalancerSourceCIDR, `hash:ip,port,net ${fam}`],
    [n.nodePortTCP, 'bitmap:port range 0-65535'],
    [n.nodePortUDP, 'bitmap:port range 0-65535'],
    [n.nodePortSCTP, 'bitmap:port range 0-65535'],
    [n.nodePortLocalTCP, 'bitmap:port range 0-65535'],
    [n.nodePortLocalUDP, 'bitmap:port range 0-65535'],
    [n.nodePortLocalSCTP, 'bitmap:port range 0-65535'],
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// per-service contribution

export interface Contribution {
  vss: VirtualServer[];
  /** [set, entry] */
  entries: [string, string][];
  /** addresses for the dummy interface */
  addrs: string[];
}

function weights(eps: readonly Endpoint[]): RealServer[] {
  const someReady = eps.some((e) => !e.terminating);
  return [...eps]
    .sort((x, y) => (x.ip === y.ip ? x.port - y.port : x.ip < y.ip ? -1 : 1))
    .map((e) => ({ addr: e.ip, port: e.port, weight: e.terminating && someReady ? 0 : 1 }));
}

/** Node addresses that serve NodePorts: node IPs, restricted to nodePortAddresses CIDRs when given. */
export function nodePortAddrs(config: ProxyConfigView, nodeIPs: readonly string[], family: IpFamily): string[] {
  const cidrs = config.nodePortAddresses.filter((c) => c !== 'primary');
  return [...new Set(nodeIPs.filter((ip) => familyOf(ip) === family && (cidrs.length === 0 || cidrs.some((c) => cidrContainsText(c, ip)))))].sort();
}

export function contribution(plan: ServicePlan, input: Pick<SyncInput, 'config' | 'node'>, family: IpFamily): Contribution {
  const s = plan.svc;
  const out: Contribution = { vss: [], entries: [], addrs: [] };
  if (s.family !== family) return out;
  const n = setNames(family);
  const p = s.protocol.toLowerCase() as IpvsProto;
  const persistence = s.affinityTimeoutSeconds;
  const vs = (addr: string, port: number, eps: readonly Endpoint[]): VirtualServer => ({
    proto: p,
    addr,
    port,
    scheduler: 'rr',
    ...(persistence !== undefined ? { persistence } : {}),
    reals: weights(eps),
  });
  const wide = plan.clusterWideEndpoints ?? plan.clusterEndpoints;
  const extEps = s.externalTrafficPolicyLocal ? plan.localEndpoints : wide;
  const allEps = new Set<string>();
  const hairpin = (eps: readonly Endpoint[]): void => {
    for (const e of eps) allEps.add(`${e.ip},${p}:${e.port},${e.ip}`);
  };
  if (s.clusterIP && familyOf(s.clusterIP) === family) {
    out.vss.push(vs(s.clusterIP, s.port, plan.clusterEndpoints));
    out.entries.push([n.clusterIP, `${s.clusterIP},${p}:${s.port}`]);
    out.addrs.push(s.clusterIP);
    hairpin(plan.clusterEndpoints);
  }
  for (const ip of [...new Set(s.externalIPs)].sort()) {
    if (familyOf(ip) !== family) continue;
    out.vss.push(vs(ip, s.port, extEps));
    out.entries.push([s.externalTrafficPolicyLocal ? n.externalIPLocal : n.externalIP, `${ip},${p}:${s.port}`]);
    out.addrs.push(ip);
    hairpin(extEps);
  }
  const ranges = s.loadBalancerSourceRanges.filter((c) => familyOf(c) === family);
  for (const lb of s.loadBalancerIPs) {
    if (lb.ipMode === 'Proxy' || familyOf(lb.ip) !== family) continue;
    out.vss.push(vs(lb.ip, s.port, extEps));
    out.entries.push([n.loadBalancer, `${lb.ip},${p}:${s.port}`]);
    if (s.externalTrafficPolicyLocal) out.entries.push([n.loadBalancerLocal, `${lb.ip},${p}:${s.port}`]);
    if (s.loadBalancerSourceRanges.length > 0) {
      out.entries.push([n.loadBalancerFW, `${lb.ip},${p}:${s.port}`]);
      for (const r of ranges) out.entries.push([n.loadBalancerSourceCIDR, `${lb.ip},${p}:${s.port},${r}`]);
    }
    out.addrs.push(lb.ip);
    hairpin(extEps);
  }
  if (s.nodePort > 0) {
    for (const ip of nodePortAddrs(input.config, input.node.ips, family)) out.vss.push(vs(ip, s.nodePort, extEps));
    const set = { tcp: [n.nodePortTCP, n.nodePortLocalTCP], udp: [n.nodePortUDP, n.nodePortLocalUDP], sctp: [n.nodePortSCTP, n.nodePortLocalSCTP] }[p];
    out.entries.push([set[0]!, String(s.nodePort)]);
    if (s.externalTrafficPolicyLocal) out.entries.push([set[1]!, String(s.nodePort)]);
    hairpin(extEps);
  }
  for (const e of [...allEps].sort()) out.entries.push([n.loopBack, e]);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// ipvsadm

function vsSpec(v: VirtualServer): string {
  return `${PROTO_FLAG[v.proto]} ${hostPort(v.addr, v.port)}`;
}

function vsLine(verb: '-A' | '-E', v: VirtualServer): string {
  return `${verb} ${vsSpec(v)} -s ${v.scheduler}${v.persistence !== undefined ? ` -p ${v.persistence}` : ''}`;
}

function rsLine(verb: '-a' | '-e', v: VirtualServer, r: RealServer): string {
  return `${verb} ${vsSpec(v)} -r ${hostPort(r.addr, r.port)} -m -w ${r.weight}`;
}

/** ipvsadm-restore program turning `cur` into `want` (only the given keys when `keys` is set). */
export function ipvsDiff(cur: ReadonlyMap<string, VirtualServer>, want: ReadonlyMap<string, VirtualServer>, keys?: Iterable<string>): string {
  const out: string[] = [];
  const all = keys ? [...new Set(keys)] : [...new Set([...cur.keys(), ...want.keys()])];
  all.sort();
  for (const k of all) {
    const c = cur.get(k);
    const w = want.get(k);
    if (c && !w) {
      out.push(`-D ${vsSpec(c)}`);
      continue;
    }
    if (!w) continue;
    if (!c) {
      out.push(vsLine('-A', w));
      for (const r of w.reals) out.push(rsLine('-a', w, r));
      continue;
    }
    if (c.scheduler !== w.scheduler || c.persistence !== w.persistence) out.push(vsLine('-E', w));
    const cr = new Map(c.reals.map((r) => [hostPort(r.addr, r.port), r]));
    const wr = new Map(w.reals.map((r) => [hostPort(r.addr, r.port), r]));
    for (const [hp] of cr) if (!wr.has(hp)) out.push(`-d ${vsSpec(w)} -r ${hp}`);
    for (const [hp, r] of wr) {
      const old = cr.get(hp);
      if (!old) out.push(rsLine('-a', w, r));
      else if (old.weight !== r.weight) out.push(rsLine('-e', w, r));
    }
  }
  return out.length ? out.join('\n') + '\n' : '';
}

/** Parses `ipvsadm -S -n` (the same syntax as ipvsadm-restore input). Unknown lines throw. */
export function parseIpvsadmSave(text: string): Map<string, VirtualServer> {
  const out = new Map<string, VirtualServer>();
  const addrPort = (s: string): [string, number] => {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
    if (!m) throw new Error(`bad address ${s}`);
    return [m[1]!, Number(m[2])];
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const tok = line.split(/\s+/);
    const verb = tok[0];
    const protoFlag = tok[1];
    const proto: IpvsProto | undefined = protoFlag === '-t' ? 'tcp' : protoFlag === '-u' ? 'udp' : protoFlag === '--sctp-service' ? 'sctp' : undefined;
    if (!proto || (verb !== '-A' && verb !== '-a')) throw new Error(`unknown ipvsadm line: ${line}`);
    const [addr, port] = addrPort(tok[2]!);
    const key = vsKey(proto, addr, port);
    const opt = (f: string): string | undefined => {
      const i = tok.indexOf(f);
      return i >= 0 ? tok[i + 1] : undefined;
    };
    if (verb === '-A') {
      const p = opt('-p');
      out.set(key, { proto, addr, port, scheduler: opt('-s') ?? 'wlc', ...(p !== undefined ? { persistence: Number(p) } : {}), reals: [] });
    } else {
      const vs = out.get(key);
      if (!vs) throw new Error(`real server before its virtual server: ${line}`);
      const [ra, rp] = addrPort(opt('-r')!);
      vs.reals.push({ addr: ra, port: rp, weight: Number(opt('-w') ?? 1) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// ipset programs

/** Full: every set rebuilt under a temporary name and swapped in (atomic per set). */
export function ipsetFull(family: IpFamily, entries: ReadonlyMap<string, ReadonlySet<string>>): string {
  const out: string[] = [];
  for (const [name, type] of setTypes(family)) {
    const tmp = `${name}-T`;
    out.push(`create ${name} ${type} -exist`);
    out.push(`create ${tmp} ${type} -exist`);
    out.push(`flush ${tmp}`);
    for (const e of [...(entries.get(name) ?? [])].sort()) out.push(`add ${tmp} ${e} -exist`);
    out.push(`swap ${tmp} ${name}`);
    out.push(`destroy ${tmp}`);
  }
  return out.join('\n') + '\n';
}

export function ipsetDiff(dels: readonly [string, string][], adds: readonly [string, string][]): string {
  const out = [...dels.map(([s, e]) => `del ${s} ${e} -exist`), ...adds.map(([s, e]) => `add ${s} ${e} -exist`)];
  return out.length ? out.join('\n') + '\n' : '';
}

export function ipsetCleanup(family: IpFamily): string {
  return setTypes(family).map(([n]) => `destroy ${n}`).join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------------------
// dummy interface

export function dummyProgram(cur: ReadonlySet<string>, want: ReadonlySet<string>, family: IpFamily, createLink: boolean): string {
  const out: string[] = [];
  if (createLink) out.push(`link add ${DUMMY_IF} type dummy`, `link set ${DUMMY_IF} up`);
  const len = family === 6 ? 128 : 32;
  for (const a of [...cur].sort()) if (!want.has(a)) out.push(`addr del ${a}/${len} dev ${DUMMY_IF}`);
  for (const a of [...want].sort()) if (!cur.has(a)) out.push(`addr add ${a}/${len} dev ${DUMMY_IF}`);
  return out.length ? out.join('\n') + '\n' : '';
}

// ---------------------------------------------------------------------------------------------------------------
// iptables

export const CHAINS = {
  services: 'FLATNET-IPVS-SERVICES',
  nodePort: 'FLATNET-IPVS-NODE-PORT',
  loadBalancer: 'FLATNET-IPVS-LOAD-BALANCER',
  markMasq: 'FLATNET-IPVS-MARK-MASQ',
  postrouting: 'FLATNET-IPVS-POSTROUTING',
  firewall: 'FLATNET-IPVS-FIREWALL',
} as const;

/** The jumps from built-in chains: [table, chain, rule args]. */
export function builtinJumps(): [string, string, string[]][] {
  return [
    ['nat', 'PREROUTING', ['-m', 'comment', '--comment', 'flatnet ipvs services', '-j', CHAINS.services]],
    ['nat', 'OUTPUT', ['-m', 'comment', '--comment', 'flatnet ipvs services', '-j', CHAINS.services]],
    ['nat', 'POSTROUTING', ['-m', 'comment', '--comment', 'flatnet ipvs postrouting', '-j', CHAINS.postrouting]],
    ['filter', 'INPUT', ['-m', 'comment', '--comment', 'flatnet ipvs firewall', '-j', CHAINS.firewall]],
  ];
}

function markHex(config: ProxyConfigView): string {
  const bit = Number.isInteger(config.masqueradeBit) && config.masqueradeBit >= 0 && config.masqueradeBit <= 31 ? config.masqueradeBit : 14;
  return '0x' + ((1 << bit) >>> 0).toString(16);
}

/** iptables-restore --noflush text for our chains (declaring them flushes them). */
export function iptablesProgram(config: ProxyConfigView, podCIDRs: readonly string[], family: IpFamily): string {
  const n = setNames(family);
  const c = CHAINS;
  const mark = markHex(config);
  const cidrs = (config.detectLocalMode === 'NodeCIDR' ? podCIDRs : config.clusterCIDRs).filter((x) => familyOf(x) === family);
  const nonLocal: string[][] = [];
  if (config.masqueradeAll) nonLocal.push([]);
  else if (config.detectLocalMode === 'ClusterCIDR' || config.detectLocalMode === 'NodeCIDR') {
    if (cidrs.length === 1) nonLocal.push(['!', '-s', cidrs[0]!]);
  } else if (config.detectLocalInterface) {
    nonLocal.push(['!', '-i', config.detectLocalMode === 'InterfaceNamePrefix' ? `${config.detectLocalInterface}+` : config.detectLocalInterface]);
  }
  const nat: string[] = [
    '*nat',
    `:${c.services} - [0:0]`,
    `:${c.nodePort} - [0:0]`,
    `:${c.loadBalancer} - [0:0]`,
    `:${c.markMasq} - [0:0]`,
    `:${c.postrouting} - [0:0]`,
    `-A ${c.markMasq} -j MARK --or-mark ${mark}`,
  ];
  for (const m of nonLocal) nat.push(`-A ${c.services} ${[...m, '-m', 'set', '--match-set', n.clusterIP, 'dst,dst'].join(' ')} -j ${c.markMasq}`);
  nat.push(`-A ${c.services} -m set --match-set ${n.externalIP} dst,dst -j ${c.markMasq}`);
  nat.push(`-A ${c.services} -m set --match-set ${n.externalIPLocal} dst,dst -m addrtype --src-type LOCAL -j ${c.markMasq}`);
  nat.push(`-A ${c.services} -m set --match-set ${n.loadBalancer} dst,dst -j ${c.loadBalancer}`);
  nat.push(`-A ${c.services} -m addrtype --dst-type LOCAL -j ${c.nodePort}`);
  nat.push(`-A ${c.loadBalancer} -m set --match-set ${n.loadBalancerLocal} dst,dst -m addrtype ! --src-type LOCAL -j RETURN`);
  nat.push(`-A ${c.loadBalancer} -j ${c.markMasq}`);
  for (const [p, set, local] of [
    ['tcp', n.nodePortTCP, n.nodePortLocalTCP],
    ['udp', n.nodePortUDP, n.nodePortLocalUDP],
    ['sctp', n.nodePortSCTP, n.nodePortLocalSCTP],
  ] as const) {
    nat.push(`-A ${c.nodePort} -p ${p} -m set --match-set ${local} dst -m addrtype ! --src-type LOCAL -j RETURN`);
    nat.push(`-A ${c.nodePort} -p ${p} -m set --match-set ${set} dst -j ${c.markMasq}`);
  }
  nat.push(`-A ${c.postrouting} -m set --match-set ${n.loopBack} dst,dst,src -j MASQUERADE`);
  nat.push(`-A ${c.postrouting} -m mark ! --mark ${mark}/${mark} -j RETURN`);
  nat.push(`-A ${c.postrouting} -j MARK --xor-mark ${mark}`);
  nat.push(`-A ${c.postrouting} -j MASQUERADE --random-fully`);
  nat.push('COMMIT');
  const filter = [
    '*filter',
    `:${c.firewall} - [0:0]`,
    `-A ${c.firewall} -m set --match-set ${n.loadBalancerFW} dst,dst -m set ! --match-set ${n.loadBalancerSourceCIDR} dst,dst,src -j DROP`,
    'COMMIT',
  ];
  return [...nat, ...filter].join('\n') + '\n';
}

/** sysctls IPVS mode needs (kube-proxy sets the same). */
export function requiredSysctls(family: IpFamily): [string, string][] {
  return [
    ['net/ipv4/vs/conntrack', '1'],
    ['net/ipv4/vs/expire_nodest_conn', '1'],
    ['net/ipv4/vs/expire_quiescent_template', '1'],
    [family === 6 ? 'net/ipv6/conf/all/forwarding' : 'net/ipv4/ip_forward', '1'],
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// state and sync rendering

export interface IpvsState {
  sig: string;
  perService: Map<string, Contribution>;
  vss: Map<string, VirtualServer>;
  /** `${set} ${entry}` -> reference count */
  entries: Map<string, number>;
  /** dummy address -> reference count */
  addrs: Map<string, number>;
}

export function signature(input: Pick<SyncInput, 'config' | 'node' | 'family'>): string {
  return JSON.stringify([input.family, input.config, input.node.ips, input.node.podCIDRs]);
}

export interface IpvsPrograms {
  ipset: string;
  dummy: string;
  ipvs: string;
  /** only on full syncs */
  iptables?: string;
}

function inc(m: Map<string, number>, k: string, d: number): void {
  const n = (m.get(k) ?? 0) + d;
  if (n > 0) m.set(k, n);
  else m.delete(k);
}

function apply(state: IpvsState, key: string, c: Contribution | undefined, sign: 1 | -1): void {
  if (!c) return;
  for (const [s, e] of c.entries) inc(state.entries, `${s} ${e}`, sign);
  for (const a of c.addrs) inc(state.addrs, a, sign);
  for (const v of c.vss) {
    const k = vsKey(v.proto, v.addr, v.port);
    if (sign > 0) state.vss.set(k, v);
    else if (state.vss.get(k) === v) state.vss.delete(k);
  }
  if (sign > 0) state.perService.set(key, c);
  else state.perService.delete(key);
}

/** Full sync against what the kernel holds now (`curVss`, `curAddrs`). */
export function renderFull(
  input: SyncInput,
  cur: { vss: ReadonlyMap<string, VirtualServer>; addrs: ReadonlySet<string>; linkExists: boolean },
): { programs: IpvsPrograms; state: IpvsState } {
  const family = input.family;
  const state: IpvsState = { sig: signature(input), perService: new Map(), vss: new Map(), entries: new Map(), addrs: new Map() };
  for (const k of [...input.plans.keys()].sort()) apply(state, k, contribution(input.plans.get(k)!, input, family), 1);
  const bySet = new Map<string, Set<string>>();
  for (const id of state.entries.keys()) {
    const i = id.indexOf(' ');
    const s = id.slice(0, i);
    let l = bySet.get(s);
    if (!l) bySet.set(s, (l = new Set()));
    l.add(id.slice(i + 1));
  }
  // virtual servers are ours when their address is one we manage (dummy addresses, NodePort addresses, or wanted now);
  // other families and foreign virtual servers are left alone
  const ourAddrs = new Set([...cur.addrs, ...state.addrs.keys(), ...nodePortAddrs(input.config, input.node.ips, family)]);
  const curFam = new Map([...cur.vss].filter(([, v]) => familyOf(v.addr) === family && ourAddrs.has(v.addr)));
  return {
    programs: {
      ipset: ipsetFull(family, bySet),
      dummy: dummyProgram(
        new Set([...cur.addrs].filter((a) => familyOf(a) === family)),
        new Set(state.addrs.keys()),
        family,
        !cur.linkExists,
      ),
      ipvs: ipvsDiff(curFam, state.vss),
      iptables: iptablesProgram(input.config, input.node.podCIDRs, family),
    },
    state,
  };
}

/** Incremental sync: the changed services only, against the in-memory state (updated in place). */
export function renderIncremental(input: SyncInput, state: IpvsState): { programs: IpvsPrograms; state: IpvsState } {
  const family = input.family;
  const beforeVss = new Map<string, VirtualServer | undefined>();
  const beforeEntries = new Map<string, boolean>();
  const beforeAddrs = new Map<string, boolean>();
  const touchedVs = new Set<string>();
  for (const k of [...input.changed].sort()) {
    const old = state.perService.get(k);
    const plan = input.plans.get(k);
    const now = plan ? contribution(plan, input, family) : undefined;
    for (const c of [old, now]) {
      if (!c) continue;
      for (const v of c.vss) {
        const vk = vsKey(v.proto, v.addr, v.port);
        if (!beforeVss.has(vk)) beforeVss.set(vk, state.vss.get(vk));
        touchedVs.add(vk);
      }
      for (const [s, e] of c.entries) if (!beforeEntries.has(`${s} ${e}`)) beforeEntries.set(`${s} ${e}`, state.entries.has(`${s} ${e}`));
      for (const a of c.addrs) if (!beforeAddrs.has(a)) beforeAddrs.set(a, state.addrs.has(a));
    }
    apply(state, k, old, -1);
    apply(state, k, now, 1);
  }
  const cur = new Map<string, VirtualServer>();
  for (const [k, v] of beforeVss) if (v) cur.set(k, v);
  const dels: [string, string][] = [];
  const adds: [string, string][] = [];
  for (const [id, was] of beforeEntries) {
    const now = state.entries.has(id);
    if (was === now) continue;
    const i = id.indexOf(' ');
    (now ? adds : dels).push([id.slice(0, i), id.slice(i + 1)]);
  }
  const curAddrs = new Set([...beforeAddrs].filter(([, was]) => was).map(([a]) => a));
  const wantAddrs = new Set([...beforeAddrs.keys()].filter((a) => state.addrs.has(a)));
  return {
    programs: {
      ipset: ipsetDiff(dels.sort(), adds.sort()),
      dummy: dummyProgram(curAddrs, wantAddrs, family, false),
      ipvs: ipvsDiff(cur, state.vss, touchedVs),
    },
    state,
  };
}
