// flatnet's proxy daemon vs upstream kube-proxy (v1.35.4, built by the cluster build) in the same mode, each on its
// own node of a local cluster (test/cluster: real etcd/apiserver/controller-manager, nodes = netns).
//   npm run bench:proxy -- --vs upstream [--sizes 1000 --changes 10 --mode nftables|iptables]
//   node test/bench/proxy-vs-upstream.ts [--sizes 1000] [--changes 10] [--mode nftables]     (standalone)
// Steps: cluster up (2 nodes; its own daemons in the other mode, so CoreDNS works); N selector-less Services x 3 endpoints (hand-made
// EndpointSlices) created through the API; then both proxies start at the same time (flatnet on the control-plane
// node, kube-proxy on the worker) and we time "process start -> the last Service is in the kernel". Then `changes`
// times: one EndpointSlice gets a new address, and we time "API write acknowledged -> new address in each node's
// rules" by polling cheap, per-object nft listings (never the whole table). The cluster is torn down at the end.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..');
const NODE = join(REPO, 'node_modules', '.bin', 'node');
const K8S = '/var/cache/flatnet/k8s-v1.35.4/bin';
const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : def;
};

export interface Row {
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

function sh(argv: string[], input?: string, timeout = 600_000): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { input, encoding: 'utf8', timeout, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr?.slice(0, 2000)}`);
  return r.stdout;
}

function tryOut(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000, maxBuffer: 1 << 28 });
  return r.status === 0 ? r.stdout : '';
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
};
const r1 = (x: number): number => Math.round(x * 10) / 10;

function ip(i: number, base: [number, number]): string {
  return `${base[0]}.${base[1]}.${(i >> 8) & 255}.${i & 255}`;
}
const svcIP = (i: number): string => ip(i + 25600, [10, 96]); // 10.96.100.0 onwards (clear of kubernetes and kube-dns)
const epIP = (i: number, k: number, gen: number): string => ip(((i * 3 + k + gen * 7919) % 60000) + 256, [10, 245]);

function objects(n: number): object[] {
  const out: object[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: 'default', name: `b${i}` },
      spec: { type: 'ClusterIP', clusterIP: svcIP(i), ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    });
    out.push(slice(i, 0));
  }
  return out;
}

function slice(i: number, gen: number): object {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'default', name: `b${i}-s`, labels: { 'kubernetes.io/service-name': `b${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [0, 1, 2].map((k) => ({ addresses: [epIP(i, k, gen)], conditions: { ready: true, serving: true, terminating: false } })),
  };
}

interface Proxy {
  impl: string;
  netns: string;
  proc: ChildProcess;
  /** is the service's cluster IP programmed? */
  hasService(i: number): boolean;
  /** is this endpoint address programmed for service i? */
  hasEndpoint(i: number, addr: string): boolean;
  rssMB(): number;
}

function nsRun(netns: string, argv: string[]): string {
  return tryOut(['ip', 'netns', 'exec', netns, ...argv]);
}

function rssOf(pid: number | undefined): number {
  if (!pid) return 0;
  // the proxy is a child of `ip netns exec` (which execs), so the pid is the proxy's
  const st = tryOut(['cat', `/proc/${pid}/status`]);
  const m = /VmRSS:\s+(\d+)/.exec(st);
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

function startProxies(cluster: string, mode: string, kubeconfig: string, logDir: string): Proxy[] {
  const cp = `${cluster}-control-plane`;
  const wk = `${cluster}-worker`;
  const flat = spawn(
    'ip',
    ['netns', 'exec', cp, NODE, join(REPO, 'proxy', 'main.ts'), '--kubeconfig', kubeconfig, '--hostname-override', cp, '--proxy-mode', mode,
      '--cluster-cidr', '10.244.0.0/16', '--overlay', 'none', '--healthz-bind-address', '127.0.0.1:20256', '--metrics-bind-address', '127.0.0.1:20249'],
    { stdio: ['ignore', 'ignore', openSync(join(logDir, 'flatnet-proxy.log'), 'a')] },
  );
  const up = spawn(
    'ip',
    ['netns', 'exec', wk, join(K8S, 'kube-proxy'), '--kubeconfig', kubeconfig, '--hostname-override', wk, '--proxy-mode', mode,
      '--cluster-cidr', '10.244.0.0/16', '--conntrack-max-per-core', '0', '--healthz-bind-address', '127.0.0.1:20256',
      '--metrics-bind-address', '127.0.0.1:20249', '--v', '1'],
    { stdio: ['ignore', 'ignore', openSync(join(logDir, 'kube-proxy.log'), 'a')] },
  );
  const svcChains = new Map<number, string>();
  const nftHas = (netns: string, table: string, set: string, needle: string): boolean => nsRun(netns, ['nft', 'list', 'set', 'ip', table, set]).includes(needle);
  const iptHas = (netns: string, needle: string): boolean => nsRun(netns, ['iptables-nft-save', '-t', 'nat']).includes(needle);
  const flatnet: Proxy = {
    impl: 'flatnet',
    netns: cp,
    proc: flat,
    hasService: (i) => (mode === 'nftables' ? nftHas(cp, 'flatnet-proxy', 'cluster-ips', svcIP(i)) : iptHas(cp, `${svcIP(i)}/32`)),
    hasEndpoint: (i, addr) =>
      mode === 'nftables'
        ? nsRun(cp, ['nft', 'get', 'element', 'ip', 'flatnet-proxy', 'cluster-ep-tcp', `{ ${svcIP(i)} . 80 . 0 }`]).includes(`: ${addr} . 8080`)
        : iptHas(cp, `${addr}:8080`),
    rssMB: () => rssOf(flat.pid),
  };
  const upstream: Proxy = {
    impl: 'kube-proxy v1.35.4',
    netns: wk,
    proc: up,
    hasService: (i) => (mode === 'nftables' ? nftHas(wk, 'kube-proxy', 'cluster-ips', svcIP(i)) : iptHas(wk, `${svcIP(i)}/32`)),
    hasEndpoint: (i, addr) => {
      if (mode !== 'nftables') return iptHas(wk, `${addr}:8080`);
      let chain = svcChains.get(i);
      if (!chain) {
        const m = new RegExp(`${svcIP(i).replaceAll('.', '\\.')} \\. tcp \\. 80 : goto (\\S+)`).exec(nsRun(wk, ['nft', 'list', 'map', 'ip', 'kube-proxy', 'service-ips']));
        if (!m) return false;
        chain = m[1]!.replace(/,$/, '');
        svcChains.set(i, chain);
      }
      return nsRun(wk, ['nft', 'list', 'chain', 'ip', 'kube-proxy', chain]).includes(`__${addr}/8080`);
    },
    rssMB: () => rssOf(up.pid),
  };
  return [flatnet, upstream];
}

async function waitAll(proxies: Proxy[], pred: (p: Proxy) => boolean, t0: number, timeoutMs: number): Promise<Map<string, number>> {
  const done = new Map<string, number>();
  while (done.size < proxies.length) {
    for (const p of proxies) if (!done.has(p.impl) && pred(p)) done.set(p.impl, performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) {
      for (const p of proxies) if (!done.has(p.impl)) done.set(p.impl, NaN);
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return done;
}

export async function run(o: { sizes: number[]; changes: number }): Promise<Row[]> {
  const mode = opt('mode', 'nftables');
  const rows: Row[] = [];
  for (const n of o.sizes) {
    const cluster = `fxv${randomBytes(1).toString('hex')}`;
    const cli = (...a: string[]): string => sh([NODE, join(REPO, 'test', 'cluster', 'cli.ts'), ...a], undefined, 900_000);
    process.stderr.write(`proxy-vs-upstream: cluster ${cluster} up (${mode}, ${n} services)\n`);
    // the cluster's own daemons run in the other mode (CoreDNS needs a working proxy for the cluster to come up);
    // the two measured proxies use their own kernel objects and ports next to them
    cli('up', '--name', cluster, '--nodes', '2', '--proxy-mode', mode === 'iptables' ? 'nftables' : 'iptables');
    let proxies: Proxy[] = [];
    try {
      const kubeconfig = `/var/lib/flatnet-cluster/${cluster}/kubeconfig/admin.kubeconfig`;
      const logDir = `/var/lib/flatnet-cluster/${cluster}/logs`;
      const kubectl = (input: string | undefined, ...a: string[]): string => sh([join(K8S, 'kubectl'), '--kubeconfig', kubeconfig, ...a], input);
      const objs = objects(n);
      const c0 = performance.now();
      for (let i = 0; i < objs.length; i += 1000) kubectl(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs.slice(i, i + 1000) }), 'apply', '--server-side', '-f', '-');
      process.stderr.write(`  created ${n} services + slices in ${r1((performance.now() - c0) / 1000)} s\n`);
      const t0 = performance.now();
      proxies = startProxies(cluster, mode, kubeconfig, logDir);
      const initial = await waitAll(proxies, (p) => p.hasService(n - 1), t0, 600_000);
      process.stderr.write(`  initial: ${[...initial].map(([k, v]) => `${k} ${r1(v)} ms`).join(', ')}\n`);
      const lat = new Map<string, number[]>(proxies.map((p) => [p.impl, []]));
      let verified = true;
      for (let k = 0; k < o.changes; k++) {
        await new Promise((r) => setTimeout(r, 1500));
        const i = (k * 7907) % n;
        const s = slice(i, k + 1) as { endpoints: { addresses: string[] }[] };
        const addr = s.endpoints[0]!.addresses[0]!;
        const t1 = performance.now();
        kubectl(JSON.stringify(s), 'apply', '--server-side', '-f', '-');
        const got = await waitAll(proxies, (p) => p.hasEndpoint(i, addr), t1, 30_000);
        for (const [impl, ms] of got) {
          lat.get(impl)!.push(ms);
          if (Number.isNaN(ms)) verified = false;
        }
      }
      for (const p of proxies) {
        const l = lat.get(p.impl)!.filter((x) => !Number.isNaN(x));
        rows.push({
          impl: p.impl,
          mode,
          services: n,
          endpointsPerService: 3,
          initialSyncMs: r1(initial.get(p.impl)!),
          changeLatencyP50Ms: r1(pct(l, 50)),
          changeLatencyP99Ms: r1(pct(l, 99)),
          changeSyncP50Ms: NaN,
          changeSyncP99Ms: NaN,
          changes: l.length,
          rssMB: p.rssMB(),
          heapMB: NaN,
          restoreBytesFull: 0,
          restoreBytesPartial: 0,
          verified: verified && l.length === o.changes,
        });
      }
    } finally {
      for (const p of proxies) if (p.proc.pid && p.proc.exitCode === null) p.proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1000));
      for (const p of proxies) if (p.proc.pid && p.proc.exitCode === null) p.proc.kill('SIGKILL');
      try {
        cli('down', '--name', cluster);
      } catch (err) {
        process.stderr.write(`  cluster down failed: ${String(err)}\n`);
      }
    }
  }
  return rows;
}

// standalone
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sizes = opt('sizes', '1000').split(',').map(Number);
  const changes = Number(opt('changes', '10'));
  run({ sizes, changes })
    .then((rows) => {
      const dir = join(HERE, 'results');
      mkdirSync(dir, { recursive: true });
      const meta = { date: new Date().toISOString(), loadavg: loadavg().map((x) => Math.round(x * 100) / 100) };
      writeFileSync(join(dir, `proxy-vs-upstream-${opt('mode', 'nftables')}.json`), JSON.stringify({ meta, rows }, null, 2) + '\n');
      process.stdout.write(JSON.stringify({ meta, rows }, null, 2) + '\n');
    })
    .catch((e: unknown) => {
      process.stderr.write(`proxy-vs-upstream failed: ${String((e as Error)?.stack ?? e)}\n`);
      process.exit(1);
    });
}
