// npm run bench:proxy [-- --sizes 1000,10000 --changes 30 --mode iptables|nftables --vs NAME]
// The proxy daemon's pipeline at scale, against the real kernel in a scratch netns:
//   Services x 3 endpoints fed through the daemon's watch interface (the same handlers the informers call)
//   -> change tracker -> bounded-frequency runner (minSyncPeriod 1 s) -> planner -> backend -> iptables-restore.
// Measures: initial sync time (lists in -> rules applied), one-Service change -> rules applied (p50/p99; changes
// spaced 1.2 s apart so minSyncPeriod adds no wait), the sync's own duration, daemon RSS.
// The API server is not in the loop (watch delivery adds a few ms on a local apiserver; not measured here).
// --vs NAME hands the whole run to test/bench/proxy-vs-NAME.ts (its main()): `--vs upstream` is the side-by-side
// comparison with upstream kube-proxy on a local cluster (see that file; results in results/proxy-vs-upstream.*).

import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { IptablesProxier } from '../../proxy/services/backends/iptables/proxier.ts';
import { ProxyDaemon } from '../../proxy/daemon.ts';
import type { IpFamily, ProxyBackend } from '../../proxy/services/model/types.ts';
import type { WatchHandlers, WatchSource } from '../../proxy/services/watch/informers.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { proxyConfig } from '../helpers/proxy-fixtures.ts';
import { opt, pct, r1 } from './util.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const SIZES = opt('sizes', '1000,10000').split(',').map(Number);
const CHANGES = Number(opt('changes', '30'));
const MODE = opt('mode', 'iptables');
const VS = opt('vs', '');

const silent = { debug() {}, info() {}, warn() {}, error() {} };

class FeedSource implements WatchSource {
  h: WatchHandlers | undefined;
  private release: (() => void) | undefined;
  private ready: (() => void) | undefined;
  readonly started = new Promise<void>((r) => (this.ready = r));
  start(h: WatchHandlers): Promise<void> {
    this.h = h;
    this.ready?.();
    return new Promise((r) => (this.release = r));
  }
  listsDone(): void {
    this.release?.();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

function ipOf(base: number, i: number): string {
  const n = base + i;
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
const SVC_BASE = (10 << 24) | (96 << 16) | 10;
const POD_BASE = (10 << 24) | (244 << 16) | 10;

function svcObj(i: number): V1Service {
  return {
    metadata: { namespace: `ns${i % 50}`, name: `svc-${i}`, resourceVersion: String(i) },
    spec: { type: 'ClusterIP', clusterIP: ipOf(SVC_BASE, i), clusterIPs: [ipOf(SVC_BASE, i)], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };
}

function sliceObj(i: number, gen: number): V1EndpointSlice {
  return {
    metadata: {
      namespace: `ns${i % 50}`,
      name: `svc-${i}-abc`,
      labels: { 'kubernetes.io/service-name': `svc-${i}` },
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': new Date().toISOString() },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [0, 1, 2].map((k) => ({
      addresses: [ipOf(POD_BASE, (i * 3 + k + gen * 7919) % 4_000_000)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: k === 0 ? 'bench-node' : `other-${k}`,
    })),
  };
}

const mb = (b: number): number => Math.round(b / 1048576);

interface Row {
  impl: string;
  mode: string;
  services: number;
  endpointsPerService: number;
  initialSyncMs: number;
  changeLatencyP50Ms: number;
  changeLatencyP99Ms: number;
  changeSyncP50Ms: number;
  changeSyncP99Ms: number;
  changes: number;
  rssMB: number;
  heapMB: number;
  restoreBytesFull: number;
  restoreBytesPartial: number;
  verified: boolean;
}

async function makeBackend(netns: string, prefix: string): Promise<ProxyBackend> {
  const runner = new ExecRunner();
  if (MODE === 'iptables') return new IptablesProxier({ runner, mode: 'nft', netns, chainPrefix: prefix.toUpperCase() });
  const mod = (await import('../../proxy/services/backends/nftables/index.ts')) as {
    createBackend(o: { family: IpFamily; runner: ExecRunner; log: typeof silent; netns: string; table?: string }): Promise<ProxyBackend>;
  };
  return mod.createBackend({ family: 4, runner, log: silent, netns, table: `${prefix}-proxy` });
}

async function benchSize(n: number): Promise<Row> {
  const prefix = runPrefix();
  const nsName = `${prefix}bench`;
  const netns = `/var/run/netns/${nsName}`;
  execFileSync('ip', ['netns', 'add', nsName]);
  try {
    execFileSync('ip', ['-n', nsName, 'link', 'set', 'lo', 'up']);
    const backend = await makeBackend(netns, prefix);
    const source = new FeedSource();
    let syncWaiter: (() => void) | undefined;
    const daemon = new ProxyDaemon({
      nodeName: 'bench-node',
      config: proxyConfig(),
      backends: new Map([[4, backend]]),
      source,
      log: silent,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30000,
      fallbackNodeIPs: ['192.168.200.1'],
      onHealthPorts: () => {
        syncWaiter?.();
      },
    });
    const started = daemon.start();
    await source.started;
    for (let i = 0; i < n; i++) {
      source.h!.service(svcObj(i), false);
      source.h!.slice(sliceObj(i, 0), false);
    }
    const t0 = performance.now();
    source.listsDone();
    await started;
    const initialSyncMs = performance.now() - t0;
    if (daemon.syncCount !== 1) throw new Error(`initial sync failed: ${String(daemon.lastSyncError)}`);
    const fullBytes = backend instanceof IptablesProxier ? (backend.lastStats.get(4)?.bytes ?? 0) : 0;
    process.stderr.write(`  ${n}: initial sync ${r1(initialSyncMs)} ms\n`);

    const lat: number[] = [];
    const syncDur: number[] = [];
    let partialBytes = 0;
    let last = 0;
    for (let k = 0; k < CHANGES; k++) {
      await new Promise((r) => setTimeout(r, 1200));
      last = (k * 7907) % n;
      const before = daemon.metrics.syncPartialDuration.total + daemon.metrics.syncFullDuration.total;
      const done = new Promise<void>((r) => (syncWaiter = r));
      const s0 = performance.now();
      source.h!.slice(sliceObj(last, k + 1), false);
      await done;
      lat.push(performance.now() - s0);
      const after = daemon.metrics.syncPartialDuration.total + daemon.metrics.syncFullDuration.total;
      if (after !== before + 1) throw new Error('expected exactly one sync per change');
      if (backend instanceof IptablesProxier) {
        const st = backend.lastStats.get(4)!;
        syncDur.push(st.restoreMs);
        partialBytes = st.bytes;
      }
    }
    // verify the last change is in the kernel: the endpoint chain for the new address exists in the service chain
    let verified = false;
    const newIP = sliceObj(last, CHANGES).endpoints![0]!.addresses[0]!;
    if (MODE === 'iptables') {
      const svcRules = execFileSync('ip', ['netns', 'exec', nsName, 'iptables-nft-save', '-t', 'nat'], { encoding: 'utf8', maxBuffer: 1 << 30 });
      verified = svcRules.includes(`--to-destination ${newIP}:8080`);
    } else {
      const out = execFileSync('ip', ['netns', 'exec', nsName, 'nft', 'list', 'ruleset'], { encoding: 'utf8', maxBuffer: 1 << 30 });
      verified = out.includes(newIP);
    }
    const mem = process.memoryUsage();
    await daemon.stop();
    await backend.cleanup().catch(() => {});
    return {
      impl: 'flatnet',
      mode: MODE,
      services: n,
      endpointsPerService: 3,
      initialSyncMs: r1(initialSyncMs),
      changeLatencyP50Ms: r1(pct(lat, 50)),
      changeLatencyP99Ms: r1(pct(lat, 99)),
      changeSyncP50Ms: r1(pct(syncDur, 50)),
      changeSyncP99Ms: r1(pct(syncDur, 99)),
      changes: lat.length,
      rssMB: mb(mem.rss),
      heapMB: mb(mem.heapUsed),
      restoreBytesFull: fullBytes,
      restoreBytesPartial: partialBytes,
      verified,
    };
  } finally {
    execFileSync('ip', ['netns', 'delete', nsName]);
  }
}

async function main(): Promise<void> {
  if (VS) {
    const path = join(HERE, `proxy-vs-${VS}.ts`);
    if (!existsSync(path)) throw new Error(`--vs ${VS}: ${path} does not exist`);
    await ((await import(path)) as { main(): Promise<void> }).main();
    return;
  }
  const rows: Row[] = [];
  for (const n of SIZES) {
    process.stderr.write(`bench:proxy ${MODE} ${n} services x 3 endpoints\n`);
    rows.push(await benchSize(n));
  }
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
    note: 'in-process daemon fed through its watch handlers; real iptables-nft-restore in a scratch netns; minSyncPeriod 1 s; changes spaced 1.2 s',
  };
  const outDir = join(HERE, 'results');
  mkdirSync(outDir, { recursive: true });
  const suffix = MODE === 'iptables' ? '' : `-${MODE}`;
  writeFileSync(join(outDir, `proxy${suffix}.json`), JSON.stringify({ meta, rows }, null, 2) + '\n');
  const md = [
    `# bench:proxy (${MODE})`,
    '',
    `${meta.date}, Node ${meta.node}, load ${meta.loadavg.join(' ')} (2 shared cores). ${meta.note}.`,
    '',
    '| impl | services | initial sync | change -> rules p50 | p99 | restore/apply p50 | p99 | RSS | full program | partial program | verified |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.impl} | ${r.services} | ${r.initialSyncMs} ms | ${r.changeLatencyP50Ms} ms | ${r.changeLatencyP99Ms} ms | ${r.changeSyncP50Ms} ms | ${r.changeSyncP99Ms} ms | ${r.rssMB} MB | ${Math.round(r.restoreBytesFull / 1024)} KiB | ${Math.round(r.restoreBytesPartial / 1024)} KiB | ${r.verified} |`,
    ),
    '',
    'Target: one change at 10k services programmed in under 1 s at p99.',
    '',
  ].join('\n');
  writeFileSync(join(outDir, `proxy${suffix}.md`), md);
  process.stdout.write(md);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:proxy failed: ${String((e as Error)?.stack ?? e)}\n`);
  process.exit(1);
});
