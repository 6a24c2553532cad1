// npm run test:faults: the long fault runs, with their results kept in test/bench/results/faults.{json,md}.
// A script rather than a vitest file: the runs take tens of minutes, report counts rather than pass/fail per case,
// and update one section of the results at a time (a section not run keeps its last results).
//
//   fuzz    10,000 fast-check cases per plugin (test/helpers/fuzz-cni.ts) through the built binaries in throw-away
//           namespaces, spread over --workers worlds; every failure is kept with its case.
//   daemon  the daemon's faults (test/bench/faults-daemon.ts): kill -9 during a full sync, failing
//           iptables-restore / nft.
//   cluster the control-plane faults of test/e2e/faults.test.ts on the local cluster: apiserver unreachable 60 s,
//           etcd restart.
//
// Options: --sections fuzz,daemon,cluster  --cases N (per plugin, default 10000)  --plugins a,b  --seed S  --workers W
//          --bin DIR (default dist/bin)  --kills N (daemon kill -9 count, default 50)  --services N (default 10000)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { caseArb, FuzzWorld, newTally, PLUGINS, record, type FuzzTally, type PluginName } from '../helpers/fuzz-cni.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { OURS_BIN, REPO } from '../helpers/sbs.ts';
import { opt } from './util.ts';

const RESULTS = join(REPO, 'test/bench/results');
const JSON_FILE = join(RESULTS, 'faults.json');
const MD_FILE = join(RESULTS, 'faults.md');

export interface FaultRow {
  fault: string;
  injected: number;
  outcome: string;
  lost: string;
  /** true when nothing was lost */
  clean: boolean;
}

export interface Results {
  fuzz?: { when: string; commit: string; seed: number; perPlugin: number; workers: number; tallies: Record<string, Omit<FuzzTally, 'failures'> & { failures: { kind: string; detail: string }[] }> };
  daemon?: { when: string; commit: string; rows: FaultRow[]; notes: string[] };
  cluster?: { when: string; commit: string; rows: FaultRow[]; notes: string[] };
}

function load(): Results {
  return existsSync(JSON_FILE) ? (JSON.parse(readFileSync(JSON_FILE, 'utf8')) as Results) : {};
}

function commit(): string {
  try {
    return execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function fuzz(plugins: PluginName[], perPlugin: number, seed: number, workers: number, bin: string): Promise<NonNullable<Results['fuzz']>> {
  const tallies: NonNullable<Results['fuzz']>['tallies'] = {};
  for (const plugin of plugins) {
    const cases = fc.sample(caseArb(plugin), { seed, numRuns: perPlugin });
    const tally = newTally();
    const t0 = Date.now();
    let done = 0;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        const prefix = runPrefix();
        const world = new FuzzWorld(prefix, { bin });
        try {
          for (let i = w; i < cases.length; i += workers) {
            const c = cases[i]!;
            const v = await world.run(c);
            record(tally, c, v);
            if (!v.ok) console.log(`[faults] ${plugin} case ${i}: ${v.kind}: ${v.detail.slice(0, 300)}\n  ${JSON.stringify(c)}`);
            if (++done % 500 === 0) console.log(`[faults] ${plugin}: ${done}/${cases.length} (${Math.round((Date.now() - t0) / 1000)} s)`);
          }
        } finally {
          world.teardown();
          removeNetnsWithPrefix(prefix);
        }
      }),
    );
    tally.ms = Date.now() - t0;
    console.log(`[faults] ${plugin}: ${tally.cases} cases, ${tally.failures.length} failures, ${Math.round(tally.ms / 1000)} s`);
    tallies[plugin] = { ...tally, failures: tally.failures.slice(0, 20).map((f) => ({ kind: f.kind, detail: `${f.detail.slice(0, 300)} | case ${JSON.stringify(f.case)}` })) };
    // each plugin's tally is kept as soon as it is complete
    saveSection('fuzz', { when: new Date().toISOString(), commit: commit(), seed, perPlugin, workers, tallies: { ...(load().fuzz?.tallies ?? {}), ...tallies } });
  }
  return { when: new Date().toISOString(), commit: commit(), seed, perPlugin, workers, tallies };
}

function renderMd(r: Results): string {
  const out: string[] = ['# Fault runs (`npm run test:faults`)', ''];
  out.push('Written by test/bench/faults.ts from faults.json; each section lists the commit and time of its run.', '');
  if (r.fuzz) {
    const f = r.fuzz;
    out.push(`## Fuzzed plugin input`, '');
    out.push(
      `${f.perPlugin.toLocaleString('en-US')} fast-check cases per plugin (seed ${f.seed}, ${f.workers} worlds in parallel; commit ${f.commit}, ${f.when}). ` +
        'Each case is one exec of the built binary with a generated stdin config, CNI_* environment, prevResult and runtimeConfig, ' +
        'in a throw-away host netns with a container netns and a private data dir. A case passes when it ends in a result valid ' +
        'for its cniVersion (ADD, then a DEL with that result must leave no interface, address or allocation), a VERSION reply, ' +
        'an empty success, or exactly one error JSON with a spec code or 100+ (999 with a JavaScript exception in it counts as a crash), ' +
        'within 20 s, and when a failed or non-ADD case leaves the host netns (links, addresses, routes, iptables, nftables), ' +
        'the container netns and the data dir as they were. host-local\'s round-robin cursor files (last_reserved_ip.N) do not count: ' +
        'a failed ADD, or an IPAM ADD undone by IPAM DEL, leaves the cursor where it moved, as the reference plugins do.',
      '',
    );
    out.push('| plugin | cases | results (ADD+DEL) | errors | empty successes | VERSION | crashes | non-JSON stdout | schema | hangs | leftovers | wall time |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [p, t] of Object.entries(f.tallies)) {
      const k = (kind: string): number => t.kinds[kind] ?? 0;
      const total = (kind: string): string => String(k(kind));
      out.push(
        `| ${p} | ${t.cases} | ${t.results} | ${t.errors} | ${t.empty} | ${t.versions} | ${total('crash')} | ${total('stdout')} | ${total('schema')} | ${total('hang')} | ${k('leftover') + k('del-failed')} | ${Math.round(t.ms / 1000)} s |`,
      );
    }
    out.push('');
    out.push('Error codes seen (code: count):', '');
    for (const [p, t] of Object.entries(f.tallies)) {
      out.push(`- ${p}: ${Object.entries(t.codes).sort((a, b) => Number(a[0]) - Number(b[0])).map(([c, n]) => `${c}: ${n}`).join(', ')}`);
    }
    const fails = Object.entries(f.tallies).flatMap(([p, t]) => t.failures.map((x) => `- ${p}: ${x.kind}: ${x.detail}`));
    out.push('', fails.length ? 'Failures (first 20 per plugin):' : 'Failures: none.', '', ...fails, '');
  }
  for (const [title, d] of [['Daemon faults', r.daemon], ['Control-plane faults on the local cluster', r.cluster]] as const) {
    if (!d) continue;
    out.push(`## ${title}`, '', `Commit ${d.commit}, ${d.when}.`, '');
    out.push('| fault | injected | outcome | lost |', '|---|---:|---|---|');
    for (const row of d.rows) out.push(`| ${row.fault} | ${row.injected} | ${row.outcome} | ${row.lost} |`);
    out.push('', ...d.notes.map((n) => `- ${n}`), '');
  }
  return out.join('\n');
}

export function saveSection<K extends keyof Results>(key: K, value: Results[K]): void {
  const r = load();
  r[key] = value;
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(JSON_FILE, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(MD_FILE, renderMd(r));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const sections = opt('sections', 'fuzz,daemon,cluster', args).split(',');
  if (sections.includes('fuzz')) {
    const plugins = opt('plugins', PLUGINS.join(','), args).split(',') as PluginName[];
    const perPlugin = Number(opt('cases', '10000', args));
    const seed = Number(opt('seed', '20261205', args));
    const workers = Number(opt('workers', String(Math.max(1, Math.min(2, cpus().length))), args));
    const bin = opt('bin', OURS_BIN, args);
    const res = await fuzz(plugins, perPlugin, seed, workers, bin);
    // plugins not run this time keep their tallies from a run with the same seed and size (read now: runs may overlap)
    const prev = load().fuzz;
    if (prev && prev.perPlugin === perPlugin && prev.seed === seed) res.tallies = { ...prev.tallies, ...res.tallies };
    saveSection('fuzz', res);
  }
  if (sections.includes('daemon')) {
    const { runDaemonFaults } = await import('./faults-daemon.ts');
    const res = await runDaemonFaults(args);
    // rows of modes not run this time are kept
    const modes = opt('modes', 'nftables,iptables', args).split(',');
    const kept = (load().daemon?.rows ?? []).filter((r) => !modes.some((m) => r.fault.includes(`(${m}`)));
    saveSection('daemon', { ...res, rows: [...kept, ...res.rows] });
  }
  if (sections.includes('cluster')) {
    // the e2e scenarios (test/e2e/faults.test.ts) report their counts into a file
    const out = join(RESULTS, '.faults-cluster.jsonl');
    rmSync(out, { force: true });
    const r = spawnSync('npx', ['vitest', 'run', 'test/e2e/faults.test.ts'], { cwd: REPO, stdio: 'inherit', env: { ...process.env, FLATNET_FAULTS_OUT: out } });
    const rows = existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as FaultRow) : [];
    rmSync(out, { force: true });
    saveSection('cluster', {
      when: new Date().toISOString(),
      commit: commit(),
      rows,
      notes: [`test/e2e/faults.test.ts on a 3-node local cluster (real etcd, apiserver, flatnet daemon per node); vitest exit ${r.status}.`],
    });
  }
  // sections written by other (older) runs render with this version too
  if (existsSync(JSON_FILE)) writeFileSync(MD_FILE, renderMd(load()));
  console.log(`[faults] results in ${MD_FILE}`);
}

if (import.meta.main) await main();
