// Side by side: flatnet's portmap (the built binary dist/bin/portmap when present, else in-process) and the reference
// /usr/lib/cni/portmap (containernetworking-plugins 1.1.1, iptables only) on the same node netns:
// equal results, equal kernel state for the same container, both reachable the same way, and each cleaning up or
// checking the other's rules. Run: npx vitest run test/netns/portmap-sbs.test.ts
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CniResult, NetConf } from '../../lib/cni/types.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { createHandlers } from '../../plugins/portmap/main.ts';
import { CLIENT, CLIENT6, GW4, GW6, NODE6_A, NODE_A, NODE_B, NET, Scenario, invoke, type Container } from '../helpers/portmap-fixture.ts';

const REF = '/usr/lib/cni/portmap';
const OURS = resolve(import.meta.dirname, '../../dist/bin/portmap');
const useBinary = existsSync(OURS);

const MAPS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8081, containerPort: 81, protocol: 'udp', hostIP: NODE_A },
  { hostPort: 8082, containerPort: 80, protocol: 'tcp', hostIP: NODE6_A },
];

function conf(cniVersion: string, prevResult: unknown, portMappings: unknown[]): NetConf {
  return {
    cniVersion,
    name: NET,
    type: 'portmap',
    capabilities: { portMappings: true },
    runtimeConfig: { portMappings },
    ...(prevResult ? { prevResult: prevResult as CniResult } : {}),
  };
}

describe.skipIf(!existsSync(REF))(`portmap side by side with the reference (ours: ${useBinary ? 'dist/bin/portmap' : 'in-process'})`, () => {
  const s = new Scenario();
  const inproc = () => createHandlers({ runner: new ExecRunner(), netns: s.node.path });

  /** Run ours; returns stdout (parsed) for ADD. */
  async function ours(command: 'ADD' | 'DEL' | 'CHECK', c: { id: string; ns?: { path: string } }, cf: NetConf): Promise<unknown> {
    if (useBinary) {
      const out = s.execPlugin(OURS, command, c.id, c.ns?.path ?? '', cf);
      return out ? JSON.parse(out) : undefined;
    }
    return invoke(inproc(), command, c, cf);
  }
  function ref(command: 'ADD' | 'DEL' | 'CHECK', c: { id: string; ns?: { path: string } }, cf: NetConf): unknown {
    const out = s.execPlugin(REF, command, c.id, c.ns?.path ?? '', cf);
    return out ? JSON.parse(out) : undefined;
  }
  const nat = () => s.natRules(4) + '\n----\n' + s.natRules(6);

  beforeAll(() => s.setup());
  afterAll(() => s.teardown());

  it.each(['0.3.1', '0.4.0', '1.0.0'])('ADD results are equal (cniVersion %s)', async (v) => {
    const c = s.addContainer(`v${v.replace(/\./g, '')}`);
    // prevResult in that version's shape, as the runtime would hand it on
    const prev = JSON.parse(s.execPlugin('/usr/lib/cni/bridge', 'CHECK', c.id, c.ns.path, { ...s.bridgeConf(), cniVersion: '1.0.0', prevResult: c.prevResult }) || '{}');
    expect(prev).toEqual({}); // CHECK prints nothing: the container is sound
    const prevV = v === '1.0.0' ? c.prevResult : { ...c.prevResult, cniVersion: v, ips: c.prevResult.ips!.map((i) => ({ ...i, version: i.address.includes(':') ? '6' : '4' })) };
    const a = ref('ADD', { id: `r-${c.id}`, ns: c.ns }, conf(v, prevV, MAPS));
    const b = await ours('ADD', { id: `o-${c.id}`, ns: c.ns }, conf(v, prevV, MAPS));
    expect(b).toEqual(a);
    ref('DEL', { id: `r-${c.id}` }, conf(v, undefined, MAPS));
    await ours('DEL', { id: `o-${c.id}` }, conf(v, undefined, MAPS));
  });

  it('program the same iptables state (v4 and v6) for the same container, and DEL back to the same state', async () => {
    const c = s.addContainer('same');
    const before = nat();
    ref('ADD', c, conf('1.0.0', c.prevResult, MAPS));
    const byRef = nat();
    ref('DEL', c, conf('1.0.0', undefined, MAPS));
    const afterRefDel = nat();
    await ours('ADD', c, conf('1.0.0', c.prevResult, MAPS));
    const byOurs = nat();
    await ours('DEL', c, conf('1.0.0', undefined, MAPS));
    expect(byRef).not.toBe(before);
    expect(byRef).toContain('CNI-DN-');
    expect(byOurs).toBe(byRef);
    expect(nat()).toBe(afterRefDel);
  });

  describe('reachability', () => {
    let r1: Container, f1: Container;
    beforeAll(async () => {
      r1 = s.addContainer('r1');
      f1 = s.addContainer('f1');
      await s.serve(r1, 'tcp', 80, 'r1');
      await s.serve(r1, 'udp', 81, 'r1u');
      await s.serve(f1, 'tcp', 80, 'f1');
      await s.serve(f1, 'udp', 81, 'f1u');
      // the reference needs an explicit protocol (it renders `-p ""` otherwise); runtimes always send one
      ref('ADD', r1, conf('1.0.0', r1.prevResult, [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 8081, containerPort: 81, protocol: 'udp', hostIP: NODE_A }]));
      await ours('ADD', f1, conf('1.0.0', f1.prevResult, [{ hostPort: 9080, containerPort: 80, protocol: 'tcp' }, { hostPort: 9081, containerPort: 81, protocol: 'udp', hostIP: NODE_A }]));
    });

    it.each([
      ['from another host (v4): client IP preserved', 'client', 'tcp', NODE_A, CLIENT],
      ['from another host (v6): client IP preserved', 'client', 'tcp', NODE6_A, CLIENT6],
      ['udp with hostIP', 'client', 'udp', NODE_A, CLIENT],
      ['localhost on the node: SNAT', 'node', 'tcp', '127.0.0.1', GW4],
      ['hairpin v4: SNAT', 'self', 'tcp', NODE_A, GW4],
      ['hairpin v6: SNAT', 'self', 'tcp', NODE6_A, GW6],
    ] as const)('%s — both the same', (_n, from, proto, host, peer) => {
      for (const [c, base, label] of [
        [r1, 8080, 'r1'],
        [f1, 9080, 'f1'],
      ] as const) {
        const ns = from === 'client' ? s.client : from === 'node' ? s.node : c.ns;
        const port = proto === 'udp' ? base + 1 : base;
        expect(s.request(ns, proto, host, port)).toEqual({ label: proto === 'udp' ? `${label}u` : label, peer });
      }
    });

    it('hostIP restriction — both the same', () => {
      expect(s.request(s.client, 'udp', NODE_B, 8081, 1)).toBeUndefined();
      expect(s.request(s.client, 'udp', NODE_B, 9081, 1)).toBeUndefined();
    });
  });

  it('interop: ours checks and deletes what the reference added; the reference deletes what ours added and CHECKs it exactly as it CHECKs its own', async () => {
    const c = s.addContainer('x');
    const before = nat();
    // reference 1.1.1's CHECK looks for the v4 rules in ip6tables too, so on a host with ip6tables it fails even on
    // its own rules; what matters is that it judges ours exactly as it judges its own
    const refCheck = (): string => {
      try {
        ref('CHECK', c, conf('1.0.0', c.prevResult, MAPS));
        return 'ok';
      } catch (e) {
        return String((e as Error).message).split('\n')[0]!.replace(/^.*?exited \d+: /, '');
      }
    };
    ref('ADD', c, conf('1.0.0', c.prevResult, MAPS));
    const refOnRef = refCheck();
    await ours('CHECK', c, conf('1.0.0', c.prevResult, MAPS));
    await ours('DEL', c, conf('1.0.0', undefined, MAPS));
    expect(nat()).toBe(before);
    await ours('ADD', c, conf('1.0.0', c.prevResult, MAPS));
    expect(refCheck()).toBe(refOnRef);
    ref('DEL', c, conf('1.0.0', undefined, MAPS));
    expect(nat()).toBe(before);
  });
});
