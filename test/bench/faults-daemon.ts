// Daemon faults for npm run test:faults (see faults.ts), on the real kernel in throw-away netns, per proxy mode:
//   kill -9 during a full sync: a process doing a daemon start's full sync of --services Services is killed (its whole
//     process group, nft/iptables-restore children included) at a random point; a new one (the restarted daemon)
//     syncs; its ruleset must equal a clean start's (canonical dump, diff empty).
//   injected nft / iptables-restore failure: a wrapper on PATH fails the Nth call of the restore binary while the
//     daemon (ProxyDaemon, real backend) applies a partial sync; the failure metrics must count it, the next sync must
//     be full, and the ruleset must again equal a clean start's.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ProxyDaemon } from '../../proxy/daemon.ts';
import { planServices } from '../../proxy/services/model/plan.ts';
import { createNetns, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { FakeSource, proxyConfig, sliceObject, svcObject } from '../helpers/proxy-fixtures.ts';
import { REPO } from '../helpers/sbs.ts';
import { sleep, waitFor } from '../helpers/wait.ts';
import type { FaultRow } from './faults.ts';
import { faultBackend, FAULT_NODE } from './faults-sync-child.ts';
import { opt } from './util.ts';

const CHILD = join(REPO, 'test/bench/faults-sync-child.ts');
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** The proxy's kernel state in `ns` as sorted canonical lines (handles, counters and element order left out). */
export function dumpRules(ns: TestNetns, mode: string): string[] {
  const run = (argv: string[]): string => execFileSync('ip', ['netns', 'exec', ns.name, ...argv], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (mode === 'iptables') {
    return run(['iptables-nft-save'])
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
      .map((l, i) => (l.startsWith(':') || l.startsWith('*') || l === 'COMMIT' ? l : `${String(i).padStart(7, '0')} ${l}`));
  }
  const doc = (JSON.parse(run(['nft', '-j', 'list', 'ruleset'])) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
  const lines: string[] = [];
  const seq = new Map<string, number>();
  for (const o of doc) {
    const kind = Object.keys(o)[0]!;
    if (kind === 'metainfo') continue;
    const v = { ...o[kind]! };
    delete v['handle'];
    if (kind === 'rule') {
      const k = `${String(v['family'])} ${String(v['table'])} ${String(v['chain'])}`;
      const i = seq.get(k) ?? 0;
      seq.set(k, i + 1);
      lines.push(`rule ${k} #${i} ${JSON.stringify(v['expr']).replace(/"counter":\{"packets":\d+,"bytes":\d+\}/g, '"counter":{}')} ${String(v['comment'] ?? '')}`);
    } else {
      if (Array.isArray(v['elem'])) v['elem'] = (v['elem'] as unknown[]).map((e) => JSON.stringify(e)).sort();
      lines.push(`${kind} ${JSON.stringify(v)}`);
    }
  }
  return lines.sort();
}

function diffCount(a: string[], b: string[]): number {
  const sa = new Set(a);
  const sb = new Set(b);
  return a.filter((l) => !sb.has(l)).length + b.filter((l) => !sa.has(l)).length;
}

/** Runs the sync child in `ns`; resolves with its output. `killAfterMs`: SIGKILL its process group then. */
function runChild(ns: TestNetns, mode: string, services: number, killAfterMs?: number): Promise<{ synced: boolean; ms?: number }> {
  return new Promise((res, rej) => {
    const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, CHILD, '--mode', mode, '--services', String(services)], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer =
      killAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            try {
              process.kill(-child.pid!, 'SIGKILL');
            } catch {
              /* already gone */
            }
          }, killAfterMs);
    child.on('error', rej);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const m = /synced (\d+)/.exec(out);
      if (killAfterMs === undefined && code !== 0) return rej(new Error(`sync child failed (${code ?? signal}): ${err.slice(-500)}`));
      res({ synced: !!m, ms: m ? Number(m[1]) : undefined });
    });
  });
}

export async function killDuringFullSync(prefix: string, mode: string, kills: number, services: number, seed: number): Promise<FaultRow> {
  const clean = createNetns(`${prefix}k0`);
  let cleanDump: string[];
  let fullMs: number;
  try {
    fullMs = (await runChild(clean, mode, services)).ms!;
    cleanDump = dumpRules(clean, mode);
  } finally {
    clean.remove();
  }
  // kill points spread over the whole sync, start-up included
  const points = fc.sample(fc.double({ min: 0.02, max: 1, noNaN: true }), { seed, numRuns: kills });
  let converged = 0;
  let midSync = 0;
  const diffs: number[] = [];
  for (let i = 0; i < kills; i++) {
    const ns = createNetns(`${prefix}k${i + 1}`);
    try {
      const first = await runChild(ns, mode, services, Math.round(points[i]! * (fullMs + 1500)));
      if (!first.synced) midSync++;
      await runChild(ns, mode, services);
      const d = diffCount(dumpRules(ns, mode), cleanDump);
      if (d === 0) converged++;
      else diffs.push(d);
    } finally {
      ns.remove();
    }
    console.log(`[faults] ${mode} kill ${i + 1}/${kills}: ${converged} converged so far`);
  }
  return {
    fault: `kill -9 during a ${services.toLocaleString('en-US')}-Service full sync (${mode}; clean full sync ${(fullMs / 1000).toFixed(1)} s)`,
    injected: kills,
    outcome: `${midSync} kills landed before the sync finished; ${converged}/${kills} restarts converged to the clean-start ruleset (diff empty)`,
    lost: converged === kills ? 'nothing' : `${kills - converged} restarts differed (${diffs.join(', ')} lines)`,
    clean: converged === kills,
  };
}

/** A directory with a wrapper for `bin` that fails call number N (N from a file), passing every other call on. */
function failingWrapper(bin: string): { dir: string; failNext(): void; calls(): number } {
  const dir = mkdtempSync(join(tmpdir(), 'flatnet-faults-wrap-'));
  const real = execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim();
  const count = join(dir, 'count');
  const failAt = join(dir, 'fail-at');
  writeFileSync(count, '0');
  writeFileSync(failAt, '0');
  writeFileSync(
    join(dir, bin),
    `#!/bin/sh\nn=$(($(cat ${count}) + 1)); echo $n > ${count}\nif [ "$n" = "$(cat ${failAt})" ]; then cat >/dev/null; echo "injected failure of call $n" >&2; exit 1; fi\nexec ${real} "$@"\n`,
  );
  chmodSync(join(dir, bin), 0o755);
  const calls = (): number => Number(readFileSync(count, 'utf8').trim());
  return { dir, calls, failNext: () => writeFileSync(failAt, String(calls() + 1)) };
}

export async function injectedFailures(prefix: string, mode: string, injections: number, services: number): Promise<FaultRow> {
  const bin = mode === 'nftables' ? 'nft' : 'iptables-nft-restore';
  const wrap = failingWrapper(bin);
  const savedPath = process.env['PATH'];
  process.env['PATH'] = `${wrap.dir}:${savedPath ?? ''}`;
  const ns = createNetns(`${prefix}i`);
  const source = new FakeSource();
  const d = new ProxyDaemon({ nodeName: 'n1', config: proxyConfig(), backends: new Map([[4, faultBackend(mode, ns.path)]]), source, log: quiet, minSyncPeriodMs: 0, syncPeriodMs: 30_000, fallbackNodeIPs: FAULT_NODE.ips });
  const svcs: [string, string][] = [];
  const add = (i: number): void => {
    const name = `s${i}`;
    const ip = `10.96.${(i >> 8) & 255}.${i & 255}`;
    svcs.push([name, ip]);
    source.h!.service(svcObject(name, ip), false);
    source.h!.slice(sliceObject(name, [`10.244.2.${(i % 250) + 1}`, `10.244.3.${(i % 250) + 1}`]), false);
  };
  let converged = 0;
  let fullAfter = 0;
  try {
    const started = d.start();
    for (let i = 0; i < services; i++) add(i);
    source.release!();
    await started;
    for (let k = 0; k < injections; k++) {
      const partialBefore = d.metrics.partialRestoreFailures.get();
      const syncsBefore = d.syncCount;
      const lastFullBefore = d.metrics.syncFullDuration.total;
      wrap.failNext();
      add(services + k);
      await waitFor('the injected failure to be counted', () => d.metrics.partialRestoreFailures.get() === partialBefore + 1, 30_000, 20);
      await waitFor('the retry to succeed', () => d.syncCount > syncsBefore, 30_000, 50);
      if (d.metrics.syncFullDuration.total > lastFullBefore) fullAfter++;
      // what a clean start with the same objects programs
      const fresh = createNetns(`${prefix}f${k}`);
      try {
        const plans = planServices(d.tracker.servicePorts(), d.tracker.endpoints(), FAULT_NODE, 4);
        await faultBackend(mode, fresh.path).sync({ full: true, changed: new Set(), plans, node: FAULT_NODE, config: proxyConfig(), family: 4 });
        if (diffCount(dumpRules(ns, mode), dumpRules(fresh, mode)) === 0) converged++;
      } finally {
        fresh.remove();
      }
      await sleep(10);
    }
    const counted = d.metrics.partialRestoreFailures.get();
    await d.stop();
    return {
      fault: `${bin} fails (wrapper, the next call) during a partial sync, ${services} Services (${mode})`,
      injected: injections,
      outcome: `partial-restore failure metric counted ${counted}; the retry was a full sync ${fullAfter}/${injections} times; ruleset equal to a clean start's ${converged}/${injections}`,
      lost: converged === injections && counted === injections ? 'nothing' : `${injections - converged} rulesets differed`,
      clean: converged === injections && counted === injections && fullAfter === injections,
    };
  } finally {
    process.env['PATH'] = savedPath;
    ns.remove();
    rmSync(wrap.dir, { recursive: true, force: true });
  }
}

export async function runDaemonFaults(args: string[]): Promise<{ when: string; commit: string; rows: FaultRow[]; notes: string[] }> {
  const modes = opt('modes', 'nftables,iptables', args).split(',');
  const kills = Number(opt('kills', '50', args));
  const services = Number(opt('services', '10000', args));
  const injections = Number(opt('injections', '20', args));
  const seed = Number(opt('seed', '20261205', args));
  const prefix = runPrefix();
  const rows: FaultRow[] = [];
  try {
    for (const mode of modes) {
      rows.push(await injectedFailures(prefix, mode, injections, 200));
      rows.push(await killDuringFullSync(prefix, mode, kills, services, seed));
    }
  } finally {
    removeNetnsWithPrefix(prefix);
  }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    /* not a checkout */
  }
  return {
    when: new Date().toISOString(),
    commit,
    rows,
    notes: [
      'Real kernel, throw-away netns per attempt; the proxy backends and ProxyDaemon are the daemon\'s own code; the API side is an in-memory source.',
      'A kill -9 takes the whole process group (the restore/nft child too), as a container kill would.',
    ],
  };
}
