// The overlay benchmark (`npm run bench:overlay`) on the overlay testbed: iperf3 TCP throughput, ping RTT and TCP
// request/response pod->pod across nodes vs node->node over the underlay.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestbed, killProc, spawnIn, type BedNode } from '../helpers/overlay-testbed.ts';
import type { TestNetns } from '../helpers/netns.ts';
import { waitFor } from '../helpers/wait.ts';

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
    await waitFor('pod connectivity', () => {
      try {
        p1.ns.exec(['ping', '-c1', '-W1', p2.ip]);
        return true;
      } catch {
        return false;
      }
    }, 5000);
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
