// Applies renderRules() output with `iptables-restore --noflush`, each program one transaction: one program per family
// and sync, except full syncs of more than 1,000 services, whose per-service chains go first in chunk programs and
// the shared chains last (renderRules' `programs`).
// Full syncs (start-up, after a failure, or when the canary chain vanished) read the chains that exist, ensure the
// jumps from the built-in chains and rewrite everything; partial syncs rewrite the top-level chains and only the
// chains of changed services. Stale chains are flushed and deleted in the same transaction. Nothing is flushed on
// start-up: the first full sync replaces chain contents in place, so traffic keeps flowing across restarts.

import { Iptables, detectMode, type IptablesMode } from '../../../../lib/iptables/index.ts';
import type { Runner } from '../../../../lib/exec/runner.ts';
import type { IpFamily, ProxyBackend, SyncInput } from '../../model/types.ts';
import { builtinJumps, renderRules, topNames, type RenderResult, type RuleOptions, type Table, type TopRule } from './rules.ts';

export interface LoggerLike {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

export interface IptablesProxierOptions extends RuleOptions {
  runner: Runner;
  /** nft | legacy; detected (lib/iptables detectMode) when absent */
  mode?: IptablesMode;
  /** run every command inside this netns (tests) */
  netns?: string;
  log?: LoggerLike;
}

export interface SyncStats {
  full: boolean;
  bytes: number;
  chainsWritten: number;
  chainsDeleted: number;
  restoreMs: number;
}

const TABLES: Table[] = ['filter', 'nat', 'mangle'];

export class IptablesProxier implements ProxyBackend {
  readonly mode = 'iptables' as const;
  private readonly opts: IptablesProxierOptions;
  private readonly prefix: string;
  private ipt = new Map<IpFamily, Iptables>();
  private existing = new Map<IpFamily, Record<Table, Set<string>> | undefined>();
  private topRules = new Map<IpFamily, Map<string, TopRule[]>>();
  /** built-in chain jumps missing at the last full sync's save (inserted after the restore) */
  private missingJumps = new Map<IpFamily, ReturnType<typeof builtinJumps>>();
  private iptMode: IptablesMode | undefined;
  /** stats of the last sync per family */
  readonly lastStats = new Map<IpFamily, SyncStats>();
  /** text of the last program per family, when under 1 MiB (debugging, tests; big full syncs are not kept) */
  readonly lastProgram = new Map<IpFamily, string>();

  constructor(opts: IptablesProxierOptions) {
    this.opts = opts;
    this.prefix = opts.chainPrefix ?? 'FLATNET';
    this.iptMode = opts.mode;
  }

  private async iptables(family: IpFamily): Promise<Iptables> {
    let i = this.ipt.get(family);
    if (!i) {
      if (!this.iptMode) {
        this.iptMode = await detectMode(this.opts.runner, this.opts.netns);
        this.opts.log?.info({ mode: this.iptMode }, 'iptables mode detected');
      }
      i = new Iptables({ runner: this.opts.runner, family, mode: this.iptMode, netns: this.opts.netns });
      this.ipt.set(family, i);
    }
    return i;
  }

  /** Chains with our prefix that exist now, per table, and the built-in jumps that are missing (one iptables-save). */
  private async readChains(ipt: Iptables): Promise<Record<Table, Set<string>>> {
    const out: Record<Table, Set<string>> = { filter: new Set(), nat: new Set(), mangle: new Set() };
    const re = new RegExp(`^:(${this.prefix}-\\S+) `, 'gm');
    const missing: ReturnType<typeof builtinJumps> = [];
    // one iptables-save for every table, split into its *table sections
    const all = await ipt.saveText();
    const sections = new Map<string, string>();
    for (const part of all.split(/^\*/m).slice(1)) {
      const nl = part.indexOf('\n');
      sections.set(part.slice(0, nl).trim(), part.slice(nl + 1));
    }
    for (const t of TABLES) {
      const text = sections.get(t) ?? '';
      for (const m of text.matchAll(re)) out[t].add(m[1]!);
      const lines = text.split('\n');
      for (const j of builtinJumps(this.prefix)) {
        if (j.table !== t) continue;
        const target = j.args[j.args.length - 1]!;
        const comment = j.args[j.args.indexOf('--comment') + 1]!;
        const found = lines.some((l) => l.startsWith(`-A ${j.chain} `) && l.endsWith(`-j ${target}`) && l.includes(comment));
        if (!found) missing.push(j);
      }
    }
    this.missingJumps.set(ipt.family, missing);
    return out;
  }

  private async canaryPresent(ipt: Iptables): Promise<boolean> {
    const r = await ipt.run(['-t', 'mangle', '-S', topNames(this.prefix).canary], true);
    return r.code === 0;
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** Syncs are serialized: each one builds on the kernel state the previous one left. */
  sync(input: SyncInput): Promise<void> {
    const run = this.queue.then(() => this.syncNow(input));
    this.queue = run.catch(() => {});
    return run;
  }

  private async syncNow(input: SyncInput): Promise<void> {
    const family = input.family;
    const ipt = await this.iptables(family);
    let existing = this.existing.get(family);
    let full = input.full || existing === undefined || !this.topRules.has(family);
    // periodic (no-change) syncs check that nobody flushed our chains, as kube-proxy's canary does
    if (!full && input.changed.size === 0 && !(await this.canaryPresent(ipt))) {
      this.opts.log?.warn({ family }, 'canary chain missing: someone flushed our rules; doing a full sync');
      full = true;
    }
    if (full) {
      if (this.opts.localhostNodePorts && family === 4) {
        await this.opts.runner.run(['sysctl', '-w', 'net.ipv4.conf.all.route_localnet=1'], { netns: this.opts.netns, allowFail: true });
      }
      existing = await this.readChains(ipt);
    }
    const insertJumps = full ? (this.missingJumps.get(family) ?? []) : [];
    const res: RenderResult = renderRules({ ...input, full }, this.opts, { chains: existing, top: this.topRules.get(family), insertJumps });
    if (res.text.length < 1 << 20) this.lastProgram.set(family, res.text);
    else this.lastProgram.delete(family);
    const t0 = performance.now();
    try {
      for (const prog of res.programs) await ipt.restore(prog);
      if (full) this.missingJumps.set(family, []);
    } catch (err) {
      this.existing.set(family, undefined); // unknown state: the next sync is full and re-reads the kernel
      this.topRules.delete(family);
      throw err;
    }
    this.existing.set(family, res.chains);
    this.topRules.set(family, res.top);
    const st: SyncStats = {
      full,
      bytes: res.text.length,
      chainsWritten: res.chainsWritten,
      chainsDeleted: TABLES.reduce((a, t) => a + res.deleted[t].length, 0),
      restoreMs: performance.now() - t0,
    };
    this.lastStats.set(family, st);
    this.opts.log?.debug({ family, ...st }, 'iptables sync done');
  }

  /** Remove every jump and chain flatnet created, in both families. */
  async cleanup(): Promise<void> {
    for (const family of [4, 6] as const) {
      let ipt: Iptables;
      try {
        ipt = await this.iptables(family);
      } catch {
        continue;
      }
      for (const j of builtinJumps(this.prefix)) {
        while (await ipt.exists(j.table, j.chain, j.args)) await ipt.run(['-t', j.table, '-D', j.chain, ...j.args]);
      }
      const chains = await this.readChains(ipt);
      const lines: string[] = [];
      for (const t of TABLES) {
        if (!chains[t].size) continue;
        lines.push(`*${t}`);
        for (const c of chains[t]) lines.push(`:${c} - [0:0]`);
        for (const c of chains[t]) lines.push(`-X ${c}`);
        lines.push('COMMIT');
      }
      if (lines.length) await ipt.restore(lines.join('\n') + '\n');
      this.existing.set(family, undefined);
      this.topRules.delete(family);
    }
  }
}
