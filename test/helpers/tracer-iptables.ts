// A packet tracer over flatnet's generated iptables-restore text (full programs).
// It walks nat PREROUTING/OUTPUT, filter INPUT/FORWARD/OUTPUT and nat POSTROUTING as the kernel would for the first
// packet of a connection, following only the jumps flatnet installs in the built-in chains, and reports where the
// packet ends up (DNAT endpoint, DROP, REJECT or plain ACCEPT) and whether it is masqueraded.
// Random (-m statistic) rules fork the walk, so `endpoints` lists every endpoint the packet can reach.
// It understands only the rule shapes rules.ts emits and throws on anything else.

import { builtinJumps } from '../../proxy/services/backends/iptables/rules.ts';
import { cidrContainsText } from '../../lib/net/ip.ts';

export interface Packet {
  src: string;
  dst: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  dport: number;
  /** 'external' arrives on an interface (PREROUTING); 'local' is sent by a process on the node (OUTPUT) */
  origin?: 'external' | 'local';
  /** input interface for external packets (for -i matches) */
  inIface?: string;
}

export interface TraceOptions {
  /** addresses of the node (addrtype LOCAL); 127.0.0.0/8 and ::1 are always local */
  localAddrs: string[];
  chainPrefix?: string;
  /** names of xt_recent lists that already hold the source address (session affinity state) */
  recent?: ReadonlySet<string>;
}

export type Verdict = 'DNAT' | 'ACCEPT' | 'DROP' | 'REJECT';

export interface Outcome {
  verdict: Verdict;
  /** ip:port ([ip]:port for IPv6) when DNATed */
  endpoint?: string;
  masquerade: boolean;
  /** recent lists the packet was added to */
  recentSet: string[];
  rejectWith?: string;
}

export interface Trace {
  outcomes: Outcome[];
  /** the single verdict, or 'MIXED' */
  verdict: Verdict | 'MIXED';
  endpoints: string[];
  /** true/false when all outcomes agree, 'mixed' otherwise */
  masquerade: boolean | 'mixed';
}

type Rules = Map<string, string[][]>;
type Tables = Map<string, Rules>;

export function tokenize(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === ' ') {
      i++;
      continue;
    }
    if (line[i] === '"') {
      let s = '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\') i++;
        s += line[i];
        i++;
      }
      i++;
      out.push(s);
      continue;
    }
    let s = '';
    while (i < line.length && line[i] !== ' ') s += line[i++];
    out.push(s);
  }
  return out;
}

export function parseRestore(text: string): Tables {
  const tables: Tables = new Map();
  let cur: Rules | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      // several programs may be concatenated (chunked full syncs): a table section continues the same table
      cur = tables.get(line.slice(1)) ?? new Map();
      tables.set(line.slice(1), cur);
    } else if (line === 'COMMIT') cur = undefined;
    else if (!cur) throw new Error(`tracer: rule outside a table: ${line}`);
    else if (line.startsWith(':')) cur.set(line.slice(1).split(' ')[0]!, []);
    else {
      const t = tokenize(line);
      if (t[0] === '-A') {
        const rules = cur.get(t[1]!);
        if (!rules) throw new Error(`tracer: -A to undeclared chain ${t[1]}`);
        rules.push(t.slice(2));
      } else if (t[0] === '-X') cur.delete(t[1]!);
      else throw new Error(`tracer: unsupported command ${line}`);
    }
  }
  return tables;
}

interface State {
  dst: string;
  dport: number;
  mark: number;
  dnat: boolean;
  masquerade: boolean;
  recentSet: string[];
  endpoint?: string;
  rejectWith?: string;
}

type Fin = { st: State; v: 'CONTINUE' | 'ACCEPT' | 'DROP' | 'REJECT' };

const isV6 = (ip: string): boolean => ip.includes(':');

export class IptablesTracer {
  private readonly tables: Tables;
  private readonly opts: TraceOptions;
  private readonly prefix: string;

  constructor(text: string, opts: TraceOptions) {
    this.tables = parseRestore(text);
    this.opts = opts;
    this.prefix = opts.chainPrefix ?? 'FLATNET';
  }

  private isLocal(ip: string): boolean {
    if (!isV6(ip) && cidrContainsText('127.0.0.0/8', ip)) return true;
    if (ip === '::1') return true;
    return this.opts.localAddrs.includes(ip);
  }

  trace(p: Packet): Trace {
    const origin = p.origin ?? 'external';
    const st0: State = { dst: p.dst, dport: p.dport, mark: 0, dnat: false, masquerade: false, recentSet: [] };
    const outcomes: Outcome[] = [];
    const natHook = origin === 'local' ? 'OUTPUT' : 'PREROUTING';
    for (const a of this.builtin('nat', natHook, st0, p)) {
      if (a.v === 'DROP' || a.v === 'REJECT') {
        outcomes.push(this.outcome(a));
        continue;
      }
      const filterHook = origin === 'local' ? 'OUTPUT' : this.isLocal(a.st.dst) ? 'INPUT' : 'FORWARD';
      for (const b of this.builtin('filter', filterHook, a.st, p)) {
        if (b.v === 'DROP' || b.v === 'REJECT') {
          outcomes.push(this.outcome(b));
          continue;
        }
        if (filterHook === 'INPUT') {
          outcomes.push(this.outcome(b));
          continue;
        }
        for (const c of this.builtin('nat', 'POSTROUTING', b.st, p)) outcomes.push(this.outcome(c));
      }
    }
    const verdicts = [...new Set(outcomes.map((o) => o.verdict))];
    const masq = [...new Set(outcomes.map((o) => o.masquerade))];
    return {
      outcomes,
      verdict: verdicts.length === 1 ? verdicts[0]! : 'MIXED',
      endpoints: [...new Set(outcomes.filter((o) => o.endpoint).map((o) => o.endpoint!))].sort(),
      masquerade: masq.length === 1 ? masq[0]! : 'mixed',
    };
  }

  private outcome(f: Fin): Outcome {
    const o: Outcome = {
      verdict: f.v === 'DROP' || f.v === 'REJECT' ? f.v : f.st.dnat ? 'DNAT' : 'ACCEPT',
      masquerade: f.st.masquerade,
      recentSet: f.st.recentSet,
    };
    if (f.st.endpoint && o.verdict === 'DNAT') o.endpoint = f.st.endpoint;
    if (f.st.rejectWith && o.verdict === 'REJECT') o.rejectWith = f.st.rejectWith;
    return o;
  }

  /** A built-in chain holding only flatnet's jumps (policy ACCEPT). */
  private builtin(table: string, chain: string, st: State, p: Packet): Fin[] {
    const rules = builtinJumps(this.prefix)
      .filter((j) => j.table === table && j.chain === chain)
      .map((j) => j.args);
    return this.run(table, rules, 0, st, p, 0).map((f) => (f.v === 'CONTINUE' ? { st: f.st, v: 'ACCEPT' as const } : f));
  }

  private run(table: string, rules: string[][], from: number, st: State, p: Packet, depth: number): Fin[] {
    if (depth > 20) throw new Error('tracer: jump depth > 20 (loop?)');
    for (let i = from; i < rules.length; i++) {
      const r = rules[i]!;
      const m = this.match(r, st, p);
      if (m === 'fork') {
        // -m statistic: both branches are possible
        return [...this.apply(table, rules, i, st, p, depth), ...this.run(table, rules, i + 1, st, p, depth)];
      }
      if (!m) continue;
      return this.apply(table, rules, i, st, p, depth);
    }
    return [{ st, v: 'CONTINUE' }];
  }

  /** Apply the target of rules[i] (which matched) and continue as the kernel would. */
  private apply(table: string, rules: string[][], i: number, st0: State, p: Packet, depth: number): Fin[] {
    const r = rules[i]!;
    let st = st0;
    // side-effect matches
    const setIdx = r.indexOf('--set');
    if (setIdx >= 0) st = { ...st, recentSet: [...st.recentSet, valueAfter(r, '--name')] };
    const j = r.indexOf('-j');
    if (j < 0) throw new Error(`tracer: rule without -j: ${r.join(' ')}`);
    const target = r[j + 1]!;
    const targs = r.slice(j + 2);
    const next = (s: State): Fin[] => this.run(table, rules, i + 1, s, p, depth);
    switch (target) {
      case 'ACCEPT':
        return [{ st, v: 'ACCEPT' }];
      case 'DROP':
        return [{ st, v: 'DROP' }];
      case 'REJECT':
        return [{ st: { ...st, rejectWith: targs[1] ?? 'icmp-port-unreachable' }, v: 'REJECT' }];
      case 'RETURN':
        return [{ st, v: 'CONTINUE' }];
      case 'MARK': {
        const v = Number(targs[1]);
        if (targs[0] === '--or-mark') return next({ ...st, mark: st.mark | v });
        if (targs[0] === '--xor-mark') return next({ ...st, mark: st.mark ^ v });
        throw new Error(`tracer: unsupported MARK ${targs.join(' ')}`);
      }
      case 'DNAT': {
        if (table !== 'nat' || targs[0] !== '--to-destination') throw new Error(`tracer: bad DNAT ${r.join(' ')}`);
        const to = targs[1]!;
        const mm = /^\[?([^\]]+?)\]?:(\d+)$/.exec(to);
        if (!mm) throw new Error(`tracer: bad DNAT destination ${to}`);
        return [{ st: { ...st, dst: mm[1]!, dport: Number(mm[2]), dnat: true, endpoint: to }, v: 'ACCEPT' }];
      }
      case 'MASQUERADE':
        if (table !== 'nat') throw new Error('tracer: MASQUERADE outside nat');
        return [{ st: { ...st, masquerade: true }, v: 'ACCEPT' }];
      default: {
        if (targs.length) throw new Error(`tracer: unexpected arguments after -j ${target}: ${targs.join(' ')}`);
        const sub = this.tables.get(table)?.get(target);
        if (!sub) throw new Error(`tracer: jump to missing chain ${table}/${target}`);
        const out: Fin[] = [];
        for (const f of this.run(table, sub, 0, st, p, depth + 1)) {
          if (f.v === 'CONTINUE') out.push(...next(f.st));
          else out.push(f);
        }
        return out;
      }
    }
  }

  /** true / false / 'fork' (random) */
  private match(r: string[], st: State, p: Packet): boolean | 'fork' {
    let fork = false;
    let neg = false;
    const origin = p.origin ?? 'external';
    let i = 0;
    const check = (ok: boolean): boolean => {
      const res = neg ? !ok : ok;
      neg = false;
      return res;
    };
    while (i < r.length) {
      const t = r[i]!;
      if (t === '-j') break;
      if (t === '!') {
        neg = true;
        i++;
        continue;
      }
      switch (t) {
        case '-s':
          if (!check(cidrContainsText(r[i + 1]!, p.src))) return false;
          i += 2;
          break;
        case '-d':
          if (!check(cidrContainsText(r[i + 1]!, st.dst))) return false;
          i += 2;
          break;
        case '-p':
          if (!check(r[i + 1] === p.protocol.toLowerCase())) return false;
          i += 2;
          break;
        case '-i': {
          const want = r[i + 1]!;
          const have = origin === 'local' ? '' : (p.inIface ?? '');
          const ok = want.endsWith('+') ? have !== '' && have.startsWith(want.slice(0, -1)) : have === want;
          if (!check(ok)) return false;
          i += 2;
          break;
        }
        case '--dport':
          if (!check(Number(r[i + 1]) === st.dport)) return false;
          i += 2;
          break;
        case '-m': {
          const mod = r[i + 1]!;
          i += 2;
          if (mod === 'comment') {
            if (r[i] !== '--comment') throw new Error('tracer: comment without --comment');
            i += 2;
          } else if (mod === 'tcp' || mod === 'udp' || mod === 'sctp') {
            if (mod !== p.protocol.toLowerCase()) return false;
          } else if (mod === 'addrtype') {
            let n2 = false;
            if (r[i] === '!') {
              n2 = true;
              i++;
            }
            const which = r[i];
            if (r[i + 1] !== 'LOCAL') throw new Error(`tracer: addrtype ${r[i + 1]}`);
            const addr = which === '--src-type' ? p.src : which === '--dst-type' ? st.dst : undefined;
            if (addr === undefined) throw new Error(`tracer: addrtype ${which}`);
            if (this.isLocal(addr) === n2) return false;
            i += 2;
          } else if (mod === 'mark') {
            let n2 = false;
            if (r[i] === '!') {
              n2 = true;
              i++;
            }
            if (r[i] !== '--mark') throw new Error('tracer: mark without --mark');
            const [v, m] = r[i + 1]!.split('/').map(Number) as [number, number | undefined];
            const ok = (st.mark & (m ?? 0xffffffff)) === v;
            if (ok === n2) return false;
            i += 2;
          } else if (mod === 'conntrack') {
            let n2 = false;
            if (r[i] === '!') {
              n2 = true;
              i++;
            }
            if (r[i] !== '--ctstate') throw new Error('tracer: conntrack without --ctstate');
            const states = r[i + 1]!.split(',');
            // first packet of a connection: NEW, and DNAT when nat rewrote the destination
            const ok = states.some((s) => s === 'NEW' || (s === 'DNAT' && st.dnat));
            for (const s of states) if (!['NEW', 'DNAT', 'RELATED', 'ESTABLISHED', 'INVALID'].includes(s)) throw new Error(`tracer: ctstate ${s}`);
            if (ok === n2) return false;
            i += 2;
          } else if (mod === 'statistic') {
            if (r[i] !== '--mode' || r[i + 1] !== 'random' || r[i + 2] !== '--probability') throw new Error(`tracer: statistic ${r.join(' ')}`);
            fork = true;
            i += 4;
          } else if (mod === 'recent') {
            if (r[i] !== '--name') throw new Error('tracer: recent without --name');
            const name = r[i + 1]!;
            i += 2;
            if (r[i] === '--set') {
              i += 1;
            } else if (r[i] === '--rcheck') {
              i += 1;
              if (r[i] === '--seconds') i += 2;
              if (r[i] === '--reap') i += 1;
              if (!(this.opts.recent?.has(name) ?? false)) return false;
            } else throw new Error(`tracer: recent ${r[i]}`);
          } else throw new Error(`tracer: unsupported match module ${mod} in: ${r.join(' ')}`);
          break;
        }
        default:
          throw new Error(`tracer: unsupported token ${t} in: ${r.join(' ')}`);
      }
    }
    return fork ? 'fork' : true;
  }
}

function valueAfter(r: string[], flag: string): string {
  const i = r.indexOf(flag);
  if (i < 0) throw new Error(`tracer: ${flag} missing`);
  return r[i + 1]!;
}
