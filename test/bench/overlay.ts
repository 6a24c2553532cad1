// Overlay testbed (3 "node" netns on a per-run underlay bridge, each running the VXLAN controller in-process with
// an in-memory Node list) and the overlay benchmark (`npm run bench:overlay`): iperf3 TCP throughput and ping RTT
// pod->pod across nodes vs node->node over the underlay. The netns tests import the testbed from here.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../lib/log/logger.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { parseOverlayConfig } from '../../proxy/overlay/config.ts';
import { OverlayController } from '../../proxy/overlay/controller.ts';
import { MemoryNodeSource } from '../../proxy/overlay/node.ts';
import { parseSubnetEnv } from '../../lib/overlay/subnet-file.ts';
import { createNetns, removeLinksWithPrefix, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

export interface BedNode {
  name: string;
  ns: TestNetns;
  ip: string;
  podCIDR: string;
  subnetFile: string;
  runner: Runner;
  controller?: OverlayController;
}

export interface BedPod {
  ns: TestNetns;
  ip: string;
  node: BedNode;
}

export interface Testbed {
  prefix: string;
  underlay: TestNetns;
  external: TestNetns;
  externalIp: string;
  nodes: BedNode[];
  store: MemoryNodeSource;
  dir: string;
  table: string;
  /** start node i's controller with extra overlay config; resolves after its first reconcile */
  startController(i: number, extra?: Record<string, unknown>): Promise<OverlayController>;
  /** a pod netns on node i behind the node's bridge cni0 (plain veth), MTU from the node's subnet file */
  addPod(i: number): BedPod;
  /** adds the Node object of node i to the in-memory API */
  putNode(i: number): void;
  destroy(): Promise<void>;
}

export const quietLog: Logger = {
  debug() {},
  info(o, m) {
    if (process.env.FLATNET_TEST_DEBUG === '3') console.error(new Date().toISOString(), 'INFO', m, JSON.stringify(o).slice(0, 100));
    if (process.env.FLATNET_TEST_DEBUG === '2') console.error('INFO', m, JSON.stringify(o));
  },
  warn(o, m) {
    if (process.env.FLATNET_TEST_DEBUG) console.error('WARN', m, JSON.stringify(o));
  },
  error(o, m) {
    console.error('ERROR', m, JSON.stringify(o));
  },
};

export function nsRunner(path: string): Runner {
  const exec = new ExecRunner();
  return { run: (argv, opts = {}) => exec.run(argv, { ...opts, netns: path }) };
}

const UNDERLAY_NET = '10.99.0';

/** nodes: node count (3); underlayMtu: veth MTU; bridges: false leaves cni0 to the CNI plugin (addPod needs it true) */
export async function createTestbed(opts: { nodes?: number; underlayMtu?: number; bridges?: boolean } = {}): Promise<Testbed> {
  const count = opts.nodes ?? 3;
  const prefix = runPrefix();
  const dir = `/tmp/${prefix}-overlay`;
  mkdirSync(dir, { recursive: true });
  const store = new MemoryNodeSource();
  const nodes: BedNode[] = [];
  const pods: TestNetns[] = [];
  const table = `${prefix}_ovl`;
  let underlay: TestNetns | undefined;
  let external: TestNetns | undefined;
  const sh = (argv: string[]): string => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });

  const bed: Testbed = {
    prefix,
    underlay: undefined as unknown as TestNetns,
    external: undefined as unknown as TestNetns,
    externalIp: `${UNDERLAY_NET}.200`,
    nodes,
    store,
    dir,
    table,
    async startController(i, extra = {}) {
      const n = nodes[i]!;
      const config = parseOverlayConfig({
        clusterCIDRs: ['10.244.0.0/16'],
        subnetFile: n.subnetFile,
        masqueradeTable: table,
        resyncIntervalMs: 1000,
        ...extra,
      });
      const c = new OverlayController({ config, nodeName: n.name, source: store.view(), runner: n.runner, log: quietLog });
      await c.start();
      n.controller = c;
      return c;
    },
    putNode(i) {
      const n = nodes[i]!;
      store.put({
        metadata: { name: n.name, annotations: {} },
        spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
        status: { addresses: [{ type: 'InternalIP', address: n.ip }] },
      });
    },
    addPod(i) {
      const n = nodes[i]!;
      const podIndex = pods.filter((p) => p.name.startsWith(`${n.ns.name}p`)).length + 1;
      const ns = createNetns(`${n.ns.name}p${podIndex}`);
      pods.push(ns);
      const mtu = parseSubnetEnv(readFileSync(n.subnetFile, 'utf8')).mtu;
      const hostIf = `vp${podIndex}`;
      const ip = `10.244.${i + 1}.${podIndex + 1}`;
      sh(['ip', '-n', n.ns.name, 'link', 'add', hostIf, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      sh(['ip', '-n', n.ns.name, 'link', 'set', hostIf, 'master', 'cni0', 'up']);
      sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up']);
      sh(['ip', '-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', ns.name, 'route', 'add', 'default', 'via', `10.244.${i + 1}.1`]);
      return { ns, ip, node: n };
    },
    async destroy() {
      for (const n of nodes) await n.controller?.stop().catch(() => undefined);
      for (const p of pods) p.remove();
      for (const n of nodes) n.ns.remove();
      external?.remove();
      underlay?.remove();
      removeNetnsWithPrefix(prefix);
      removeLinksWithPrefix(prefix);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    underlay = createNetns(`${prefix}u`);
    bed.underlay = underlay;
    sh(['ip', '-n', underlay.name, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(['ip', '-n', underlay.name, 'link', 'set', 'br0', 'up']);
    const attach = (ns: TestNetns, idx: string, ip: string): void => {
      const a = `${prefix}${idx}a`;
      const b = `${prefix}${idx}b`;
      sh(['ip', 'link', 'add', a, 'netns', ns.name, 'type', 'veth', 'peer', 'name', b, 'netns', underlay!.name]);
      sh(['ip', '-n', ns.name, 'link', 'set', a, 'name', 'eth0']);
      if (opts.underlayMtu) {
        sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'mtu', String(opts.underlayMtu)]);
        sh(['ip', '-n', underlay!.name, 'link', 'set', b, 'mtu', String(opts.underlayMtu)]);
      }
      sh(['ip', '-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'up']);
      sh(['ip', '-n', underlay!.name, 'link', 'set', b, 'master', 'br0', 'up']);
    };
    for (let i = 0; i < count; i++) {
      const ns = createNetns(`${prefix}n${i + 1}`);
      const ip = `${UNDERLAY_NET}.${i + 1}`;
      const n: BedNode = {
        name: `node-${i + 1}`,
        ns,
        ip,
        podCIDR: `10.244.${i + 1}.0/24`,
        subnetFile: join(dir, `node-${i + 1}`, 'subnet.env'),
        runner: nsRunner(ns.path),
      };
      nodes.push(n);
      attach(ns, `n${i + 1}`, ip);
      ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      if (opts.bridges !== false) {
        sh(['ip', '-n', ns.name, 'link', 'add', 'cni0', 'type', 'bridge']);
        sh(['ip', '-n', ns.name, 'addr', 'add', `10.244.${i + 1}.1/24`, 'dev', 'cni0']);
        sh(['ip', '-n', ns.name, 'link', 'set', 'cni0', 'up']);
      }
    }
    external = createNetns(`${prefix}x`);
    bed.external = external;
    attach(external, 'x', bed.externalIp);
    for (let i = 0; i < count; i++) bed.putNode(i);
    return bed;
  } catch (e) {
    await bed.destroy();
    throw e;
  }
}

/** Poll `fn` until it returns true (or throw after timeoutMs). Returns the elapsed ms. */
export async function waitFor(fn: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  let lastErr: unknown;
  while (Date.now() - t0 < timeoutMs) {
    try {
      if (await fn()) return Date.now() - t0;
    } catch (e) {
      lastErr = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`);
}

/** Start a background process inside a netns; the caller kills it by PID. */
export function spawnIn(ns: TestNetns, argv: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns.name, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
}

export function killProc(p: ChildProcess | undefined): void {
  if (p?.pid && p.exitCode === null && p.signalCode === null) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark

interface Figure {
  throughputGbps: number;
  pingRttMs: { avg: number; min: number; max: number };
  tcpRrUs?: number;
}

function iperf(client: TestNetns, server: TestNetns, serverIp: string, seconds: number): number {
  const srv = spawnIn(server, ['iperf3', '-s', '-1', '-B', serverIp, '-p', '5201']);
  try {
    execFileSync('sleep', ['0.5']);
    const out = client.exec(['iperf3', '-c', serverIp, '-p', '5201', '-t', String(seconds), '-J']);
    const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
    return j.end.sum_received.bits_per_second / 1e9;
  } finally {
    killProc(srv);
  }
}

function ping(client: TestNetns, ip: string): Figure['pingRttMs'] {
  const out = client.exec(['ping', '-q', '-c', '200', '-i', '0.005', ip]);
  const m = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\//.exec(out);
  if (!m) throw new Error(`cannot parse ping output: ${out}`);
  return { min: Number(m[1]), avg: Number(m[2]), max: Number(m[3]) };
}

/** TCP request/response: one connection, 1-byte ping-pong N times (socat echo server, a small Node client). */
function tcpRr(client: TestNetns, server: TestNetns, serverIp: string): number {
  const srv = spawnIn(server, ['socat', `TCP-LISTEN:5301,bind=${serverIp},reuseaddr`, 'PIPE']);
  try {
    execFileSync('sleep', ['0.3']);
    const script = `
      const net = require('node:net'); const N = 2000; let i = 0; let t0;
      const s = net.connect(5301, ${JSON.stringify(serverIp)}, () => { s.setNoDelay(true); t0 = process.hrtime.bigint(); s.write('x'); });
      s.on('data', () => { if (++i === N) { const us = Number(process.hrtime.bigint() - t0) / 1000 / N; console.log(us.toFixed(1)); s.destroy(); } else s.write('x'); });`;
    const out = client.exec([process.execPath, '-e', script]);
    return Number(out.trim());
  } finally {
    killProc(srv);
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.env.BENCH_SECONDS ?? 5);
  const bed = await createTestbed();
  const stop = async (): Promise<void> => {
    await bed.destroy();
  };
  process.on('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    for (let i = 0; i < bed.nodes.length; i++) await bed.startController(i);
    for (const n of bed.nodes) await n.controller!.reconcile();
    const p1 = bed.addPod(0);
    const p2 = bed.addPod(1);
    await waitFor(() => {
      try {
        p1.ns.exec(['ping', '-c1', '-W1', p2.ip]);
        return true;
      } catch {
        return false;
      }
    }, 5000, 'pod connectivity');
    const [n1, n2] = bed.nodes as [BedNode, BedNode];
    // alternate the two paths over several rounds and keep medians: the VM is shared and noisy
    const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
    const samples: { underlay: Figure; overlay: Figure }[] = [];
    for (let r = 0; r < rounds; r++) {
      const u: Figure = { throughputGbps: iperf(n1.ns, n2.ns, n2.ip, seconds), pingRttMs: ping(n1.ns, n2.ip), tcpRrUs: tcpRr(n1.ns, n2.ns, n2.ip) };
      const o: Figure = { throughputGbps: iperf(p1.ns, p2.ns, p2.ip, seconds), pingRttMs: ping(p1.ns, p2.ip), tcpRrUs: tcpRr(p1.ns, p2.ns, p2.ip) };
      samples.push({ underlay: u, overlay: o });
      console.error(`[bench] round ${r + 1}/${rounds}: underlay ${u.throughputGbps.toFixed(2)} Gbit/s, overlay ${o.throughputGbps.toFixed(2)} Gbit/s`);
    }
    const med = (xs: number[]): number => {
      const v = [...xs].sort((a, b) => a - b);
      return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
    };
    const pick = (k: 'underlay' | 'overlay'): Figure => ({
      throughputGbps: med(samples.map((x) => x[k].throughputGbps)),
      pingRttMs: {
        avg: med(samples.map((x) => x[k].pingRttMs.avg)),
        min: Math.min(...samples.map((x) => x[k].pingRttMs.min)),
        max: Math.max(...samples.map((x) => x[k].pingRttMs.max)),
      },
      tcpRrUs: med(samples.map((x) => x[k].tcpRrUs ?? 0)),
    });
    const underlay = pick('underlay');
    const overlay = pick('overlay');
    const result = {
      date: new Date().toISOString(),
      setup: 'netns testbed: 2 node netns on a veth+bridge underlay (MTU 1500), flatnet.1 VXLAN (VNI 1, UDP 8472, MTU 1450), pods on a bridge per node',
      seconds,
      rounds,
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number),
      samples,
      kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
      underlay,
      overlay,
      throughputRatio: Number((overlay.throughputGbps / underlay.throughputGbps).toFixed(3)),
      pingRttRatio: Number((overlay.pingRttMs.avg / underlay.pingRttMs.avg).toFixed(3)),
      tcpRrRatio: overlay.tcpRrUs && underlay.tcpRrUs ? Number((overlay.tcpRrUs / underlay.tcpRrUs).toFixed(3)) : undefined,
    };
    const outDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'overlay.json'), JSON.stringify(result, null, 2) + '\n');
    const f = (x: number): string => x.toFixed(2);
    const md = [
      '# Overlay benchmark',
      '',
      `${result.date}, kernel ${result.kernel}, load average ${result.loadAverage.join(' ')} on 2 cores. ${result.setup}.`,
      `Medians of ${rounds} alternating rounds; iperf3 ${seconds} s single TCP stream; ping 200 x 5 ms; TCP RR = 2000 1-byte round trips on one connection.`,
      '',
      '| path | TCP throughput (Gbit/s) | ping RTT avg (ms) | TCP RR (us/round trip) |',
      '|---|---|---|---|',
      `| node -> node (underlay) | ${f(underlay.throughputGbps)} | ${underlay.pingRttMs.avg.toFixed(3)} | ${underlay.tcpRrUs} |`,
      `| pod -> pod across nodes (VXLAN) | ${f(overlay.throughputGbps)} | ${overlay.pingRttMs.avg.toFixed(3)} | ${overlay.tcpRrUs} |`,
      `| overlay / underlay | ${result.throughputRatio} | ${result.pingRttRatio} | ${result.tcpRrRatio ?? '-'} |`,
      '',
      'Both paths share the same 2-core VM (other work running), so absolute figures are noisy; the ratio is the point.',
      '',
    ].join('\n');
    writeFileSync(join(outDir, 'overlay.md'), md);
    console.log(md);
  } finally {
    await stop();
  }
}

if (import.meta.main) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
