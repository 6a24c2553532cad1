// A strict model of what the IPVS backend programs (virtual-server table, ipsets, dummy addresses, its iptables
// chains) and a tracer over it: where the first packet of a connection ends up and whether it is masqueraded.
// Only the shapes the backend emits are understood; anything else throws.
//
// Packet path modelled: nat PREROUTING (or OUTPUT for host traffic) -> FLATNET-IPVS-SERVICES (marks);
// the destination must be local (dummy address or node address) for IPVS to see it; filter INPUT -> FLATNET-IPVS-
// FIREWALL; IPVS LOCAL_IN: virtual server lookup, rr over real servers with weight > 0 (none: ICMP reject);
// nat POSTROUTING -> FLATNET-IPVS-POSTROUTING with the real server as destination.

import { isIP } from 'node:net';

export interface IpvsPacket {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'sctp';
  dport: number;
  origin: 'remote' | 'host';
  iif?: string;
}

export interface IpvsOutcome {
  verdict: 'ipvs' | 'drop' | 'reject' | 'local' | 'forward';
  dst: string;
  dport: number;
  /** share of new connections (rr over weight > 0) */
  share: number;
  masquerade: boolean;
  persistence?: number;
}

interface VS {
  scheduler: string;
  persistence?: number;
  reals: Map<string, number>;
}

function fail(msg: string): never {
  throw new Error(msg);
}

function toBig(a: string): bigint {
  if (isIP(a) === 4) return a.split('.').reduce((acc, o) => (acc << 8n) + BigInt(Number(o)), 0n);
  const [h, t] = a.includes('::') ? a.split('::') : [a, undefined];
  const hs = h ? h.split(':') : [];
  const ts = t ? t.split(':') : [];
  const parts = t === undefined ? hs : [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts];
  return parts.reduce((acc, x) => (acc << 16n) + BigInt(parseInt(x || '0', 16)), 0n);
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  if (isIP(ip) !== isIP(net!)) return false;
  const bits = isIP(ip) === 4 ? 32 : 128;
  const shift = BigInt(bits - Number(len ?? bits));
  return toBig(ip) >> shift === toBig(net!) >> shift;
}

const FLAG: Record<string, 'tcp' | 'udp' | 'sctp'> = { '-t': 'tcp', '-u': 'udp', '--sctp-service': 'sctp' };

function splitHP(s: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  if (!m) fail(`bad address ${s}`);
  return [m[1]!, Number(m[2])];
}

export class IpvsModel {
  vss = new Map<string, VS>();
  sets = new Map<string, { type: string; entries: Set<string> }>();
  addrs = new Set<string>();
  linkExists = false;
  /** chain -> rules (token lists), for the nat and filter chains the backend declares */
  chains = new Map<string, string[][]>();

  applyIpvsadm(program: string): void {
    for (const raw of program.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      const t = line.split(/\s+/);
      const proto = FLAG[t[1]!];
      if (!proto) fail(`unknown ipvsadm line ${line}`);
      const [addr, port] = splitHP(t[2]!);
      const key = `${proto}|${addr}|${port}`;
      const opt = (f: string): string | undefined => (t.indexOf(f) >= 0 ? t[t.indexOf(f) + 1] : undefined);
      const vs = this.vss.get(key);
      switch (t[0]) {
        case '-A':
          if (vs) fail(`virtual server exists: ${key}`);
          this.vss.set(key, { scheduler: opt('-s') ?? 'wlc', persistence: opt('-p') ? Number(opt('-p')) : undefined, reals: new Map() });
          break;
        case '-E':
          if (!vs) fail(`no virtual server ${key}`);
          vs.scheduler = opt('-s') ?? vs.scheduler;
          vs.persistence = opt('-p') ? Number(opt('-p')) : undefined;
          break;
        case '-D':
          if (!vs) fail(`no virtual server ${key}`);
          this.vss.delete(key);
          break;
        case '-a':
        case '-e':
        case '-d': {
          if (!vs) fail(`no virtual server ${key}`);
          const r = opt('-r');
          if (!r) fail(`no real server in ${line}`);
          const [ra, rp] = splitHP(r);
          const rk = `${ra}|${rp}`;
          if (t[0] === '-a') {
            if (vs.reals.has(rk)) fail(`real server exists: ${rk}`);
            if (!t.includes('-m')) fail(`only masquerading real servers are expected: ${line}`);
          } else if (!vs.reals.has(rk)) fail(`no real server ${rk} in ${key}`);
          if (t[0] === '-d') vs.reals.delete(rk);
          else vs.reals.set(rk, Number(opt('-w') ?? 1));
          break;
        }
        default:
          fail(`unknown ipvsadm command ${line}`);
      }
    }
  }

  applyIpset(program: string): void {
    for (const raw of program.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      const t = line.split(/\s+/);
      const exist = t[t.length - 1] === '-exist';
      const args = exist ? t.slice(0, -1) : t;
      const name = args[1]!;
      const set = this.sets.get(name);
      switch (args[0]) {
        case 'create':
          if (set && !exist) fail(`set exists ${name}`);
          if (!set) this.sets.set(name, { type: args.slice(2).join(' '), entries: new Set() });
          break;
        case 'flush':
          if (!set) fail(`no set ${name}`);
          set.entries.clear();
          break;
        case 'add':
          if (!set) fail(`no set ${name}`);
          if (set.entries.has(args[2]!) && !exist) fail(`element exists in ${name}`);
          set.entries.add(args[2]!);
          break;
        case 'del':
          if (!set) fail(`no set ${name}`);
          if (!set.entries.has(args[2]!) && !exist) fail(`no element ${args[2]} in ${name}`);
          set.entries.delete(args[2]!);
          break;
        case 'swap': {
          const other = this.sets.get(args[2]!);
          if (!set || !other) fail(`swap of missing set ${name}/${args[2]}`);
          if (set.type !== other.type) fail(`swap of sets of different types ${name}/${args[2]}`);
          this.sets.set(name, other);
          this.sets.set(args[2]!, set);
          break;
        }
        case 'destroy':
          if (!set) fail(`no set ${name}`);
          this.sets.delete(name);
          break;
        default:
          fail(`unknown ipset command ${line}`);
      }
    }
  }

  applyDummy(program: string): void {
    for (const raw of program.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      let m: RegExpExecArray | null;
      if (/^link add \S+ type dummy$/.test(line)) this.linkExists = true;
      else if (/^link set \S+ up$/.test(line)) continue;
      else if ((m = /^addr (add|del) ([^/]+)\/(32|128) dev \S+$/.exec(line))) {
        if (!this.linkExists) fail('address on a missing dummy link');
        if (m[1] === 'add') {
          if (this.addrs.has(m[2]!)) fail(`address exists ${m[2]}`);
          this.addrs.add(m[2]!);
        } else {
          if (!this.addrs.has(m[2]!)) fail(`no address ${m[2]}`);
          this.addrs.delete(m[2]!);
        }
      } else fail(`unknown ip command ${line}`);
    }
  }

  /** iptables-restore text: only our chain declarations and -A rules. */
  applyIptables(program: string): void {
    for (const raw of program.split('\n')) {
      const line = raw.trim();
      if (!line || line === 'COMMIT' || line.startsWith('*')) continue;
      if (line.startsWith(':')) {
        this.chains.set(line.slice(1).split(' ')[0]!, []);
        continue;
      }
      const t = line.split(/\s+/);
      if (t[0] !== '-A' || !this.chains.has(t[1]!)) fail(`unknown iptables line ${line}`);
      this.chains.get(t[1]!)!.push(t.slice(2));
    }
  }

  private setMatch(name: string, dirs: string, p: { src: string; dst: string; proto: string; dport: number }): boolean {
    const set = this.sets.get(name);
    if (!set) fail(`rule uses missing set ${name}`);
    const d = dirs.split(',');
    for (const e of set.entries) {
      const parts = e.split(',');
      if (parts.length !== d.length) fail(`set ${name} entry ${e} vs directions ${dirs}`);
      const ok = parts.every((part, i) => {
        const addr = d[i] === 'src' ? p.src : p.dst;
        if (set.type.startsWith('bitmap:port')) return Number(part) === p.dport;
        if (i === 1) return part === `${p.proto}:${p.dport}`;
        return part.includes('/') ? inCidr(addr, part) : toBig(part) === toBig(addr) && isIP(part) === isIP(addr);
      });
      if (ok) return true;
    }
    return false;
  }

  /** Runs one of our chains; returns the terminal action. */
  private runChain(
    chain: string,
    p: { src: string; dst: string; proto: string; dport: number; iif: string; srcLocal: boolean; dstLocal: boolean },
    st: { mark: number },
    depth = 0,
  ): 'return' | 'drop' | 'masquerade' {
    if (depth > 8) fail('jump depth');
    const rules = this.chains.get(chain);
    if (!rules) fail(`no chain ${chain}`);
    for (const r of rules) {
      let i = 0;
      let ok = true;
      let target = '';
      let targetArgs: string[] = [];
      while (i < r.length && ok) {
        const neg = r[i] === '!';
        if (neg) i++;
        const tok = r[i]!;
        if (tok === '-s') ok = inCidr(p.src, r[++i]!) !== neg;
        else if (tok === '-i') {
          const name = r[++i]!;
          ok = (name.endsWith('+') ? p.iif.startsWith(name.slice(0, -1)) : p.iif === name) !== neg;
        } else if (tok === '-p') ok = (p.proto === r[++i]) !== neg;
        else if (tok === '-m') {
          const mod = r[++i];
          if (mod === 'set') {
            const sneg = r[i + 1] === '!';
            if (sneg) i++;
            if (r[++i] !== '--match-set') fail(`bad set match in ${r.join(' ')}`);
            const name = r[++i]!;
            const dirs = r[++i]!;
            ok = this.setMatch(name, dirs, p) !== sneg;
          } else if (mod === 'addrtype') {
            const aneg = r[i + 1] === '!';
            if (aneg) i++;
            const which = r[++i];
            if (r[++i] !== 'LOCAL') fail(`bad addrtype in ${r.join(' ')}`);
            ok = (which === '--src-type' ? p.srcLocal : p.dstLocal) !== aneg;
          } else if (mod === 'mark') {
            const mneg = r[i + 1] === '!';
            if (mneg) i++;
            if (r[++i] !== '--mark') fail(`bad mark match in ${r.join(' ')}`);
            const [v, m] = r[++i]!.split('/').map(Number);
            ok = ((st.mark & m!) === v) !== mneg;
          } else if (mod === 'comment') {
            i += 2;
          } else fail(`unknown match module ${mod}`);
        } else if (tok === '-j') {
          target = r[++i]!;
          targetArgs = r.slice(i + 1);
          i = r.length;
          break;
        } else fail(`unknown token ${tok} in ${r.join(' ')}`);
        i++;
      }
      if (!ok) continue;
      switch (target) {
        case 'RETURN':
          return 'return';
        case 'DROP':
          return 'drop';
        case 'MASQUERADE':
          return 'masquerade';
        case 'MARK':
          if (targetArgs[0] === '--or-mark') st.mark |= Number(targetArgs[1]);
          else if (targetArgs[0] === '--xor-mark') st.mark ^= Number(targetArgs[1]);
          else fail(`unknown MARK ${targetArgs.join(' ')}`);
          break;
        default: {
          const res = this.runChain(target, p, st, depth + 1);
          if (res !== 'return') return res;
        }
      }
    }
    return 'return';
  }

  trace(pkt: IpvsPacket, env: { localAddrs: string[]; chains: { services: string; firewall: string; postrouting: string } }): IpvsOutcome[] {
    const srcLocal = pkt.origin === 'host' || env.localAddrs.includes(pkt.src);
    const isLocal = (a: string): boolean => env.localAddrs.includes(a) || this.addrs.has(a);
    const base = { src: pkt.src, dst: pkt.dst, proto: pkt.proto, dport: pkt.dport, iif: pkt.origin === 'host' ? '' : (pkt.iif ?? 'eth0'), srcLocal, dstLocal: isLocal(pkt.dst) };
    const st = { mark: 0 };
    this.runChain(env.chains.services, base, st);
    if (!base.dstLocal) return [{ verdict: 'forward', dst: pkt.dst, dport: pkt.dport, share: 1, masquerade: false }];
    if (this.runChain(env.chains.firewall, base, { mark: st.mark }) === 'drop')
      return [{ verdict: 'drop', dst: pkt.dst, dport: pkt.dport, share: 1, masquerade: false }];
    const vs = this.vss.get(`${pkt.proto}|${pkt.dst}|${pkt.dport}`);
    if (!vs) return [{ verdict: 'local', dst: pkt.dst, dport: pkt.dport, share: 1, masquerade: false }];
    if (vs.scheduler !== 'rr') fail(`unexpected scheduler ${vs.scheduler}`);
    const live = [...vs.reals].filter(([, w]) => w > 0);
    if (live.length === 0) return [{ verdict: 'reject', dst: pkt.dst, dport: pkt.dport, share: 1, masquerade: false }];
    return live.map(([rk]) => {
      const [addr, port] = rk.split('|');
      const post = { ...base, dst: addr!, dport: Number(port) };
      const masq = this.runChain(env.chains.postrouting, post, { mark: st.mark }) === 'masquerade';
      return { verdict: 'ipvs' as const, dst: addr!, dport: Number(port), share: 1 / live.length, masquerade: masq, ...(vs.persistence !== undefined ? { persistence: vs.persistence } : {}) };
    });
  }
}
