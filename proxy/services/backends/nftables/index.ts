// The nftables proxy backend. The daemon imports this lazily when mode is nftables.
import type { Logger } from '../../../../lib/log/logger.ts';
import type { Runner } from '../../../../lib/exec/runner.ts';
import type { ProxyBackend } from '../../model/types.ts';
import { NftablesProxier } from './proxier.ts';

export { NftablesProxier, parseAffinityJson } from './proxier.ts';
export type { NftProxierOptions, SyncStats } from './proxier.ts';
export { DEFAULT_TABLE, renderFull, renderIncremental, cleanupProgram } from './rules.ts';

export interface CreateNftBackendOptions {
  family: 4 | 6;
  runner: Runner;
  log: Logger;
  /** table name, default flatnet-proxy */
  table?: string;
  /** run nft inside this netns (tests) */
  netns?: string;
  /** the daemon's `nftables` config section; `table` is honoured */
  config?: Record<string, unknown>;
}

/** Checks that nft works here (kernel nf_tables present) and returns the backend. */
export async function createBackend(opts: CreateNftBackendOptions): Promise<ProxyBackend> {
  const r = await opts.runner.run(['nft', '--version'], { netns: opts.netns, allowFail: true });
  if (r.code !== 0) throw new Error(`nftables proxy mode needs the nft binary: ${r.stderr.trim() || 'nft --version failed'}`);
  const probe = await opts.runner.run(['nft', '-c', '-f', '-'], {
    netns: opts.netns,
    allowFail: true,
    input: `add table ${opts.family === 6 ? 'ip6' : 'ip'} flatnet-probe\n`,
  });
  if (probe.code !== 0) throw new Error(`nftables proxy mode: the kernel refused an nftables table: ${probe.stderr.trim()}`);
  const table = opts.table ?? (typeof opts.config?.table === 'string' ? opts.config.table : undefined);
  return new NftablesProxier({ family: opts.family, runner: opts.runner, log: opts.log, table, netns: opts.netns });
}
