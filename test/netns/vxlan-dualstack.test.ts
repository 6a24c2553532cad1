// Dual-stack pods over the overlay: nodes with an IPv4 and an IPv6 podCIDR, over an IPv4 underlay and over an
// IPv6-only underlay (VTEP addresses are IPv6, MTU = underlay - 70).
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestbed, killProc, spawnIn, type BedPod, type Testbed } from '../helpers/overlay-testbed.ts';
import { waitFor } from '../helpers/wait.ts';
import type { TestNetns } from '../helpers/netns.ts';
import { canonicalIP } from '../../lib/net/ip.ts';

const v6Pod = (i: number, k: number): string => `fd00:10:244:${i + 1}::${k + 1}`;
const v6Cidr = (i: number): string => `fd00:10:244:${i + 1}::/64`;

function peerSeen(client: TestNetns, server: TestNetns, ip: string, port: number): string {
  const v6 = ip.includes(':');
  const listen = v6 ? `TCP6-LISTEN:${port},bind=[${ip}],reuseaddr,fork` : `TCP-LISTEN:${port},bind=${ip},reuseaddr,fork`;
  const srv = spawnIn(server, ['socat', listen, 'SYSTEM:echo $SOCAT_PEERADDR']);
  try {
    const t0 = Date.now();
    for (;;) {
      try {
        const out = client.exec(['socat', '-t5', '-T5', '-', v6 ? `TCP6:[${ip}]:${port}` : `TCP:${ip}:${port}`], 'x\n').trim();
        if (out) return canonicalIP(out.replace(/^\[|\]$/g, ''));
      } catch (e) {
        if (Date.now() - t0 > 8000) throw e;
      }
      execFileSync('sleep', ['0.1']);
    }
  } finally {
    killProc(srv);
  }
}

const ping = (from: TestNetns, ip: string): boolean => {
  try {
    from.exec(['ping', '-c1', '-W2', ip]);
    return true;
  } catch {
    return false;
  }
};

describe.each([
  { underlay: 'IPv4' as const, mtu: 1450 },
  { underlay: 'IPv6' as const, mtu: 1430 },
])('dual-stack pods over an $underlay underlay', ({ underlay, mtu }) => {
  let bed: Testbed;
  const pods: (BedPod & { ip6: string })[] = [];
  const nodeV6 = (i: number): string => `fd99::${i + 1}`;

  beforeAll(async () => {
    bed = await createTestbed({ nodes: 2 });
    const x = bed.external;
    x.exec(['ip', 'addr', 'add', 'fd99::200/64', 'dev', 'eth0', 'nodad']);
    for (const [i, n] of bed.nodes.entries()) {
      n.ns.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
      n.ns.exec(['ip', 'addr', 'add', `${nodeV6(i)}/64`, 'dev', 'eth0', 'nodad']);
      n.ns.exec(['ip', 'addr', 'add', `fd00:10:244:${i + 1}::1/64`, 'dev', 'cni0', 'nodad']);
      bed.store.put({
        metadata: { name: n.name, annotations: {} },
        spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR, v6Cidr(i)] },
        status: { addresses: [{ type: 'InternalIP', address: underlay === 'IPv4' ? n.ip : nodeV6(i) }] },
      });
    }
    for (let i = 0; i < 2; i++) await bed.startController(i, { clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'] });
    for (const n of bed.nodes) await n.controller!.reconcile();
    for (let i = 0; i < 2; i++) {
      const p = bed.addPod(i);
      const ip6 = v6Pod(i, 1);
      p.ns.exec(['ip', 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
      p.ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', `fd00:10:244:${i + 1}::1`]);
      pods.push({ ...p, ip6 });
    }
  });

  afterAll(async () => {
    await bed?.destroy();
  });

  it(`builds the device over the ${underlay} underlay with MTU ${mtu} and both .0 addresses`, () => {
    const n1 = bed.nodes[0]!;
    const d = (JSON.parse(n1.ns.exec(['ip', '-d', '-j', 'link', 'show', 'dev', 'flatnet.1'])) as {
      mtu: number;
      linkinfo: { info_data: { local?: string; local6?: string } };
    }[])[0]!;
    expect(d.mtu).toBe(mtu);
    const local = d.linkinfo.info_data.local ?? d.linkinfo.info_data.local6;
    expect(local).toBe(underlay === 'IPv4' ? n1.ip : nodeV6(0));
    const addrs = n1.ns.exec(['ip', '-o', 'addr', 'show', 'dev', 'flatnet.1', 'scope', 'global']);
    expect(addrs).toContain('10.244.1.0/32');
    expect(addrs).toContain('fd00:10:244:1::/128');
    const routes6 = n1.ns.exec(['ip', '-6', 'route', 'show', 'proto', '77']);
    expect(routes6).toMatch(/fd00:10:244:2::\/64 via fd00:10:244:2:: dev flatnet\.1 .*onlink/);
    const fdb = n1.ns.exec(['bridge', 'fdb', 'show', 'dev', 'flatnet.1']);
    expect(fdb).toContain(`dst ${underlay === 'IPv4' ? bed.nodes[1]!.ip : nodeV6(1)}`);
  });

  it('carries IPv4 and IPv6 pod traffic across nodes with the pod source addresses', async () => {
    const [a, b] = pods as [(typeof pods)[0], (typeof pods)[0]];
    await waitFor('IPv6 ping across nodes', () => ping(a.ns, b.ip6), 8000);
    expect(ping(a.ns, b.ip)).toBe(true);
    expect(peerSeen(a.ns, b.ns, b.ip6, 7301)).toBe(a.ip6);
    expect(peerSeen(b.ns, a.ns, a.ip, 7302)).toBe(b.ip);
    expect(pods[0]!.ns.exec(['ping', '-6', '-c1', '-W2', '-M', 'do', '-s', String(mtu - 48), b.ip6])).toContain('1 received');
  });

  it('masquerades IPv6 egress to the node address and leaves in-cluster IPv6 alone', () => {
    const a = pods[0]!;
    expect(peerSeen(a.ns, bed.external, 'fd99::200', 7303)).toBe(nodeV6(0));
    const t = bed.nodes[0]!.ns.exec(['nft', 'list', 'table', 'inet', bed.table]);
    expect(t).toMatch(/ip6 saddr fd00:10:244:1::\/64 ip6 daddr != @nomasq6 .*masquerade/);
  });
});
