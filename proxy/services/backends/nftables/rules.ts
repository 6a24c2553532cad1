// nftables backend: pure rendering of ServicePlans into `nft -f` programs (full and incremental).
//
// DESIGN
// ------
// nft 1.0.6 (Debian bookworm, kind nodes) slows down quadratically with the number of chains in a transaction, so
// this backend creates NO per-service and NO per-endpoint chains. Everything that varies per service lives in sets
// and maps; the chains are a fixed skeleton (plus one tiny chain per distinct affinity timeout). One private table
// per family: `ip <table>` / `ip6 <table>` (default table name `flatnet-proxy`).
//
// Endpoint selection: for each path below, a verdict map keyed by the service address (`daddr . l4proto . dport`,
// or `l4proto . dport` for NodePorts) sends the packet to a class chain `<path>-<N>` (one per distinct endpoint
// count N, shared by every service with N endpoints) whose single rule is
// `dnat to <key> . numgen random mod N map @<path>-ep`; the `-ep` maps are plain hash maps keyed
// `<key> . i` (i = 0..N-1) -> `endpoint . port`. Exact keys, no intervals: an interval map with ranges of 1024
// buckets (tried first) expands every non-power-of-two range into several pipapo entries and the kernel time grew
// ~quadratically (30k services x 3 endpoints: 74 s, 14.6 s of it in the kernel). Paths:
//   cluster       ClusterIP -> clusterEndpoints (internalTrafficPolicy already applied by the planner)
//   ext           externalIPs / LB ingress (ipMode VIP) -> clusterWideEndpoints (eTP=Cluster) or localEndpoints (eTP=Local)
//   ext-short     same VIPs of eTP=Local services -> clusterWideEndpoints, for node- or pod-originated traffic
//                 (kube-proxy's short-circuit); tried before ext for sources that are local
//   np / np-short the same for NodePorts, guarded by `fib daddr type local ip daddr @nodeport-ips`
//                 (nodePortAddresses: node IPs or CIDRs)
// A vmap miss falls through; so a service with no endpoints has no entry and reaches the filter checks below.
//
// Masquerade: the usual mark bit (1 << masqueradeBit, default 0x4000) is set in the `services` nat chain BEFORE the
// dnat rules (dnat is terminal), from key sets:
//   cluster-keys     ClusterIP keys: marked when the source is not local (detect-local by cluster CIDRs, node pod
//                    CIDRs, bridge interface or interface prefix), or always with masqueradeAll
//   ext-cluster-keys / np-cluster-keys   eTP=Cluster external keys: always marked (the client IP is not kept)
//   ext-local-keys / np-local-keys       eTP=Local: marked only when node-originated (fib saddr type local), so
//                    remote clients keep their source IP
// nat postrouting: hairpin first (`ct status dnat ip saddr . ip daddr @hairpin masquerade`, the set holds `ep . ep`
// for every endpoint, i.e. a pod reaching itself through its service), then the mark: return when clear, clear it,
// `masquerade fully-random`.
//
// Session affinity (ClientIP): one dynamic map `affinity`: `client . vip . l4proto . vport -> endpoint . port` with
// per-element timeouts. Lookup: the first dnat rule of `services` is `dnat to ip saddr . ip daddr . l4proto . dport
// map @affinity`. Recording happens after DNAT (filter postrouting, and filter input for node-local endpoints):
// `ct original daddr . l4proto . ct original proto-dst` is looked up in the verdict maps aff-svc (VIPs) / aff-np
// (NodePorts) whose verdict is `goto aff-<timeoutSeconds>`; that chain does `update @affinity { ct original saddr .
// ct original daddr . l4proto . ct original proto-dst timeout <T>s : daddr . dport }` (one rule per protocol, as
// `ct original proto-dst` needs a protocol context). Entries for endpoints that went away are pruned by the proxier
// (it lists only the affinity map, and only when an affinity service lost endpoints or on a full sync).
// Difference from kube-proxy: stickiness is per (client, service address) rather than per (client, service port),
// so a client reaching the same service by ClusterIP and by NodePort may land on two different endpoints.
//
// Filtering (filter chains): firewall-check (prerouting and output, before DNAT) drops LB traffic whose source is not
// in loadBalancerSourceRanges: `daddr . l4proto . dport @fw-keys` and `daddr . l4proto . dport . saddr != @fw-allow`.
// endpoints-check (input, forward, output, after DNAT, new connections only): whatever is still addressed to a
// service without usable endpoints hits the verdict maps no-ep-svc / no-ep-np (`goto reject-chain` when the service
// has no endpoints at all, `drop` when it has endpoints elsewhere, e.g. eTP=Local without local endpoints), and any
// other port of a cluster IP (`@cluster-ips`) is rejected.
//
// Syncs: a full sync rebuilds the table in one transaction (first sync: delete + recreate the table; later full
// syncs flush every chain and set except `affinity`, so stickiness survives; the `typeof` maps are deleted and
// recreated instead of flushed, see renderFull). An incremental sync emits only
// `delete element` / `add element` for the elements owned by the changed services, computed against the in-memory
// state of the last applied sync (elements shared by several services, e.g. a cluster IP or a hairpin pair, are
// reference-counted). Element additions are chunked (CHUNK per command) to stay clear of ENOBUFS.

import { familyOf } from '../../../../lib/net/ip.ts';
import type { IpFamily, ProxyConfigView, ServicePlan, SyncInput, Endpoint } from '../../model/types.ts';

export const DEFAULT_TABLE = 'flatnet-proxy';
export const CHUNK = 1000;
/** interval concatenations: nft 1.0.6 fails with EEXIST when one command carries ~965+ such elements */
export const INTERVAL_CHUNK = 400;

/** The endpoint-selection paths; each has a `<path>-n` class vmap and a `<path>-ep` map. */
export const PATHS = ['cluster', 'ext', 'ext-short', 'np', 'np-short'] as const;
export type Path = (typeof PATHS)[number];

export interface NftRenderOptions {
  table: string;
  family: IpFamily;
}

/** The set/map definitions, in creation order. `affinity` is dynamic and survives full syncs. */
export type SetName = FixedSetName | `${Path}-ep-${'tcp' | 'udp' | 'sctp'}`;

type FixedSetName =
  | 'cluster-ips'
  | 'cluster-keys'
  | 'ext-cluster-keys'
  | 'ext-local-keys'
  | 'np-cluster-keys'
  | 'np-local-keys'
  | 'nodeport-ips'
  | 'cluster-n'
  | 'ext-n'
  | 'ext-short-n'
  | 'np-n'
  | 'np-short-n'
  | 'affinity'
  | 'aff-svc'
  | 'aff-np'
  | 'no-ep-svc'
  | 'no-ep-np'
  | 'fw-keys'
  | 'fw-allow'
  | 'hairpin';

const PROTOS = ['tcp', 'udp', 'sctp'] as const;

function epMapName(path: Path, proto: (typeof PROTOS)[number]): SetName {
  return `${path}-ep-${proto}`;
}

const MAPS: ReadonlySet<SetName> = new Set<SetName>([
  'cluster-n',
  'ext-n',
  'ext-short-n',
  'np-n',
  'np-short-n',
  ...PATHS.flatMap((path) => PROTOS.map((p) => epMapName(path, p))),
  'affinity',
  'aff-svc',
  'aff-np',
  'no-ep-svc',
  'no-ep-np',
]);

const INTERVAL_SETS: ReadonlySet<SetName> = new Set<SetName>(['fw-allow', 'nodeport-ips']);

interface Fam {
  nf: 'ip' | 'ip6';
  addr: 'ipv4_addr' | 'ipv6_addr';
}

function fam(family: IpFamily): Fam {
  return family === 6 ? { nf: 'ip6', addr: 'ipv6_addr' } : { nf: 'ip', addr: 'ipv4_addr' };
}

function setDefs(family: IpFamily): [SetName, string][] {
  const { nf, addr } = fam(family);
  const key = `${addr} . inet_proto . inet_service`;
  return [
    ['cluster-ips', `type ${addr} ;`],
    ['cluster-keys', `type ${key} ;`],
    ['ext-cluster-keys', `type ${key} ;`],
    ['ext-local-keys', `type ${key} ;`],
    ['np-cluster-keys', 'type inet_proto . inet_service ;'],
    ['np-local-keys', 'type inet_proto . inet_service ;'],
    ['nodeport-ips', `type ${addr} ; flags interval ;`],
    ['cluster-n', `type ${key} : verdict ;`],
    ['ext-n', `type ${key} : verdict ;`],
    ['ext-short-n', `type ${key} : verdict ;`],
    ['np-n', 'type inet_proto . inet_service : verdict ;'],
    ['np-short-n', 'type inet_proto . inet_service : verdict ;'],
    // one map per path and protocol: a `typeof` with `meta l4proto . th dport` cannot be read back by nft 1.0.6
    // ("conflicting protocols specified"), which breaks any later rule that uses the map; `tcp dport` alone can
    ...PATHS.flatMap((path) =>
      PROTOS.map((p): [SetName, string] => [
        epMapName(path, p),
        path.startsWith('np')
          ? `typeof ${p} dport . numgen random mod 1024 : ${nf} daddr . ${p} dport ;`
          : `typeof ${nf} daddr . ${p} dport . numgen random mod 1024 : ${nf} daddr . ${p} dport ;`,
      ]),
    ),
    [
      'affinity',
      `type ${addr} . ${addr} . inet_proto . inet_service : ${addr} . inet_service ; flags dynamic,timeout ; size 262144 ;`,
    ],
    ['aff-svc', `type ${key} : verdict ;`],
    ['aff-np', 'type inet_proto . inet_service : verdict ;'],
    ['no-ep-svc', `type ${key} : verdict ;`],
    ['no-ep-np', 'type inet_proto . inet_service : verdict ;'],
    ['fw-keys', `type ${key} ;`],
    ['fw-allow', `type ${key} . ${addr} ; flags interval ;`],
    ['hairpin', `type ${addr} . ${addr} ;`],
  ];
}

/** Fixed chains: name -> base-chain spec (undefined for regular chains). */
function chainDefs(): [string, string | undefined][] {
  return [
    ['nat-prerouting', 'type nat hook prerouting priority -100 ; policy accept ;'],
    ['nat-output', 'type nat hook output priority -100 ; policy accept ;'],
    ['nat-postrouting', 'type nat hook postrouting priority 100 ; policy accept ;'],
    ['filter-prerouting', 'type filter hook prerouting priority -110 ; policy accept ;'],
    ['filter-output-pre', 'type filter hook output priority -110 ; policy accept ;'],
    ['filter-input', 'type filter hook input priority -1 ; policy accept ;'],
    ['filter-forward', 'type filter hook forward priority -1 ; policy accept ;'],
    ['filter-output', 'type filter hook output priority -1 ; policy accept ;'],
    ['filter-postrouting', 'type filter hook postrouting priority 90 ; policy accept ;'],
    ['services', undefined],
    ['masquerading', undefined],
    ['firewall-check', undefined],
    ['endpoints-check', undefined],
    ['affinity-record', undefined],
    ['reject-chain', undefined],
  ];
}

const L4 = 'meta l4proto { tcp, udp, sctp }';

export function affChain(timeout: number): string {
  return `aff-${timeout}`;
}

/** The `non-local source` match for ClusterIP masquerade, or undefined when detect-local has nothing to go on. */
export function nonLocalSourceMatch(config: ProxyConfigView, podCIDRs: readonly string[], family: IpFamily): string | undefined {
  const { nf } = fam(family);
  switch (config.detectLocalMode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': {
      const src = config.detectLocalMode === 'ClusterCIDR' ? config.clusterCIDRs : podCIDRs;
      const cidrs = src.filter((c) => familyOf(c) === family);
      if (cidrs.length === 0) return undefined;
      return `${nf} saddr != { ${cidrs.join(', ')} }`;
    }
    case 'BridgeInterface':
      return config.detectLocalInterface ? `iifname != "${config.detectLocalInterface}"` : undefined;
    case 'InterfaceNamePrefix':
      return config.detectLocalInterface ? `iifname != "${config.detectLocalInterface}*"` : undefined;
  }
}

/** The `local source` (pod) match used for the eTP=Local short-circuit. */
function localSourceMatch(config: ProxyConfigView, podCIDRs: readonly string[], family: IpFamily): string | undefined {
  const m = nonLocalSourceMatch(config, podCIDRs, family);
  return m?.replace(' != ', ' ');
}

export function markHex(config: ProxyConfigView): string {
  const bit = Number.isInteger(config.masqueradeBit) && config.masqueradeBit >= 0 && config.masqueradeBit <= 31 ? config.masqueradeBit : 14;
  return '0x' + ((1 << bit) >>> 0).toString(16).padStart(8, '0');
}

/** The fixed rules of every chain, for this config. */
export function chainRules(config: ProxyConfigView, podCIDRs: readonly string[], family: IpFamily): Map<string, string[]> {
  const { nf } = fam(family);
  const mark = markHex(config);
  const setMark = `meta mark set meta mark | ${mark}`;
  const key = `${nf} daddr . meta l4proto . th dport`;
  const np = `fib daddr type local ${nf} daddr @nodeport-ips`;
  const nonLocal = nonLocalSourceMatch(config, podCIDRs, family);
  const local = localSourceMatch(config, podCIDRs, family);
  const r = new Map<string, string[]>();
  r.set('nat-prerouting', ['jump services']);
  r.set('nat-output', ['jump services']);
  r.set('nat-postrouting', ['jump masquerading']);
  r.set('filter-prerouting', ['ct state new jump firewall-check']);
  r.set('filter-output-pre', ['ct state new jump firewall-check']);
  r.set('filter-input', ['ct state new jump endpoints-check', 'ct state new ct status dnat jump affinity-record']);
  r.set('filter-forward', ['ct state new jump endpoints-check']);
  r.set('filter-output', ['ct state new jump endpoints-check']);
  r.set('filter-postrouting', ['ct state new ct status dnat jump affinity-record']);
  const services: string[] = [];
  if (config.masqueradeAll) services.push(`${key} @cluster-keys ${setMark}`);
  else if (nonLocal) services.push(`${key} @cluster-keys ${nonLocal} ${setMark}`);
  services.push(`${key} @ext-cluster-keys ${setMark}`);
  services.push(`${np} meta l4proto . th dport @np-cluster-keys ${setMark}`);
  services.push(`fib saddr type local ${key} @ext-local-keys ${setMark}`);
  services.push(`fib saddr type local ${np} meta l4proto . th dport @np-local-keys ${setMark}`);
  services.push(`${L4} dnat to ${nf} saddr . ${key} map @affinity`);
  for (const src of ['fib saddr type local', ...(local ? [local] : [])]) {
    services.push(`${src} ${key} vmap @ext-short-n`);
    services.push(`${src} ${np} meta l4proto . th dport vmap @np-short-n`);
  }
  services.push(`${key} vmap @cluster-n`);
  services.push(`${key} vmap @ext-n`);
  services.push(`${np} meta l4proto . th dport vmap @np-n`);
  r.set('services', services);
  r.set('masquerading', [
    `ct status dnat ${nf} saddr . ${nf} daddr @hairpin masquerade`,
    `meta mark & ${mark} == 0x00000000 return`,
    `meta mark set meta mark ^ ${mark}`,
    'masquerade fully-random',
  ]);
  r.set('firewall-check', [`${key} @fw-keys ${key} . ${nf} saddr != @fw-allow drop`]);
  r.set('endpoints-check', [
    `${key} vmap @no-ep-svc`,
    `${np} meta l4proto . th dport vmap @no-ep-np`,
    `${nf} daddr @cluster-ips reject`,
  ]);
  const rec: string[] = [];
  for (const p of PROTOS) rec.push(`meta l4proto ${p} ct original ${nf} daddr . meta l4proto . ct original proto-dst vmap @aff-svc`);
  for (const p of PROTOS)
    rec.push(`meta l4proto ${p} ct original ${nf} daddr @nodeport-ips meta l4proto . ct original proto-dst vmap @aff-np`);
  r.set('affinity-record', rec);
  r.set('reject-chain', ['reject']);
  return r;
}

/** Rules of a dynamic chain: `aff-<T>` (affinity recording) or `<path>-<N>` (endpoint choice among N). */
export function dynChainRules(family: IpFamily, name: string): string[] {
  const { nf } = fam(family);
  const a = /^aff-(\d+)$/.exec(name);
  if (a) return affChainRules(family, Number(a[1]));
  const m = /^(cluster|ext|ext-short|np|np-short)-(\d+)$/.exec(name);
  if (!m) throw new Error(`unknown dynamic chain ${name}`);
  const path = m[1] as Path;
  return PROTOS.map((p) => {
    const key = path.startsWith('np') ? `${p} dport` : `${nf} daddr . ${p} dport`;
    return `meta l4proto ${p} dnat to ${key} . numgen random mod ${m[2]} map @${epMapName(path, p)}`;
  });
}

function affChainRules(family: IpFamily, timeout: number): string[] {
  const { nf } = fam(family);
  return PROTOS.map(
    (p) =>
      `meta l4proto ${p} update @affinity { ct original ${nf} saddr . ct original ${nf} daddr . meta l4proto . ct original proto-dst timeout ${timeout}s : ${nf} daddr . ${p} dport }`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Elements

/** One element of one set or map: `key` is the nft text before ` : `, `value` the text after (maps only). */
export interface Element {
  set: SetName;
  key: string;
  value?: string;
}

/** Formats an address for use inside an nft concatenation. */
function a(ip: string): string {
  return ip;
}

function proto(p: string): string {
  return p.toLowerCase();
}

function sortEps(eps: readonly Endpoint[]): Endpoint[] {
  return [...eps].sort((x, y) => (x.ip === y.ip ? x.port - y.port : x.ip < y.ip ? -1 : 1));
}

/**
 * The class entry `<key> : goto <path>-<N>` plus, in the path's map for the protocol, `<addr> . <port> . i` (or
 * `<port> . i` for NodePorts) -> `endpoint . port` for i = 0..N-1.
 */
function epElements(path: Path, addr: string | undefined, p: (typeof PROTOS)[number], port: number, eps: readonly Endpoint[]): Element[] {
  const sorted = sortEps(eps);
  const classKey = addr === undefined ? `${p} . ${port}` : `${a(addr)} . ${p} . ${port}`;
  const prefix = addr === undefined ? `${port}` : `${a(addr)} . ${port}`;
  const out: Element[] = [{ set: `${path}-n` as SetName, key: classKey, value: `goto ${path}-${sorted.length}` }];
  sorted.forEach((e, i) => out.push({ set: epMapName(path, p), key: `${prefix} . ${i}`, value: `${a(e.ip)} . ${e.port}` }));
  return out;
}

/** For an element of a `<path>-ep-<proto>` map: the service address key `addr . proto . port` (`*` for NodePorts). */
function epServiceKey(set: string, key: string): string | undefined {
  const m = /^(cluster|ext|ext-short|np|np-short)-ep-(tcp|udp|sctp)$/.exec(set);
  if (!m) return undefined;
  const parts = key.split(' . ');
  return m[1]!.startsWith('np') ? `* . ${m[2]} . ${parts[0]}` : `${parts[0]} . ${m[2]} . ${parts[1]}`;
}

const REJECT = 'goto reject-chain';

/** Every element one ServicePlan contributes. Pure; the order is stable. */
export function planElements(plan: ServicePlan, family: IpFamily): Element[] {
  const s = plan.svc;
  const out: Element[] = [];
  if (s.family !== family) return out;
  const p = proto(s.protocol) as (typeof PROTOS)[number];
  const wide = plan.clusterWideEndpoints ?? plan.clusterEndpoints;
  const hasAny = plan.hasAnyEndpoints ?? (plan.clusterEndpoints.length > 0 || plan.hasEndpointsElsewhere);
  const aff = plan.svc.affinityTimeoutSeconds;
  const allEps = new Set<string>();
  const noteEps = (eps: readonly Endpoint[]): void => {
    for (const e of eps) allEps.add(e.ip);
  };

  // ClusterIP
  if (s.clusterIP && familyOf(s.clusterIP) === family) {
    const k = `${a(s.clusterIP)} . ${p} . ${s.port}`;
    out.push({ set: 'cluster-ips', key: a(s.clusterIP) });
    out.push({ set: 'cluster-keys', key: k });
    if (plan.clusterEndpoints.length > 0) {
      out.push(...epElements('cluster', s.clusterIP, p, s.port, plan.clusterEndpoints));
      noteEps(plan.clusterEndpoints);
    } else out.push({ set: 'no-ep-svc', key: k, value: plan.hasEndpointsElsewhere ? 'drop' : REJECT });
    if (aff !== undefined) out.push({ set: 'aff-svc', key: k, value: `goto ${affChain(aff)}` });
  }

  // external addresses (externalIPs, LB ingress with ipMode VIP)
  const lbVips = s.loadBalancerIPs.filter((l) => l.ipMode !== 'Proxy' && familyOf(l.ip) === family).map((l) => l.ip);
  const vips = [...new Set([...s.externalIPs.filter((ip) => familyOf(ip) === family), ...lbVips])].sort();
  const local = s.externalTrafficPolicyLocal;
  const extEps = local ? plan.localEndpoints : wide;
  const extMiss = local && hasAny ? 'drop' : REJECT;
  for (const vip of vips) {
    const k = `${a(vip)} . ${p} . ${s.port}`;
    out.push({ set: local ? 'ext-local-keys' : 'ext-cluster-keys', key: k });
    if (extEps.length > 0) {
      out.push(...epElements('ext', vip, p, s.port, extEps));
      noteEps(extEps);
    } else out.push({ set: 'no-ep-svc', key: k, value: extMiss });
    if (local && wide.length > 0) {
      out.push(...epElements('ext-short', vip, p, s.port, wide));
      noteEps(wide);
    }
    if (aff !== undefined) out.push({ set: 'aff-svc', key: k, value: `goto ${affChain(aff)}` });
  }
  // loadBalancerSourceRanges apply to LB ingress addresses
  if (s.loadBalancerSourceRanges.length > 0) {
    const ranges = s.loadBalancerSourceRanges.filter((c) => familyOf(c) === family);
    for (const vip of [...new Set(lbVips)].sort()) {
      const k = `${a(vip)} . ${p} . ${s.port}`;
      out.push({ set: 'fw-keys', key: k });
      for (const r of ranges) out.push({ set: 'fw-allow', key: `${k} . ${r}` });
    }
  }

  // NodePort
  if (s.nodePort > 0) {
    const k = `${p} . ${s.nodePort}`;
    out.push({ set: local ? 'np-local-keys' : 'np-cluster-keys', key: k });
    if (extEps.length > 0) {
      out.push(...epElements('np', undefined, p, s.nodePort, extEps));
      noteEps(extEps);
    } else out.push({ set: 'no-ep-np', key: k, value: extMiss });
    if (local && wide.length > 0) {
      out.push(...epElements('np-short', undefined, p, s.nodePort, wide));
      noteEps(wide);
    }
    if (aff !== undefined) out.push({ set: 'aff-np', key: k, value: `goto ${affChain(aff)}` });
  }

  for (const ip of [...allEps].sort()) out.push({ set: 'hairpin', key: `${a(ip)} . ${a(ip)}` });
  return out;
}

/** nodeport-ips: node IPs (nodePortAddresses empty or ['primary']) or the configured CIDRs, of this family. */
export function nodePortIPs(config: ProxyConfigView, nodeIPs: readonly string[], family: IpFamily): string[] {
  const addrs = config.nodePortAddresses.filter((x) => x !== 'primary');
  const src = addrs.length === 0 ? nodeIPs : addrs;
  return [...new Set(src.filter((c) => familyOf(c) === family))].sort();
}

// ---------------------------------------------------------------------------------------------------------------
// State (what was applied last) and diffs

interface Owned {
  /** owner service key -> value ('' for set elements) */
  owners: Map<string, string>;
}

export interface NftState {
  /** config + node signature: an incremental sync is only possible when unchanged */
  sig: string;
  /** service key -> elements it contributed */
  perService: Map<string, Element[]>;
  /** `${set}\u0000${key}` -> owners; the applied value is the one of the smallest owner key */
  elements: Map<string, Owned>;
  /** dynamic chains that exist (aff-<T> and <path>-<N>) -> how many vmap elements point at them */
  dynRefs: Map<string, number>;
}

export function configSignature(input: Pick<SyncInput, 'config' | 'node' | 'family'>): string {
  return JSON.stringify([input.family, input.config, input.node.podCIDRs, input.node.ips]);
}

function appliedValue(o: Owned): string {
  let best: string | undefined;
  let val = '';
  for (const [k, v] of o.owners) {
    if (best === undefined || k < best) {
      best = k;
      val = v;
    }
  }
  return val;
}

function splitId(id: string): [SetName, string] {
  const i = id.indexOf('\u0000');
  return [id.slice(0, i) as SetName, id.slice(i + 1)];
}

function addOwner(state: NftState, svcKey: string, els: readonly Element[], touched: Set<string>): void {
  for (const e of els) {
    const id = `${e.set}\u0000${e.key}`;
    let o = state.elements.get(id);
    if (!o) {
      o = { owners: new Map() };
      state.elements.set(id, o);
    }
    o.owners.set(svcKey, e.value ?? '');
    touched.add(id);
  }
}

function removeOwner(state: NftState, svcKey: string, els: readonly Element[], touched: Set<string>): void {
  for (const e of els) {
    const id = `${e.set}\u0000${e.key}`;
    const o = state.elements.get(id);
    if (!o) continue;
    o.owners.delete(svcKey);
    if (o.owners.size === 0) state.elements.delete(id);
    touched.add(id);
  }
}

const DYN_VMAPS: ReadonlySet<string> = new Set(['aff-svc', 'aff-np', ...PATHS.map((p) => `${p}-n`)]);

/** Counts the vmap elements pointing at each dynamic chain (full syncs). */
function countDynRefs(state: NftState): Map<string, number> {
  const out = new Map<string, number>();
  for (const [id, o] of state.elements) {
    const [set] = splitId(id);
    if (!DYN_VMAPS.has(set)) continue;
    const m = /^goto ([\w-]+)$/.exec(appliedValue(o));
    if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + 1);
  }
  return out;
}

function adjustDynRef(refs: Map<string, number>, set: string, value: string | undefined, delta: number): void {
  if (value === undefined || !DYN_VMAPS.has(set)) return;
  const m = /^goto ([\w-]+)$/.exec(value);
  if (!m) return;
  const n = (refs.get(m[1]!) ?? 0) + delta;
  if (n > 0) refs.set(m[1]!, n);
  else refs.delete(m[1]!);
}

const byName = (x: string, y: string): number => x.localeCompare(y, 'en', { numeric: true });

function elemText(set: SetName, key: string, value: string): string {
  return MAPS.has(set) ? `${key} : ${value}` : key;
}

/** `add element` / `delete element` commands, chunked, grouped by set in a stable order. */
function elementCommands(verb: 'add' | 'delete', t: string, items: [SetName, string][]): string[] {
  const bySet = new Map<SetName, string[]>();
  for (const [set, text] of items) {
    let l = bySet.get(set);
    if (!l) bySet.set(set, (l = []));
    l.push(text);
  }
  const out: string[] = [];
  for (const [set] of setDefs(4)) {
    const l = bySet.get(set);
    if (!l) continue;
    l.sort();
    const chunk = INTERVAL_SETS.has(set) ? INTERVAL_CHUNK : CHUNK;
    for (let i = 0; i < l.length; i += chunk) out.push(`${verb} element ${t} ${set} { ${l.slice(i, i + chunk).join(', ')} }`);
  }
  return out;
}

export interface RenderResult {
  program: string;
  state: NftState;
  /** service keys whose affinity entries may be stale (endpoints removed, affinity dropped, service deleted) */
  affinityStale: Set<string>;
}

function chainBlock(t: string, name: string, rules: readonly string[]): string[] {
  return [`add chain ${t} ${name}`, `flush chain ${t} ${name}`, ...rules.map((r) => `add rule ${t} ${name} ${r}`)];
}

/**
 * Full sync: one transaction that (re)builds the whole table. `prev` undefined = first sync: the table is deleted and
 * recreated; otherwise every chain and set but `affinity` is flushed.
 */
export function renderFull(input: SyncInput, opts: NftRenderOptions, prev?: NftState): RenderResult {
  const family = opts.family;
  const { nf } = fam(family);
  const t = `${nf} ${opts.table}`;
  const lines: string[] = [`add table ${t}`];
  const defs = setDefs(family);
  const chains = chainDefs();
  if (!prev) lines.push(`delete table ${t}`, `add table ${t}`);
  for (const [name, spec] of chains) lines.push(spec ? `add chain ${t} ${name} { ${spec} }` : `add chain ${t} ${name}`);
  if (prev) {
    for (const [name] of chains) lines.push(`flush chain ${t} ${name}`);
    for (const c of [...prev.dynRefs.keys()].sort(byName)) lines.push(`flush chain ${t} ${c}`);
  }
  for (const [name, def] of defs) {
    const kind = MAPS.has(name) ? 'map' : 'set';
    // nft 1.0.6 cannot evaluate new rules against a `typeof ... th dport` map it read back from the kernel
    // ("conflicting protocols specified"), so those maps are recreated in the batch (their rules were flushed above)
    if (prev && def.startsWith('typeof')) lines.push(`delete ${kind} ${t} ${name}`);
    lines.push(`add ${kind} ${t} ${name} { ${def} }`);
    if (prev && name !== 'affinity' && !def.startsWith('typeof')) lines.push(`flush ${kind} ${t} ${name}`);
  }
  const state: NftState = { sig: configSignature(input), perService: new Map(), elements: new Map(), dynRefs: new Map() };
  const touched = new Set<string>();
  const keys = [...input.plans.keys()].sort();
  for (const k of keys) {
    const els = planElements(input.plans.get(k)!, family);
    state.perService.set(k, els);
    addOwner(state, k, els, touched);
  }
  for (const ip of nodePortIPs(input.config, input.node.ips, family)) addOwner(state, '', [{ set: 'nodeport-ips', key: ip }], touched);
  state.dynRefs = countDynRefs(state);
  const rules = chainRules(input.config, input.node.podCIDRs, family);
  for (const [name] of chains) for (const r of rules.get(name) ?? []) lines.push(`add rule ${t} ${name} ${r}`);
  for (const c of [...state.dynRefs.keys()].sort(byName)) lines.push(...chainBlock(t, c, dynChainRules(family, c)));
  const adds: [SetName, string][] = [];
  for (const [id, o] of state.elements) {
    const [set, key] = splitId(id);
    adds.push([set, elemText(set, key, appliedValue(o))]);
  }
  lines.push(...elementCommands('add', t, adds));
  // stale affinity chains of the previous state (their vmap elements were flushed above)
  if (prev) for (const c of [...prev.dynRefs.keys()].sort(byName)) if (!state.dynRefs.has(c)) lines.push(`delete chain ${t} ${c}`);
  const affinityStale = new Set<string>();
  if (prev) for (const k of prev.perService.keys()) affinityStale.add(k);
  return { program: lines.join('\n') + '\n', state, affinityStale };
}

function epSet(els: readonly Element[] | undefined): Set<string> {
  const out = new Set<string>();
  for (const e of els ?? []) {
    const k = epServiceKey(e.set, e.key);
    if (k && e.value) out.add(`${e.set} ${k} -> ${e.value}`);
  }
  return out;
}

/**
 * Incremental sync: only the elements of `input.changed` services. Never lists the table. Returns an empty program
 * when nothing changed in the kernel's view. Cost is proportional to the changed services only: `prev` is UPDATED IN
 * PLACE and returned as `state` (copying it would cost O(all elements) per sync); if applying the program fails, the
 * caller must drop the state and do a full sync from scratch.
 */
export function renderIncremental(input: SyncInput, opts: NftRenderOptions, prev: NftState): RenderResult {
  const family = opts.family;
  const { nf } = fam(family);
  const t = `${nf} ${opts.table}`;
  const state = prev;
  const prevDyn = new Set(prev.dynRefs.keys());
  const touched = new Set<string>();
  const before = new Map<string, string | undefined>();
  const affinityStale = new Set<string>();
  for (const k of [...input.changed].sort()) {
    const old = state.perService.get(k) ?? [];
    for (const e of old) {
      const id = `${e.set}\u0000${e.key}`;
      if (!before.has(id)) {
        const o = state.elements.get(id);
        before.set(id, o ? appliedValue(o) : undefined);
      }
    }
    const plan = input.plans.get(k);
    const els = plan ? planElements(plan, family) : [];
    for (const e of els) {
      const id = `${e.set}\u0000${e.key}`;
      if (!before.has(id)) {
        const o = state.elements.get(id);
        before.set(id, o ? appliedValue(o) : undefined);
      }
    }
    removeOwner(state, k, old, touched);
    if (plan) {
      state.perService.set(k, els);
      addOwner(state, k, els, touched);
    } else state.perService.delete(k);
    // affinity entries can go stale when an endpoint (or the affinity, or the service) goes away
    const hadAff = old.some((e) => e.set === 'aff-svc' || e.set === 'aff-np');
    if (hadAff) {
      const nowEps = epSet(els);
      const hasAff = els.some((e) => e.set === 'aff-svc' || e.set === 'aff-np');
      if (!hasAff || [...epSet(old)].some((x) => !nowEps.has(x))) affinityStale.add(k);
    }
  }
  const dels: [SetName, string][] = [];
  const adds: [SetName, string][] = [];
  for (const id of touched) {
    const [set, key] = splitId(id);
    const was = before.get(id);
    const o = state.elements.get(id);
    const now = o ? appliedValue(o) : undefined;
    if (was === now) continue;
    if (was !== undefined) dels.push([set, key]);
    if (now !== undefined) adds.push([set, elemText(set, key, now)]);
    adjustDynRef(state.dynRefs, set, was, -1);
    adjustDynRef(state.dynRefs, set, now, +1);
  }
  const lines: string[] = [];
  for (const c of [...state.dynRefs.keys()].sort(byName)) if (!prevDyn.has(c)) lines.push(...chainBlock(t, c, dynChainRules(family, c)));
  lines.push(...elementCommands('delete', t, dels));
  lines.push(...elementCommands('add', t, adds));
  for (const c of [...prevDyn].sort(byName)) if (!state.dynRefs.has(c)) lines.push(`flush chain ${t} ${c}`, `delete chain ${t} ${c}`);
  return { program: lines.length ? lines.join('\n') + '\n' : '', state, affinityStale };
}

// ---------------------------------------------------------------------------------------------------------------
// Affinity pruning

export interface AffinityEntry {
  client: string;
  vip: string;
  proto: string;
  port: number;
  endpoint: string;
  endpointPort: number;
}

/**
 * Affinity entries that must go: their (vip, proto, port) belongs to one of `staleServices` (or to no current
 * affinity service at all) and their endpoint is no longer a valid target of that address.
 */
export function staleAffinityEntries(entries: readonly AffinityEntry[], state: NftState): AffinityEntry[] {
  // valid (key -> endpoints) from the current state
  const valid = new Map<string, Set<string>>();
  const affKeys = new Set<string>();
  for (const [id, o] of state.elements) {
    const [set, key] = splitId(id);
    if (set === 'aff-svc') affKeys.add(key);
    if (set === 'aff-np') affKeys.add(`* . ${key}`);
    const k = epServiceKey(set, key);
    if (k) {
      let v = valid.get(k);
      if (!v) valid.set(k, (v = new Set()));
      v.add(appliedValue(o));
    }
  }
  return entries.filter((e) => {
    const vk = `${e.vip} . ${e.proto} . ${e.port}`;
    const nk = `* . ${e.proto} . ${e.port}`;
    const ep = `${e.endpoint} . ${e.endpointPort}`;
    if (affKeys.has(vk)) return !(valid.get(vk)?.has(ep) ?? false);
    if (affKeys.has(nk) && !valid.has(vk)) return !(valid.get(nk)?.has(ep) ?? false);
    return true;
  });
}

export function affinityDeleteProgram(opts: NftRenderOptions, entries: readonly AffinityEntry[]): string {
  const { nf } = fam(opts.family);
  const items: [SetName, string][] = entries.map((e) => ['affinity', `${e.client} . ${e.vip} . ${e.proto} . ${e.port}`]);
  const cmds = elementCommands('delete', `${nf} ${opts.table}`, items);
  return cmds.length ? cmds.join('\n') + '\n' : '';
}

export function cleanupProgram(opts: NftRenderOptions): string {
  const { nf } = fam(opts.family);
  return `add table ${nf} ${opts.table}\ndelete table ${nf} ${opts.table}\n`;
}
