// loopback (ours, dist/bin) in real namespaces: ADD brings lo up, CHECK sees it, DEL takes it down, missing netns is fine.
import { execFileSync } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runPrefix } from '../helpers/prefix.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { makePair, OURS_BIN, Side, VERSIONS, type Conflist, type Json, type Pair } from '../helpers/sbs.ts';

const P = runPrefix();
let pairs: Pair[] = [];
let tag = 0;
afterEach(() => {
  for (const p of pairs) p.cleanup();
  pairs = [];
});
afterAll(() => removeNetnsWithPrefix(P));

const loUp = (ns: string): boolean => {
  const l = JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show', 'dev', 'lo'], { encoding: 'utf8' })) as Json[];
  return (l[0]!['flags'] as string[]).includes('UP');
};

describe.each(VERSIONS)('loopback, cniVersion %s', (v) => {
  it('ADD brings lo up with 127.0.0.1/8 and ::1/128; CHECK; DEL takes it down; DEL without netns succeeds', async () => {
    const pair = makePair(P, `l${tag++}`);
    pairs.push(pair);
    const side = new Side('ours', [OURS_BIN], pair.host.path);
    const c = pair.containers[0]!;
    const list: Conflist = { cniVersion: v, name: 'cni-loopback', plugins: [{ type: 'loopback' }] };
    const a = { containerId: 'lo-' + v, netns: c.path, ifname: 'lo' };
    expect(loUp(c.name)).toBe(false);
    const add = await side.add(list, a);
    expect(add.code, add.stdout).toBe(0);
    expect(loUp(c.name)).toBe(true);
    expect(execFileSync('ip', ['-n', c.name, 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' })).toContain('127.0.0.1/8');
    const ips = (add.json!['ips'] as Json[]).map((i) => i['address']);
    expect(ips).toEqual(['127.0.0.1/8', '::1/128']);
    expect(add.json!['interfaces']).toEqual([{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: c.path }]);
    if (v !== '0.3.0' && v !== '0.3.1') expect((await side.check(list, a)).code).toBe(0);
    expect((await side.del(list, a)).code).toBe(0);
    expect(loUp(c.name)).toBe(false);
    if (v !== '0.3.0' && v !== '0.3.1') expect((await side.check(list, a)).json?.['msg']).toMatch(/down/);
    expect((await side.del(list, { ...a, netns: '' })).code).toBe(0);
    c.remove();
    expect((await side.del(list, a)).code).toBe(0);
    const addGone = await side.add(list, a);
    expect(addGone.code).not.toBe(0);
    expect(addGone.json!['code']).toBe(4);
  });
});
