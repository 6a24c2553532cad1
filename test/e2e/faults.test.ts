// Control-plane faults on the local cluster, with flatnet's daemon on every node:
//  - the apiserver is unreachable for 60 s (SIGSTOP: connections hang, as behind a dead load balancer): the rules stay
//    exactly as they were (no flush), requests through a ClusterIP from every node keep succeeding, and once it is
//    back the daemons resync (a Service created then is programmed);
//  - etcd restarts: the same, and the apiserver's watches carry on to the daemons.
import { appendFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDetached, stopProcess } from '../cluster/control-plane/proc.ts';
import { loadState, record } from '../cluster/state.ts';
import { sleep, waitFor } from '../helpers/wait.ts';
import { manifest, netexecPod, useCluster, type Cluster } from './helpers/cluster.ts';

let c: Cluster;
let ns: string;

/** npm run test:faults collects these rows into test/bench/results/faults.md (FLATNET_FAULTS_OUT names the file). */
function report(fault: string, outcome: string, lost: string, clean: boolean): void {
  const out = process.env['FLATNET_FAULTS_OUT'];
  if (out) appendFileSync(out, JSON.stringify({ fault, injected: 1, outcome, lost, clean }) + '\n');
}

const service = (name: string): Record<string, unknown> => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
});

async function clusterIP(name: string): Promise<string> {
  return (await c.kubectlJson<{ spec: { clusterIP: string } }>(['get', 'svc', '-n', ns, name])).spec.clusterIP;
}

async function request(node: string, ip: string): Promise<boolean> {
  const r = await c.exec(node, ['curl', '-sS', '-m', '3', `http://${ip}/hostname`], { allowFail: true });
  return r.code === 0 && ['w1', 'w2'].includes(r.stdout.trim());
}

/**
 * The proxy rules on a node, as the kernel holds them (nft or iptables, whichever the daemon uses). Packet counters
 * and the remaining lifetime of session-affinity entries (`expires 2h59m57s`) are the kernel's, not the daemon's, and
 * change every second: they are masked; the entries themselves and their timeouts stay in the text.
 */
async function rules(node: string): Promise<string> {
  const nft = await c.exec(node, ['nft', 'list', 'table', 'ip', 'flatnet-proxy'], { allowFail: true });
  if (nft.code === 0) return nft.stdout.replace(/counter packets \d+ bytes \d+/g, 'counter').replace(/ expires [\dhms]+/g, '');
  const ipt = await c.exec(node, ['iptables-save', '-t', 'nat']);
  return ipt.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
    .join('\n');
}

/**
 * Every node's rules once nothing is changing them: the namespaces of earlier test files are gone (their deletion
 * goes on after those files end and rewrites the rules for a while) and two reads 3 s apart (over two
 * minSyncPeriods) agree, so no sync is pending.
 */
async function settledRules(): Promise<string[]> {
  await waitFor(
    'no namespace terminating',
    async () => !(await c.kubectl(['get', 'namespaces', '-o', 'jsonpath={.items[*].status.phase}'])).includes('Terminating'),
    180_000,
    1000,
  );
  let last = await Promise.all(c.nodeNames.map(rules));
  return waitFor(
    'rules settled',
    async () => {
      await sleep(3000);
      const now = await Promise.all(c.nodeNames.map(rules));
      const same = JSON.stringify(now) === JSON.stringify(last);
      last = now;
      return same ? now : undefined;
    },
    60_000,
    0,
  );
}

/** Requests through `ip` from every node, one round per second, while `during` runs; returns [ok, failed]. */
async function loadWhile(ip: string, during: Promise<void>): Promise<[number, number]> {
  let done = false;
  void during.finally(() => (done = true));
  let ok = 0;
  let failed = 0;
  while (!done) {
    for (const n of c.nodeNames) {
      if (await request(n, ip)) ok++;
      else failed++;
    }
    await sleep(1000);
  }
  return [ok, failed];
}

beforeAll(async () => {
  c = await useCluster({ nodes: 3 });
  ns = await c.createNamespace('faults');
  await c.apply(
    manifest(
      netexecPod({ name: 'w1', namespace: ns, node: c.nodeNames[1]!, labels: { app: 'web' } }),
      netexecPod({ name: 'w2', namespace: ns, node: c.nodeNames[2]!, labels: { app: 'web' } }),
      service('web'),
    ),
  );
  await c.waitPodsReady(ns, 'app=web', 2);
  const ip = await clusterIP('web');
  for (const n of c.nodeNames) await waitFor(`web from ${n}`, () => request(n, ip), 60_000, 500);
}, 900_000);

afterAll(async () => {
  await c?.kubectlResult(['delete', 'namespace', ns, '--wait=false']);
});

describe('control-plane faults', () => {
  it('apiserver unreachable for 60 s: rules untouched, every request served, resync when it is back', async () => {
    const ip = await clusterIP('web');
    const before = await settledRules();
    const api = loadState(c.name)!.processes.find((p) => p.role === 'kube-apiserver')!;
    process.kill(api.pid, 'SIGSTOP');
    let resumed = false;
    try {
      const [ok, failed] = await loadWhile(ip, sleep(60_000));
      const after = await Promise.all(c.nodeNames.map(rules));
      const unchanged = JSON.stringify(after) === JSON.stringify(before);
      report(
        `apiserver unreachable for 60 s (SIGSTOP), ${c.nodeNames.length} nodes`,
        `${ok} requests through a ClusterIP from the nodes served, ${failed} failed; rules ${unchanged ? 'unchanged on every node' : 'CHANGED'}; a Service created afterwards was programmed`,
        failed === 0 && unchanged ? 'nothing' : `${failed} requests`,
        failed === 0 && unchanged,
      );
      expect(failed).toBe(0);
      expect(ok).toBeGreaterThanOrEqual(c.nodeNames.length * 20);
      expect(after).toEqual(before);
    } finally {
      process.kill(api.pid, 'SIGCONT');
      resumed = true;
    }
    expect(resumed).toBe(true);
    await waitFor('apiserver answering', async () => (await c.kubectlResult(['get', '--raw', '/readyz'])).code === 0, 60_000, 500);
    await c.apply(manifest(service('after-api')));
    const ip2 = await clusterIP('after-api');
    for (const n of c.nodeNames) await waitFor(`after-api from ${n}`, () => request(n, ip2), 90_000, 500);
  }, 600_000);

  it('etcd restart: every request served meanwhile; changes flow to the daemons after', async () => {
    const ip = await clusterIP('web');
    const s = loadState(c.name)!;
    const etcd = s.processes.find((p) => p.role === 'etcd')!;
    const restart = (async (): Promise<void> => {
      await stopProcess(etcd, 10_000);
      await sleep(10_000);
      const fresh = startDetached(etcd.argv, { role: 'etcd', log: etcd.log });
      record(s, (x) => {
        x.processes = x.processes.map((p) => (p.role === 'etcd' ? { ...fresh, argv: etcd.argv } : p));
      });
      await waitFor('apiserver ready on the new etcd', async () => (await c.kubectlResult(['get', '--raw', '/readyz'])).code === 0, 90_000, 500);
    })();
    const [ok, failed] = await loadWhile(ip, restart);
    report(`etcd restart (down 10 s), ${c.nodeNames.length} nodes`, `${ok} requests through a ClusterIP from the nodes served, ${failed} failed; a Service created afterwards was programmed`, failed === 0 ? 'nothing' : `${failed} requests`, failed === 0);
    expect(failed).toBe(0);
    expect(ok).toBeGreaterThan(0);
    await c.apply(manifest(service('after-etcd')));
    const ip2 = await clusterIP('after-etcd');
    for (const n of c.nodeNames) await waitFor(`after-etcd from ${n}`, () => request(n, ip2), 90_000, 500);
  }, 300_000);
});
