// Concurrent portmap ADDs and DELs through the built binary (as containerd starts pods in parallel): no entry rule
// may be lost to a race, and parallel DELs must return the node to its baseline exactly.
// Run: npx vitest run test/netns/portmap-concurrency.test.ts
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { createHandlers } from '../../plugins/portmap/main.ts';
import { CLIENT, NODE_A, Scenario, invoke, portmapConf, type Container } from '../helpers/portmap-fixture.ts';

const BINARY = resolve(import.meta.dirname, '../../dist/bin/portmap');
const N = 8;

describe.skipIf(!existsSync(BINARY)).each(['iptables', 'nftables'] as const)(`portmap %s: ${N} parallel ADDs and DELs`, (backend) => {
  const s = new Scenario();
  const cs: Container[] = [];
  const conf = (c: Container | undefined, i: number) =>
    portmapConf(c?.prevResult, [
      { hostPort: 20000 + i, containerPort: 80, protocol: 'tcp' },
      { hostPort: 21000 + i, containerPort: 81, protocol: 'udp' },
    ], { backend });
  const state = () => (backend === 'iptables' ? s.natRules(4) + s.natRules(6) : s.nftRuleset());

  beforeAll(async () => {
    s.setup();
    for (let i = 0; i < N; i++) cs.push(s.addContainer(`p${i}`));
    await s.serve(cs[0]!, 'tcp', 80, 'p0');
    await s.serve(cs[N - 1]!, 'tcp', 80, `p${N - 1}`);
  });
  afterAll(() => s.teardown());

  it('all ADDs succeed and every container\'s rules are present (CHECK) and work', async () => {
    // create the shared scaffolding concurrently too: start from an empty ruleset
    const base = state();
    const res = await Promise.all(cs.map((c, i) => s.execPluginAsync(BINARY, 'ADD', c.id, c.ns.path, conf(c, i))));
    expect(res.map((r) => r.code)).toEqual(cs.map(() => 0));
    expect(state()).not.toBe(base);
    const h = createHandlers({ runner: new ExecRunner(), netns: s.node.path });
    for (const [i, c] of cs.entries()) await invoke(h, 'CHECK', c, conf(c, i));
    expect(s.request(s.client, 'tcp', NODE_A, 20000)).toEqual({ label: 'p0', peer: CLIENT });
    expect(s.request(s.client, 'tcp', NODE_A, 20000 + N - 1)).toEqual({ label: `p${N - 1}`, peer: CLIENT });
    if (backend === 'iptables') {
      // one pair of entry rules per container, no duplicated scaffolding
      expect(s.natRules(4).match(/-A CNI-HOSTPORT-DNAT /g)).toHaveLength(2 * N);
      expect(s.natRules(4).match(/-A PREROUTING .*CNI-HOSTPORT-DNAT/g)).toHaveLength(1);
    } else {
      expect(s.nftRuleset().match(/dnat ip to/g)).toHaveLength(2 * N);
    }
  });

  it('parallel DELs remove everything they own, leaving only the shared scaffolding', async () => {
    const res = await Promise.all(cs.map((c, i) => s.execPluginAsync(BINARY, 'DEL', c.id, '', conf(undefined, i))));
    expect(res.map((r) => r.code)).toEqual(cs.map(() => 0));
    if (backend === 'iptables') {
      expect(s.natRules(4)).not.toMatch(/CNI-DN-|-A CNI-HOSTPORT-DNAT /);
      expect(s.natRules(6)).not.toMatch(/CNI-DN-|-A CNI-HOSTPORT-DNAT /);
    } else {
      expect(s.nftRuleset()).not.toMatch(/dnat ip|masquerade|fpm:/);
    }
    expect(s.request(s.client, 'tcp', NODE_A, 20000, 1)).toBeUndefined();
  });
});
