import { defineConfig } from 'vitest/config';
import { TierSequencer } from './test/helpers/sequencer.ts';

// One vitest project per tier, each with its own include and setup (`vitest run --project <tier>`; test/run-tiers.mjs
// runs them in order for `npm test`):
//   unit     pure code, no root, no kernel state; files run in parallel
//   netns    the real kernel in per-run network namespaces (root)
//   harness  the local cluster's own parts (test/cluster: agent, netexec, runtime config, teardown)
//   e2e      the local cluster (real control plane, containerd, flatnet's daemon); the only tier with a global setup
//   kind     a kind cluster with flatnet (needs a container engine)
// Every tier but unit touches shared kernel state, so its files run one at a time.
const serial = { fileParallelism: false } as const;
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 600_000,
    pool: 'forks',
    sequence: { sequencer: TierSequencer },
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'netns', include: ['test/netns/**/*.test.ts'], ...serial } },
      { extends: true, test: { name: 'harness', include: ['test/harness/**/*.test.ts'], ...serial } },
      // the e2e tier's per-run cluster: named here, brought up by the first useCluster(), torn down at the end
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], globalSetup: ['test/e2e/setup.ts'], ...serial } },
      // kubectl and docker calls against a 3-node cluster on a shared 2-core machine: minutes, not seconds
      { extends: true, test: { name: 'kind', include: ['test/kind/**/*.test.ts'], testTimeout: 600_000, ...serial } },
    ],
  },
});
