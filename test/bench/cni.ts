// npm run bench:cni: CNI plugin invocation cost, ours (dist/bin, a Node SEA) side by side with the reference Go
// plugins (/usr/lib/cni), sequentially and with PARALLEL invocations in flight. Writes test/bench/results/cni.{json,md}.
//
// ---- Adding scenarios -------------------------------------------------------------------------------------------
// Any module test/bench/cni-<something>.ts that exports
//
//     export function scenarios(ctx: BenchContext): Scenario[] | Promise<Scenario[]>
//
// is imported and its scenarios run in the same table (modules in file-name order, after the built-in ones).
// A Scenario is one timed operation:
//   - `group` pairs implementations of the same operation (e.g. "host-local ADD+DEL"); `impl` is "ours",
//     "reference" or anything else ("floor", "ours (no code cache)"). Within a group, every impl is compared to
//     the "reference" impl (ratio of medians), and "ours minus floor" is reported when a "floor" scenario exists
//     in the group "start".
//   - `run(i)` performs one iteration; i is unique across the whole scenario (sequential and parallel phases),
//     so it can be used to derive container IDs, interface names, netns names... It may return the sample
//     itself: an ExecResult from ctx.exec (e.g. only the ADD of an ADD-then-DEL iteration), ctx.sum(a, b) of
//     several, or a number of ms; otherwise the whole call is timed (wall only, no CPU figure).
//   - `starts` is how many plugin processes one iteration starts (default 1); the summary subtracts the bare
//     start ("floor") that many times to show what the work itself costs. For impl "ours", every sequential
//     iteration is paired with a bare start measured just before it (robust to load drift on a shared machine).
//   - `setup`/`teardown` run once around the scenario (teardown always, even after a failure).
//   - `parallel: false` skips the parallel phase (e.g. when iterations share a kernel object).
// Use ctx.prefix for every kernel object (netns, links) and ctx.tmp for files; clean up in teardown.
// ctx.exec() runs a plugin binary with CNI env + stdin and returns its outcome (throws on failure unless allowed).
// Environment: BENCH_N (sequential iterations, 40), BENCH_PARALLEL (20), BENCH_ROUNDS (3), BENCH_ONLY (substring
// of "group impl"), BENCH_MODULES (comma-separated cni-* module names, or "none"). SIGINT/SIGTERM tear down.
// ------------------------------------------------------------------------------------------------------------------
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runPrefix } from '../helpers/prefix.ts';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** wall time of the child, fork to reap */
  ms: number;
  /** user+system CPU time of the child (and its children), when the rusage helper could be built */
  cpuMs?: number;
}

/** One measurement: wall ms and, when known, CPU ms. */
export interface Sample {
  ms: number;
  cpuMs?: number;
}

export interface BenchContext {
  repo: string;
  /** dist/bin (our binaries) */
  oursBin: string;
  /** /usr/lib/cni (the reference plugins) */
  refBin: string;
  /** scratch directory, removed at the end */
  tmp: string;
  /** per-run prefix for kernel objects */
  prefix: string;
  /** sequential iterations per scenario */
  iterations: number;
  /** invocations in flight in the parallel phase */
  parallel: number;
  /** parallel rounds (samples = parallel * rounds) */
  rounds: number;
  /** runs `bin` with `env` (merged over a minimal PATH) and `stdin`; throws on a non-zero exit unless allowFail */
  exec(bin: string, env: Record<string, string>, stdin: string, opts?: { allowFail?: boolean; args?: string[] }): Promise<ExecResult>;
  /** adds samples (e.g. the ADD and the DEL of one iteration) */
  sum(...s: Sample[]): Sample;
}

export interface Scenario {
  group: string;
  impl: string;
  setup?(): Promise<void> | void;
  run(i: number): Promise<void | number | Sample>;
  teardown?(): Promise<void> | void;
  /** plugin processes started per iteration (default 1) */
  starts?: number;
  /** default true */
  parallel?: boolean;
}

interface Stats {
  n: number;
  median: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

interface ScenarioResult {
  group: string;
  impl: string;
  sequential?: Stats;
  /** CPU ms per operation, sequential phase */
  cpu?: Stats;
  /**
   * "ours" scenarios only: each sequential iteration is paired with a bare start (VERSION) run just before it, and
   * the per-iteration difference (sample - starts x that start) is summarised. Robust to load drift on a busy machine.
   */
  pairedMinusFloor?: { wall: Stats; cpu?: Stats };
  parallel?: Stats & { wallMs: number; opsPerSec: number };
  error?: string;
}

const REPO = resolve(import.meta.dirname, '../..');

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  const r = (x: number): number => Math.round(x * 100) / 100;
  return {
    n: s.length,
    median: r(s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2),
    p99: r(q(0.99)),
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
    min: r(s[0]!),
    max: r(s[s.length - 1]!),
  };
}

// A tiny C wrapper that forks/execs the plugin and reports its wall and CPU time (wait4 rusage). CPU time is the
// figure that survives a loaded machine; wall time is what a runtime waits for.
const RUSAGE_C = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
  if (argc < 3) return 127;
  struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
  pid_t p = fork();
  if (p == 0) { execv(argv[2], argv + 2); _exit(127); }
  int st = 0; struct rusage ru; wait4(p, &st, 0, &ru);
  clock_gettime(CLOCK_MONOTONIC, &b);
  FILE *f = fopen(argv[1], "w");
  if (f) { fprintf(f, "%ld %ld %ld\n", (long)((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000),
    (long)(ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec), (long)(ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec)); fclose(f); }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
`;

function buildRusageHelper(dir: string): string | undefined {
  const src = join(dir, 'rusage.c');
  const bin = join(dir, 'rusage');
  writeFileSync(src, RUSAGE_C);
  const r = spawnSync('gcc', ['-O2', '-o', bin, src], { stdio: 'ignore' });
  return r.status === 0 ? bin : undefined;
}

let helper: string | undefined;
let helperSeq = 0;

function exec(bin: string, env: Record<string, string>, stdin: string, opts: { allowFail?: boolean; args?: string[] } = {}): Promise<ExecResult> {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const statFile = helper ? `${helper}.${process.pid}.${helperSeq++}` : undefined;
    const argv = helper ? [statFile!, bin, ...(opts.args ?? [])] : (opts.args ?? []);
    // argv[0] of the plugin is its path, as libcni sets it
    const c = spawn(helper ?? bin, argv, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.stderr.on('data', (b: Buffer) => (err += b.toString()));
    c.on('error', rej);
    c.on('close', (code) => {
      let ms = Number(process.hrtime.bigint() - t0) / 1e6;
      let cpuMs: number | undefined;
      if (statFile) {
        try {
          const [w, u, sy] = readFileSync(statFile, 'utf8').trim().split(' ').map(Number);
          ms = w! / 1000;
          cpuMs = (u! + sy!) / 1000;
          rmSync(statFile, { force: true });
        } catch {
          /* keep the outer wall time */
        }
      }
      const r = { code: code ?? -1, stdout: out, stderr: err, ms, cpuMs };
      if (r.code !== 0 && !opts.allowFail) rej(new Error(`${bin} ${env.CNI_COMMAND ?? ''} exited ${r.code}: ${out}${err}`));
      else res(r);
    });
    c.stdin.on('error', () => {});
    c.stdin.end(stdin);
  });
}

function sum(...s: Sample[]): Sample {
  const cpu = s.every((x) => x.cpuMs !== undefined) ? s.reduce((a, x) => a + x.cpuMs!, 0) : undefined;
  return { ms: s.reduce((a, x) => a + x.ms, 0), cpuMs: cpu };
}

/** The built-in scenarios: the bare start of both implementations, and host-local ADD+DEL. */
function builtins(ctx: BenchContext): Scenario[] {
  const version = (impl: string, bin: string): Scenario => ({
    group: 'start (VERSION)',
    impl,
    run: async () => ctx.exec(bin, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}'),
  });
  const hostLocal = (impl: string, bin: string, op: 'ADD' | 'DEL' | 'ADD+DEL'): Scenario => {
    const dataDir = join(ctx.tmp, `hl-${impl}-${op.replace('+', '')}`);
    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'benchnet',
      type: 'bridge',
      ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.200.0.0/16' }]], routes: [{ dst: '0.0.0.0/0' }] },
    });
    const env = (cmd: string, i: number): Record<string, string> => ({
      CNI_COMMAND: cmd,
      CNI_CONTAINERID: `bench${i}`,
      CNI_NETNS: '/var/run/netns/none',
      CNI_IFNAME: 'eth0',
      CNI_PATH: ctx.oursBin,
    });
    return {
      group: `host-local ${op}`,
      impl,
      starts: op === 'ADD+DEL' ? 2 : 1,
      setup: () => {
        mkdirSync(dataDir, { recursive: true });
      },
      run: async (i) => {
        const add = await ctx.exec(bin, env('ADD', i), conf);
        if (!add.stdout.includes('"ips"')) throw new Error(`unexpected ADD result: ${add.stdout}`);
        const del = await ctx.exec(bin, env('DEL', i), conf);
        if (op === 'ADD') return add;
        if (op === 'DEL') return del;
        return ctx.sum(add, del);
      },
      teardown: () => {
        const left = readdirSync(join(dataDir, 'benchnet')).filter((f) => /^\d/.test(f));
        if (left.length > 0) throw new Error(`${impl}: ${left.length} addresses left after DEL`);
      },
    };
  };
  const ours = join(ctx.oursBin, 'host-local');
  const ref = join(ctx.refBin, 'host-local');
  const out: Scenario[] = [version('floor', ours), version('reference', ref)];
  for (const op of ['ADD', 'DEL', 'ADD+DEL'] as const) out.push(hostLocal('ours', ours, op), hostLocal('reference', ref, op));
  return out;
}

function sampleMs(own: void | number | Sample, t0: bigint): number {
  if (typeof own === 'number') return own;
  if (typeof own === 'object') return own.ms;
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function runScenario(ctx: BenchContext, s: Scenario, counter: { i: number }): Promise<ScenarioResult> {
  const out: ScenarioResult = { group: s.group, impl: s.impl };
  try {
    await s.setup?.();
    // warm-up (page cache, first-run effects)
    for (let k = 0; k < 3; k++) await s.run(counter.i++);
    const seq: number[] = [];
    const cpu: number[] = [];
    const pairedWall: number[] = [];
    const pairedCpu: number[] = [];
    const paired = s.impl === 'ours';
    const starts = s.starts ?? 1;
    for (let k = 0; k < ctx.iterations; k++) {
      const floor = paired ? await ctx.exec(join(ctx.oursBin, 'host-local'), { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}') : undefined;
      const t0 = process.hrtime.bigint();
      const own = await s.run(counter.i++);
      const ms = sampleMs(own, t0);
      seq.push(ms);
      const c = typeof own === 'object' ? own.cpuMs : undefined;
      if (c !== undefined) cpu.push(c);
      if (floor) {
        pairedWall.push(ms - starts * floor.ms);
        if (c !== undefined && floor.cpuMs !== undefined) pairedCpu.push(c - starts * floor.cpuMs);
      }
    }
    out.sequential = stats(seq);
    if (cpu.length === seq.length) out.cpu = stats(cpu);
    if (pairedWall.length > 0) {
      out.pairedMinusFloor = { wall: stats(pairedWall), ...(pairedCpu.length === pairedWall.length ? { cpu: stats(pairedCpu) } : {}) };
    }
    if (s.parallel !== false) {
      const par: number[] = [];
      const w0 = process.hrtime.bigint();
      for (let r = 0; r < ctx.rounds; r++) {
        await Promise.all(
          Array.from({ length: ctx.parallel }, async () => {
            const i = counter.i++;
            const t0 = process.hrtime.bigint();
            const own = await s.run(i);
            par.push(sampleMs(own, t0));
          }),
        );
      }
      const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
      out.parallel = { ...stats(par), wallMs: Math.round(wallMs), opsPerSec: Math.round((par.length / wallMs) * 1000 * 10) / 10 };
    }
  } catch (e) {
    out.error = e instanceof Error ? e.message : String(e);
  } finally {
    try {
      await s.teardown?.();
    } catch (e) {
      out.error = (out.error ? out.error + '; ' : '') + `teardown: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  return out;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b ? Math.round((a / b) * 100) / 100 : undefined;
}

function markdown(meta: Record<string, unknown>, results: ScenarioResult[], summary: Record<string, unknown>): string {
  const lines: string[] = [];
  lines.push('# CNI invocation benchmark', '');
  lines.push(`Run ${String(meta.date)} on ${String(meta.cpus)} CPUs (load avg ${String(meta.loadavg)}); ${String(meta.iterations)} sequential iterations, ${String(meta.parallel)} in parallel x ${String(meta.rounds)} rounds. Times in ms per operation (process start to exit, as seen by the caller).`, '');
  lines.push('| group | impl | seq median | seq p99 | CPU median | minus paired start (wall / CPU) | par median | par p99 | par ops/s | median vs reference | CPU vs reference |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    const ref = results.find((x) => x.group === r.group && x.impl === 'reference');
    const vs = r.impl === 'reference' ? '1' : String(ratio(r.sequential?.median, ref?.sequential?.median) ?? '');
    const cvs = r.impl === 'reference' ? '1' : String(ratio(r.cpu?.median, ref?.cpu?.median) ?? '');
    const paired = r.pairedMinusFloor ? `${r.pairedMinusFloor.wall.median} / ${r.pairedMinusFloor.cpu?.median ?? '-'}` : '';
    if (r.error) {
      lines.push(`| ${r.group} | ${r.impl} | error: ${r.error.replace(/\|/g, '/').slice(0, 120)} | | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.group} | ${r.impl} | ${r.sequential?.median ?? ''} | ${r.sequential?.p99 ?? ''} | ${r.cpu?.median ?? ''} | ${paired} | ${r.parallel?.median ?? ''} | ${r.parallel?.p99 ?? ''} | ${r.parallel?.opsPerSec ?? ''} | ${vs} | ${cvs} |`,
    );
  }
  lines.push('', '## Target: ours minus the bare start <= the reference whole', '');
  for (const [k, v] of Object.entries(summary)) lines.push(`- ${k}: ${JSON.stringify(v)}`);
  lines.push('');
  return lines.join('\n');
}

async function main(): Promise<void> {
  const oursBin = join(REPO, 'dist/bin');
  if (!existsSync(join(oursBin, 'flatnet'))) {
    const b = spawnSync(process.execPath, [join(REPO, 'deploy/build.mjs'), '--quiet'], { stdio: 'inherit' });
    if (b.status !== 0) throw new Error('build failed');
  }
  const tmp = mkdtempSync(join(tmpdir(), 'flatnet-bench-'));
  const ctx: BenchContext = {
    repo: REPO,
    oursBin,
    refBin: '/usr/lib/cni',
    tmp,
    prefix: runPrefix(),
    iterations: Number(process.env.BENCH_N ?? 40),
    parallel: Number(process.env.BENCH_PARALLEL ?? 20),
    rounds: Number(process.env.BENCH_ROUNDS ?? 3),
    exec,
    sum,
  };
  helper = buildRusageHelper(tmp);
  if (!helper) console.error('[bench:cni] gcc not available: wall times only, no CPU figures');
  const only = process.env.BENCH_ONLY; // substring filter on "group impl"
  // BENCH_MODULES: comma-separated cni-*.ts module names to load (e.g. "cni-bridge"), or "none"
  const modules = process.env.BENCH_MODULES?.split(',').map((x) => x.trim());
  const all: Scenario[] = [...builtins(ctx)];
  const benchDir = import.meta.dirname;
  const moduleFiles = readdirSync(benchDir)
    .filter((x) => /^cni-.+\.ts$/.test(x))
    .filter((x) => !modules || modules.includes(x.replace(/\.ts$/, '')))
    .sort();
  for (const f of moduleFiles) {
    const mod = (await import(pathToFileURL(join(benchDir, f)).href)) as { scenarios?: (c: BenchContext) => Scenario[] | Promise<Scenario[]> };
    if (typeof mod.scenarios !== 'function') {
      console.error(`[bench:cni] ${f} exports no scenarios(ctx); skipped`);
      continue;
    }
    all.push(...(await mod.scenarios(ctx)));
  }
  const selected = only ? all.filter((s) => `${s.group} ${s.impl}`.includes(only)) : all;
  const results: ScenarioResult[] = [];
  const counter = { i: 0 };
  // on SIGINT/SIGTERM, tear the running scenario down (its daemons, netns) before leaving
  let current: Scenario | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n[bench:cni] ${sig}: tearing down ${current ? `${current.group} / ${current.impl}` : 'nothing'}\n`);
    void Promise.resolve(current?.teardown?.())
      .catch(() => {})
      .finally(() => {
        rmSync(tmp, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const s of selected) {
      current = s;
      process.stderr.write(`[bench:cni] ${s.group} / ${s.impl} ... `);
      const r = await runScenario(ctx, s, counter);
      current = undefined;
      process.stderr.write(r.error ? `ERROR ${r.error}\n` : `seq median ${r.sequential?.median} ms, par median ${r.parallel?.median ?? '-'} ms\n`);
      results.push(r);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const find = (g: string, i: string): ScenarioResult | undefined => results.find((r) => r.group === g && r.impl === i);
  const floor = find('start (VERSION)', 'floor');
  const summary: Record<string, unknown> = {};
  const startsOf = new Map(selected.map((x) => [`${x.group}\n${x.impl}`, x.starts ?? 1]));
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  for (const g of [...new Set(results.map((r) => r.group))].filter((x) => x !== 'start (VERSION)')) {
    const o = find(g, 'ours');
    const ref = find(g, 'reference');
    if (!o?.sequential || !ref?.sequential || !floor?.sequential) continue;
    const starts = startsOf.get(`${g}\nours`) ?? 1;
    const net = r2(o.sequential.median - starts * floor.sequential.median);
    const entry: Record<string, unknown> = {
      oursMedian: o.sequential.median,
      floorMedian: floor.sequential.median,
      processStarts: starts,
      oursMinusFloor: net,
      referenceMedian: ref.sequential.median,
      ratioOursToReference: ratio(o.sequential.median, ref.sequential.median),
      targetMet: net <= ref.sequential.median,
    };
    if (o.pairedMinusFloor) {
      Object.assign(entry, {
        pairedOursMinusFloor: o.pairedMinusFloor.wall.median,
        pairedTargetMet: o.pairedMinusFloor.wall.median <= ref.sequential.median,
      });
      if (o.pairedMinusFloor.cpu && ref.cpu) {
        Object.assign(entry, {
          pairedOursCpuMinusFloor: o.pairedMinusFloor.cpu.median,
          pairedCpuTargetMet: o.pairedMinusFloor.cpu.median <= ref.cpu.median,
        });
      }
    }
    if (o.cpu && ref.cpu && floor.cpu) {
      const cpuNet = r2(o.cpu.median - starts * floor.cpu.median);
      Object.assign(entry, {
        oursCpu: o.cpu.median,
        floorCpu: floor.cpu.median,
        oursCpuMinusFloor: cpuNet,
        referenceCpu: ref.cpu.median,
        cpuTargetMet: cpuNet <= ref.cpu.median,
      });
    }
    if (o.parallel && ref.parallel) entry.parallelRatio = ratio(o.parallel.median, ref.parallel.median);
    summary[g] = entry;
  }
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    loadavg: (await import('node:os')).loadavg().map((x) => Math.round(x * 100) / 100),
    iterations: ctx.iterations,
    parallel: ctx.parallel,
    rounds: ctx.rounds,
  };
  const outDir = join(benchDir, 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'cni.json'), JSON.stringify({ meta, results, summary }, null, 2) + '\n');
  writeFileSync(join(outDir, 'cni.md'), markdown(meta, results, summary));
  process.stdout.write(markdown(meta, results, summary));
  if (results.some((r) => r.error)) process.exitCode = 1;
}

if (import.meta.main) {
  await main();
}
