// bench:netpol: flatnet's NetworkPolicy controller on a real kernel (root; a node netns with pods, as in the netns
// tests: test/netns/policy-fixture.ts).
//
//   npm run bench:netpol [-- --pods 100,1000 --policies 1000 --changes 40 --conns 3000 --iperf-seconds 5]
//
// 1. programming: for each size, N pods on this node and N on another, `--policies` NetworkPolicies spread over 10
//    namespaces (each selects one of 50 app labels and allows another app on two ports). The controller runs in-process
//    with its objects in memory (no apiserver: the watch delay is not in these figures). Initial sync = start -> the
//    full table committed. Changes alternate a new policy and a pod label change (the pod moves between peer sets);
//    latency = object handed to the controller -> its nft transaction committed (`changesApplied`). CPU counts the
//    bench process and its nft/conntrack children; RSS is the bench process (the controller is all it holds).
// 2. per-packet cost, with the largest size's table loaded vs the table without policies (conntrack on in both),
//    in rounds whose order flips: new-TCP-connection
//    latency (connlat, test/bench/connlat.c) from pod c to pod a, which 20 of the policies select and the last rule of
//    its chain allows; TCP throughput of one established connection (iperf3) from c to a.
// Results: test/bench/results/netpol.{json,md}, with the load average before and after.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { MemoryPolicySource, PolicyController } from '../../proxy/policy/controller.ts';
import { computeState } from '../../proxy/policy/compute.ts';
import { deleteProgram, fullProgram, render } from '../../proxy/policy/render.ts';
import { killChildren } from '../helpers/netns.ts';
import { IP, setupPolicyFixture, type PolicyFixture } from '../netns/policy-fixture.ts';
import { nsObj, podObj, policyObj } from '../unit/proxy/policy/fixtures.ts';
import { opt, pct, r1 } from './util.ts';

const HERE = dirname(new URL(import.meta.url).pathname);
const RESULTS = join(HERE, 'results');
const runner = new ExecRunner();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const NS = 10;
const APPS = 50;

const sizes = opt('pods', '100,1000').split(',').map(Number);
const nPolicies = Number(opt('policies', '1000'));
const nChanges = Number(opt('changes', '40'));
const nConns = Number(opt('conns', '3000'));
const iperfSeconds = Number(opt('iperf-seconds', '5'));

/** synthetic pod i: app label, namespace, node; IPs outside the fixture's subnets (no packets go to them) */
function synthPod(i: number, local: boolean, app = `app${i % APPS}`): Record<string, unknown> {
  const n = local ? i : i + 20_000;
  return podObj({
    ns: `ns${i % NS}`,
    name: `${local ? 'l' : 'r'}${i}`,
    ip: `10.${local ? 250 : 251}.${Math.floor(n / 250) % 250}.${(n % 250) + 1}`,
    labels: { app },
    node: local ? 'n1' : 'n2',
    ports: [{ name: 'http', containerPort: 8080 }],
  });
}

function synthPolicy(i: number): Record<string, unknown> {
  return policyObj(`ns${i % NS}`, `p${String(i).padStart(5, '0')}`, {
    podSelector: { matchLabels: { app: `app${i % APPS}` } },
    ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: `app${(i + 1) % APPS}` } } }], ports: [{ port: 8080 + (i % 5) }, { port: 'http' }] }],
  });
}

/** CPU seconds of this process and its waited-for children (nft, conntrack, ip) */
function cpuSeconds(): number {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // fields after the name: utime stime cutime cstime are 14..17 in proc(5), i.e. 11..14 here
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
}
const rssMB = (): number => Math.round(process.memoryUsage().rss / 1e6);

async function until(pred: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setImmediate(r));
  }
}

interface SizeResult {
  podsPerNode: number;
  policies: number;
  isolatedPods: number;
  initialSyncMs: number;
  tableBytes: number;
  change: { kind: string; n: number; p50Ms: number; p99Ms: number; maxMs: number }[];
  /** median time of one change's sync in computing the state, rendering and diffing, and nft -f */
  syncPartsP50Ms: Record<string, number>;
  cpuSeconds: number;
  rssMB: number;
}

async function programming(fx: PolicyFixture, pods: number, table: string): Promise<{ result: SizeResult; program: string }> {
  const src = new MemoryPolicySource();
  for (let i = 0; i < NS; i++) src.set('namespace', nsObj(`ns${i}`, { idx: String(i) }));
  for (let i = 0; i < pods; i++) {
    src.set('pod', synthPod(i, true));
    src.set('pod', synthPod(i, false));
  }
  // the fixture's real pods: a (app0 in ns0, selected by 20 policies) and its client c
  src.set('pod', podObj({ ns: 'ns0', name: 'a', ip: IP.a, labels: { app: 'app0', role: 'server' }, ports: [{ name: 'http', containerPort: 8080 }] }));
  src.set('pod', podObj({ ns: 'ns0', name: 'c', ip: IP.c, labels: { role: 'bench-client' } }));
  for (let i = 0; i < nPolicies; i++) src.set('policy', synthPolicy(i));
  src.set(
    'policy',
    policyObj('ns0', 'zz-bench', {
      podSelector: { matchLabels: { role: 'server' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { role: 'bench-client' } } }], ports: [{ port: 7000 }, { port: 5201 }] }],
    }),
  );
  const cpu0 = cpuSeconds();
  const ctl = new PolicyController({ nodeName: 'n1', runner, log: silent, source: src, table, netns: fx.node.path });
  const t0 = performance.now();
  await ctl.start();
  await until(() => ctl.changesApplied === ctl.changesSeen);
  const initialSyncMs = performance.now() - t0;
  await until(() => ctl.settled);
  const lat: Record<string, number[]> = { 'new policy': [], 'pod label change': [] };
  const parts: Record<string, number[]> = { compute: [], render: [], apply: [] };
  for (let k = 0; k < nChanges; k++) {
    const seen = ctl.changesSeen + 1;
    const kind = k % 2 === 0 ? 'new policy' : 'pod label change';
    const t = performance.now();
    if (kind === 'new policy') src.set('policy', synthPolicy(nPolicies + k));
    else src.set('pod', synthPod(k, false, `app${(k * 7 + 3) % APPS}`));
    await until(() => ctl.changesApplied >= seen);
    lat[kind]!.push(performance.now() - t);
    await until(() => ctl.settled);
    for (const k of ['compute', 'render', 'apply'] as const) parts[k]!.push(ctl.lastSyncTimings[k]);
  }
  const program = fullProgram(table, render(ctl.state!)).render();
  // the last change is in the kernel: the last relabelled pod's address is in some peer set, or the last policy's chain exists
  const listed = fx.node.exec(['nft', 'list', 'chain', 'inet', table, 'forward']);
  if (!listed.includes('jump nonsyn')) throw new Error('policy table not in the kernel');
  const result: SizeResult = {
    podsPerNode: pods,
    policies: nPolicies,
    isolatedPods: [...ctl.state!.pods.values()].filter((p) => p.ingress || p.egress).length,
    initialSyncMs: Math.round(initialSyncMs),
    tableBytes: program.length,
    change: Object.entries(lat).map(([kind, xs]) => ({ kind, n: xs.length, p50Ms: r1(pct(xs, 50)), p99Ms: r1(pct(xs, 99)), maxMs: r1(Math.max(...xs)) })),
    syncPartsP50Ms: Object.fromEntries(Object.entries(parts).map(([k, xs]) => [k, r1(pct(xs, 50))])),
    cpuSeconds: r1(cpuSeconds() - cpu0),
    rssMB: rssMB(),
  };
  await ctl.stop();
  return { result, program };
}

function serve(fx: PolicyFixture, argv: string[], procs: ChildProcess[]): void {
  const p = spawn('ip', ['netns', 'exec', fx.ns.a.name, ...argv], { stdio: 'ignore' });
  procs.push(p);
}

function connlat(fx: PolicyFixture, bin: string, n: number): number[] {
  const out = execFileSync('ip', ['netns', 'exec', fx.ns.c.name, bin, 'client', IP.a, '7000', String(n), '100'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return out
    .trim()
    .split('\n')
    .map((l) => Number(l) / 1000);
}

function iperf(fx: PolicyFixture): number {
  const out = execFileSync('ip', ['netns', 'exec', fx.ns.c.name, 'iperf3', '-c', IP.a, '-t', String(iperfSeconds), '-J'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

async function main(): Promise<void> {
  const load0 = loadavg();
  const fx = await setupPolicyFixture();
  const dir = mkdtempSync(join(tmpdir(), 'netpol-bench-'));
  const procs: ChildProcess[] = [];
  const table = `${fx.prefix}-pol`;
  try {
    const bin = join(dir, 'connlat');
    execFileSync('gcc', ['-O2', '-o', bin, join(HERE, 'connlat.c')]);
    serve(fx, [bin, 'server', '7000'], procs);
    serve(fx, ['iperf3', '-s', '-p', '5201'], procs);
    await new Promise((r) => setTimeout(r, 500));

    const results: SizeResult[] = [];
    let program = '';
    for (const n of sizes) {
      process.stderr.write(`[netpol] ${n} pods per node, ${nPolicies} policies\n`);
      const r = await programming(fx, n, table);
      results.push(r.result);
      program = r.program;
      process.stderr.write(`[netpol]   ${JSON.stringify(r.result)}\n`);
    }

    // per-packet cost: the largest table loaded vs none, alternating
    const nft = (text: string): void => {
      execFileSync('ip', ['netns', 'exec', fx.node.name, 'nft', '-f', '-'], { input: text });
    };
    const empty = fullProgram(table, render(computeState({ policies: [], pods: [], namespaces: new Map() }, 'n1'))).render();
    const lat = { with: [] as number[], without: [] as number[] };
    const thr = { with: [] as number[], without: [] as number[] };
    const rounds = 4;
    for (let i = 0; i < rounds; i++) {
      // the order flips every round, so that whatever the first or second run of a round pays is paid by both sides
      for (const mode of i % 2 ? (['with', 'without'] as const) : (['without', 'with'] as const)) {
        // "without": the controller's table with no policy, so both sides pay for conntrack (which a node running a
        // proxy always has), and the difference is the policies alone
        nft(mode === 'with' ? program : empty);
        if (mode === 'with' && !connlat(fx, bin, 1).length) throw new Error('no connection with policies');
        lat[mode].push(...connlat(fx, bin, Math.ceil(nConns / rounds)));
        thr[mode].push(iperf(fx));
        process.stderr.write(`[netpol]   round ${i + 1} ${mode}: p50 ${r1(pct(lat[mode], 50))} us, ${r1(thr[mode].at(-1)!)} Gbit/s\n`);
      }
    }
    nft(deleteProgram(table).render());
    const perPacket = {
      connections: nConns,
      newConnectionUs: {
        without: { p50: r1(pct(lat.without, 50)), p99: r1(pct(lat.without, 99)) },
        with: { p50: r1(pct(lat.with, 50)), p99: r1(pct(lat.with, 99)) },
        addedP50: r1(pct(lat.with, 50) - pct(lat.without, 50)),
      },
      throughputGbps: {
        without: r1(thr.without.reduce((a, b) => a + b, 0) / thr.without.length),
        with: r1(thr.with.reduce((a, b) => a + b, 0) / thr.with.length),
        samples: { without: thr.without.map(r1), with: thr.with.map(r1) },
      },
    };
    const load1 = loadavg();
    const out = {
      date: new Date().toISOString(),
      node: process.version,
      loadavg: { before: load0.map(r1), after: load1.map(r1) },
      programming: results,
      perPacket,
    };
    writeFileSync(join(RESULTS, 'netpol.json'), JSON.stringify(out, null, 2) + '\n');
    const md = [
      '# bench:netpol',
      '',
      `${out.date}, Node ${out.node}, load average (1/5/15 min) before ${out.loadavg.before.join(' / ')}, after ${out.loadavg.after.join(' / ')}.`,
      'In-process controller, objects in memory (no apiserver); kernel = a node network namespace on this machine.',
      '',
      '| pods per node | policies | isolated local pods | initial sync | table text | change | n | p50 | p99 | max | CPU (start + changes) | RSS |',
      '|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|',
      ...results.flatMap((r) =>
        r.change.map(
          (c) =>
            `| ${r.podsPerNode} | ${r.policies} | ${r.isolatedPods} | ${r.initialSyncMs} ms | ${Math.round(r.tableBytes / 1024)} KiB | ${c.kind} | ${c.n} | ${c.p50Ms} ms | ${c.p99Ms} ms | ${c.maxMs} ms | ${r.cpuSeconds} s | ${r.rssMB} MB |`,
        ),
      ),
      '',
      `Per packet, pod c -> pod a (selected by ${nPolicies / APPS} policies; c allowed by the last rule of a's chain), the largest size's table vs the same table without policies (conntrack on in both), ${rounds} rounds, the order flipped every round:`,
      '',
      '| | no policies | with policies | added |',
      '|---|---:|---:|---:|',
      `| new TCP connection p50 (${nConns} each) | ${perPacket.newConnectionUs.without.p50} us | ${perPacket.newConnectionUs.with.p50} us | ${perPacket.newConnectionUs.addedP50} us |`,
      `| new TCP connection p99 | ${perPacket.newConnectionUs.without.p99} us | ${perPacket.newConnectionUs.with.p99} us | |`,
      `| one TCP stream (iperf3 ${iperfSeconds} s, mean of ${rounds}) | ${perPacket.throughputGbps.without} Gbit/s | ${perPacket.throughputGbps.with} Gbit/s | ${r1((perPacket.throughputGbps.with / perPacket.throughputGbps.without - 1) * 100)} % |`,
      '',
    ].join('\n');
    writeFileSync(join(RESULTS, 'netpol.md'), md);
    process.stdout.write(md);
  } finally {
    killChildren(procs);
    fx.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
