// Runs nft through an injected Runner: applies transactions with `nft -f -` and lists tables as JSON.

import type { Runner } from '../exec/runner.ts';
import type { NftFamily, NftTransaction } from './transaction.ts';

export interface NftRule {
  family: string;
  table: string;
  chain: string;
  handle: number;
  comment?: string;
  /** the rule's expressions as nft's JSON output gives them */
  expr: unknown[];
}

export interface NftChain {
  family: string;
  table: string;
  name: string;
  handle: number;
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
}

export interface NftTableListing {
  chains: NftChain[];
  rules: NftRule[];
  sets: { name: string; type: unknown; handle: number }[];
}

/** Parse `nft -j list ...` output into chains, rules and sets. */
export function parseNftJson(text: string): NftTableListing {
  const doc = JSON.parse(text) as { nftables?: Record<string, unknown>[] };
  const out: NftTableListing = { chains: [], rules: [], sets: [] };
  for (const item of doc.nftables ?? []) {
    if (item.chain) out.chains.push(item.chain as NftChain);
    else if (item.rule) {
      const r = item.rule as NftRule;
      out.rules.push({ ...r, expr: r.expr ?? [] });
    } else if (item.set) out.sets.push(item.set as NftTableListing['sets'][number]);
    else if (item.map) out.sets.push(item.map as NftTableListing['sets'][number]);
  }
  return out;
}

/** nft bound to a Runner and (optionally) a network namespace. */
export class Nft {
  private readonly runner: Runner;
  private readonly netns: string | undefined;

  constructor(opts: { runner: Runner; netns?: string }) {
    this.runner = opts.runner;
    this.netns = opts.netns;
  }

  /** Apply a transaction atomically (`nft -f -`). An empty transaction is a no-op. */
  async apply(tx: NftTransaction | string): Promise<void> {
    const text = typeof tx === 'string' ? tx : tx.render();
    if (!text) return;
    await this.runner.run(['nft', '-f', '-'], { input: text, netns: this.netns });
  }

  /** `nft -j list table`; undefined when the table does not exist. Keep it off hot paths for large tables. */
  async listTable(family: NftFamily, table: string): Promise<NftTableListing | undefined> {
    const r = await this.runner.run(['nft', '-j', 'list', 'table', family, table], { netns: this.netns, allowFail: true });
    if (r.code !== 0) {
      if (/No such file or directory|does not exist/i.test(r.stderr)) return undefined;
      throw new Error(`nft list table ${family} ${table} failed: ${r.stderr.trim()}`);
    }
    return parseNftJson(r.stdout);
  }

  /** `nft list ruleset` as text (for tests and debugging) */
  async listRuleset(): Promise<string> {
    return (await this.runner.run(['nft', 'list', 'ruleset'], { netns: this.netns })).stdout;
  }
}
