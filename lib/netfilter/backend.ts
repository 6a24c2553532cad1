// Which netfilter front end a plugin uses when its config names none, decided as the reference plugins decide it
// (containernetworking/plugins pkg/utils/netfilter.go): iptables, unless iptables cannot be used and nftables can.
import type { Runner } from '../exec/runner.ts';

export type NetfilterBackend = 'iptables' | 'nftables';

/** A command that could not even start (binary missing) counts as "not supported", like a failing one. */
async function succeeds(runner: Runner, argv: string[], netns: string | undefined, input?: string): Promise<boolean> {
  try {
    return (await runner.run(argv, { allowFail: true, netns, ...(input === undefined ? {} : { input }) })).code === 0;
  } catch {
    return false;
  }
}

/** Can iptables be used (iptables-nft or -legacy)? The reference asks whether it can read filter INPUT. */
export const supportsIptables = (runner: Runner, netns?: string): Promise<boolean> => succeeds(runner, ['iptables', '-t', 'filter', '-S', 'INPUT'], netns);

/** Can nft be used? Checks (without committing) a transaction that adds a table, as knftables.New does. */
export const supportsNftables = (runner: Runner, netns?: string): Promise<boolean> =>
  succeeds(runner, ['nft', '--check', '-f', '-'], netns, 'add table ip flatnet_supports_nftables_test\n');

/** The configured backend, or the reference's default: iptables unless only nftables is usable. */
export async function resolveBackend(runner: Runner, configured: NetfilterBackend | undefined, netns?: string): Promise<NetfilterBackend> {
  if (configured) return configured;
  if (!(await supportsIptables(runner, netns)) && (await supportsNftables(runner, netns))) return 'nftables';
  return 'iptables';
}
