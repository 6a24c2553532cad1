import { describe, expect, it } from 'vitest';
import { NftTransaction, quoteString, checkName, parseNftJson, Nft } from '../../../../lib/nft/index.ts';
import type { RunOptions, RunResult, Runner } from '../../../../lib/exec/runner.ts';

describe('NftTransaction', () => {
  it('renders tables, base chains, rules with comments and sets', () => {
    const tx = new NftTransaction()
      .addTable('inet', 't1', 'my table')
      .addChain('inet', 't1', 'pre', { type: 'nat', hook: 'prerouting', priority: 'dstnat', policy: 'accept' })
      .addChain('inet', 't1', 'post', { type: 'nat', hook: 'postrouting', priority: 100 })
      .addChain('inet', 't1', 'plain')
      .flushChain('inet', 't1', 'pre')
      .addRule('inet', 't1', 'pre', 'fib daddr type local jump plain')
      .insertRule('inet', 't1', 'plain', 'tcp dport 80 dnat ip to 10.0.0.2:8080', 'owner abc')
      .deleteRule('inet', 't1', 'plain', 7)
      .addSet('ip', 't2', 's', { type: 'ipv4_addr . inet_service', flags: ['interval'], comment: 'c' })
      .addSet('ip', 't2', 'm', { type: 'ipv4_addr', map: 'verdict' })
      .deleteTable('ip6', 'old');
    expect(tx.render().split('\n')).toEqual([
      'add table inet t1 { comment "my table" ; }',
      'add chain inet t1 pre { type nat hook prerouting priority dstnat ; policy accept ; }',
      'add chain inet t1 post { type nat hook postrouting priority 100 ; }',
      'add chain inet t1 plain',
      'flush chain inet t1 pre',
      'add rule inet t1 pre fib daddr type local jump plain',
      'insert rule inet t1 plain tcp dport 80 dnat ip to 10.0.0.2:8080 comment "owner abc"',
      'delete rule inet t1 plain handle 7',
      'add set ip t2 s { type ipv4_addr . inet_service ; flags interval ; comment "c" ; }',
      'add map ip t2 m { type ipv4_addr : verdict ; }',
      'delete table ip6 old',
      '',
    ]);
  });

  it('chunks element lists (default 1000 per command)', () => {
    const els = Array.from({ length: 2500 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
    const lines = new NftTransaction().addElements('ip', 't', 's', els).render().trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.map((l) => l.split(',').length)).toEqual([1000, 1000, 500]);
    expect(lines[0]!.startsWith('add element ip t s { 10.0.0.0, 10.0.0.1,')).toBe(true);
    const small = new NftTransaction({ elementChunk: 2 }).deleteElements('ip', 't', 's', ['a', 'b', 'c']).render();
    expect(small).toBe('delete element ip t s { a, b }\ndelete element ip t s { c }\n');
  });

  it.each([
    ['name with space', () => new NftTransaction().addTable('ip', 'a b')],
    ['name starting with a digit', () => new NftTransaction().addChain('ip', 't', '1x')],
    ['rule with newline (injection)', () => new NftTransaction().addRule('ip', 't', 'c', 'accept\nflush ruleset')],
    ['rule with ;', () => new NftTransaction().addRule('ip', 't', 'c', 'accept; flush ruleset')],
    ['comment with quote', () => new NftTransaction().addRule('ip', 't', 'c', 'accept', 'a"b')],
    ['comment over 128 bytes', () => new NftTransaction().addRule('ip', 't', 'c', 'accept', 'x'.repeat(129))],
    ['bad handle', () => new NftTransaction().deleteRule('ip', 't', 'c', 0)],
    ['bad priority', () => new NftTransaction().addChain('ip', 't', 'c', { type: 'nat', hook: 'output', priority: '1; x' })],
    ['bad family', () => new NftTransaction().addTable('ipx' as 'ip', 't')],
  ])('rejects %s', (_n, f) => {
    expect(f).toThrow();
  });

  it('quotes and validates', () => {
    expect(quoteString('a b/c')).toBe('"a b/c"');
    expect(checkName('cni_hostport')).toBe('cni_hostport');
    expect(new NftTransaction().isEmpty()).toBe(true);
  });
});

describe('parseNftJson', () => {
  it('extracts chains, rules (handle, comment, expr) and sets', () => {
    const l = parseNftJson(
      JSON.stringify({
        nftables: [
          { metainfo: { version: '1.0.6' } },
          { table: { family: 'inet', name: 't', handle: 1 } },
          { chain: { family: 'inet', table: 't', name: 'pre', handle: 1, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } },
          { rule: { family: 'inet', table: 't', chain: 'pre', handle: 4, comment: 'x y', expr: [{ accept: null }] } },
          { rule: { family: 'inet', table: 't', chain: 'pre', handle: 5 } },
          { set: { family: 'inet', name: 's', table: 't', type: 'ipv4_addr', handle: 9 } },
        ],
      }),
    );
    expect(l.chains.map((c) => [c.name, c.hook, c.prio])).toEqual([['pre', 'prerouting', -100]]);
    expect(l.rules.map((r) => [r.chain, r.handle, r.comment, r.expr.length])).toEqual([
      ['pre', 4, 'x y', 1],
      ['pre', 5, undefined, 0],
    ]);
    expect(l.sets.map((s) => s.name)).toEqual(['s']);
  });
});

describe('Nft through a Runner', () => {
  it('applies with nft -f - in the netns, and reports a missing table as undefined', async () => {
    const calls: { argv: readonly string[]; opts: RunOptions }[] = [];
    const runner: Runner = {
      async run(argv, opts = {}): Promise<RunResult> {
        calls.push({ argv, opts });
        if (argv.includes('list')) return { code: 1, stdout: '', stderr: 'Error: No such file or directory\n' };
        return { code: 0, stdout: '', stderr: '' };
      },
    };
    const nft = new Nft({ runner, netns: '/n' });
    await nft.apply(new NftTransaction());
    expect(calls).toHaveLength(0);
    await nft.apply(new NftTransaction().addTable('ip', 't'));
    expect(calls[0]).toEqual({ argv: ['nft', '-f', '-'], opts: { input: 'add table ip t\n', netns: '/n' } });
    expect(await nft.listTable('ip', 't')).toBeUndefined();
  });
});
