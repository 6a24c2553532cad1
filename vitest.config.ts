import { defineConfig } from 'vitest/config';
import { TierSequencer } from './test/e2e/sequencer.ts';

// Tiers: test/unit (pure), test/netns (real kernel, root), test/e2e (local cluster).
// The netns and e2e tiers touch shared kernel state, so files run one at a time there.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 600_000,
    pool: 'forks',
    // the e2e tier's per-run cluster: named here, brought up by the first useCluster(), torn down at the end
    globalSetup: ['test/e2e/setup.ts'],
    sequence: { sequencer: TierSequencer },
  },
});
