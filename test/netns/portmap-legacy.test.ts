// lib/iptables detection (iptables-legacy vs iptables-nft, as kube-proxy/kind decide) against the real kernel, and
// portmap programming whichever mode was detected. Run: npx vitest run test/netns/portmap-legacy.test.ts
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { detectMode } from '../../lib/iptables/index.ts';
import { createHandlers } from '../../plugins/portmap/main.ts';
import { dnatChainName } from '../../plugins/portmap/plan.ts';
import { CLIENT, NODE_A, Scenario, invoke, normalizeSave, portmapConf } from '../helpers/portmap-fixture.ts';

describe('iptables mode detection and portmap on iptables-legacy (real netns)', () => {
  const s = new Scenario();
  const runner = new ExecRunner();
  beforeAll(() => s.setup());
  afterAll(() => s.teardown());

  it('picks nft on a tie (nothing anywhere), legacy once legacy holds more rules, nft again with a kubelet hint', async () => {
    expect(await detectMode(runner, s.node.path)).toBe('nft');
    s.node.exec(['iptables-legacy', '-t', 'filter', '-A', 'INPUT', '-s', '203.0.113.1', '-j', 'ACCEPT']);
    expect(await detectMode(runner, s.node.path)).toBe('legacy');
    s.node.exec(['iptables-nft', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    expect(await detectMode(runner, s.node.path)).toBe('nft');
    s.node.exec(['iptables-nft', '-t', 'mangle', '-X', 'KUBE-IPTABLES-HINT']);
    expect(await detectMode(runner, s.node.path)).toBe('legacy');
  });

  it('portmap programs the detected (legacy) mode and leaves iptables-nft untouched; DEL cleans legacy', async () => {
    const h = createHandlers({ runner, netns: s.node.path });
    const c = s.addContainer('l1');
    await s.serve(c, 'tcp', 80, 'l1');
    const nftBefore = normalizeSave(s.node.exec(['iptables-nft-save', '-t', 'nat']));
    await invoke(h, 'ADD', c, portmapConf(c.prevResult, [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }]));
    const chain = dnatChainName('pmnet', c.id);
    expect(s.node.exec(['iptables-legacy-save', '-t', 'nat'])).toContain(`:${chain}`);
    expect(s.node.exec(['iptables-nft-save', '-t', 'nat'])).not.toContain('CNI-HOSTPORT-DNAT');
    expect(s.request(s.client, 'tcp', NODE_A, 8080)).toEqual({ label: 'l1', peer: CLIENT });
    expect(s.request(s.node, 'tcp', '127.0.0.1', 8080)?.label).toBe('l1');
    await invoke(h, 'DEL', c, portmapConf(undefined, []));
    expect(s.node.exec(['iptables-legacy-save', '-t', 'nat'])).not.toContain(chain);
    expect(normalizeSave(s.node.exec(['iptables-nft-save', '-t', 'nat']))).toBe(nftBefore);
    expect(s.request(s.client, 'tcp', NODE_A, 8080, 1)).toBeUndefined();
  });
});
