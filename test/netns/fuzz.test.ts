// Fuzzed plugin input, fixed-seed slice: fast-check cases (stdin config, CNI_* variables, prevResult, runtimeConfig)
// for every plugin and verb, exec'd through the built binaries in throw-away namespaces. Each must end in a valid
// result or one spec error JSON, in time, and leave nothing behind when it fails (test/helpers/fuzz-cni.ts).
// A failure is shrunk by fast-check and printed; the long run (10,000 per plugin) is `npm run test:faults`.
// The corpus replays cases that once failed, minimised.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caseArb, FuzzWorld, PLUGINS, type FuzzCase } from '../helpers/fuzz-cni.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { OURS_BIN, REPO } from '../helpers/sbs.ts';

const P = runPrefix();
const SEED = 20_261_205;
const RUNS = Number(process.env['FLATNET_FUZZ_RUNS'] ?? 150);
let world: FuzzWorld;

beforeAll(() => {
  if (!existsSync(join(OURS_BIN, 'flatnet'))) throw new Error('dist/bin is missing: run npm run build');
  world = new FuzzWorld(P);
});
afterAll(() => {
  world?.teardown();
  removeNetnsWithPrefix(P);
});

describe('fuzzed input, fixed seed', () => {
  it.each(PLUGINS)(
    '%s: every case ends in a valid result or one spec error, in time, leaving nothing behind',
    async (plugin) => {
      await fc.assert(
        fc.asyncProperty(caseArb(plugin), async (c) => {
          const v = await world.run(c);
          if (!v.ok) throw new Error(`${v.kind}: ${v.detail}`);
        }),
        { seed: SEED, numRuns: RUNS, endOnFailure: false },
      );
    },
    600_000,
  );
});

interface CorpusEntry {
  why: string;
  expect: { code?: number };
  case: FuzzCase;
}

const corpus = JSON.parse(readFileSync(join(REPO, 'test/netns/fuzz-corpus.json'), 'utf8')) as CorpusEntry[];

describe('fuzz corpus: cases that once failed', () => {
  it.each(corpus.map((e) => [e.why, e] as const))('%s', async (_why, e) => {
    const v = await world.run(e.case);
    expect(v, JSON.stringify(v)).toMatchObject({ ok: true });
    if (e.expect.code !== undefined) expect(v).toMatchObject({ outcome: 'error', code: e.expect.code });
  });
});
