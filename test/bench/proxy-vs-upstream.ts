// flatnet's proxy daemon vs upstream kube-proxy (v1.35.4, built by the cluster build) in the same mode, each on its
// own node of one local cluster (test/cluster: real etcd/apiserver/controller-manager, nodes = netns), in one run.
//   npm run bench:proxy -- --vs upstream [--modes nftables,iptables] [--sizes 100,1000,10000] [--changes 10] [--conns 3000]
//   node test/bench/proxy-vs-upstream.ts [same options]                                       (standalone)
// One 2-node cluster with no proxy of its own (--proxy-mode none, no runtime, no DNS). For each size (ascending; the
// API objects are created once and grown), for each mode, flatnet (control-plane node) and then kube-proxy (worker)
// each get a phase of their own, so that neither measures while the other burns the 2 shared cores:
//   1. the proxy starts; initial sync = process start -> the last Service's endpoints are in the kernel (polled with
//      a per-object query: nft get element / nft list chain / iptables -S chain);
//   2. `changes` changes, alternating: a new Service (Service + EndpointSlice written together) and an endpoint
//      scale-up (a slice goes from 3 to 4 endpoints); latency = API write sent -> the new endpoint's DNAT target is
//      committed to the kernel, seen on `nft monitor` (netlink events: it sees iptables-nft rules too);
//   3. new-connection latency: connlat (test/bench/connlat.c) opens `conns` fresh TCP connections from the node to
//      its latency Service's ClusterIP (nat OUTPUT dispatch + DNAT to a listener in the node) and, as a floor,
//      straight to the listener; p50/p90/p99 in microseconds;
//   4. CPU seconds (utime+stime of the daemon) and RSS / peak RSS (VmHWM);
//   5. the proxy stops and its rules are removed (flatnet --cleanup, kube-proxy --cleanup).
// Objects: N selector-less Services x 3 endpoints with hand-made EndpointSlices, created through the API with
// test/bench/apiclient.ts, plus one latency Service per node whose single endpoint is the node's own address.
// Results: test/bench/results/proxy-vs-upstream.{json,md}; `npm run bench:plot` draws the SVG.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { ApiClient, type ApiObject } from './apiclient.ts';
import { hash16, serviceChains } from '../../proxy/services/backends/iptables/rules.ts';
import { servicePortKey } from '../../proxy/services/model/convert.ts';
import { opt, pct, r1 } from './util.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..');
const NODE = join(REPO, 'node_modules', '.bin', 'node');
const K8S = '/var/cache/flatnet/k8s-v1.35.4/bin';
const LAT_PORT = 9000;
const UPSTREAM = 'kube-proxy v1.35.4';
/** Node flags for flatnet's daemon (experiments: FLATNET_BENCH_NODE_FLAGS="--max-semi-space-size=4") */
const NODE_FLAGS = (process.env.FLATNET_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
/** proxies running now (killed if the run is interrupted) */
const live = new Set<ChildProcess>();

export interface Row {
  impl: string;
  mode: string;
  services: number;
  endpointsPerService: number;
  initialSyncMs: number;
  newServiceP50Ms: number;
  newServiceP99Ms: number;
  scaleUpP50Ms: number;
  scaleUpP99Ms: number;
  changeLatencyP50Ms: number;
  changeLatencyP99Ms: number;
  changes: number;
  cpuInitialS: number;
  cpuTotalS: number;
  rssMB: number;
  peakRssMB: number;
  connP50Us: number;
  connP90Us: number;
  connP99Us: number;
  directConnP50Us: number;
  /** median over 10 interleaved rounds of p50(via ClusterIP) / p50(direct): the proxy's share, robust to drift */
  connRatio: number;
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** the IPv4 address `base + off` (base as four octets) */
function ipAt(base: [number, number, number, number], off: number): string {
  const n = ((base[0] << 24) | (base[1] << 16) | (base[2] << 8) | base[3]) + off;
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
/** bench Services: 10.96.100.0 onwards (clear of kubernetes and kube-dns); room for 35k in 10.96.0.0/16 */
const svcIP = (i: number): string => ipAt([10, 96, 100, 0], i);
/** Services created during the changes: 10.96.240.0 onwards */
const newSvcIP = (j: number): string => ipAt([10, 96, 240, 0], j);
/** the latency Service of node k */
const latIP = (k: number): string => ipAt([10, 96, 90, 0], k);
/** endpoint k of bench Service i (k = 3 is the scale-up), and of new Service j */
const epIP = (i: number, k: number): string => ipAt([10, 240, 0, 0], 256 + i * 4 + k);
const newEpIP = (j: number, k: number): string => ipAt([10, 250, 0, 0], 256 + j * 4 + k);

function service(name: string, clusterIP: string, port = 80, portName = 'http'): ApiObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'default', name },
    spec: { type: 'ClusterIP', clusterIP, ports: [{ name: portName, port, protocol: 'TCP' }] },
  };
}

function slice(svc: string, addrs: string[], port = 8080, portName = 'http'): ApiObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'default', name: `${svc}-s`, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: portName, port, protocol: 'TCP' }],
    endpoints: addrs.map((a) => ({ addresses: [a], conditions: { ready: true, serving: true, terminating: false } })),
  };
}

const benchEndpoints = (i: number, count: number): string[] => Array.from({ length: count }, (_, k) => epIP(i, k));

/** [VmRSS, VmHWM] in MB */
function rssOf(pid: number | undefined): [number, number] {
  let st = '';
  try {
    st = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return [0, 0];
  }
  const kb = (k: string): number => Math.round(Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st)?.[1] ?? 0) / 1024);
  return [kb('VmRSS'), kb('VmHWM')];
}

/** CPU seconds of the daemon and of the children it has waited for (nft, iptables-restore, ...) */
function cpuOf(pid: number | undefined): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    // fields 14-17: utime, stime, cutime, cstime (clock ticks, USER_HZ 100)
    return Math.round(Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / 100;
  } catch {
    return NaN;
  }
}

interface Node {
  name: string;
  ip: string;
}

/** is endpoint addr of the bench Service i programmed (per-object query; used while polling the initial sync)? */
function hasBenchEndpoint(impl: string, mode: string, node: string, i: number, k: number): boolean {
  const addr = epIP(i, k);
  const run = (argv: string[]): string => tryOut(['ip', 'netns', 'exec', node, ...argv]);
  if (mode === 'iptables') {
    if (impl === 'flatnet') return run(['iptables', '-w', '-t', 'nat', '-S', serviceChains(servicePortKey('default', `b${i}`, 'http', 'TCP', 4)).svc]).includes(`${addr}:8080`);
    // kube-proxy drops its "-> addr:port" comments above 1000 endpoints: look for the endpoint's chain name instead
    // (KUBE-SEP- + hash of service port name + protocol + endpoint, as kube-proxy names it)
    const sep = `KUBE-SEP-${hash16(`default/b${i}:httptcp${addr}:8080`)}`;
    return run(['iptables', '-w', '-t', 'nat', '-S', `KUBE-SVC-${hash16(`default/b${i}:httptcp`)}`]).includes(sep);
  }
  if (impl === 'flatnet') return run(['nft', 'get', 'element', 'ip', 'flatnet-proxy', 'cluster-ep-tcp', `{ ${svcIP(i)} . 80 . ${k} }`]).includes(`: ${addr} . 8080`);
  const m = /goto (\S+)/.exec(run(['nft', 'get', 'element', 'ip', 'kube-proxy', 'service-ips', `{ ${svcIP(i)} . tcp . 80 }`]));
  if (!m) return false;
  return run(['nft', 'list', 'chain', 'ip', 'kube-proxy', m[1]!.replace(/[,}]+$/, '')]).includes(`__${addr}/8080`);
}

/** `nft monitor` in a node's netns: resolves waiters when a committed rule or element names addr as a DNAT target */
class Monitor {
  private readonly proc: ChildProcess;
  private waiters: { re: RegExp; resolve: (t: number) => void }[] = [];
  private partial = '';
  constructor(node: string) {
    this.proc = spawn('ip', ['netns', 'exec', node, 'stdbuf', '-oL', 'nft', 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      const t = performance.now();
      const lines = (this.partial + d).split('\n');
      this.partial = lines.pop() ?? '';
      for (const l of lines) {
        if (!this.waiters.length) break;
        this.waiters = this.waiters.filter((w) => {
          if (!w.re.test(l)) return true;
          w.resolve(t);
          return false;
        });
      }
    });
  }
  /** the time the endpoint addr:8080 shows up (flatnet nft: "addr . 8080"; kube-proxy nft and iptables-nft: "addr:8080") */
  waitFor(addr: string, timeoutMs: number): Promise<number> {
    const re = new RegExp(`${addr.replaceAll('.', '\\.')}(?: \\. |:)8080\\b`);
    return new Promise((resolve) => {
      const w = { re, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(NaN);
      }, timeoutMs);
    });
  }
  /**
   * Resolves once the monitor reports events: on a big ruleset `nft monitor` first loads its cache for seconds (10k
   * iptables-nft services), and a change made before that is never reported. Probes with a scratch table.
   */
  async ready(node: string): Promise<void> {
    const probe = `fxbench-probe-${process.pid}`;
    for (let attempt = 0; attempt < 60; attempt++) {
      const seen = new Promise<boolean>((resolve) => {
        const re = new RegExp(`add table ip ${probe}\\b`);
        const w = { re, resolve: () => resolve(true) };
        this.waiters.push(w);
        setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          resolve(false);
        }, 2000);
      });
      tryOut(['ip', 'netns', 'exec', node, 'nft', `add table ip ${probe}; delete table ip ${probe}`]);
      if (await seen) return;
    }
    throw new Error(`nft monitor in ${node} reported nothing for 2 minutes`);
  }
  stop(): void {
    this.proc.kill('SIGTERM');
  }
}

/** connlat compiled, and the daemon bundled as it ships (deploy/bundle-daemon.mjs), into a scratch dir */
async function prepareTools(): Promise<{ bin: string; daemon: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'flatnet-vs-'));
  const bin = join(dir, 'connlat');
  sh(['gcc', '-O2', '-o', bin, join(HERE, 'connlat.c')]);
  const { bundleDaemon } = await import('../../deploy/bundle-daemon.mjs');
  const daemon = await bundleDaemon(join(dir, 'flatnet-proxy.mjs'));
  return { bin, daemon, dir };
}

/** connect() latencies in microseconds from a node's netns to ip:port */
function connect(bin: string, node: string, ip: string, port: number, n: number): number[] {
  const out = sh(['ip', 'netns', 'exec', node, bin, 'client', ip, String(port), String(n), '200'], undefined, 300_000);
  return out.trim().split('\n').map((l) => Number(l) / 1000);
}

/** SIGTERM, then SIGKILL after the grace period; `group`: the process leads its own group (signal all of it) */
async function stopProc(p: ChildProcess, graceMs = 5000, group = false): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (group && p.pid) process.kill(-p.pid, sig);
      else p.kill(sig);
    } catch {
      /* already gone */
    }
  };
  signal('SIGCONT'); // in case it was paused
  signal('SIGTERM');
  await Promise.race([exited, sleep(graceMs)]);
  if (p.exitCode === null && p.signalCode === null) {
    signal('SIGKILL');
    await exited;
  }
}

interface Ctx {
  api: ApiClient;
  kubeconfig: string;
  logDir: string;
  tool: { bin: string; daemon: string };
  changes: number;
  conns: number;
  /** counters shared by every phase so that no two phases reuse a Service name or a scale-up target */
  next: { newService: number; scaleUp: number; scaled: Set<number> };
}

function proxyArgv(impl: string, mode: string, node: Node, ctx: Ctx, cleanup = false): string[] {
  if (impl === 'flatnet') {
    if (cleanup) return ['ip', 'netns', 'exec', node.name, NODE, ctx.tool.daemon, '--cleanup'];
    return ['ip', 'netns', 'exec', node.name, NODE, ...NODE_FLAGS, ctx.tool.daemon, '--kubeconfig', ctx.kubeconfig, '--hostname-override', node.name,
      '--proxy-mode', mode, '--cluster-cidr', '10.244.0.0/16', '--overlay', 'none',
      '--healthz-bind-address', '127.0.0.1:20256', '--metrics-bind-address', '127.0.0.1:20249'];
  }
  if (cleanup) return ['ip', 'netns', 'exec', node.name, join(K8S, 'kube-proxy'), '--cleanup'];
  return ['ip', 'netns', 'exec', node.name, join(K8S, 'kube-proxy'), '--kubeconfig', ctx.kubeconfig, '--hostname-override', node.name,
    '--proxy-mode', mode, '--cluster-cidr', '10.244.0.0/16', '--conntrack-max-per-core', '0',
    '--healthz-bind-address', '127.0.0.1:20256', '--metrics-bind-address', '127.0.0.1:20249', '--v', '1'];
}

/** One proxy, one mode, one size: start, initial sync, changes, connection latency, stop, clean up. */
async function phase(impl: string, mode: string, n: number, node: Node, nodeIndex: number, ctx: Ctx): Promise<Row> {
  const argv = proxyArgv(impl, mode, node, ctx);
  const log = openSync(join(ctx.logDir, `bench-${impl === 'flatnet' ? 'flatnet' : 'kube-proxy'}-${mode}-${n}.log`), 'a');
  const t0 = performance.now();
  // its own process group, so that the daemon and whatever it has running can be paused together
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', log], detached: true });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let monitor: Monitor | undefined;
  try {
    // initial sync: poll the last Service's last endpoint
    const every = n >= 5000 ? 200 : 25;
    let initialMs = NaN;
    while (performance.now() - t0 < 900_000) {
      if (proc.exitCode !== null) throw new Error(`${impl} exited ${proc.exitCode} during its initial sync (log ${ctx.logDir})`);
      if (hasBenchEndpoint(impl, mode, node.name, n - 1, 2)) {
        initialMs = performance.now() - t0;
        break;
      }
      await sleep(every);
    }
    const cpuInitialS = cpuOf(proc.pid);
    process.stderr.write(`  ${impl} ${mode} ${n}: initial sync ${r1(initialMs)} ms, ${cpuInitialS} CPU s\n`);
    await sleep(3000);
    monitor = new Monitor(node.name);
    await monitor.ready(node.name);

    const newSvc: number[] = [];
    const scaleUp: number[] = [];
    const perChangeTimeout = n >= 5000 ? 180_000 : 30_000;
    for (let k = 0; k < ctx.changes; k++) {
      await sleep(1500);
      if (k % 2 === 0) {
        const j = ctx.next.newService++;
        const name = `n${j}`;
        const addrs = [0, 1, 2].map((e) => newEpIP(j, e));
        const seen = monitor.waitFor(addrs[2]!, perChangeTimeout);
        const t1 = performance.now();
        await Promise.all([ctx.api.create(service(name, newSvcIP(j))), ctx.api.create(slice(name, addrs))]);
        newSvc.push((await seen) - t1);
      } else {
        let i = (ctx.next.scaleUp++ * 7907) % n;
        while (ctx.next.scaled.has(i)) i = (i + 1) % n; // an earlier phase already took this slice to 4 endpoints
        ctx.next.scaled.add(i);
        const seen = monitor.waitFor(epIP(i, 3), perChangeTimeout);
        const t1 = performance.now();
        await ctx.api.replace(slice(`b${i}`, benchEndpoints(i, 4)));
        scaleUp.push((await seen) - t1);
      }
    }
    monitor.stop();
    monitor = undefined;

    // interleaved rounds, so that the machine's drift over the phase hits both series alike. The daemon (and any
    // iptables-restore / nft it is running) is paused meanwhile: this measures the rules' per-packet cost, not a busy
    // daemon competing for the 2 cores (kube-proxy's iptables full syncs at 10k services run for minutes).
    process.kill(-proc.pid!, 'SIGSTOP');
    const direct: number[] = [];
    const viaService: number[] = [];
    const ratios: number[] = [];
    const per = Math.max(100, Math.round(ctx.conns / 10));
    for (let r = 0; r < 10; r++) {
      const d = connect(ctx.tool.bin, node.name, node.ip, LAT_PORT, per);
      const v = connect(ctx.tool.bin, node.name, latIP(nodeIndex), 80, per);
      direct.push(...d);
      viaService.push(...v);
      ratios.push(pct(v, 50) / pct(d, 50));
    }
    process.kill(-proc.pid!, 'SIGCONT');
    const [rss, hwm] = rssOf(proc.pid);
    const cpuTotalS = cpuOf(proc.pid);
    const ok = [...newSvc, ...scaleUp].filter((x) => !Number.isNaN(x));
    const good = (xs: number[]): number[] => xs.filter((x) => !Number.isNaN(x));
    const row: Row = {
      impl: impl === 'flatnet' ? 'flatnet' : UPSTREAM,
      mode,
      services: n,
      endpointsPerService: 3,
      initialSyncMs: r1(initialMs),
      newServiceP50Ms: r1(pct(good(newSvc), 50)),
      newServiceP99Ms: r1(pct(good(newSvc), 99)),
      scaleUpP50Ms: r1(pct(good(scaleUp), 50)),
      scaleUpP99Ms: r1(pct(good(scaleUp), 99)),
      changeLatencyP50Ms: r1(pct(ok, 50)),
      changeLatencyP99Ms: r1(pct(ok, 99)),
      changes: ok.length,
      cpuInitialS,
      cpuTotalS,
      rssMB: rss,
      peakRssMB: hwm,
      connP50Us: r1(pct(viaService, 50)),
      connP90Us: r1(pct(viaService, 90)),
      connP99Us: r1(pct(viaService, 99)),
      directConnP50Us: r1(pct(direct, 50)),
      connRatio: Math.round(pct(ratios, 50) * 1000) / 1000,
      verified: ok.length === ctx.changes && !Number.isNaN(initialMs) && proc.exitCode === null,
    };
    process.stderr.write(`  ${JSON.stringify(row)}\n`);
    return row;
  } finally {
    monitor?.stop();
    await stopProc(proc, 5000, true);
    const c = proxyArgv(impl, mode, node, ctx, true);
    spawnSync(c[0]!, c.slice(1), { stdio: 'ignore', timeout: 600_000 });
  }
}

export async function run(o: { sizes: number[]; changes: number; modes?: string[]; conns?: number }): Promise<Row[]> {
  const modes = o.modes ?? opt('modes', 'nftables,iptables').split(',');
  const conns = o.conns ?? Number(opt('conns', '3000'));
  const sizes = [...o.sizes].sort((a, b) => a - b);
  const rows: Row[] = [];
  const tool = await prepareTools();
  const cluster = `fxv${randomBytes(2).toString('hex')}`;
  const cli = (...a: string[]): string => sh([NODE, join(REPO, 'test', 'cluster', 'cli.ts'), ...a], undefined, 900_000);
  process.stderr.write(`proxy-vs-upstream: cluster ${cluster} up; modes ${modes.join(', ')}; sizes ${sizes.join(', ')}\n`);
  cli('up', '--name', cluster, '--nodes', '2', '--proxy-mode', 'none', '--pod-network', 'routes', '--no-runtime', '--no-dns');
  const dir = `/var/lib/flatnet-cluster/${cluster}`;
  const kubeconfig = `${dir}/kubeconfig/admin.kubeconfig`;
  const api = new ApiClient(kubeconfig);
  const servers: ChildProcess[] = [];
  // an interrupted run still removes its cluster and processes (the phase's own proxy is killed by its group)
  const onSignal = (): void => {
    for (const c of servers) c.kill('SIGKILL');
    for (const c of live) if (c.pid) process.kill(-c.pid, 'SIGKILL');
    spawnSync(NODE, [join(REPO, 'test', 'cluster', 'cli.ts'), 'down', '--name', cluster], { stdio: 'inherit' });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const state = JSON.parse(readFileSync(`${dir}/state.json`, 'utf8')) as { nodes: { netns: string; ip: string }[] };
    const nodes: Node[] = state.nodes.map((x) => ({ name: x.netns.split('/').pop()!, ip: x.ip.split('/')[0]! }));
    const logDir = `${dir}/logs`;
    mkdirSync(logDir, { recursive: true });
    for (const nd of nodes) servers.push(spawn('ip', ['netns', 'exec', nd.name, tool.bin, 'server', String(LAT_PORT)], { stdio: 'ignore' }));
    for (const [k, nd] of nodes.entries()) {
      await api.create(service(`lat${k}`, latIP(k), 80, 'tcp'));
      await api.create(slice(`lat${k}`, [nd.ip], LAT_PORT, 'tcp'));
    }
    const ctx: Ctx = { api, kubeconfig, logDir, tool, changes: o.changes, conns, next: { newService: 0, scaleUp: 0, scaled: new Set() } };
    let created = 0;
    for (const n of sizes) {
      const objs: ApiObject[] = [];
      for (let i = created; i < n; i++) objs.push(service(`b${i}`, svcIP(i)), slice(`b${i}`, benchEndpoints(i, 3)));
      const c0 = performance.now();
      await api.createAll(objs, 32, (d) => d % 5000 === 0 && process.stderr.write(`  ${d}/${objs.length} objects\n`));
      created = n;
      process.stderr.write(`  ${n} services: created ${objs.length} objects in ${r1((performance.now() - c0) / 1000)} s\n`);
      await sleep(2000);
      for (const mode of modes) {
        rows.push(await phase('flatnet', mode, n, nodes[0]!, 0, ctx));
        rows.push(await phase('kube-proxy', mode, n, nodes[1]!, 1, ctx));
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    api.close();
    for (const c of servers) await stopProc(c, 1000);
    try {
      cli('down', '--name', cluster);
    } catch (err) {
      process.stderr.write(`  cluster down failed: ${String(err)}\n`);
    }
    rmSync(tool.dir, { recursive: true, force: true });
  }
  return rows;
}

export function markdown(meta: { date: string; loadavg: number[] }, rows: Row[]): string {
  const line = (r: Row): string =>
    `| ${r.mode} | ${r.services} | ${r.impl} | ${r.initialSyncMs} | ${r.newServiceP50Ms} / ${r.newServiceP99Ms} | ${r.scaleUpP50Ms} / ${r.scaleUpP99Ms} | ` +
    `${r.changeLatencyP99Ms} | ${r.cpuInitialS} / ${r.cpuTotalS} | ${r.rssMB} / ${r.peakRssMB} | ${r.connP50Us} / ${r.connP99Us} (${r.directConnP50Us}) | ${r.connRatio} | ${r.changes} | ${r.verified} |`;
  const ratio = (a: number, b: number): string => (a > 0 && b > 0 ? `${r1(b / a)}x` : 'n/a');
  const pairs: string[] = [];
  for (const f of rows.filter((r) => r.impl === 'flatnet')) {
    const u = rows.find((r) => r.impl === UPSTREAM && r.mode === f.mode && r.services === f.services);
    if (!u) continue;
    pairs.push(
      `| ${f.mode} | ${f.services} | ${ratio(f.initialSyncMs, u.initialSyncMs)} | ${ratio(f.changeLatencyP99Ms, u.changeLatencyP99Ms)} | ${ratio(f.cpuTotalS, u.cpuTotalS)} | ${ratio(f.peakRssMB, u.peakRssMB)} |`,
    );
  }
  return [
    '# bench:proxy --vs upstream',
    '',
    `${meta.date}, load ${meta.loadavg.join(' ')} (2 shared cores). flatnet's daemon (the shipped bundle) and kube-proxy v1.35.4, each alone on a node of one local cluster (same apiserver, same objects), one after the other. Times in ms; new-connection latency in µs: p50 / p99 through the ClusterIP, and in brackets p50 straight to the endpoint. The ratio is the median over 10 interleaved rounds of p50 through the ClusterIP over p50 direct: what the proxy's rules add to a new connection, robust to the machine's drift. Changes alternate a new Service and a 3 -> 4 endpoint scale-up; "changes" counts those seen within the timeout.`,
    '',
    '| mode | services | impl | initial sync | new Service p50 / p99 | scale-up p50 / p99 | all changes p99 | CPU s initial / total | RSS / peak MB | new conn µs p50 / p99 (direct) | via ClusterIP / direct | changes | verified |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(line),
    '',
    'kube-proxy / flatnet (above 1 means flatnet is faster or smaller):',
    '',
    '| mode | services | initial sync | change p99 | CPU s | peak RSS |',
    '|---|---|---|---|---|---|',
    ...pairs,
    '',
  ].join('\n');
}

/** `npm run bench:proxy -- --vs upstream ...` (test/bench/proxy.ts) and the standalone run land here. */
export async function main(): Promise<void> {
  const sizes = opt('sizes', '100,1000,10000').split(',').map(Number);
  const changes = Number(opt('changes', '10'));
  const rows = await run({ sizes, changes });
  const dir = join(HERE, 'results');
  mkdirSync(dir, { recursive: true });
  const meta = { date: new Date().toISOString(), loadavg: loadavg().map((x) => Math.round(x * 100) / 100) };
  const out = opt('out', 'proxy-vs-upstream');
  writeFileSync(join(dir, `${out}.json`), JSON.stringify({ meta, rows }, null, 2) + '\n');
  writeFileSync(join(dir, `${out}.md`), markdown(meta, rows));
  process.stdout.write(markdown(meta, rows));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: unknown) => {
    process.stderr.write(`proxy-vs-upstream failed: ${String((e as Error)?.stack ?? e)}\n`);
    process.exit(1);
  });
}
