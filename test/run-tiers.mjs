#!/usr/bin/env node
// Runs the test tiers in order (unit, netns, harness, e2e, kind by default), each as one vitest run of its project
// (vitest.config.ts), and prints one closing line
// "flatnet tests: N passed, N failed, N skipped". Exits non-zero if any tier failed.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const tiers = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'netns', 'harness', 'e2e', 'kind'];
const outDir = join(process.cwd(), 'test-results');
mkdirSync(outDir, { recursive: true });

let passed = 0;
let failed = 0;
let skipped = 0;
const broken = [];
for (const tier of tiers) {
  const json = join(outDir, `${tier}.json`);
  rmSync(json, { force: true });
  const serial = tier === 'unit' ? [] : ['--no-file-parallelism'];
  const started = Date.now();
  console.log(`\n=== tier ${tier} ===`);
  const res = spawnSync(
    process.execPath,
    [
      join('node_modules', 'vitest', 'vitest.mjs'),
      'run',
      '--project',
      tier,
      ...serial,
      '--passWithNoTests',
      '--reporter=default',
      '--reporter=json',
      `--outputFile.json=${json}`,
    ],
    { stdio: 'inherit', env: { ...process.env, FLATNET_TEST_TIER: tier } },
  );
  let counts = { p: 0, f: 0, s: 0 };
  if (existsSync(json)) {
    const r = JSON.parse(readFileSync(json, 'utf8'));
    counts = { p: r.numPassedTests ?? 0, f: r.numFailedTests ?? 0, s: (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0) };
    // a suite that failed to load (e.g. a syntax error or a failing beforeAll) counts as one failure
    const suiteFailures = (r.testResults ?? []).filter((t) => t.status === 'failed' && (t.assertionResults ?? []).every((a) => a.status !== 'failed')).length;
    counts.f += suiteFailures;
  }
  if (res.status !== 0 && counts.f === 0) counts.f = 1;
  passed += counts.p;
  failed += counts.f;
  skipped += counts.s;
  if (res.status !== 0) broken.push(tier);
  console.log(`=== tier ${tier}: ${counts.p} passed, ${counts.f} failed, ${counts.s} skipped in ${((Date.now() - started) / 1000).toFixed(0)} s ===`);
}
console.log(`\nflatnet tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(broken.length ? 1 : 0);
