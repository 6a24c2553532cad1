// Desired policy state for one node, from the model. Pure.
//
// For every pod on the node (not host-network, with an address) it decides whether the pod is isolated for ingress
// and/or egress and, if so, which rules of which policies allow traffic. A rule's peers do not depend on the target
// pod, so they are computed once per rule (SharedRule) and shared by every target; its ports may depend on the target
// (an ingress named port resolves on the target pod), so they live in the per-pod reference (PodRule).

import { createHash } from 'node:crypto';
import { compareIP, formatIP, lastOf, networkOf, parseCidr, parseIP, type Family, type IP } from '../../lib/net/ip.ts';
import {
  selectorMatches,
  type ContainerPort,
  type NamespaceInfo,
  type Peer,
  type PodInfo,
  type Policy,
  type PolicyPort,
  type PolicyRule,
  type Proto,
  type Selector,
} from './model.ts';

export interface PortRange {
  readonly proto: Proto;
  readonly from: number;
  readonly to: number;
}

export type ByFamily<T> = Readonly<Record<Family, T>>;

export interface SharedRule {
  readonly id: string;
  /** names the rule's pod-peer set: rules selecting the same peers (in the same scope) share one set */
  readonly peerKey?: string;
  readonly dir: 'ingress' | 'egress';
  /** the rule allows every peer */
  readonly all: boolean;
  /** the rule has pod/namespace selector peers: their addresses (sorted, may be empty) */
  readonly pods?: ByFamily<readonly string[]>;
  /** the rule has ipBlock peers: disjoint address ranges [lo, hi] (sorted, may be empty) */
  readonly blocks?: ByFamily<readonly (readonly [bigint, bigint])[]>;
  /** egress named ports, resolved on each destination pod: [address, protocol, port] */
  readonly named?: ByFamily<readonly (readonly [string, Proto, number])[]>;
}

export interface PodRule {
  readonly rule: string;
  /** numeric ports (undefined: every port and protocol; empty: none, only `named` of the rule can match) */
  readonly ports?: readonly PortRange[];
}

export interface LocalPod {
  readonly key: string;
  readonly ips: readonly string[];
  /** undefined: not isolated for ingress */
  readonly ingress?: readonly PodRule[];
  readonly egress?: readonly PodRule[];
}

export interface PolicyState {
  readonly pods: ReadonlyMap<string, LocalPod>;
  readonly rules: ReadonlyMap<string, SharedRule>;
}

export interface ClusterView {
  readonly policies: Iterable<Policy>;
  readonly pods: Iterable<PodInfo>;
  readonly namespaces: ReadonlyMap<string, NamespaceInfo>;
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;

export function shortHash(s: string, len = 12): string {
  return createHash('sha256').update(s).digest('hex').slice(0, len);
}

// addresses parsed once: pods keep their addresses, and every sync sorts and matches them again
const parsed = new Map<string, IP>();
function ipOf(ip: string): IP {
  let v = parsed.get(ip);
  if (!v) {
    if (parsed.size > 200_000) parsed.clear();
    v = parseIP(ip)!;
    parsed.set(ip, v);
  }
  return v;
}

/** family of an address the model already validated */
const familyOf = (ip: string): Family => ipOf(ip).family;

// ---------------------------------------------------------------------------------------------------------------
// address ranges

type Range = readonly [bigint, bigint];

function mergeRanges(rs: Range[]): Range[] {
  const sorted = [...rs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1]) {
      if (hi > last[1]) last[1] = hi;
    } else out.push([lo, hi]);
  }
  return out;
}

/** cidr minus every except inside it, as disjoint ranges; undefined when the cidr is invalid */
export function blockRanges(cidr: string, except: readonly string[]): { family: Family; ranges: Range[] } | undefined {
  const c = parseCidr(cidr);
  if (!c) return undefined;
  let ranges: Range[] = [[networkOf(c).value, lastOf(c).value]];
  for (const e of except) {
    const x = parseCidr(e);
    if (!x || x.ip.family !== c.ip.family) continue;
    const [xl, xh] = [networkOf(x).value, lastOf(x).value];
    const next: Range[] = [];
    for (const [lo, hi] of ranges) {
      if (xh < lo || xl > hi) {
        next.push([lo, hi]);
        continue;
      }
      if (xl > lo) next.push([lo, xl - 1n]);
      if (xh < hi) next.push([xh + 1n, hi]);
    }
    ranges = next;
  }
  return { family: c.ip.family, ranges };
}

export function rangeContains(rs: readonly Range[], family: Family, ip: string): boolean {
  const p = parseIP(ip);
  if (!p || p.family !== family) return false;
  return rs.some(([lo, hi]) => p.value >= lo && p.value <= hi);
}

export function formatRange([lo, hi]: Range, family: Family): string {
  const a = formatIP({ family, value: lo });
  return lo === hi ? a : `${a}-${formatIP({ family, value: hi })}`;
}

// ---------------------------------------------------------------------------------------------------------------
// ports

const ALL_PORTS = (proto: Proto): PortRange => ({ proto, from: 0, to: 65535 });

/** Numeric port entries; a named one resolves on `pod` (ingress: the target; undefined: cannot resolve here). */
function numericPorts(ports: readonly PolicyPort[], pod: PodInfo | undefined): PortRange[] {
  const out: PortRange[] = [];
  for (const p of ports) {
    if (p.port === undefined) out.push(ALL_PORTS(p.protocol));
    else if (typeof p.port === 'number') out.push({ proto: p.protocol, from: p.port, to: p.endPort ?? p.port });
    else if (pod) {
      for (const cp of pod.ports) if (cp.name === p.port && cp.protocol === p.protocol) out.push({ proto: p.protocol, from: cp.port, to: cp.port });
    }
  }
  return normalizePorts(out);
}

// a rule's ports for a target pod, kept while the rule and the pod's named ports are the same objects (across syncs)
const portMemo = new WeakMap<PolicyRule, { fixed?: PortRange[]; byPod: WeakMap<readonly ContainerPort[], PortRange[]> }>();

function portsFor(rule: PolicyRule, pod: PodInfo | undefined): PortRange[] {
  let m = portMemo.get(rule);
  if (!m) portMemo.set(rule, (m = { byPod: new WeakMap() }));
  // without named ports (or without a pod to resolve them on) every target gets the same list
  if (!pod || !rule.ports.some((p) => typeof p.port === 'string')) return (m.fixed ??= numericPorts(rule.ports, pod));
  let out = m.byPod.get(pod.ports);
  if (!out) m.byPod.set(pod.ports, (out = numericPorts(rule.ports, pod)));
  return out;
}

export function normalizePorts(ps: readonly PortRange[]): PortRange[] {
  const out: PortRange[] = [];
  for (const proto of ['TCP', 'UDP', 'SCTP'] as const) {
    const rs = ps.filter((p) => p.proto === proto).sort((a, b) => a.from - b.from);
    let cur: { proto: Proto; from: number; to: number } | undefined;
    for (const r of rs) {
      if (cur && r.from <= cur.to) cur.to = Math.max(cur.to, r.to);
      else {
        if (cur) out.push(cur);
        cur = { ...r };
      }
    }
    if (cur) out.push(cur);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

interface Index {
  byNamespace: Map<string, PodInfo[]>;
  /** "key\0value" -> pods carrying that label */
  byLabel: Map<string, PodInfo[]>;
  all: PodInfo[];
  namespaces: ReadonlyMap<string, NamespaceInfo>;
}

/** Pods that can be peers: with an address, not host-network (their address is the node's). */
const peerable = (p: PodInfo): boolean => p.ips.length > 0 && !p.hostNetwork;

function index(pods: Iterable<PodInfo>, namespaces: ReadonlyMap<string, NamespaceInfo>): Index {
  const byNamespace = new Map<string, PodInfo[]>();
  const byLabel = new Map<string, PodInfo[]>();
  const all: PodInfo[] = [];
  const push = <K>(m: Map<K, PodInfo[]>, k: K, p: PodInfo): void => {
    const l = m.get(k);
    if (l) l.push(p);
    else m.set(k, [p]);
  };
  for (const p of pods) {
    if (!peerable(p)) continue;
    all.push(p);
    push(byNamespace, p.namespace, p);
    for (const [k, v] of Object.entries(p.labels)) push(byLabel, `${k}\0${v}`, p);
  }
  return { byNamespace, byLabel, all, namespaces };
}

/** Pods matching a selector and a namespace filter; an equality requirement narrows the scan through the label index. */
function matchPods(sel: Selector, inNamespace: (ns: string) => boolean, idx: Index, scope?: readonly PodInfo[]): PodInfo[] {
  if (sel.invalid) return [];
  const eq = sel.requirements.find((r) => r.operator === 'In');
  const candidates = eq ? eq.values.flatMap((v) => idx.byLabel.get(`${eq.key}\0${v}`) ?? []) : (scope ?? idx.all);
  return candidates.filter((p) => inNamespace(p.namespace) && selectorMatches(sel, p.labels));
}

function selectorPeers(peer: Extract<Peer, { kind: 'pods' }>, policyNs: string, idx: Index): PodInfo[] {
  let inNamespace: (ns: string) => boolean;
  const nsSel = peer.namespaceSelector;
  if (nsSel) {
    const matching = new Set<string>();
    for (const [name, info] of idx.namespaces) if (selectorMatches(nsSel, info.labels)) matching.add(name);
    inNamespace = (ns) => matching.has(ns);
  } else inNamespace = (ns) => ns === policyNs;
  return matchPods(peer.podSelector ?? { requirements: [] }, inNamespace, idx, nsSel ? undefined : (idx.byNamespace.get(policyNs) ?? []));
}

type PeerCache = Map<string, { selected: PodInfo[]; pods: ByFamily<string[]> }>;

// a rule's id and peer-set key, kept while the rule is the same object (a policy's update parses new rules): two
// hashes and a JSON text per rule and sync were a fifth of a sync's compute at 1,000 policies
const ruleKeys = new WeakMap<PolicyRule, { id: string; peerKey?: string }>();

function shareRule(policy: Policy, dir: 'ingress' | 'egress', i: number, rule: PolicyRule, idx: Index, cache: PeerCache): SharedRule {
  let keys = ruleKeys.get(rule);
  if (!keys) {
    const pp = rule.peers?.filter((p) => p.kind === 'pods') ?? [];
    const scope = pp.some((p) => !p.namespaceSelector) ? policy.namespace : '';
    keys = { id: shortHash(`${policy.namespace}/${policy.name}/${dir}/${i}`, 10), ...(pp.length ? { peerKey: shortHash(JSON.stringify([scope, pp]), 10) } : {}) };
    ruleKeys.set(rule, keys);
  }
  const id = keys.id;
  const named = dir === 'egress' ? rule.ports.filter((p) => typeof p.port === 'string') : [];
  if (!rule.peers) {
    const out: SharedRule = { id, dir, all: true };
    if (!named.length) return out;
    return { ...out, named: namedElements(idx.all, named) };
  }
  const podPeers = rule.peers.filter((p): p is Extract<Peer, { kind: 'pods' }> => p.kind === 'pods');
  const blockPeers = rule.peers.filter((p): p is Extract<Peer, { kind: 'ipBlock' }> => p.kind === 'ipBlock');
  let selected: PodInfo[] = [];
  let pods: ByFamily<string[]> | undefined;
  let peerKey: string | undefined;
  if (podPeers.length) {
    peerKey = keys.peerKey!;
    let hit = cache.get(peerKey);
    if (!hit) {
      const seen = new Set<PodInfo>();
      for (const pp of podPeers) for (const p of selectorPeers(pp, policy.namespace, idx)) seen.add(p);
      const f: Record<Family, Set<string>> = { 4: new Set(), 6: new Set() };
      for (const p of seen) for (const ip of p.ips) f[familyOf(ip)].add(ip);
      cache.set(peerKey, (hit = { selected: [...seen], pods: { 4: sortIPs([...f[4]]), 6: sortIPs([...f[6]]) } }));
    }
    selected = hit.selected;
    pods = hit.pods;
  }
  let blocks: ByFamily<Range[]> | undefined;
  if (blockPeers.length) {
    const f: Record<Family, Range[]> = { 4: [], 6: [] };
    for (const b of blockPeers) {
      const r = blockRanges(b.block.cidr, b.block.except);
      if (r) f[r.family].push(...r.ranges);
    }
    blocks = { 4: mergeRanges(f[4]), 6: mergeRanges(f[6]) };
  }
  const out: SharedRule = { id, dir, all: false, ...(pods ? { pods, peerKey: peerKey! } : {}), ...(blocks ? { blocks } : {}) };
  if (!named.length) return out;
  // a named port on an ipBlock peer can only mean the pods inside the block
  const inBlocks = blocks ? idx.all.filter((p) => p.ips.some((ip) => rangeContains(blocks[familyOf(ip)], familyOf(ip), ip))) : [];
  return { ...out, named: namedElements([...new Set([...selected, ...inBlocks])], named) };
}

function namedElements(pods: readonly PodInfo[], named: readonly PolicyPort[]): ByFamily<[string, Proto, number][]> {
  const out: Record<Family, [string, Proto, number][]> = { 4: [], 6: [] };
  const seen = new Set<string>();
  for (const p of pods) {
    for (const n of named) {
      for (const cp of p.ports) {
        if (cp.name !== n.port || cp.protocol !== n.protocol) continue;
        for (const ip of p.ips) {
          const k = `${ip} ${cp.protocol} ${cp.port}`;
          if (seen.has(k)) continue;
          seen.add(k);
          out[familyOf(ip)].push([ip, cp.protocol, cp.port]);
        }
      }
    }
  }
  for (const f of [4, 6] as const) out[f].sort((a, b) => cmpIP(a[0], b[0]) || a[1].localeCompare(b[1]) || a[2] - b[2]);
  return out;
}

const cmpIP = (a: string, b: string): number => compareIP(ipOf(a), ipOf(b));

/** sorted by address, each parsed once */
function sortIPs(ips: string[]): string[] {
  return ips
    .map((ip) => ({ ip, p: ipOf(ip) }))
    .sort((a, b) => compareIP(a.p, b.p))
    .map((x) => x.ip);
}


/** The desired state for the pods on `nodeName`. */
export function computeState(view: ClusterView, nodeName: string): PolicyState {
  const idx = index(view.pods, view.namespaces);
  const localIdx = index(
    idx.all.filter((p) => p.nodeName === nodeName),
    view.namespaces,
  );
  const local = localIdx.all;
  const policies = [...view.policies].sort((a, b) => podKey(a).localeCompare(podKey(b)));
  const rules = new Map<string, SharedRule>();
  const pods = new Map<string, LocalPod>();
  const acc = new Map<PodInfo, { ingress?: PodRule[]; egress?: PodRule[] }>();
  const peerCache: PeerCache = new Map();
  for (const pol of policies) {
    const targets = matchPods(pol.podSelector, (ns) => ns === pol.namespace, localIdx, localIdx.byNamespace.get(pol.namespace) ?? []);
    if (!targets.length) continue;
    for (const dir of ['ingress', 'egress'] as const) {
      const prs = pol[dir];
      if (!prs) continue;
      const shared = prs.map((r, i) => ({ r, s: shareRule(pol, dir, i, r, idx, peerCache) }));
      for (const t of targets) {
        let a = acc.get(t);
        if (!a) acc.set(t, (a = {}));
        const list = (a[dir] ??= []);
        for (const { r, s } of shared) {
          // ingress named ports resolve on the target pod; egress ones on the destination (SharedRule.named)
          const ports = r.ports.length ? portsFor(r, dir === 'ingress' ? t : undefined) : undefined;
          if (ports && !ports.length && !s.named) continue;
          rules.set(s.id, s);
          list.push(ports ? { rule: s.id, ports } : { rule: s.id });
        }
      }
    }
  }
  for (const p of local) {
    const a = acc.get(p);
    const key = podKey(p);
    pods.set(key, { key, ips: sortIPs([...p.ips]), ...(a?.ingress ? { ingress: a.ingress } : {}), ...(a?.egress ? { egress: a.egress } : {}) });
  }
  return { pods, rules };
}

// ---------------------------------------------------------------------------------------------------------------
// the reference decision, used for conntrack cleanup and to check the rendered ruleset

export interface Flow {
  readonly src: string;
  /** the real destination (after DNAT) */
  readonly dst: string;
  /** 'tcp' | 'udp' | 'sctp' | anything else (icmp, ...) */
  readonly proto: string;
  readonly dport?: number;
}

function portsMatch(ports: readonly PortRange[] | undefined, proto: string, dport: number | undefined): boolean {
  if (!ports) return true;
  return ports.some((p) => p.proto.toLowerCase() === proto && dport !== undefined && dport >= p.from && dport <= p.to);
}

function peerMatch(r: SharedRule, ip: string): boolean {
  if (r.all) return true;
  const f = familyOf(ip);
  if (r.pods?.[f].includes(ip)) return true;
  return !!r.blocks && rangeContains(r.blocks[f], f, ip);
}

function ruleAllows(state: PolicyState, pr: PodRule, peer: string, proto: string, dport: number | undefined): boolean {
  const r = state.rules.get(pr.rule);
  if (!r) return false;
  if (pr.ports?.length !== 0 && peerMatch(r, peer) && portsMatch(pr.ports, proto, dport)) return true;
  const f = familyOf(peer);
  return !!r.named?.[f].some(([ip, p, port]) => ip === peer && p.toLowerCase() === proto && port === dport);
}

export function localPodByIP(state: PolicyState): Map<string, LocalPod> {
  const m = new Map<string, LocalPod>();
  for (const p of state.pods.values()) for (const ip of p.ips) m.set(ip, p);
  return m;
}

/**
 * Would this new flow be allowed on this node? Checks the egress of a local source pod and the ingress of a local
 * destination pod; traffic from the node's own addresses is never filtered (it does not cross the forward hook).
 */
export function flowAllowed(state: PolicyState, flow: Flow, nodeIPs: ReadonlySet<string>, byIP = localPodByIP(state)): boolean {
  const src = byIP.get(flow.src);
  if (src?.egress && !src.egress.some((pr) => ruleAllows(state, pr, flow.dst, flow.proto, flow.dport))) return false;
  if (nodeIPs.has(flow.src)) return true;
  const dst = byIP.get(flow.dst);
  if (dst?.ingress && !dst.ingress.some((pr) => ruleAllows(state, pr, flow.src, flow.proto, flow.dport))) return false;
  return true;
}
