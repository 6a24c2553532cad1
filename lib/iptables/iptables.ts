// Runs iptables / iptables-save / iptables-restore for one address family through an injected Runner.

import type { RunResult, Runner } from '../exec/runner.ts';
import { RestoreProgram, type IptablesTable } from './restore.ts';
import { countRules, parseSave, type SavedRuleset } from './save.ts';

export type IptablesMode = 'nft' | 'legacy';
export type IpFamily = 4 | 6;

export interface IptablesOptions {
  runner: Runner;
  family: IpFamily;
  mode: IptablesMode;
  /** run inside this network namespace (path) */
  netns?: string;
}

/** The binary names for a family and mode, e.g. ip6tables-nft-restore. */
export function binaries(family: IpFamily, mode: IptablesMode): { iptables: string; save: string; restore: string } {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  return { iptables: `${base}-${mode}`, save: `${base}-${mode}-save`, restore: `${base}-${mode}-restore` };
}

/** One family's iptables, bound to a mode and (optionally) a network namespace. */
export class Iptables {
  readonly family: IpFamily;
  readonly mode: IptablesMode;
  private readonly runner: Runner;
  private readonly netns: string | undefined;

  constructor(opts: IptablesOptions) {
    this.runner = opts.runner;
    this.family = opts.family;
    this.mode = opts.mode;
    this.netns = opts.netns;
  }

  private get bin() {
    return binaries(this.family, this.mode);
  }

  /** iptables-save [-t table], parsed. */
  async save(table?: IptablesTable): Promise<SavedRuleset> {
    return parseSave(await this.saveText(table));
  }

  async saveText(table?: IptablesTable): Promise<string> {
    const argv = [this.bin.save, ...(table ? ['-t', table] : [])];
    const r = await this.runner.run(argv, { netns: this.netns });
    return r.stdout;
  }

  /** Apply a program atomically with `iptables-restore --noflush -w`. An empty program is a no-op. */
  async restore(program: RestoreProgram | string): Promise<void> {
    const text = typeof program === 'string' ? program : program.render();
    if (!text) return;
    await this.runner.run([this.bin.restore, '--noflush', '-w'], { input: text, netns: this.netns });
  }

  /** iptables -w <args>; with allowFail the caller inspects `code`. */
  run(args: readonly string[], allowFail = false): Promise<RunResult> {
    return this.runner.run([this.bin.iptables, '-w', ...args], { netns: this.netns, allowFail });
  }

  /** iptables -C: does this exact rule exist? */
  async exists(table: IptablesTable, chain: string, args: readonly string[]): Promise<boolean> {
    const r = await this.run(['-t', table, '-C', chain, ...args], true);
    return r.code === 0;
  }

  /** iptables -N that tolerates an existing chain (never flushes it, unlike declaring it in a restore program). */
  async ensureChain(table: IptablesTable, chain: string): Promise<void> {
    const r = await this.run(['-t', table, '-N', chain], true);
    if (r.code === 0) return;
    if ((await this.run(['-t', table, '-S', chain], true)).code === 0) return; // it existed
    throw new Error(`cannot create chain ${table}/${chain}: ${r.stderr.trim()}`);
  }
}

export interface ModeEvidence {
  nftSave: string;
  legacySave: string;
}

/**
 * Decide between iptables-nft and iptables-legacy the way kube-proxy / kind's iptables-wrapper do:
 * a kubelet hint chain (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) wins; otherwise the mode holding more rules
 * wins; a tie (including nothing anywhere) picks nft.
 */
export function decideMode(ev: ModeEvidence): IptablesMode {
  const hint = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m;
  if (hint.test(ev.nftSave)) return 'nft';
  if (hint.test(ev.legacySave)) return 'legacy';
  return countRules(ev.legacySave) > countRules(ev.nftSave) ? 'legacy' : 'nft';
}

/** Gather both modes' v4+v6 rulesets (missing binaries or tables count as empty) and decide. */
export async function detectMode(runner: Runner, netns?: string): Promise<IptablesMode> {
  const dump = async (mode: IptablesMode): Promise<string> => {
    const parts = await Promise.all(
      ([4, 6] as const).map(async (f) => {
        try {
          const r = await runner.run([binaries(f, mode).save], { netns, allowFail: true });
          return r.code === 0 ? r.stdout : '';
        } catch {
          return '';
        }
      }),
    );
    return parts.join('\n');
  };
  const [nftSave, legacySave] = await Promise.all([dump('nft'), dump('legacy')]);
  return decideMode({ nftSave, legacySave });
}
