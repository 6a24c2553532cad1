// One call for e2e tests: `const c = await useCluster({ nodes: 3, proxyMode: 'iptables' })` (in beforeAll) returns a
// handle on the run's local cluster, bringing it up the first time (later files reuse it; test/e2e/setup.ts removes
// it at the end of the run). A cluster with fewer nodes or another proxy mode than asked for is recreated.
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { clusterAlive, down } from '../../cluster/cli.ts';
import { loadState, STATE_ROOT } from '../../cluster/state.ts';
import { clusterHandle, startCluster, type Cluster, type UseClusterOptions } from './handle.ts';

export * from './handle.ts';

function clusterName(): string {
  let provided: string | undefined;
  try {
    provided = inject('flatnetE2eCluster');
  } catch {
    provided = undefined;
  }
  return provided ?? process.env.FLATNET_E2E_CLUSTER ?? 'fte2e';
}

/** A cross-process lock (a file holding the owner's PID; a dead owner's lock is taken over). */
async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(STATE_ROOT, { recursive: true });
  const lock = join(STATE_ROOT, `.${name}.lock`);
  const deadline = Date.now() + 900_000;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      let owner = 0;
      let fresh = false;
      try {
        owner = Number(readFileSync(lock, 'utf8').trim());
        fresh = Date.now() - statSync(lock).mtimeMs < 10_000;
      } catch {
        continue; // released meanwhile
      }
      // an empty file that is not fresh, or a dead owner: take the lock over
      if ((!owner && !fresh) || (owner && !existsSync(`/proc/${owner}`))) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`lock ${lock} held by PID ${owner} for too long`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

export async function useCluster(o: UseClusterOptions = {}): Promise<Cluster> {
  const name = clusterName();
  const wantNodes = Math.max(o.nodes ?? 3, 3);
  const s = await withLock(name, async () => {
    const cur = loadState(name);
    // a file that names no proxy mode takes the running cluster's (flatnet's daemon in any mode serves it)
    const wantMode = o.proxyMode ?? (cur && cur.options.proxyMode !== 'none' ? cur.options.proxyMode : 'iptables');
    if (
      cur &&
      clusterAlive(cur) &&
      cur.options.nodes >= wantNodes &&
      cur.options.proxyMode === wantMode &&
      (cur.options.proxyImpl ?? 'flatnet') === (o.proxy ?? 'flatnet') &&
      (!o.podNetwork || cur.options.podNetwork === o.podNetwork)
    ) {
      return cur;
    }
    if (cur) await down(name);
    return startCluster({ name, nodes: wantNodes, proxyMode: wantMode, proxy: o.proxy, podNetwork: o.podNetwork });
  });
  return clusterHandle(s);
}

