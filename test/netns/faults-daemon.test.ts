// The daemon fault runs of npm run test:faults (test/bench/faults-daemon.ts), short and with a fixed seed: kill -9
// at random points of a full sync converges to the clean-start ruleset on restart, and an injected nft /
// iptables-restore failure during a partial sync is counted by the metrics and followed by a full sync that
// restores the clean-start ruleset. Real kernel, throw-away netns.
import { afterAll, describe, expect, it } from 'vitest';
import { injectedFailures, killDuringFullSync } from '../bench/faults-daemon.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

const P = runPrefix();
afterAll(() => removeNetnsWithPrefix(P));

describe.each(['nftables', 'iptables'])('daemon faults, %s', (mode) => {
  it('an injected restore failure is counted, followed by a full sync, and leaves the clean-start ruleset', async () => {
    const row = await injectedFailures(P, mode, 3, 100);
    expect(row, row.outcome).toMatchObject({ injected: 3, clean: true });
  }, 120_000);

  it('kill -9 during a full sync: the restart converges to the clean-start ruleset', async () => {
    const row = await killDuringFullSync(P, mode, 4, 1000, 20_261_205);
    expect(row, row.outcome).toMatchObject({ injected: 4, clean: true });
  }, 300_000);
});
