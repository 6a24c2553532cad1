// vitest globalSetup for the e2e tier (register in vitest.config.ts: test.globalSetup = ['test/e2e/setup.ts']).
// It picks the cluster name for the run and tears that cluster down when the run ends. The cluster itself is brought
// up lazily by the first useCluster() call (test/e2e/helpers/cluster.ts), so runs without e2e tests start nothing.
//   FLATNET_E2E_CLUSTER=<name>  reuse (or create) that cluster and leave it running afterwards
//   FLATNET_E2E_KEEP=1          leave the per-run cluster running (remove it with npm run cluster:down -- --name <name>)
import type { TestProject } from 'vitest/node';
import { down } from '../cluster/cli.ts';
import { loadState } from '../cluster/state.ts';
import { runPrefix } from '../helpers/prefix.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    flatnetE2eCluster: string;
  }
}

export default function setup(project: TestProject): () => Promise<void> {
  const reuse = process.env.FLATNET_E2E_CLUSTER;
  const name = reuse ?? runPrefix();
  project.provide('flatnetE2eCluster', name);
  return async () => {
    if (reuse || process.env.FLATNET_E2E_KEEP === '1') {
      if (loadState(name)) process.stderr.write(`[e2e] cluster ${name} left running (npm run cluster:down -- --name ${name})\n`);
      return;
    }
    if (!loadState(name)) return;
    const left = await down(name);
    const n = left.netns.length + left.links.length + left.pids.length + left.mounts.length + left.files.length;
    if (n) process.stderr.write(`[e2e] cluster ${name}: leftovers after down: ${JSON.stringify(left)}\n`);
  };
}
