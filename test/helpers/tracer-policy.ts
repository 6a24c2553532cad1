// A strict model of the nft programs the policy controller emits (proxy/policy/render.ts), and a packet tracer over
// it. PolicyNftModel.apply(program) applies one `nft -f` transaction atomically to a copy, as the kernel does: it
// rejects adding an element that exists with another value, deleting a missing element/chain/set, deleting a chain a
// map element still jumps to, and any command or rule shape it does not know. trace() walks a packet through the
// table's forward or input chain and returns accept or drop.

import { isIP } from 'node:net';
import { parseIP } from '../../lib/net/ip.ts';

export interface PolicyPacket {
  src: string;
  dst: string;
  /** tcp, udp, sctp, icmp ... */
  proto: string;
  dport?: number;
  /** 'forward' (routed or bridged) or 'input' (to the node itself) */
  hook?: 'forward' | 'input';
  /** conntrack state; default new */
  ct?: 'new' | 'established';
  /** TCP only: the packet carries SYN (and no ACK/FIN/RST); default true */
  syn?: boolean;
}

interface Chain {
  base?: string;
  rules: string[];
}

interface Table {
  sets: Map<string, { map: boolean; elements: Map<string, string> }>;
  chains: Map<string, Chain>;
}

class TraceError extends Error {}
const fail = (m: string): never => {
  throw new TraceError(m);
};

function toBig(ip: string): bigint {
  return parseIP(ip)?.value ?? fail(`not an address: ${ip}`);
}

/** element text `a`, `a-b` or `a/len` contains ip */
function addrMatch(el: string, ip: string): boolean {
  if (el.includes('/')) {
    const [n, l] = el.split('/');
    if (isIP(n!) !== isIP(ip)) return false;
    const bits = isIP(ip) === 4 ? 32 : 128;
    const sh = BigInt(bits - Number(l));
    return toBig(ip) >> sh === toBig(n!) >> sh;
  }
  const dash = el.indexOf('-');
  if (dash > 0 && isIP(el.slice(0, dash))) {
    if (isIP(el.slice(0, dash)) !== isIP(ip)) return false;
    const v = toBig(ip);
    return v >= toBig(el.slice(0, dash)) && v <= toBig(el.slice(dash + 1));
  }
  return isIP(el) === isIP(ip) && toBig(el) === toBig(ip);
}

/** `tcp . 80` or `tcp . 8000-8080` */
function portMatch(el: string, proto: string, dport: number | undefined): boolean {
  const m = /^(\w+) \. (\d+)(?:-(\d+))?$/.exec(el.trim()) ?? fail(`unknown port element: ${el}`);
  if (m[1] !== proto || dport === undefined) return false;
  return dport >= Number(m[2]) && dport <= Number(m[3] ?? m[2]);
}

const splitEls = (body: string): string[] =>
  body
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export class PolicyNftModel {
  private tables = new Map<string, Table>();
  /** the last transaction applied */
  last = '';

  private readonly tableName: string;

  constructor(tableName: string) {
    this.tableName = tableName;
  }

  apply(program: string): void {
    const copy = new Map<string, Table>();
    for (const [k, t] of this.tables) {
      copy.set(k, {
        sets: new Map([...t.sets].map(([n, s]) => [n, { map: s.map, elements: new Map(s.elements) }])),
        chains: new Map([...t.chains].map(([n, c]) => [n, { ...c, rules: [...c.rules] }])),
      });
    }
    for (const line of program.split('\n')) if (line.trim()) this.command(copy, line.trim());
    this.tables = copy;
    this.last = program;
  }

  private table(ts: Map<string, Table>, spec: string): Table {
    if (spec !== `inet ${this.tableName}`) fail(`unexpected table ${spec}`);
    return ts.get(spec) ?? fail(`no table ${spec}`);
  }

  private command(ts: Map<string, Table>, line: string): void {
    let m: RegExpExecArray | null;
    if ((m = /^add table (inet \S+)( \{.*\})?$/.exec(line))) {
      if (!ts.has(m[1]!)) ts.set(m[1]!, { sets: new Map(), chains: new Map() });
      return;
    }
    if ((m = /^delete table (inet \S+)$/.exec(line))) {
      if (!ts.delete(m[1]!)) fail(`delete of missing table ${m[1]}`);
      return;
    }
    if ((m = /^add (set|map) (inet \S+) (\S+) \{ type [^;]+;(?: flags [^;]+;)? \}$/.exec(line))) {
      const t = this.table(ts, m[2]!);
      if (!t.sets.has(m[3]!)) t.sets.set(m[3]!, { map: m[1] === 'map', elements: new Map() });
      return;
    }
    if ((m = /^delete (set|map) (inet \S+) (\S+)$/.exec(line))) {
      const t = this.table(ts, m[2]!);
      for (const c of t.chains.values()) if (c.rules.some((r) => r.includes(`@${m![3]} `) || r.endsWith(`@${m![3]}`))) fail(`set ${m[3]} in use`);
      if (!t.sets.delete(m[3]!)) fail(`delete of missing set ${m[3]}`);
      return;
    }
    if ((m = /^add chain (inet \S+) (\S+)(?: \{ type filter hook (\w+) priority filter ; policy accept ; \})?$/.exec(line))) {
      const t = this.table(ts, m[2] ? m[1]! : m[1]!);
      if (!t.chains.has(m[2]!)) t.chains.set(m[2]!, { ...(m[3] ? { base: m[3] } : {}), rules: [] });
      return;
    }
    if ((m = /^flush chain (inet \S+) (\S+)$/.exec(line))) {
      const c = this.table(ts, m[1]!).chains.get(m[2]!) ?? fail(`flush of missing chain ${m[2]}`);
      c.rules = [];
      return;
    }
    if ((m = /^delete chain (inet \S+) (\S+)$/.exec(line))) {
      const t = this.table(ts, m[1]!);
      const c = t.chains.get(m[2]!) ?? fail(`delete of missing chain ${m[2]}`);
      if (c.rules.length) fail(`delete of non-empty chain ${m[2]}`);
      for (const s of t.sets.values()) for (const v of s.elements.values()) if (v === `jump ${m[2]}`) fail(`chain ${m[2]} still referenced`);
      t.chains.delete(m[2]!);
      return;
    }
    if ((m = /^add rule (inet \S+) (\S+) (.+)$/.exec(line))) {
      const t = this.table(ts, m[1]!);
      const c = t.chains.get(m[2]!) ?? fail(`rule for missing chain ${m[2]}`);
      for (const ref of m[3]!.matchAll(/@(\S+)/g)) if (!t.sets.has(ref[1]!)) fail(`rule refers to missing set ${ref[1]}`);
      const j = /jump (\S+)$/.exec(m[3]!);
      if (j && !t.chains.has(j[1]!)) fail(`jump to missing chain ${j[1]}`);
      c.rules.push(m[3]!);
      return;
    }
    if ((m = /^(add|delete) element (inet \S+) (\S+) \{ (.*) \}$/.exec(line))) {
      const t = this.table(ts, m[2]!);
      const s = t.sets.get(m[3]!) ?? fail(`elements for missing set ${m[3]}`);
      for (const el of splitEls(m[4]!)) {
        const [k, v] = s.map ? el.split(' : ').map((x) => x.trim()) : [el, ''];
        if (m[1] === 'add') {
          const old = s.elements.get(k!);
          if (old !== undefined && old !== v) fail(`element ${k} of ${m[3]} exists with another value`);
          if (v?.startsWith('jump ') && !t.chains.has(v.slice(5))) fail(`map element jumps to missing chain ${v}`);
          s.elements.set(k!, v ?? '');
        } else if (!s.elements.delete(k!)) fail(`delete of missing element ${k} in ${m[3]}`);
      }
      return;
    }
    fail(`unknown command: ${line}`);
  }

  /** Elements of a set or map, for assertions. */
  elements(set: string): Map<string, string> {
    return new Map(this.tables.get(`inet ${this.tableName}`)?.sets.get(set)?.elements ?? []);
  }

  chain(name: string): string[] {
    return [...(this.tables.get(`inet ${this.tableName}`)?.chains.get(name)?.rules ?? [])];
  }

  trace(p: PolicyPacket): 'accept' | 'drop' {
    const t = this.tables.get(`inet ${this.tableName}`);
    if (!t) return 'accept';
    const hook = p.hook ?? 'forward';
    const base = [...t.chains.entries()].find(([, c]) => c.base === hook);
    if (!base) return 'accept';
    const r = this.run(t, base[0], p, 0);
    return r === 'drop' ? 'drop' : 'accept';
  }

  private run(t: Table, chain: string, p: PolicyPacket, depth: number): 'accept' | 'drop' | 'return' {
    if (depth > 8) fail('jump loop');
    const c = t.chains.get(chain) ?? fail(`no chain ${chain}`);
    for (const rule of c.rules) {
      const v = this.rule(t, rule, p);
      if (v === 'continue') continue;
      if (v === 'accept' || v === 'drop' || v === 'return') return v;
      const sub = this.run(t, v.jump, p, depth + 1);
      if (sub !== 'return') return sub;
    }
    return 'return';
  }

  private rule(t: Table, rule: string, p: PolicyPacket): 'continue' | 'accept' | 'drop' | 'return' | { jump: string } {
    const fam = isIP(p.src) === 6 ? 'ip6' : 'ip';
    const ct = p.ct ?? 'new';
    let m: RegExpExecArray | null;
    if (rule === 'ct state established,related accept') return ct === 'established' ? 'accept' : 'continue';
    if (rule === 'ct state new tcp flags & (fin | syn | rst | ack) != syn jump nonsyn')
      return ct === 'new' && p.proto === 'tcp' && p.syn === false ? { jump: 'nonsyn' } : 'continue';
    if ((m = /^(ip6?) (saddr|daddr) vmap @(\S+)$/.exec(rule))) {
      if (m[1] !== fam) return 'continue';
      const v = t.sets.get(m[3]!)?.elements.get(m[2] === 'saddr' ? p.src : p.dst);
      if (!v) return 'continue';
      const j = /^jump (\S+)$/.exec(v) ?? fail(`unknown verdict ${v}`);
      return { jump: j[1]! };
    }
    if ((m = /^(ip6?) (saddr|daddr) @(\S+) drop$/.exec(rule))) {
      if (m[1] !== fam) return 'continue';
      return t.sets.get(m[3]!)!.elements.has(m[2] === 'saddr' ? p.src : p.dst) ? 'drop' : 'continue';
    }
    if ((m = /^(ip6?) daddr \. meta l4proto \. th dport @(\S+) return$/.exec(rule))) {
      if (m[1] !== fam) return 'continue';
      return t.sets.get(m[2]!)!.elements.has(`${p.dst} . ${p.proto} . ${p.dport}`) ? 'return' : 'continue';
    }
    if (rule === 'drop') return 'drop';
    if (rule === 'return') return 'return';
    // [ip saddr|daddr (@set | { ranges })] [meta l4proto . th dport { ports }] return
    m = /^(?:(ip6?) (saddr|daddr) (?:@(\S+)|\{ ([^}]*) \}) ?)?(?:meta l4proto \. th dport \{ ([^}]*) \} )?return$/.exec(rule);
    if (!m) return fail(`unknown rule shape: ${rule}`);
    if (m[1]) {
      if (m[1] !== fam) return 'continue';
      const addr = m[2] === 'saddr' ? p.src : p.dst;
      const hit = m[3] ? t.sets.get(m[3])!.elements.has(addr) : splitEls(m[4]!).some((el) => addrMatch(el, addr));
      if (!hit) return 'continue';
    }
    if (m[5] !== undefined && !splitEls(m[5]).some((el) => portMatch(el, p.proto, p.dport))) return 'continue';
    return 'return';
  }
}
