// The nftables proxier's sync decisions (full vs incremental, recovery after a failure, affinity pruning), with a
// recording fake Runner.
import { describe, expect, it } from 'vitest';
import type { RunOptions, RunResult, Runner } from '../../../../lib/exec/runner.ts';
import { CommandError } from '../../../../lib/exec/runner.ts';
import { NftablesProxier, parseAffinityJson } from '../../../../proxy/services/backends/nftables/proxier.ts';
import { config, ep, plan, svc, syncInput } from '../../../helpers/proxy-plans.ts';

class FakeRunner implements Runner {
  calls: { argv: string[]; input?: string }[] = [];
  failNext = false;
  listing = '{"nftables": []}';
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push({ argv: [...argv], input: opts.input });
    if (argv.includes('-f') && this.failNext) {
      this.failNext = false;
      if (opts.allowFail) return { code: 1, stdout: '', stderr: 'boom' };
      throw new CommandError([...argv], 1, 'boom');
    }
    if (argv.includes('list')) return { code: 0, stdout: this.listing, stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  }
  programs(): string[] {
    return this.calls.filter((c) => c.argv.includes('-f')).map((c) => c.input ?? '');
  }
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };
const a = svc('a', { affinityTimeoutSeconds: 60 });
const b = svc('b', { clusterIP: '10.96.0.11' });

function mk(): { r: FakeRunner; p: NftablesProxier } {
  const r = new FakeRunner();
  return { r, p: new NftablesProxier({ family: 4, runner: r, log: silent, table: 't' }) };
}

describe('NftablesProxier', () => {
  it('first sync is a full rebuild even when asked for an incremental one; then incremental', async () => {
    const { r, p } = mk();
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')])], { full: false, changed: new Set([a.key]) }));
    expect(p.lastStats?.full).toBe(true);
    expect(r.programs()[0]).toMatch(/^add table ip t\ndelete table ip t\nadd table ip t\n/);
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')]), plan(b, [ep('10.244.1.3')])], { full: false, changed: new Set([b.key]) }));
    expect(p.lastStats?.full).toBe(false);
    expect(r.programs()[1]).not.toMatch(/add table|flush/);
    expect(r.programs()[1]).toContain('10.96.0.11');
    // nothing was listed on the sync path
    expect(r.calls.some((c) => c.argv.includes('list'))).toBe(false);
  });

  it('a failed sync throws and forces the next one to rebuild the table', async () => {
    const { r, p } = mk();
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')])]));
    r.failNext = true;
    await expect(p.sync(syncInput([plan(a, [ep('10.244.1.2')]), plan(b, [])], { full: false, changed: new Set([b.key]) }))).rejects.toThrow(/boom/);
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')]), plan(b, [])], { full: false, changed: new Set([b.key]) }));
    expect(p.lastStats?.full).toBe(true);
    expect(r.programs().at(-1)).toContain('delete table ip t');
  });

  it('a config change forces a full sync', async () => {
    const { r, p } = mk();
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')])]));
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')])], { full: false, changed: new Set(), config: { ...config, masqueradeAll: true } }));
    expect(p.lastStats?.full).toBe(true);
    expect(r.programs().at(-1)).not.toContain('delete table');
  });

  it('prunes affinity entries of an endpoint that went away (listing only the affinity map)', async () => {
    const { r, p } = mk();
    await p.sync(syncInput([plan(a, [ep('10.244.1.2'), ep('10.244.1.3')])]));
    r.listing = JSON.stringify({
      nftables: [
        { metainfo: {} },
        {
          map: {
            name: 'affinity',
            elem: [
              [{ elem: { val: { concat: ['10.244.9.9', '10.96.0.10', 'tcp', 80] }, timeout: 60, expires: 50 } }, { concat: ['10.244.1.3', 8080] }],
              [{ concat: ['10.244.9.8', '10.96.0.10', 6, 80] }, { concat: ['10.244.1.2', 8080] }],
            ],
          },
        },
      ],
    });
    await p.sync(syncInput([plan(a, [ep('10.244.1.2')])], { full: false, changed: new Set([a.key]) }));
    expect(r.calls.filter((c) => c.argv.includes('list')).map((c) => c.argv.slice(-4))).toEqual([['map', 'ip', 't', 'affinity']]);
    expect(r.programs().at(-1)).toBe('delete element ip t affinity { 10.244.9.9 . 10.96.0.10 . tcp . 80 }\n');
    expect(p.lastStats?.affinityPruned).toBe(1);
  });

  it('parseAffinityJson reads both element shapes and numeric protocols', () => {
    const e = parseAffinityJson(
      '{"nftables": [{"map": {"elem": [[{"elem": {"val": {"concat": ["1.2.3.4", "10.96.0.10", "tcp", 80]}, "timeout": 60}}, {"concat": ["10.244.1.2", 8080]}], [{"concat": ["1.2.3.5", "10.96.0.10", 17, 53]}, {"concat": ["10.244.1.2", 53]}]]}}]}',
    );
    expect(e).toEqual([
      { client: '1.2.3.4', vip: '10.96.0.10', proto: 'tcp', port: 80, endpoint: '10.244.1.2', endpointPort: 8080 },
      { client: '1.2.3.5', vip: '10.96.0.10', proto: 'udp', port: 53, endpoint: '10.244.1.2', endpointPort: 53 },
    ]);
  });

  it('cleanup deletes the table', async () => {
    const { r, p } = mk();
    await p.cleanup();
    expect(r.programs()).toEqual(['add table ip t\ndelete table ip t\n']);
  });
});
