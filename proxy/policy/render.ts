// PolicyState -> the nftables table `inet <name>` (default flatnet-policy). Pure.
//
//   chain forward (hook forward, priority filter)     chain input (hook input, priority filter)
//     ct state established,related accept               ct state established,related accept
//     ct state new, TCP without SYN -> jump nonsyn       ct state new, TCP without SYN -> jump nonsyn
//     ip saddr vmap @eg4   (egress-isolated pods)        ip saddr vmap @eg4    (pod -> the node itself)
//     ip6 saddr vmap @eg6                               ip6 saddr vmap @eg6
//     ip daddr vmap @ing4  (ingress-isolated pods)
//     ip6 daddr vmap @ing6
//
// An isolated pod jumps to a chain per direction, one line per allowing rule, `return` when it matches, `drop` at the
// end; the chain is named by a hash of its rules (`in-<hash>`, `eg-<hash>`), so the pods under the same policies (the
// replicas of a workload) share one chain and the number of chains does not grow with the pods. Selected peer pods are
// a named set (`s<hash>-4`/`-6`) named by the selectors and their scope, shared by every rule selecting the same peers,
// so a pod coming, going or relabelled is one element add/delete per distinct selector; ipBlocks (cidr minus except, as disjoint ranges) are anonymous
// sets in the line, ports `meta l4proto . th dport { tcp . 80, tcp . 8000-8080 }`. Egress named ports resolve on the
// destination: a set `r<id>-n4` of `address . protocol . port`. Forward runs after nat prerouting (dstnat), so every
// match sees the real peer after Service DNAT, whatever the proxy mode.
//
// `nonsyn` drops a new TCP flow that does not start with SYN to or from an isolated pod: after a policy change deletes
// a flow's conntrack entry, its next packets (either direction) must not recreate it mid-stream.

import { NftTransaction } from '../../lib/nft/transaction.ts';
import { familyOf as ipFamily, type Family } from '../../lib/net/ip.ts';
import { formatRange, shortHash, type PodRule, type PolicyState, type PortRange, type SharedRule } from './compute.ts';

export const DEFAULT_TABLE = 'flatnet-policy';
const familyOf = (ip: string): Family => ipFamily(ip) ?? 4;
const FAM = 'inet' as const;

export interface RenderedSet {
  readonly type: string;
  /** value type for maps */
  readonly map?: string;
  /** key text -> value text ('' in sets) */
  readonly elements: ReadonlyMap<string, string>;
}

export interface Rendered {
  readonly sets: ReadonlyMap<string, RenderedSet>;
  /** regular (non-base) chains and their rules */
  readonly chains: ReadonlyMap<string, readonly string[]>;
}

const ADDR: Record<Family, string> = { 4: 'ipv4_addr', 6: 'ipv6_addr' };
const IPK: Record<Family, string> = { 4: 'ip', 6: 'ip6' };

/** sets and maps that always exist; their elements change */
const STATIC_SETS: Record<string, { type: string; map?: string }> = {
  ing4: { type: 'ipv4_addr', map: 'verdict' },
  ing6: { type: 'ipv6_addr', map: 'verdict' },
  eg4: { type: 'ipv4_addr', map: 'verdict' },
  eg6: { type: 'ipv6_addr', map: 'verdict' },
  iso4: { type: 'ipv4_addr' },
  iso6: { type: 'ipv6_addr' },
};

const NONSYN = 'ct state new tcp flags & (fin | syn | rst | ack) != syn jump nonsyn';
const NONSYN_RULES = ['ip saddr @iso4 drop', 'ip daddr @iso4 drop', 'ip6 saddr @iso6 drop', 'ip6 daddr @iso6 drop'];
const FORWARD_RULES = [
  'ct state established,related accept',
  NONSYN,
  'ip saddr vmap @eg4',
  'ip6 saddr vmap @eg6',
  'ip daddr vmap @ing4',
  'ip6 daddr vmap @ing6',
];
const INPUT_RULES = ['ct state established,related accept', NONSYN, 'ip saddr vmap @eg4', 'ip6 saddr vmap @eg6'];

/** a chain is named by its rules: pods under the same policies (the replicas of one workload) share it */
const chainName = (dir: 'ingress' | 'egress', rules: readonly string[]): string => `${dir === 'ingress' ? 'in' : 'eg'}-${shortHash(rules.join('\n'))}`;

// port lists keep their identity across syncs (compute.ts memoizes them per rule and pod): render each once
const portsText = new WeakMap<readonly PortRange[], string>();

/** `meta l4proto . th dport { ... }`; '' for every port of every protocol */
export function portsMatch(ports: readonly PortRange[] | undefined): string {
  if (!ports) return '';
  let t = portsText.get(ports);
  if (t === undefined) {
    const els = ports.map((p) => `${p.proto.toLowerCase()} . ${p.from === p.to ? p.from : `${p.from}-${p.to}`}`);
    portsText.set(ports, (t = `meta l4proto . th dport { ${els.join(', ')} }`));
  }
  return t;
}

const join = (...parts: string[]): string => parts.filter(Boolean).join(' ');

function chainRules(
  dir: 'ingress' | 'egress',
  families: readonly Family[],
  prs: readonly PodRule[],
  rules: ReadonlyMap<string, SharedRule>,
  useSet: (name: string, spec: { type: string }, elements: () => Map<string, string>) => void,
): string[] {
  const peer = dir === 'ingress' ? 'saddr' : 'daddr';
  const out: string[] = [];
  for (const pr of prs) {
    const r = rules.get(pr.rule);
    if (!r) continue;
    if (pr.ports?.length !== 0) {
      const pm = portsMatch(pr.ports);
      if (r.all) out.push(join(pm, 'return'));
      for (const f of families) {
        if (r.pods) {
          const name = `s${r.peerKey}-${f}`;
          useSet(name, { type: ADDR[f] }, () => new Map(r.pods![f].map((ip) => [ip, ''])));
          out.push(join(`${IPK[f]} ${peer} @${name}`, pm, 'return'));
        }
        if (r.blocks?.[f].length) out.push(join(`${IPK[f]} ${peer} { ${r.blocks[f].map((x) => formatRange(x, f)).join(', ')} }`, pm, 'return'));
      }
    }
    if (r.named) {
      for (const f of families) {
        const name = `r${r.id}-n${f}`;
        useSet(name, { type: `${ADDR[f]} . inet_proto . inet_service` }, () => new Map(r.named![f].map(([ip, p, port]) => [`${ip} . ${p.toLowerCase()} . ${port}`, ''])));
        out.push(`${IPK[f]} daddr . meta l4proto . th dport @${name} return`);
      }
    }
  }
  out.push('drop');
  // lines after an unconditional return are unreachable
  const stop = out.indexOf('return');
  return stop >= 0 ? out.slice(0, stop + 1) : out;
}

export function render(state: PolicyState): Rendered {
  const sets = new Map<string, { type: string; map?: string; elements: Map<string, string> }>();
  for (const [name, spec] of Object.entries(STATIC_SETS)) sets.set(name, { ...spec, elements: new Map() });
  const chains = new Map<string, string[]>();
  chains.set('nonsyn', NONSYN_RULES);
  // a rule's sets are shared by all its targets: build their elements once
  const useSet = (name: string, spec: { type: string }, elements: () => Map<string, string>): void => {
    if (!sets.has(name)) sets.set(name, { ...spec, elements: elements() });
  };
  const chainMemo = new Map<string, { rules: string[]; chain: string }>();
  const keys = [...state.pods.keys()].sort();
  for (const key of keys) {
    const pod = state.pods.get(key)!;
    const families = ([4, 6] as const).filter((f) => pod.ips.some((ip) => familyOf(ip) === f));
    for (const dir of ['ingress', 'egress'] as const) {
      const prs = pod[dir];
      if (!prs) continue;
      // replicas have the same rule references: render their chain once
      const memoKey = `${dir}|${families.join('')}|${prs.map((pr) => `${pr.rule}:${portsMatch(pr.ports)}${pr.ports?.length === 0 ? '-' : ''}`).join('|')}`;
      let memo = chainMemo.get(memoKey);
      if (!memo) {
        const rules = chainRules(dir, families, prs, state.rules, useSet);
        memo = { rules, chain: chainName(dir, rules) };
        chainMemo.set(memoKey, memo);
        chains.set(memo.chain, rules);
      }
      const chain = memo.chain;
      for (const ip of pod.ips) sets.get(`${dir === 'ingress' ? 'ing' : 'eg'}${familyOf(ip)}`)!.elements.set(ip, `jump ${chain}`);
    }
    if (pod.ingress || pod.egress) for (const ip of pod.ips) sets.get(`iso${familyOf(ip)}`)!.elements.set(ip, '');
  }
  return { sets, chains };
}

const elementText = (k: string, v: string): string => (v ? `${k} : ${v}` : k);

function declareSet(tx: NftTransaction, table: string, name: string, s: RenderedSet): void {
  tx.addSet(FAM, table, name, { type: s.type, ...(s.map ? { map: s.map } : {}) });
}

/**
 * The whole table, replacing whatever exists in one transaction: rules of a previous run stay in force until this
 * commits, and no packet ever sees a half-built table.
 */
export function fullProgram(table: string, r: Rendered): NftTransaction {
  const tx = new NftTransaction();
  tx.addTable(FAM, table).deleteTable(FAM, table).addTable(FAM, table, 'flatnet NetworkPolicy');
  for (const [name, s] of r.sets) declareSet(tx, table, name, s);
  for (const name of r.chains.keys()) tx.addChain(FAM, table, name);
  tx.addChain(FAM, table, 'forward', { type: 'filter', hook: 'forward', priority: 'filter', policy: 'accept' });
  tx.addChain(FAM, table, 'input', { type: 'filter', hook: 'input', priority: 'filter', policy: 'accept' });
  for (const [name, rules] of r.chains) for (const rule of rules) tx.addRule(FAM, table, name, rule);
  for (const [name, s] of r.sets) if (s.elements.size) tx.addElements(FAM, table, name, [...s.elements].map(([k, v]) => elementText(k, v)));
  for (const rule of FORWARD_RULES) tx.addRule(FAM, table, 'forward', rule);
  for (const rule of INPUT_RULES) tx.addRule(FAM, table, 'input', rule);
  return tx;
}

export interface Diff {
  readonly tx: NftTransaction;
  /** something may now be denied that was allowed: established flows must be re-checked */
  readonly restricts: boolean;
  readonly elementsAdded: number;
  readonly elementsDeleted: number;
  readonly chainsWritten: number;
}

const sameRules = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The transaction turning `prev` (what the kernel holds) into `next`, element by element and chain by chain. */
export function diffProgram(table: string, prev: Rendered, next: Rendered): Diff {
  const tx = new NftTransaction();
  let restricts = false;
  let added = 0;
  let deleted = 0;
  let written = 0;
  // 1. new sets and chains are declared first, so that rules and map elements can refer to them
  for (const [name, s] of next.sets) {
    const old = prev.sets.get(name);
    if (!old) declareSet(tx, table, name, s);
    else if (old.type !== s.type || old.map !== s.map) throw new Error(`set ${name} changed type`);
  }
  for (const name of next.chains.keys()) if (!prev.chains.has(name)) tx.addChain(FAM, table, name);
  // 2. rules of new and changed chains (a chain is rewritten whole in the same transaction: no window)
  for (const [name, rules] of next.chains) {
    const old = prev.chains.get(name);
    if (old && sameRules(old, rules)) continue;
    if (old) tx.flushChain(FAM, table, name);
    for (const rule of rules) tx.addRule(FAM, table, name, rule);
    written++;
    // a new chain can only restrict (a newly isolated pod); a changed one may
    restricts = true;
  }
  // 3. elements: deletions (and changed map values) before additions
  for (const [name, s] of next.sets) {
    const old = prev.sets.get(name);
    const dels: string[] = [];
    const adds: string[] = [];
    for (const [k, v] of old?.elements ?? []) {
      const nv = s.elements.get(k);
      if (nv === undefined || nv !== v) dels.push(k);
    }
    for (const [k, v] of s.elements) if (old?.elements.get(k) !== v) adds.push(elementText(k, v));
    if (dels.length) {
      tx.deleteElements(FAM, table, name, dels);
      deleted += dels.length;
      // a peer gone from an allow set, or a pod whose verdict changed
      restricts = true;
    }
    if (adds.length) {
      tx.addElements(FAM, table, name, adds);
      added += adds.length;
      if (name.startsWith('ing') || name.startsWith('eg') || name.startsWith('iso')) restricts = true;
    }
  }
  // 4. chains and sets no longer wanted: map elements pointing at them went in 3
  for (const name of prev.chains.keys()) {
    if (next.chains.has(name)) continue;
    tx.flushChain(FAM, table, name).deleteChain(FAM, table, name);
  }
  for (const [name, s] of prev.sets) {
    if (next.sets.has(name)) continue;
    tx.deleteSet(FAM, table, name, !!s.map);
    if (s.elements.size) restricts = true;
  }
  return { tx, restricts, elementsAdded: added, elementsDeleted: deleted, chainsWritten: written };
}

/** Removes the table (a disabled feature, `--cleanup`). */
export function deleteProgram(table: string): NftTransaction {
  return new NftTransaction().addTable(FAM, table).deleteTable(FAM, table);
}
