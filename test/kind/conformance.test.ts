// Upstream conformance in the kind tier: `npm run kind:conformance -- --mode nftables` (Kubernetes' own e2e.test,
// focus `\[sig-network\].*\[Conformance\]`) on a kind cluster of this run's own name, judged by the JUnit XML it writes.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KindCluster, ROOT, run } from './cluster.ts';

const cluster = new KindCluster('kind-config.yaml', 'conf');
const LABEL = `${cluster.name}-nftables`;
const junit = join(ROOT, 'test-results', `conformance-${LABEL}`, 'junit.xml');

describe('kind: upstream sig-network conformance with flatnet (nftables mode)', () => {
  beforeAll(() => cluster.up(), 1_200_000);
  afterAll(() => cluster.down(), 600_000);

  it('every [sig-network] [Conformance] spec of e2e.test v1.35.4 passes', () => {
    let status = 0;
    try {
      run('npm', ['run', '-s', 'kind:conformance', '--', '--config', cluster.config, '--mode', 'nftables', '--label', LABEL, '--no-summary'],
        { cwd: ROOT, stdio: 'inherit' });
    } catch (e) {
      status = (e as { status?: number }).status ?? 1;
    }
    expect(existsSync(junit), junit).toBe(true);
    const xml = readFileSync(junit, 'utf8');
    // ginkgo's JUnit report: one <testcase name=... status=...> per spec (and per suite node); skipped specs included
    const cases = [...xml.matchAll(/<testcase\s+name="([^"]*)"[^>]*\sstatus="([^"]*)"/g)].map(([, name, st]) => ({ name: name!, status: st! }));
    const specs = cases.filter((c) => /\[sig-network\].*\[Conformance\]/.test(c.name) && c.status !== 'skipped');
    expect(cases.filter((c) => c.status !== 'passed' && c.status !== 'skipped').map((c) => `${c.status}: ${c.name}`)).toEqual([]);
    expect(specs.length).toBe(47);
    expect(specs.every((c) => c.status === 'passed')).toBe(true);
    expect(status).toBe(0);
  });
});
