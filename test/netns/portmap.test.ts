// portmap against the real kernel, both backends: node netns + bridge (reference bridge/host-local) + containers +
// a client netns standing for another host. Run: npx vitest run test/netns/portmap.test.ts
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CniError } from '../../lib/cni/types.ts';
import { createHandlers } from '../../plugins/portmap/main.ts';
import { dnatChainName } from '../../plugins/portmap/plan.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import {
  CLIENT,
  CLIENT6,
  GW4,
  GW6,
  NODE6_A,
  NODE_A,
  NODE_B,
  Scenario,
  binaryInvoker,
  inProcessInvoker,
  type Invoker,
  portmapConf,
  type Container,
} from '../helpers/portmap-fixture.ts';

function sctpSocketsAvailable(): boolean {
  try {
    execFileSync('socat', ['-T1', '-', 'SCTP-LISTEN:1,bind=127.0.0.1'], { input: '', stdio: ['pipe', 'ignore', 'pipe'], timeout: 1500 });
    return true;
  } catch (e) {
    return !String((e as { stderr?: Buffer }).stderr ?? '').includes('Protocol not supported');
  }
}

const BINARY = resolve(import.meta.dirname, '../../dist/bin/portmap');
const combos = [
  ['iptables', 'in-process'],
  ['nftables', 'in-process'],
  ...(existsSync(BINARY) ? ([['iptables', 'dist/bin/portmap'], ['nftables', 'dist/bin/portmap']] as const) : []),
] as const;

describe.each(combos)('portmap %s backend via %s (real netns)', (backendName, via) => {
  const s = new Scenario();
  let inv: Invoker;
  const extra = { backend: backendName };
  const state = () => (backendName === 'iptables' ? s.natRules(4) + '\n' + s.natRules(6) : s.nftRuleset());
  let c1: Container;
  let c2: Container;

  beforeAll(async () => {
    s.setup();
    inv =
      via === 'in-process'
        ? inProcessInvoker(createHandlers({ runner: new ExecRunner(), netns: s.node.path }))
        : binaryInvoker(s, BINARY);
    c1 = s.addContainer('c1');
    c2 = s.addContainer('c2');
    await s.serve(c1, 'tcp', 80, 'c1');
    await s.serve(c1, 'udp', 81, 'c1u');
    await s.serve(c2, 'tcp', 80, 'c2');
  });
  afterAll(() => s.teardown());

  it('ADD returns prevResult unchanged and forwards tcp+udp hostPorts from another host, v4 and v6, client IP preserved', async () => {
    const conf = portmapConf(
      c1.prevResult,
      [
        { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 8081, containerPort: 81, protocol: 'UDP' },
      ],
      extra,
    );
    const res = await inv('ADD', c1, conf);
    expect(res).toEqual(c1.prevResult);
    expect(s.request(s.client, 'tcp', NODE_A, 8080)).toEqual({ label: 'c1', peer: CLIENT });
    expect(s.request(s.client, 'tcp', NODE_B, 8080)).toEqual({ label: 'c1', peer: CLIENT });
    expect(s.request(s.client, 'tcp', NODE6_A, 8080)).toEqual({ label: 'c1', peer: CLIENT6 });
    expect(s.request(s.client, 'udp', NODE_A, 8081)).toEqual({ label: 'c1u', peer: CLIENT });
    expect(s.request(s.client, 'udp', NODE6_A, 8081)).toEqual({ label: 'c1u', peer: CLIENT6 });
    // a port that is not mapped is not forwarded
    expect(s.request(s.client, 'tcp', NODE_A, 8082, 1)).toBeUndefined();
  });

  it('localhost on the node reaches the hostPort, SNATed to the bridge address (route_localnet on the bridge)', () => {
    expect(s.sysctl(`net.ipv4.conf.${s.bridge}.route_localnet`)).toBe('1');
    expect(s.request(s.node, 'tcp', '127.0.0.1', 8080)).toEqual({ label: 'c1', peer: GW4 });
  });

  it('hairpin: the container reaches its own hostPort via the node IP, SNATed (v4 and v6)', () => {
    expect(s.request(c1.ns, 'tcp', NODE_A, 8080)).toEqual({ label: 'c1', peer: GW4 });
    expect(s.request(c1.ns, 'tcp', NODE6_A, 8080)).toEqual({ label: 'c1', peer: GW6 });
    // another pod on the same bridge too (its reply would otherwise bypass the DNAT)
    expect(s.request(c2.ns, 'tcp', NODE_A, 8080)).toEqual({ label: 'c1', peer: GW4 });
  });

  it('CHECK passes, fails once a rule is removed behind its back, and a repeated ADD repairs it', async () => {
    const conf = portmapConf(
      c1.prevResult,
      [
        { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 8081, containerPort: 81, protocol: 'udp' },
      ],
      extra,
    );
    await inv('CHECK', c1, conf);
    if (backendName === 'iptables') s.node.exec(['iptables', '-t', 'nat', '-F', dnatChainName('pmnet', c1.id)]);
    else s.node.exec(['nft', 'flush', 'chain', 'inet', 'flatnet_hostport', 'hostports']);
    await expect(inv('CHECK', c1, conf)).rejects.toThrow(/missing/);
    expect(s.request(s.client, 'tcp', NODE_A, 8080, 1)).toBeUndefined();
    await inv('ADD', c1, conf);
    await inv('CHECK', c1, conf);
    expect(s.request(s.client, 'tcp', NODE_A, 8080)).toEqual({ label: 'c1', peer: CLIENT });
  });

  it('hostIP restricts the mapping to that address', async () => {
    await inv('ADD', c2, portmapConf(c2.prevResult, [{ hostPort: 9090, containerPort: 80, hostIP: NODE_B }], extra));
    expect(s.request(s.client, 'tcp', NODE_B, 9090)).toEqual({ label: 'c2', peer: CLIENT });
    expect(s.request(s.client, 'tcp', NODE_A, 9090, 1)).toBeUndefined();
    expect(s.request(s.client, 'tcp', NODE6_A, 9090, 1)).toBeUndefined();
  });

  describe('same hostPort, different hostIP and protocol (conformance case)', () => {
    let c3: Container, c4: Container, c5: Container;
    beforeAll(async () => {
      c3 = s.addContainer('c3');
      c4 = s.addContainer('c4');
      c5 = s.addContainer('c5');
      await s.serve(c3, 'tcp', 80, 'c3');
      await s.serve(c4, 'tcp', 80, 'c4');
      await s.serve(c5, 'udp', 80, 'c5');
      await inv('ADD', c3, portmapConf(c3.prevResult, [{ hostPort: 54321, containerPort: 80, protocol: 'TCP', hostIP: NODE_A }], extra));
      await inv('ADD', c4, portmapConf(c4.prevResult, [{ hostPort: 54321, containerPort: 80, protocol: 'TCP', hostIP: NODE_B }], extra));
      await inv('ADD', c5, portmapConf(c5.prevResult, [{ hostPort: 54321, containerPort: 80, protocol: 'UDP', hostIP: NODE_A }], extra));
    });

    it('each pod is reachable only as intended', () => {
      expect(s.request(s.client, 'tcp', NODE_A, 54321)).toEqual({ label: 'c3', peer: CLIENT });
      expect(s.request(s.client, 'tcp', NODE_B, 54321)).toEqual({ label: 'c4', peer: CLIENT });
      expect(s.request(s.client, 'udp', NODE_A, 54321)).toEqual({ label: 'c5', peer: CLIENT });
      expect(s.request(s.client, 'udp', NODE_B, 54321, 1)).toBeUndefined();
    });

    it('DEL removes exactly its own rules (others survive; state equals the state before its ADD), and is idempotent', async () => {
      const c6 = s.addContainer('c6');
      await s.serve(c6, 'tcp', 80, 'c6');
      const before = state();
      const conf = portmapConf(c6.prevResult, [{ hostPort: 7070, containerPort: 80 }], extra);
      await inv('ADD', c6, conf);
      expect(s.request(s.client, 'tcp', NODE_A, 7070)).toEqual({ label: 'c6', peer: CLIENT });
      expect(state()).not.toBe(before);
      // DEL needs no prevResult
      await inv('DEL', c6, portmapConf(undefined, [], extra));
      expect(state()).toBe(before);
      await inv('DEL', c6, portmapConf(undefined, [], extra));
      await inv('DEL', { id: c6.id }, portmapConf(undefined, [], extra));
      expect(state()).toBe(before);
      expect(s.request(s.client, 'tcp', NODE_A, 7070, 1)).toBeUndefined();
      expect(s.request(s.client, 'tcp', NODE_A, 54321)).toEqual({ label: 'c3', peer: CLIENT });
      expect(s.request(s.client, 'tcp', NODE_B, 54321)).toEqual({ label: 'c4', peer: CLIENT });
    });

    it('GC removes the rules of containers not in valid-attachments, and only those', async () => {
      const valid = [c1, c2, c3, c5].map((c) => ({ containerID: c.id, ifname: 'eth0' }));
      // another network's GC must not touch ours
      await inv('GC', { id: '' }, { ...portmapConf(undefined, [], extra), name: 'othernet' }, []);
      expect(s.request(s.client, 'tcp', NODE_B, 54321)).toEqual({ label: 'c4', peer: CLIENT });
      await inv('GC', { id: '' }, portmapConf(undefined, [], extra), valid);
      expect(s.request(s.client, 'tcp', NODE_B, 54321, 1)).toBeUndefined();
      expect(s.request(s.client, 'tcp', NODE_A, 54321)).toEqual({ label: 'c3', peer: CLIENT });
      expect(s.request(s.client, 'udp', NODE_A, 54321)).toEqual({ label: 'c5', peer: CLIENT });
      expect(s.request(s.client, 'tcp', NODE_A, 8080)).toEqual({ label: 'c1', peer: CLIENT });
      if (backendName === 'iptables') expect(s.natRules()).not.toContain(dnatChainName('pmnet', c4.id));
      else expect(s.nftRuleset()).not.toContain(c4.id);
    });
  });

  it('ADD flushes stale UDP conntrack entries for its hostPorts (a flow that started before the mapping gets DNATed)', async () => {
    const c10 = s.addContainer('c10');
    await s.serve(c10, 'udp', 80, 'c10');
    // some mapping first, so that conntrack is active in the node netns whatever ran before
    await inv('ADD', c10, portmapConf(c10.prevResult, [{ hostPort: 5354, containerPort: 80, protocol: 'tcp' }], extra));
    // same source port before and after: the first datagram creates a conntrack entry to the node itself
    expect(s.request(s.client, 'udp', NODE_A, 5353, 1, 40123)).toBeUndefined();
    expect(s.node.exec(['conntrack', '-L', '-p', 'udp', '--orig-port-dst', '5353'])).toContain('sport=40123');
    await inv(
      'ADD',
      c10,
      portmapConf(c10.prevResult, [{ hostPort: 5354, containerPort: 80, protocol: 'tcp' }, { hostPort: 5353, containerPort: 80, protocol: 'udp' }], extra),
    );
    expect(s.request(s.client, 'udp', NODE_A, 5353, 5, 40123)).toEqual({ label: 'c10', peer: CLIENT });
  });

  it("pods cannot reach the node's loopback-only services through route_localnet (CVE-2020-8558); localhost hostPorts still work", async () => {
    const c11 = s.addContainer('c11');
    await s.serve({ ns: s.node }, 'tcp', 9999, 'secret');
    // the attacker is root in its pod: it routes 127.0.0.1 to the gateway instead of its own loopback
    for (const argv of [
      ['sysctl', '-q', '-w', 'net.ipv4.conf.all.route_localnet=1'],
      ['sysctl', '-q', '-w', 'net.ipv4.conf.eth0.route_localnet=1'],
      ['ip', 'rule', 'add', 'pref', '10', 'to', '127.0.0.1', 'lookup', '100'],
      ['ip', 'route', 'add', '127.0.0.1/32', 'via', GW4, 'dev', 'eth0', 'src', c11.v4, 'table', '100'],
      ['ip', 'rule', 'del', 'pref', '0'],
      ['ip', 'rule', 'add', 'pref', '20', 'lookup', 'local'],
    ])
      c11.ns.exec(argv);
    expect(s.sysctl(`net.ipv4.conf.${s.bridge}.route_localnet`)).toBe('1');
    expect(s.request(c11.ns, 'tcp', '127.0.0.1', 9999, 2)).toBeUndefined();
    // control: without the guard the attack works (so the assertion above can fail)
    if (backendName === 'iptables') s.node.exec(['iptables', '-D', 'INPUT', '-j', 'CNI-HOSTPORT-LOCALNET']);
    else s.node.exec(['nft', 'flush', 'chain', 'inet', 'flatnet_hostport', 'localnet_guard']);
    expect(s.request(c11.ns, 'tcp', '127.0.0.1', 9999)).toEqual({ label: 'secret', peer: c11.v4 });
    // the next ADD puts the guard back
    await inv('ADD', c11, portmapConf(c11.prevResult, [{ hostPort: 6262, containerPort: 80 }], extra));
    expect(s.request(c11.ns, 'tcp', '127.0.0.1', 9999, 2)).toBeUndefined();
    expect(s.request(s.node, 'tcp', '127.0.0.1', 8080)).toEqual({ label: 'c1', peer: GW4 });
  });

  it('masqAll masquerades traffic from outside too', async () => {
    const c7 = s.addContainer('c7');
    await s.serve(c7, 'tcp', 80, 'c7');
    await inv('ADD', c7, portmapConf(c7.prevResult, [{ hostPort: 6060, containerPort: 80 }], { ...extra, masqAll: true }));
    expect(s.request(s.client, 'tcp', NODE_A, 6060)).toEqual({ label: 'c7', peer: GW4 });
    expect(s.request(s.client, 'tcp', NODE6_A, 6060)).toEqual({ label: 'c7', peer: GW6 });
  });

  it('snat:false leaves outside traffic alone and sets up no masquerade for hairpin', async () => {
    const c8 = s.addContainer('c8');
    await s.serve(c8, 'tcp', 80, 'c8');
    await inv('ADD', c8, portmapConf(c8.prevResult, [{ hostPort: 6161, containerPort: 80 }], { ...extra, snat: false }));
    expect(s.request(s.client, 'tcp', NODE_A, 6161)).toEqual({ label: 'c8', peer: CLIENT });
    // self-hairpin without SNAT: the reply goes straight back inside the container and the connection fails
    expect(s.request(c8.ns, 'tcp', NODE_A, 6161, 1)).toBeUndefined();
  });

  it('sctp mappings are programmed (traffic tested only when the kernel has SCTP sockets)', async (ctx) => {
    const c9 = s.addContainer('c9');
    await inv('ADD', c9, portmapConf(c9.prevResult, [{ hostPort: 5050, containerPort: 80, protocol: 'sctp' }], extra));
    if (backendName === 'iptables') expect(s.natRules()).toMatch(/-p sctp .*--dport 5050 -j DNAT --to-destination 10\.77\.0\.\d+:80/);
    else expect(s.nftRuleset()).toMatch(/sctp dport 5050 dnat ip to 10\.77\.0\.\d+:80/);
    await inv('DEL', c9, portmapConf(undefined, [], extra));
    if (!sctpSocketsAvailable()) ctx.skip('kernel has no SCTP sockets (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): Protocol not supported; no modprobe here): sctp traffic not tested');
  });

  it.each([
    ['an unknown protocol', [{ hostPort: 1, containerPort: 1, protocol: 'icmp' }], {}, /not tcp, udp or sctp/],
    ['a port out of range', [{ hostPort: 70000, containerPort: 1 }], {}, /hostPort/],
    ['a bad hostIP', [{ hostPort: 1, containerPort: 1, hostIP: '1.2.3' }], {}, /hostIP/],
    ['markMasqBit with externalSetMarkChain', [{ hostPort: 1, containerPort: 1 }], { markMasqBit: 3, externalSetMarkChain: 'KUBE-MARK-MASQ' }, /externalSetMarkChain/],
    ['an unknown backend', [{ hostPort: 1, containerPort: 1 }], { backend: 'ebpf' }, /backend/],
  ])('rejects %s with code 7 and changes nothing', async (_n, maps, more, msg) => {
    const before = state();
    const err = await inv('ADD', c2, portmapConf(c2.prevResult, maps, { ...extra, ...more })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(7);
    expect((err as CniError).message).toMatch(msg);
    expect(state()).toBe(before);
  });

  it('rejects ADD without prevResult (not chained) with code 7', async () => {
    const err = await inv('ADD', c2, portmapConf(undefined, [{ hostPort: 1, containerPort: 1 }], extra)).catch((e: unknown) => e);
    expect((err as CniError).code).toBe(7);
  });
});
