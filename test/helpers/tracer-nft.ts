// A strict model of the nft programs the nftables proxy backend emits, and a packet tracer over it.
//
// NftModel.apply(program) applies one `nft -f` transaction atomically to a copy (like the kernel): it rejects
// deleting missing tables/chains/elements, overlapping intervals in a map, jumps to missing chains, deleting a chain
// that a verdict map still points to, and any command or rule shape it does not know. trace() walks a packet through
// the hooks (prerouting/output -> input/forward -> postrouting) and returns every possible outcome: numgen-based
// endpoint choice forks the trace, each branch carrying its share of the 1024 buckets.

import { isIP } from 'node:net';

export type Proto = 'tcp' | 'udp' | 'sctp';

interface NftSet {
  isMap: boolean;
  def: string;
  /** key text -> value text ('' for sets) */
  elements: Map<string, string>;
  /** dynamic entries (update statements); key -> value */
  dynamic: boolean;
}

interface NftChain {
  base?: { type: string; hook: string; priority: number };
  rules: string[];
}

interface NftTable {
  family: 'ip' | 'ip6';
  name: string;
  chains: Map<string, NftChain>;
  sets: Map<string, NftSet>;
}

export interface Packet {
  src: string;
  dst: string;
  proto: Proto;
  dport: number;
  /** 'remote': arrives on an interface; 'host': created by a process on the node */
  origin: 'remote' | 'host';
  iif?: string;
}

export interface Outcome {
  verdict: 'accept' | 'drop' | 'reject';
  /** destination after DNAT (unchanged when not DNATed) */
  dst: string;
  dport: number;
  dnat: boolean;
  masquerade: boolean;
  /** buckets out of 1024 leading here (1024 when no random choice was involved) */
  weight: number;
  /** affinity timeout recorded for this connection, when any */
  affinityTimeout?: number;
  /** the affinity element this connection would write (pass the outcome to NftModel.remember) */
  affinityEntry?: { key: string; value: string };
}

export interface TraceEnv {
  /** addresses owned by the node (fib ... type local) */
  localAddrs: string[];
}

interface Ctx {
  saddr: string;
  daddr: string;
  proto: Proto;
  dport: number;
  origSaddr: string;
  origDaddr: string;
  origDport: number;
  mark: number;
  dnatted: boolean;
  iif: string;
  masq: boolean;
  weight: number;
  affinity?: { key: string; value: string; timeout: number };
}

type Verdict = 'continue' | 'accept' | 'drop' | 'reject' | 'return' | { jump: string; goto: boolean };

class TraceError extends Error {}

function fail(msg: string): never {
  throw new TraceError(msg);
}

// ---------------------------------------------------------------------------------------------------------------
// address helpers

function ipToBig(ip: string): bigint {
  if (isIP(ip) === 4) return ip.split('.').reduce((acc, o) => (acc << 8n) + BigInt(Number(o)), 0n);
  if (isIP(ip) === 6) {
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const parts = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    return parts.reduce((acc, x) => (acc << 16n) + BigInt(parseInt(x || '0', 16)), 0n);
  }
  return fail(`not an IP address: ${ip}`);
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, lenS] = cidr.split('/');
  if (isIP(ip) !== isIP(net!)) return false;
  const bits = isIP(ip) === 4 ? 32 : 128;
  const len = lenS === undefined ? bits : Number(lenS);
  const shift = BigInt(bits - len);
  return ipToBig(ip) >> shift === ipToBig(net!) >> shift;
}

/** Does one field of an element key (exact, CIDR or lo-hi range) match a value? */
function fieldMatch(pattern: string, value: string): boolean {
  if (pattern.includes('/')) return inCidr(value, pattern);
  const r = /^(\d+)-(\d+)$/.exec(pattern);
  if (r) return Number(value) >= Number(r[1]) && Number(value) <= Number(r[2]);
  if (isIP(pattern) && isIP(value)) return ipToBig(pattern) === ipToBig(value) && isIP(pattern) === isIP(value);
  return pattern === value;
}

function keyMatch(key: string, values: string[]): boolean {
  const parts = key.split(' . ');
  if (parts.length !== values.length) return false;
  return parts.every((p, i) => fieldMatch(p, values[i]!));
}

function rangeOf(part: string): [number, number] | undefined {
  const r = /^(\d+)-(\d+)$/.exec(part);
  return r ? [Number(r[1]), Number(r[2])] : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// the model

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function cloneTables(t: Map<string, NftTable>): Map<string, NftTable> {
  const out = new Map<string, NftTable>();
  for (const [k, v] of t) {
    const chains = new Map<string, NftChain>();
    for (const [cn, c] of v.chains) chains.set(cn, { base: c.base, rules: [...c.rules] });
    const sets = new Map<string, NftSet>();
    for (const [sn, s] of v.sets) sets.set(sn, { ...s, elements: new Map(s.elements) });
    out.set(k, { ...v, chains, sets });
  }
  return out;
}

export class NftModel {
  tables = new Map<string, NftTable>();
  /** every transaction applied, in order */
  readonly history: string[] = [];

  /** Apply one transaction atomically; throws (leaving the model unchanged) on anything the kernel would refuse. */
  apply(program: string): void {
    const next = cloneTables(this.tables);
    const lines = program.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
    for (const line of lines) this.command(next, line.trim());
    // validate references
    for (const t of next.values()) {
      for (const [cn, c] of t.chains) {
        for (const r of c.rules) {
          for (const m of r.matchAll(/\b(?:jump|goto) ([\w-]+)/g))
            if (!t.chains.has(m[1]!)) fail(`chain ${cn}: jump to missing chain ${m[1]}`);
          for (const m of r.matchAll(/@([\w-]+)/g)) if (!t.sets.has(m[1]!)) fail(`chain ${cn}: reference to missing set ${m[1]}`);
        }
      }
      for (const [sn, s] of t.sets)
        for (const v of s.elements.values())
          for (const m of v.matchAll(/\b(?:jump|goto) ([\w-]+)/g))
            if (!t.chains.has(m[1]!)) fail(`map ${sn}: verdict to missing chain ${m[1]}`);
    }
    this.tables = next;
    this.history.push(program);
  }

  private table(tables: Map<string, NftTable>, fam: string, name: string): NftTable {
    const t = tables.get(`${fam} ${name}`);
    if (!t) fail(`no such table ${fam} ${name}`);
    return t;
  }

  private command(tables: Map<string, NftTable>, line: string): void {
    let m: RegExpExecArray | null;
    if ((m = /^add table (ip6?) ([\w-]+)$/.exec(line))) {
      const id = `${m[1]} ${m[2]}`;
      if (!tables.has(id)) tables.set(id, { family: m[1] as 'ip' | 'ip6', name: m[2]!, chains: new Map(), sets: new Map() });
      return;
    }
    if ((m = /^delete table (ip6?) ([\w-]+)$/.exec(line))) {
      this.table(tables, m[1]!, m[2]!);
      tables.delete(`${m[1]} ${m[2]}`);
      return;
    }
    if ((m = /^add chain (ip6?) ([\w-]+) ([\w-]+)(?: \{ type (nat|filter) hook (\w+) priority (-?\d+) ; policy accept ; \})?$/.exec(line))) {
      const t = this.table(tables, m[1]!, m[2]!);
      const base = m[4] ? { type: m[4], hook: m[5]!, priority: Number(m[6]) } : undefined;
      const c = t.chains.get(m[3]!);
      if (c) {
        if (base && JSON.stringify(base) !== JSON.stringify(c.base)) fail(`chain ${m[3]} redefined with a different hook`);
      } else t.chains.set(m[3]!, { base, rules: [] });
      return;
    }
    if ((m = /^(flush|delete) chain (ip6?) ([\w-]+) ([\w-]+)$/.exec(line))) {
      const t = this.table(tables, m[2]!, m[3]!);
      const c = t.chains.get(m[4]!);
      if (!c) fail(`${m[1]} chain: no such chain ${m[4]}`);
      if (m[1] === 'flush') c.rules = [];
      else {
        if (c.rules.length > 0) fail(`delete chain ${m[4]}: chain is not empty`);
        for (const [sn, s] of t.sets)
          for (const v of s.elements.values()) if (new RegExp(`(jump|goto) ${m[4]}$`).test(v)) fail(`delete chain ${m[4]}: still referenced by map ${sn}`);
        for (const [cn, oc] of t.chains)
          for (const r of oc.rules) if (new RegExp(`(jump|goto) ${m[4]}\\b`).test(r)) fail(`delete chain ${m[4]}: referenced by chain ${cn}`);
        t.chains.delete(m[4]!);
      }
      return;
    }
    if ((m = /^add (set|map) (ip6?) ([\w-]+) ([\w-]+) \{ (.*) \}$/.exec(line))) {
      const t = this.table(tables, m[2]!, m[3]!);
      const s = t.sets.get(m[4]!);
      if (s) {
        if (s.def !== m[5]) fail(`set ${m[4]} redefined: ${s.def} vs ${m[5]}`);
      } else t.sets.set(m[4]!, { isMap: m[1] === 'map', def: m[5]!, elements: new Map(), dynamic: m[5]!.includes('dynamic') });
      return;
    }
    if ((m = /^delete (set|map) (ip6?) ([\w-]+) ([\w-]+)$/.exec(line))) {
      const t = this.table(tables, m[2]!, m[3]!);
      if (!t.sets.has(m[4]!)) fail(`delete ${m[1]}: no such set ${m[4]}`);
      for (const [cn, c] of t.chains) for (const r of c.rules) if (r.includes(`@${m[4]}`)) fail(`delete ${m[1]} ${m[4]}: used by chain ${cn}`);
      t.sets.delete(m[4]!);
      return;
    }
    if ((m = /^flush (set|map) (ip6?) ([\w-]+) ([\w-]+)$/.exec(line))) {
      const s = this.table(tables, m[2]!, m[3]!).sets.get(m[4]!);
      if (!s) fail(`flush: no such set ${m[4]}`);
      s.elements.clear();
      return;
    }
    if ((m = /^add rule (ip6?) ([\w-]+) ([\w-]+) (.*)$/.exec(line))) {
      const c = this.table(tables, m[1]!, m[2]!).chains.get(m[3]!);
      if (!c) fail(`add rule: no such chain ${m[3]}`);
      parseRule(m[4]!); // fails loudly on unknown shapes
      c.rules.push(m[4]!);
      return;
    }
    if ((m = /^(add|delete) element (ip6?) ([\w-]+) ([\w-]+) \{ (.*) \}$/.exec(line))) {
      const s = this.table(tables, m[2]!, m[3]!).sets.get(m[4]!);
      if (!s) fail(`${m[1]} element: no such set ${m[4]}`);
      for (const item of splitTopLevel(m[5]!)) {
        const [key, value] = s.isMap && m[1] === 'add' ? item.split(' : ') : [item, ''];
        if (key === undefined || (s.isMap && m[1] === 'add' && value === undefined)) fail(`bad element ${item} for ${m[4]}`);
        if (m[1] === 'delete') {
          if (!s.elements.has(key)) fail(`delete element: ${key} not in ${m[4]}`);
          s.elements.delete(key);
        } else {
          if (s.def.includes('interval')) checkOverlap(m[4]!, s, key);
          s.elements.set(key, value ?? '');
        }
      }
      return;
    }
    fail(`unknown nft command: ${line}`);
  }

  /** the list of base chains hooked at `hook`, by priority */
  private hooked(hook: string, type?: string): { t: NftTable; chain: string; c: NftChain }[] {
    const out: { t: NftTable; chain: string; c: NftChain; prio: number }[] = [];
    for (const t of this.tables.values())
      for (const [name, c] of t.chains)
        if (c.base && c.base.hook === hook && (type === undefined || c.base.type === type)) out.push({ t, chain: name, c, prio: c.base.priority });
    return out.sort((x, y) => x.prio - y.prio);
  }

  /** Trace a new connection's first packet (the affinity map is read, never written: see remember()). */
  trace(pkt: Packet, env: TraceEnv): Outcome[] {
    const start: Ctx = {
      saddr: pkt.src,
      daddr: pkt.dst,
      proto: pkt.proto,
      dport: pkt.dport,
      origSaddr: pkt.src,
      origDaddr: pkt.dst,
      origDport: pkt.dport,
      mark: 0,
      dnatted: false,
      iif: pkt.origin === 'host' ? '' : (pkt.iif ?? 'eth0'),
      masq: false,
      weight: 1024,
    };
    const first = pkt.origin === 'host' ? 'output' : 'prerouting';
    let ctxs: { ctx: Ctx; verdict?: 'drop' | 'reject' }[] = [{ ctx: start }];
    const runHook = (hook: string): void => {
      const next: typeof ctxs = [];
      for (const item of ctxs) {
        if (item.verdict) {
          next.push(item);
          continue;
        }
        let branch: typeof ctxs = [item];
        for (const h of this.hooked(hook)) {
          const after: typeof ctxs = [];
          for (const b of branch) {
            if (b.verdict) {
              after.push(b);
              continue;
            }
            for (const r of this.runChain(h.t, h.chain, b.ctx, env, 0)) {
              if (r.verdict === 'drop' || r.verdict === 'reject') after.push({ ctx: r.ctx, verdict: r.verdict });
              else after.push({ ctx: r.ctx });
            }
          }
          branch = after;
        }
        next.push(...branch);
      }
      ctxs = next;
    };
    runHook(first);
    // routing: local destination -> input, else forward; then postrouting
    const routed: typeof ctxs = [];
    const toInput: typeof ctxs = [];
    for (const c of ctxs) (env.localAddrs.includes(c.ctx.daddr) && !c.verdict ? toInput : routed).push(c);
    ctxs = routed;
    if (pkt.origin === 'remote') runHook('forward');
    runHook('postrouting');
    const viaPost = ctxs;
    ctxs = toInput;
    runHook('input');
    const all = [...viaPost, ...ctxs];
    return all.map(({ ctx, verdict }) => ({
      verdict: verdict ?? 'accept',
      dst: ctx.daddr,
      dport: ctx.dport,
      dnat: ctx.dnatted,
      masquerade: ctx.masq,
      weight: ctx.weight,
      ...(ctx.affinity
        ? { affinityTimeout: ctx.affinity.timeout, affinityEntry: { key: ctx.affinity.key, value: ctx.affinity.value } }
        : {}),
    }));
  }

  /** Write the affinity entry of one traced outcome into the dynamic map, as the kernel would on that connection. */
  remember(o: Outcome): void {
    if (!o.affinityEntry) fail('this outcome records no affinity');
    for (const t of this.tables.values()) {
      const s = t.sets.get('affinity');
      if (s) s.elements.set(o.affinityEntry.key, o.affinityEntry.value);
    }
  }

  /** Runs a chain; returns the branches with their final verdict (continue = fell off the end / return). */
  private runChain(t: NftTable, chain: string, ctx: Ctx, env: TraceEnv, depth: number, nat = false): { ctx: Ctx; verdict: Verdict }[] {
    if (depth > 16) fail('jump depth exceeded');
    const c = t.chains.get(chain);
    if (!c) fail(`no chain ${chain}`);
    const isNat = nat || c.base?.type === 'nat';
    const branches: { ctx: Ctx; idx: number }[] = [{ ctx, idx: 0 }];
    const done: { ctx: Ctx; verdict: Verdict }[] = [];
    while (branches.length) {
      const b = branches.pop()!;
      if (b.idx >= c.rules.length) {
        done.push({ ctx: b.ctx, verdict: 'continue' });
        continue;
      }
      const rule = parseRule(c.rules[b.idx]!);
      const results = evalRule(t, rule, b.ctx, env, isNat);
      for (const res of results) {
        let v = res.verdict;
        if (typeof v === 'object') {
          const sub = this.runChain(t, v.jump, res.ctx, env, depth + 1, isNat);
          for (const s of sub) {
            if (s.verdict === 'continue' || s.verdict === 'return') {
              if (v.goto) done.push({ ctx: s.ctx, verdict: 'continue' });
              else branches.push({ ctx: s.ctx, idx: b.idx + 1 });
            } else done.push(s);
          }
          continue;
        }
        if (v === 'continue') branches.push({ ctx: res.ctx, idx: b.idx + 1 });
        else {
          if (v === 'return') v = 'continue';
          done.push({ ctx: res.ctx, verdict: v });
        }
      }
    }
    return done;
  }

  /** elements of a set in a table, for assertions */
  elements(table: string, set: string): Map<string, string> {
    for (const t of this.tables.values()) if (t.name === table) return t.sets.get(set)?.elements ?? new Map();
    return new Map();
  }
}

function checkOverlap(name: string, s: NftSet, key: string): void {
  const parts = key.split(' . ');
  for (const other of s.elements.keys()) {
    if (other === key) continue;
    const op = other.split(' . ');
    if (op.length !== parts.length) continue;
    const overlap = parts.every((p, i) => {
      const a = rangeOf(p);
      const b = rangeOf(op[i]!);
      if (a && b) return a[0] <= b[1] && b[0] <= a[1];
      if (p.includes('/') || op[i]!.includes('/')) return inCidr(p.split('/')[0]!, op[i]!) || inCidr(op[i]!.split('/')[0]!, p);
      return p === op[i];
    });
    if (overlap) fail(`interval overlap in ${name}: ${key} vs ${other}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// rule parsing: only the shapes the backend emits

type Field = 'saddr' | 'daddr' | 'l4proto' | 'dport' | 'origDaddr' | 'origDport' | 'origSaddr';

type Match =
  | { kind: 'ctnew' }
  | { kind: 'ctdnat' }
  | { kind: 'l4set'; protos: Proto[] }
  | { kind: 'fiblocal'; field: 'saddr' | 'daddr' }
  | { kind: 'cidrs'; field: 'saddr' | 'daddr'; neg: boolean; cidrs: string[] }
  | { kind: 'lookup'; fields: Field[]; neg: boolean; set: string }
  | { kind: 'iif'; neg: boolean; name: string }
  | { kind: 'markzero'; mask: number };

type Stmt =
  | { kind: 'verdict'; v: 'accept' | 'drop' | 'reject' | 'return' }
  | { kind: 'jump'; chain: string; goto: boolean }
  | { kind: 'vmap'; fields: Field[]; map: string }
  | { kind: 'markor'; mask: number }
  | { kind: 'markxor'; mask: number }
  | { kind: 'masq' }
  | { kind: 'dnat'; fields: Field[]; numgen?: number; map: string }
  | { kind: 'update'; set: string; key: Field[]; timeout: number; value: Field[] };

interface Rule {
  matches: Match[];
  stmts: Stmt[];
}

const FIELD_RE = /^(?:(?:ip6?) (saddr|daddr)|meta l4proto|th dport|(?:tcp|udp|sctp) dport|ct original (?:ip6? )?(saddr|daddr)|ct original proto-dst)/;

function parseFields(text: string): { fields: Field[]; rest: string } | undefined {
  const fields: Field[] = [];
  let rest = text;
  for (;;) {
    const m = FIELD_RE.exec(rest);
    if (!m) return fields.length ? { fields, rest } : undefined;
    const tok = m[0];
    let f: Field;
    if (tok.startsWith('ct original proto-dst')) f = 'origDport';
    else if (tok.startsWith('ct original')) f = m[2] === 'saddr' ? 'origSaddr' : 'origDaddr';
    else if (tok === 'meta l4proto') f = 'l4proto';
    else if (tok.endsWith('dport')) f = 'dport';
    else f = m[1] as 'saddr' | 'daddr';
    fields.push(f);
    rest = rest.slice(tok.length);
    if (rest.startsWith(' . ') && FIELD_RE.test(rest.slice(3))) rest = rest.slice(3);
    else return { fields, rest: rest.trimStart() };
  }
}

const ruleCache = new Map<string, Rule>();

export function parseRule(text: string): Rule {
  const cached = ruleCache.get(text);
  if (cached) return cached;
  const matches: Match[] = [];
  const stmts: Stmt[] = [];
  let rest = text.trim();
  const eat = (re: RegExp): RegExpExecArray | null => {
    const m = re.exec(rest);
    if (m) rest = rest.slice(m[0].length).trimStart();
    return m;
  };
  let m: RegExpExecArray | null;
  while (rest.length) {
    if (eat(/^ct state new\b/)) matches.push({ kind: 'ctnew' });
    else if (eat(/^ct status dnat\b/)) matches.push({ kind: 'ctdnat' });
    else if ((m = eat(/^meta l4proto \{ ([a-z, ]+) \}/))) matches.push({ kind: 'l4set', protos: m[1]!.split(', ') as Proto[] });
    else if ((m = eat(/^meta l4proto (tcp|udp|sctp)(?= )/))) matches.push({ kind: 'l4set', protos: [m[1] as Proto] });
    else if ((m = eat(/^fib (saddr|daddr) type local\b/))) matches.push({ kind: 'fiblocal', field: m[1] as 'saddr' | 'daddr' });
    else if ((m = eat(/^ip6? (saddr|daddr) (!= )?\{ ([^}]+) \}/)))
      matches.push({ kind: 'cidrs', field: m[1] as 'saddr' | 'daddr', neg: !!m[2], cidrs: m[3]!.split(', ') });
    else if ((m = eat(/^iifname (!= )?"([^"]+)"/))) matches.push({ kind: 'iif', neg: !!m[1], name: m[2]! });
    else if ((m = eat(/^meta mark & (0x[0-9a-f]+) == 0x0+ return$/))) {
      matches.push({ kind: 'markzero', mask: Number(m[1]) });
      stmts.push({ kind: 'verdict', v: 'return' });
    } else if ((m = eat(/^meta mark set meta mark \| (0x[0-9a-f]+)$/))) stmts.push({ kind: 'markor', mask: Number(m[1]) });
    else if ((m = eat(/^meta mark set meta mark \^ (0x[0-9a-f]+)$/))) stmts.push({ kind: 'markxor', mask: Number(m[1]) });
    else if (eat(/^masquerade( fully-random)?$/)) stmts.push({ kind: 'masq' });
    else if ((m = eat(/^(accept|drop|reject|return)$/))) stmts.push({ kind: 'verdict', v: m[1] as 'accept' });
    else if ((m = eat(/^(jump|goto) ([\w-]+)$/))) stmts.push({ kind: 'jump', chain: m[2]!, goto: m[1] === 'goto' });
    else if ((m = eat(/^dnat to /))) {
      const f = parseFields(rest);
      if (!f) fail(`unknown dnat shape: ${text}`);
      rest = f.rest;
      let numgen: number | undefined;
      if ((m = eat(/^\. numgen random mod (\d+) /))) numgen = Number(m[1]);
      if (!(m = eat(/^map @([\w-]+)$/))) fail(`unknown dnat shape: ${text}`);
      if (!matches.some((x) => x.kind === 'l4set')) fail(`dnat with a port needs a protocol match: ${text}`);
      stmts.push({ kind: 'dnat', fields: f.fields, numgen, map: m[1]! });
    } else if ((m = eat(/^update @([\w-]+) \{ /))) {
      const set = m[1]!;
      const k = parseFields(rest);
      if (!k) fail(`unknown update shape: ${text}`);
      rest = k.rest;
      if (!(m = eat(/^timeout (\d+)s : /))) fail(`unknown update shape: ${text}`);
      const timeout = Number(m[1]);
      const v = parseFields(rest);
      if (!v) fail(`unknown update shape: ${text}`);
      rest = v.rest;
      if (!eat(/^\}$/)) fail(`unknown update shape: ${text}`);
      stmts.push({ kind: 'update', set, key: k.fields, timeout, value: v.fields });
    } else {
      const f = parseFields(rest);
      if (!f) fail(`unknown rule shape at "${rest}" in: ${text}`);
      rest = f.rest;
      if ((m = eat(/^(!= )?@([\w-]+)/))) matches.push({ kind: 'lookup', fields: f.fields, neg: !!m[1], set: m[2]! });
      else if ((m = eat(/^vmap @([\w-]+)$/))) stmts.push({ kind: 'vmap', fields: f.fields, map: m[1]! });
      else fail(`unknown rule shape at "${rest}" in: ${text}`);
    }
  }
  if (stmts.length === 0 && !matches.length) fail(`empty rule: ${text}`);
  const r = { matches, stmts };
  ruleCache.set(text, r);
  return r;
}

function fieldValue(ctx: Ctx, f: Field): string {
  switch (f) {
    case 'saddr':
      return ctx.saddr;
    case 'daddr':
      return ctx.daddr;
    case 'l4proto':
      return ctx.proto;
    case 'dport':
      return String(ctx.dport);
    case 'origSaddr':
      return ctx.origSaddr;
    case 'origDaddr':
      return ctx.origDaddr;
    case 'origDport':
      return String(ctx.origDport);
  }
}

function lookupSet(t: NftTable, name: string): NftSet {
  const s = t.sets.get(name);
  if (!s) fail(`no set ${name}`);
  return s;
}

function findElement(s: NftSet, values: string[]): string | undefined {
  const exact = s.elements.get(values.join(' . '));
  if (exact !== undefined) return exact;
  for (const [k, v] of s.elements) if (keyMatch(k, values)) return v;
  return undefined;
}

function evalMatch(t: NftTable, m: Match, ctx: Ctx, env: TraceEnv): boolean {
  switch (m.kind) {
    case 'ctnew':
      return true;
    case 'ctdnat':
      return ctx.dnatted;
    case 'l4set':
      return m.protos.includes(ctx.proto);
    case 'fiblocal':
      return env.localAddrs.includes(m.field === 'saddr' ? ctx.saddr : ctx.daddr);
    case 'cidrs': {
      const v = m.field === 'saddr' ? ctx.saddr : ctx.daddr;
      return m.cidrs.some((c) => inCidr(v, c)) !== m.neg;
    }
    case 'iif': {
      const hit = m.name.endsWith('*') ? ctx.iif.startsWith(m.name.slice(0, -1)) : ctx.iif === m.name;
      return hit !== m.neg;
    }
    case 'markzero':
      return (ctx.mark & m.mask) === 0;
    case 'lookup': {
      const s = lookupSet(t, m.set);
      return (findElement(s, m.fields.map((f) => fieldValue(ctx, f))) !== undefined) !== m.neg;
    }
  }
}

function evalRule(t: NftTable, rule: Rule, ctx: Ctx, env: TraceEnv, natChain: boolean): { ctx: Ctx; verdict: Verdict }[] {
  for (const m of rule.matches) if (!evalMatch(t, m, ctx, env)) return [{ ctx, verdict: 'continue' }];
  let cur = { ...ctx };
  for (const s of rule.stmts) {
    switch (s.kind) {
      case 'verdict':
        return [{ ctx: cur, verdict: s.v }];
      case 'jump':
        return [{ ctx: cur, verdict: { jump: s.chain, goto: s.goto } }];
      case 'markor':
        cur = { ...cur, mark: (cur.mark | s.mask) >>> 0 };
        break;
      case 'markxor':
        cur = { ...cur, mark: (cur.mark ^ s.mask) >>> 0 };
        break;
      case 'masq':
        return [{ ctx: { ...cur, masq: true }, verdict: 'accept' }];
      case 'vmap': {
        const v = findElement(lookupSet(t, s.map), s.fields.map((f) => fieldValue(cur, f)));
        if (v === undefined) return [{ ctx: cur, verdict: 'continue' }];
        const m = /^(goto|jump) ([\w-]+)$/.exec(v);
        if (m) return [{ ctx: cur, verdict: { jump: m[2]!, goto: m[1] === 'goto' } }];
        if (v === 'drop' || v === 'accept' || v === 'reject') return [{ ctx: cur, verdict: v }];
        return fail(`unknown verdict ${v}`);
      }
      case 'dnat': {
        if (!natChain) fail('dnat outside a nat chain');
        const map = lookupSet(t, s.map);
        const base = s.fields.map((f) => fieldValue(cur, f));
        const targets: { value: string; weight: number }[] = [];
        if (s.numgen === undefined) {
          const v = findElement(map, base);
          if (v !== undefined) targets.push({ value: v, weight: cur.weight });
        } else {
          for (const [k, v] of map.elements) {
            const parts = k.split(' . ');
            const last = parts.pop()!;
            const r = rangeOf(last) ?? [Number(last), Number(last)];
            if (!keyMatch(parts.join(' . '), base)) continue;
            if (r[1] >= s.numgen) fail(`bucket ${last} of ${base.join(' . ')} outside numgen mod ${s.numgen}`);
            targets.push({ value: v, weight: ((r[1] - r[0] + 1) * cur.weight) / s.numgen });
          }
          const total = targets.reduce((x, y) => x + y.weight, 0);
          if (targets.length && Math.abs(total - cur.weight) > 1e-6) fail(`buckets of ${base.join(' . ')} in ${s.map} cover ${total} of ${cur.weight}`);
        }
        if (targets.length === 0) return [{ ctx: cur, verdict: 'continue' }];
        return targets.map(({ value, weight }) => {
          const [ip, port] = value.split(' . ');
          return { ctx: { ...cur, daddr: ip!, dport: Number(port), dnatted: true, weight }, verdict: 'accept' as const };
        });
      }
      case 'update': {
        const key = s.key.map((f) => fieldValue(cur, f)).join(' . ');
        const value = s.value.map((f) => fieldValue(cur, f)).join(' . ');
        lookupSet(t, s.set);
        cur = { ...cur, affinity: { key, value, timeout: s.timeout } };
        break;
      }
    }
  }
  return [{ ctx: cur, verdict: 'continue' }];
}

/** Summarise outcomes as `dst:port` (or drop/reject) -> weight, for compact assertions. */
export function summarize(outcomes: readonly Outcome[]): Record<string, { weight: number; masquerade: boolean }> {
  const out: Record<string, { weight: number; masquerade: boolean }> = {};
  for (const o of outcomes) {
    const k = o.verdict === 'accept' ? `${o.dst}:${o.dport}` : o.verdict;
    const prev = out[k];
    out[k] = { weight: (prev?.weight ?? 0) + o.weight, masquerade: o.masquerade || (prev?.masquerade ?? false) };
  }
  return out;
}
