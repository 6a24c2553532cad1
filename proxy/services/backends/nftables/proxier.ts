// nftables backend: applies the programs rendered by rules.ts through a Runner (`nft -f -`, one transaction each).
// Keeps the last-applied state in memory so incremental syncs never list the table; a failed sync forces the next
// one to be full. Only the dynamic affinity map is ever listed: after a full sync that replaced earlier state, and
// when an affinity service lost endpoints.

import type { Logger } from '../../../../lib/log/logger.ts';
import type { Runner } from '../../../../lib/exec/runner.ts';
import type { IpFamily, ProxyBackend, SyncInput } from '../../model/types.ts';
import {
  DEFAULT_TABLE,
  affinityDeleteProgram,
  cleanupProgram,
  configSignature,
  renderFull,
  renderIncremental,
  staleAffinityEntries,
  type AffinityEntry,
  type NftRenderOptions,
  type NftState,
} from './rules.ts';

export interface NftProxierOptions {
  family: IpFamily;
  runner: Runner;
  log: Logger;
  /** table name (default flatnet-proxy); tests use a per-run name */
  table?: string;
  /** run nft inside this network namespace */
  netns?: string;
  /** nft binary (default `nft`) */
  nftPath?: string;
}

export interface SyncStats {
  full: boolean;
  /** bytes of nft program applied */
  bytes: number;
  ms: number;
  affinityPruned: number;
}

const PROTO_NAMES: Record<number, string> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

/** Parses `nft -j list map ... affinity` into entries. */
export function parseAffinityJson(text: string): AffinityEntry[] {
  const doc = JSON.parse(text) as { nftables?: { map?: { elem?: unknown[] } }[] };
  const out: AffinityEntry[] = [];
  for (const item of doc.nftables ?? []) {
    for (const el of item.map?.elem ?? []) {
      if (!Array.isArray(el) || el.length !== 2) continue;
      const k = el[0] as { concat?: unknown[]; elem?: { val?: { concat?: unknown[] } } };
      const key = k.concat ?? k.elem?.val?.concat;
      const val = (el[1] as { concat?: unknown[] }).concat;
      if (!key || key.length !== 4 || !val || val.length !== 2) continue;
      const p = key[2];
      out.push({
        client: String(key[0]),
        vip: String(key[1]),
        proto: typeof p === 'number' ? (PROTO_NAMES[p] ?? String(p)) : String(p),
        port: Number(key[3]),
        endpoint: String(val[0]),
        endpointPort: Number(val[1]),
      });
    }
  }
  return out;
}

export class NftablesProxier implements ProxyBackend {
  readonly mode = 'nftables' as const;
  private readonly o: NftProxierOptions;
  private readonly render: NftRenderOptions;
  private state: NftState | undefined;
  private needFull = true;
  /** the last sync's figures, for metrics and tests */
  lastStats: SyncStats | undefined;

  constructor(o: NftProxierOptions) {
    this.o = o;
    this.render = { table: o.table ?? DEFAULT_TABLE, family: o.family };
  }

  private async nft(program: string, allowFail = false): Promise<{ code: number; stderr: string }> {
    const argv = [this.o.nftPath ?? 'nft', '-f', '-'];
    const r = await this.o.runner.run(argv, { input: program, netns: this.o.netns, allowFail });
    return { code: r.code, stderr: r.stderr };
  }

  async sync(input: SyncInput): Promise<void> {
    if (input.family !== this.o.family) throw new Error(`nftables backend for IPv${this.o.family} got an IPv${input.family} sync`);
    const t0 = performance.now();
    const full = input.full || this.needFull || !this.state || this.state.sig !== configSignature(input);
    const res = full ? renderFull(input, this.render, this.state) : renderIncremental(input, this.render, this.state!);
    if (res.program) {
      try {
        await this.nft(res.program);
      } catch (err) {
        // the in-memory state no longer matches the kernel (incremental renders update it in place): rebuild from
        // scratch next time (delete + recreate the table)
        this.needFull = true;
        this.state = undefined;
        this.o.log.error({ err: String(err), full }, 'nftables sync failed; the next sync will be a full rebuild');
        throw err;
      }
    }
    this.state = res.state;
    this.needFull = false;
    let pruned = 0;
    if (res.affinityStale.size > 0) {
      try {
        pruned = await this.pruneAffinity();
      } catch (err) {
        this.o.log.warn({ err: String(err) }, 'nftables: pruning stale affinity entries failed');
      }
    }
    this.lastStats = { full, bytes: res.program.length, ms: performance.now() - t0, affinityPruned: pruned };
    this.o.log.debug(this.lastStats, 'nftables sync done');
  }

  /** Deletes affinity entries that point at endpoints which are gone. Returns how many were deleted. */
  async pruneAffinity(): Promise<number> {
    if (!this.state) return 0;
    const fam = this.o.family === 6 ? 'ip6' : 'ip';
    const r = await this.o.runner.run([this.o.nftPath ?? 'nft', '-j', 'list', 'map', fam, this.render.table, 'affinity'], {
      netns: this.o.netns,
      allowFail: true,
    });
    if (r.code !== 0) return 0;
    const stale = staleAffinityEntries(parseAffinityJson(r.stdout), this.state);
    if (stale.length === 0) return 0;
    const res = await this.nft(affinityDeleteProgram(this.render, stale), true);
    if (res.code === 0) return stale.length;
    // an entry may have expired between list and delete: fall back to one at a time
    let n = 0;
    for (const e of stale) if ((await this.nft(affinityDeleteProgram(this.render, [e]), true)).code === 0) n++;
    return n;
  }

  async cleanup(): Promise<void> {
    await this.nft(cleanupProgram(this.render));
    this.state = undefined;
    this.needFull = true;
  }
}
