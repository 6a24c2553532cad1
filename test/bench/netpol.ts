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
// 3. the long-lived `nft -i` session against one `nft -f` per change (the controller's `nftSession` option): the
//    changes of 1. with the session on and off, --session-rounds rounds per size, the order flipped every round, a
//    fresh controller each time; per change the time in the kernel-apply step and change -> committed, and CPU for
//    start + changes including the nft children (read after the controller stopped, so the session's nft is counted).
// 4. --sections knp (not in the default: it builds kube-network-policies v0.8.0 from its Go module and brings up a
//    local cluster for its apiserver): flatnet and kube-network-policies on the same pods, policies and kernel, in
//    one run (test/bench/netpol-knp.ts); --knp-rounds (3), --knp-flips (5).
// --sections programming,perpacket,session (default; knp on request): sections not run keep their last results in
// netpol.json.
// Results: test/bench/results/netpol.{json,md}, with the load average before and after each section.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { MemoryPolicySource, PolicyController } from '../../proxy/policy/controller.ts';
import { computeState } from '../../proxy/policy/compute.ts';
import { deleteProgram, fullProgram, render } from '../../proxy/policy/render.ts';
import { killChildren } from '../helpers/netns.ts';
import { IP, setupPolicyFixture, type PolicyFixture } from '../netns/policy-fixture.ts';
import { nsObj, podObj, policyObj } from '../unit/proxy/policy/fixtures.ts';
import { knpSection, type KnpResult } from './netpol-knp.ts';
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
const sections = opt('sections', 'programming,perpacket,session').split(',');
const sessionRounds = Number(opt('session-rounds', '4'));
const knpRounds = Number(opt('knp-rounds', '3'));
const knpFlips = Number(opt('knp-flips', '5'));

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

interface Programmed {
  result: SizeResult;
  program: string;
  /** per change: change -> committed, and the kernel-apply step of the sync that committed it (ms) */
  latencies: number[];
  applies: number[];
  /** how each change's sync reached the kernel */
  via: string[];
  /** CPU of start + changes + stop, with every nft child reaped */
  cpuWithStop: number;
}

async function programming(fx: PolicyFixture, pods: number, table: string, nftSession = true): Promise<Programmed> {
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
  const ctl = new PolicyController({ nodeName: 'n1', runner, log: silent, source: src, table, netns: fx.node.path, nftSession });
  const t0 = performance.now();
  await ctl.start();
  await until(() => ctl.changesApplied === ctl.changesSeen);
  const initialSyncMs = performance.now() - t0;
  await until(() => ctl.settled);
  const lat: Record<string, number[]> = { 'new policy': [], 'pod label change': [] };
  const parts: Record<string, number[]> = { compute: [], render: [], apply: [] };
  const via: string[] = [];
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
    via.push(ctl.lastApplyVia ?? '');
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
  return { result, program, latencies: Object.values(lat).flat(), applies: parts['apply']!, via, cpuWithStop: r1(cpuSeconds() - cpu0) };
}

interface SessionRow {
  podsPerNode: number;
  mode: 'session' | 'nft -f';
  rounds: number;
  changes: number;
  applyP50Ms: number;
  applyP99Ms: number;
  changeP50Ms: number;
  changeP99Ms: number;
  /** CPU per round (start + changes + stop, nft children included), median over the rounds */
  cpuSecondsMedian: number;
  /** per round: p50 of the apply step */
  applyP50PerRound: number[];
}

/** The session on and off, alternating, `sessionRounds` rounds per size. */
async function sessionComparison(fx: PolicyFixture, table: string): Promise<{ rows: SessionRow[]; loadPerRound: number[] }> {
  const rows: SessionRow[] = [];
  const loadPerRound: number[] = [];
  for (const n of sizes) {
    const acc = {
      session: { applies: [] as number[], lat: [] as number[], cpu: [] as number[], perRound: [] as number[] },
      'nft -f': { applies: [] as number[], lat: [] as number[], cpu: [] as number[], perRound: [] as number[] },
    };
    for (let i = 0; i < sessionRounds; i++) {
      loadPerRound.push(r1(loadavg()[0]!));
      for (const mode of i % 2 ? (['nft -f', 'session'] as const) : (['session', 'nft -f'] as const)) {
        const r = await programming(fx, n, table, mode === 'session');
        // every change of a round must have gone the way the round says (a failed session apply falls back to nft -f)
        if (r.via.some((v) => v !== mode)) throw new Error(`${mode} round applied through ${[...new Set(r.via)].join(', ')}`);
        const a = acc[mode];
        a.applies.push(...r.applies);
        a.lat.push(...r.latencies);
        a.cpu.push(r.cpuWithStop);
        a.perRound.push(r1(pct(r.applies, 50)));
        process.stderr.write(`[netpol]   session round ${i + 1} ${n} pods ${mode}: apply p50 ${r1(pct(r.applies, 50))} ms, change p50 ${r1(pct(r.latencies, 50))} ms, CPU ${r.cpuWithStop} s\n`);
      }
    }
    for (const mode of ['session', 'nft -f'] as const) {
      const a = acc[mode];
      rows.push({
        podsPerNode: n,
        mode,
        rounds: sessionRounds,
        changes: a.applies.length,
        applyP50Ms: r1(pct(a.applies, 50)),
        applyP99Ms: r1(pct(a.applies, 99)),
        changeP50Ms: r1(pct(a.lat, 50)),
        changeP99Ms: r1(pct(a.lat, 99)),
        cpuSecondsMedian: r1(pct(a.cpu, 50)),
        applyP50PerRound: a.perRound,
      });
    }
  }
  return { rows, loadPerRound };
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

interface PerPacket {
  connections: number;
  newConnectionUs: { without: { p50: number; p99: number }; with: { p50: number; p99: number }; addedP50: number };
  throughputGbps: { without: number; with: number; samples: { without: number[]; with: number[] } };
}

interface Results {
  date: string;
  node: string;
  loadavg: { before: number[]; after: number[] };
  programming: SizeResult[];
  perPacket: PerPacket & { rounds?: number; iperfSeconds?: number; policies?: number };
  session?: { date: string; node: string; loadavg: { before: number[]; after: number[]; perRound: number[] }; policies: number; changesPerRun: number; rows: SessionRow[] };
  knp?: KnpResult & { date: string; node: string; loadavg: { before: number[]; after: number[] } };
}

const JSON_FILE = join(RESULTS, 'netpol.json');

function renderMd(out: Results): string {
  const pp = out.perPacket;
  const rounds = pp.rounds ?? 4;
  const lines = [
    '# bench:netpol',
    '',
    `${out.date}, Node ${out.node}, load average (1/5/15 min) before ${out.loadavg.before.join(' / ')}, after ${out.loadavg.after.join(' / ')}.`,
    'In-process controller, objects in memory (no apiserver); kernel = a node network namespace on this machine.',
    '',
    '| pods per node | policies | isolated local pods | initial sync | table text | change | n | p50 | p99 | max | CPU (start + changes) | RSS |',
    '|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|',
    ...out.programming.flatMap((r) =>
      r.change.map(
        (c) =>
          `| ${r.podsPerNode} | ${r.policies} | ${r.isolatedPods} | ${r.initialSyncMs} ms | ${Math.round(r.tableBytes / 1024)} KiB | ${c.kind} | ${c.n} | ${c.p50Ms} ms | ${c.p99Ms} ms | ${c.maxMs} ms | ${r.cpuSeconds} s | ${r.rssMB} MB |`,
      ),
    ),
    '',
    `Per packet, pod c -> pod a (selected by ${(pp.policies ?? out.programming[0]?.policies ?? nPolicies) / APPS} policies; c allowed by the last rule of a's chain), the largest size's table vs the same table without policies (conntrack on in both), ${rounds} rounds, the order flipped every round:`,
    '',
    '| | no policies | with policies | added |',
    '|---|---:|---:|---:|',
    `| new TCP connection p50 (${pp.connections} each) | ${pp.newConnectionUs.without.p50} us | ${pp.newConnectionUs.with.p50} us | ${pp.newConnectionUs.addedP50} us |`,
    `| new TCP connection p99 | ${pp.newConnectionUs.without.p99} us | ${pp.newConnectionUs.with.p99} us | |`,
    `| one TCP stream (iperf3 ${pp.iperfSeconds ?? 5} s, mean of ${rounds}) | ${pp.throughputGbps.without} Gbit/s | ${pp.throughputGbps.with} Gbit/s | ${r1((pp.throughputGbps.with / pp.throughputGbps.without - 1) * 100)} % |`,
    '',
  ];
  const ss = out.session;
  if (ss) {
    lines.push(
      '## One long-lived `nft -i` against one `nft -f` per change',
      '',
      `${ss.date}, Node ${ss.node}, load average (1/5/15 min) before ${ss.loadavg.before.join(' / ')}, after ${ss.loadavg.after.join(' / ')}; 1-min load at the start of each round: ${ss.loadavg.perRound.join(', ')}.`,
      `The changes of the table above (${ss.changesPerRun} per run, ${ss.policies} policies), a fresh controller per run, the session on and off in alternating order. ` +
        '"apply" is the sync step that hands the diff to the kernel (the session: one line to the running nft and its answer; ' +
        'nft -f: spawning nft, which loads its cache, parses and commits); "change" is object handed to the controller -> committed. ' +
        'CPU: start + changes + stop of one run, nft children included, median over the runs.',
      '',
      '| pods per node | apply via | runs | changes | apply p50 | apply p99 | change p50 | change p99 | CPU per run | apply p50 per run |',
      '|---:|---|---:|---:|---:|---:|---:|---:|---:|---|',
      ...ss.rows.map(
        (r) =>
          `| ${r.podsPerNode} | ${r.mode} | ${r.rounds} | ${r.changes} | ${r.applyP50Ms} ms | ${r.applyP99Ms} ms | ${r.changeP50Ms} ms | ${r.changeP99Ms} ms | ${r.cpuSecondsMedian} s | ${r.applyP50PerRound.join(', ')} ms |`,
      ),
      '',
    );
  }
  const kn = out.knp;
  if (kn) {
    const modes = (['none', 'flatnet', 'knp'] as const).filter((m) => kn.newConnectionUs[m]);

    const label = { none: 'no policy (flatnet\'s table without policies)', flatnet: 'flatnet', knp: `kube-network-policies ${kn.version}` };
    const med = (xs: number[]): number => r1(pct(xs, 50));
    lines.push(
      '## Beside kube-network-policies',
      '',
      `${kn.date}, Node ${kn.node}, load average (1/5/15 min) before ${kn.loadavg.before.join(' / ')}, after ${kn.loadavg.after.join(' / ')}.`,
      ...(kn.knpSkipped ? [`kube-network-policies ${kn.version} was built but did not run: ${kn.knpSkipped}. flatnet alone below, measured the way the comparison would.`, ''] : []),
      `Both read the same ${kn.policies} NetworkPolicies, 10 namespaces and Pod objects a and c from one apiserver (a local cluster) and enforce on the same node namespace, each alone; ` +
        `${kn.rounds} rounds, the order rotating; before measuring, each is checked to drop c -> a:8080 and pass c -> a:7000. ` +
        'kube-network-policies runs with --disable-nri (its pod addresses come from the API, as here for flatnet). ' +
        'Below the table: pod c relabelled out of the allowed peers (deny) and back (allow) through the API, the time from the write to flatnet\'s transaction committed in the kernel (apiserver, watch, sync; checked with a connection after each).',
      '',
      `| | new TCP connection p50 | p90 | p99 (${kn.connectionsPerMode} each) | one TCP stream (iperf3, mean of ${kn.rounds}) |`,
      '|---|---:|---:|---:|---:|',
      ...modes.map((m) => `| ${label[m]} | ${kn.newConnectionUs[m]!.p50} us | ${kn.newConnectionUs[m]!.p90} us | ${kn.newConnectionUs[m]!.p99} us | ${kn.throughputGbps[m]!.mean} Gbit/s |`),
      '',
      ...(kn.knpCpuSecondsPer1000Conns !== undefined
        ? [`kube-network-policies: ${kn.knpCpuSecondsPer1000Conns} CPU seconds per 1,000 new connections (its verdicts in user space), peak RSS ${kn.knpPeakRssMB} MB. flatnet decides in the kernel: no user-space CPU per connection.`, '']
        : []),
      '| API write -> committed in the kernel | deny p50 | deny max | allow p50 | allow max | samples (deny; allow) |',
      '|---|---:|---:|---:|---:|---|',
      `| flatnet | ${med(kn.flipMs.flatnet.deny)} ms | ${r1(Math.max(...kn.flipMs.flatnet.deny))} ms | ${med(kn.flipMs.flatnet.allow)} ms | ${r1(Math.max(...kn.flipMs.flatnet.allow))} ms | ${kn.flipMs.flatnet.deny.join(', ')}; ${kn.flipMs.flatnet.allow.join(', ')} |`,
      '',
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const load0 = loadavg();
  const fx = await setupPolicyFixture();
  const dir = mkdtempSync(join(tmpdir(), 'netpol-bench-'));
  const procs: ChildProcess[] = [];
  const table = `${fx.prefix}-pol`;
  const prev = existsSync(JSON_FILE) ? (JSON.parse(readFileSync(JSON_FILE, 'utf8')) as Results) : undefined;
  try {
    let programmingResults = prev?.programming;
    let perPacket = prev?.perPacket;
    let program = '';
    if (sections.includes('programming') || sections.includes('perpacket')) {
      programmingResults = [];
      for (const n of sizes) {
        process.stderr.write(`[netpol] ${n} pods per node, ${nPolicies} policies\n`);
        const r = await programming(fx, n, table);
        programmingResults.push(r.result);
        program = r.program;
        process.stderr.write(`[netpol]   ${JSON.stringify(r.result)}\n`);
      }
    }

    const bin = join(dir, 'connlat');
    if (sections.includes('perpacket') || sections.includes('knp')) {
      execFileSync('gcc', ['-O2', '-o', bin, join(HERE, 'connlat.c')]);
      serve(fx, [bin, 'server', '7000'], procs);
      serve(fx, ['iperf3', '-s', '-p', '5201'], procs);
      await new Promise((r) => setTimeout(r, 500));
    }
    const empty = fullProgram(table, render(computeState({ policies: [], pods: [], namespaces: new Map() }, 'n1'))).render();
    if (sections.includes('perpacket')) {
      // per-packet cost: the largest table loaded vs none, alternating
      const nft = (text: string): void => {
        execFileSync('ip', ['netns', 'exec', fx.node.name, 'nft', '-f', '-'], { input: text });
      };
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
      perPacket = {
        connections: nConns,
        rounds,
        iperfSeconds,
        policies: nPolicies,
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
    }
    const load1 = loadavg();
    if (!programmingResults || !perPacket) throw new Error('no earlier programming / per-packet results in netpol.json: run those sections');
    const ranMain = sections.includes('programming') || sections.includes('perpacket');
    const out: Results = {
      date: ranMain ? new Date().toISOString() : prev!.date,
      node: ranMain ? process.version : prev!.node,
      loadavg: ranMain ? { before: load0.map(r1), after: load1.map(r1) } : prev!.loadavg,
      programming: programmingResults,
      perPacket,
      ...(prev?.session ? { session: prev.session } : {}),
      ...(prev?.knp ? { knp: prev.knp } : {}),
    };

    if (sections.includes('session')) {
      const s0 = loadavg();
      process.stderr.write(`[netpol] nft -i session vs nft -f, ${sessionRounds} rounds per size\n`);
      const { rows, loadPerRound } = await sessionComparison(fx, table);
      out.session = {
        date: new Date().toISOString(),
        node: process.version,
        loadavg: { before: s0.map(r1), after: loadavg().map(r1), perRound: loadPerRound },
        policies: nPolicies,
        changesPerRun: nChanges,
        rows,
      };
    }
    if (sections.includes('knp')) {
      const k0 = loadavg();
      process.stderr.write(`[netpol] beside kube-network-policies, ${knpRounds} rounds\n`);
      const policies = [
        ...Array.from({ length: nPolicies }, (_, i) => synthPolicy(i)),
        policyObj('ns0', 'zz-bench', {
          podSelector: { matchLabels: { role: 'server' } },
          ingress: [{ from: [{ podSelector: { matchLabels: { role: 'bench-client' } } }], ports: [{ port: 7000 }, { port: 5201 }] }],
        }),
      ];
      const res = await knpSection({
        fx,
        table,
        emptyProgram: empty,
        connlat: (n) => connlat(fx, bin, n),
        iperf: () => iperf(fx),
        namespaces: NS,
        policies,
        conns: nConns,
        rounds: knpRounds,
        flips: knpFlips,
        log: (m) => process.stderr.write(`[netpol] ${m}\n`),
      });
      out.knp = { ...res, date: new Date().toISOString(), node: process.version, loadavg: { before: k0.map(r1), after: loadavg().map(r1) } };
    }
    writeFileSync(JSON_FILE, JSON.stringify(out, null, 2) + '\n');
    const md = renderMd(out);
    writeFileSync(join(RESULTS, 'netpol.md'), md);
    process.stdout.write(md);
  } finally {
    killChildren(procs);
    fx.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
