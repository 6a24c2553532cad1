import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseOverlayConfig, ANNOTATIONS } from '../../../../proxy/overlay/config.ts';
import {
  annotationPatch,
  diffProgram,
  overlayMtu,
  planOverlay,
  renderMasquerade,
  renderOverlayTable,
  vtepMac,
  type ObservedState,
  type Underlay,
} from '../../../../proxy/overlay/plan.ts';
import type { OverlayNode } from '../../../../proxy/overlay/node.ts';
import { toOverlayNode } from '../../../../proxy/overlay/node.ts';

const cfg = parseOverlayConfig({ clusterCIDRs: ['10.244.0.0/16'] });
const underlay: Underlay = { dev: 'eth0', ip: '192.168.9.1', prefix: 24, mtu: 1500 };

function node(name: string, ip: string, cidrs: string[], annotated = true, vni = 1): OverlayNode {
  return {
    name,
    internalIPs: [ip],
    podCIDRs: cidrs,
    annotations: annotated
      ? {
          [ANNOTATIONS.backendType]: 'vxlan',
          [ANNOTATIONS.vtepMac]: vtepMac(name, vni),
          [ANNOTATIONS.publicIp]: ip,
          [ANNOTATIONS.vni]: String(vni),
        }
      : {},
  };
}

const n1 = node('n1', '192.168.9.1', ['10.244.1.0/24']);
const n2 = node('n2', '192.168.9.2', ['10.244.2.0/24']);
const n3 = node('n3', '192.168.7.3', ['10.244.3.0/24']);
const empty: ObservedState = { addresses: [], neighbours: [], fdb: [], routes: [] };

describe('config', () => {
  it('defaults like flannel', () => {
    const c = parseOverlayConfig({});
    expect(c).toMatchObject({ vni: 1, port: 8472, deviceName: 'flatnet.1', masquerade: true, directRouting: false });
    expect(c.subnetFile).toBe('/run/flatnet/subnet.env');
  });
  it('derives the device from the VNI and accepts the IANA port', () => {
    expect(parseOverlayConfig({ vni: 42, port: 4789 })).toMatchObject({ deviceName: 'flatnet.42', port: 4789 });
  });
  it('accepts the OverlayConfiguration documents in deploy/ (as the daemon passes them, plus --cluster-cidr)', () => {
    for (const file of ['deploy/manifests/config.yaml', 'deploy/overlays/dual/config.yaml', 'deploy/overlays/ipv6/config.yaml']) {
      const path = join(import.meta.dirname, '../../../..', file);
      if (!existsSync(path)) continue;
      const cm = parseYaml(readFileSync(path, 'utf8')) as { data?: Record<string, string> };
      const doc = cm.data?.['overlay.yaml'];
      if (!doc) continue;
      const raw = parseYaml(doc) as Record<string, unknown>;
      const c = parseOverlayConfig({ clusterCIDRs: [], ...raw });
      expect(c.vni, file).toBe(1);
      expect(c.mtu, file).toBeUndefined();
      expect(c.clusterCIDRs.length, file).toBeGreaterThan(0);
    }
    const c = parseOverlayConfig({ clusterCIDRs: ['10.244.0.0/16'], clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', mtu: 0 });
    expect(c.clusterCIDRs).toEqual(['10.244.0.0/16']);
    expect(c.nonMasqueradeCIDRs).toEqual(['10.96.0.0/16']);
  });

  it('fills {node} in subnetFile and accepts type: vxlan (the daemon passes its overlay section through)', () => {
    expect(parseOverlayConfig({ type: 'vxlan', subnetFile: '/run/x/{node}/subnet.env' }, 'kind-worker').subnetFile).toBe(
      '/run/x/kind-worker/subnet.env',
    );
  });
  it.each([
    [{ type: 'host-gw' }, /type/],
    [{ vni: 0 }, /vni/],
    [{ port: 70000 }, /port/],
    [{ directRouting: 'yes' }, /directRouting/],
    [{ clusterCIDRs: ['10.0.0.0/40'] }, /clusterCIDRs/],
    [{ bogus: 1 }, /unknown key "bogus"/],
    [{ deviceName: 'a-very-long-device-name' }, /deviceName/],
    [{ backend: 'host-gw' }, /backend/],
  ])('rejects %j', (raw, re) => expect(() => parseOverlayConfig(raw)).toThrow(re));
});

describe('toOverlayNode', () => {
  it('reads podCIDRs, InternalIPs and annotations', () => {
    const o = toOverlayNode({
      metadata: { name: 'x', annotations: { a: 'b' } },
      spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
      status: {
        addresses: [
          { type: 'Hostname', address: 'x' },
          { type: 'InternalIP', address: '192.168.9.1' },
        ],
      },
    });
    expect(o).toEqual({
      name: 'x',
      internalIPs: ['192.168.9.1'],
      podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
      annotations: { a: 'b' },
    });
  });
});

describe('planOverlay', () => {
  it('plans the device, its .0 address and MTU 1450 on a 1500 underlay', () => {
    const d = planOverlay(cfg, n1, [n1, n2, n3], underlay);
    expect(d.device).toEqual({
      name: 'flatnet.1',
      vni: 1,
      port: 8472,
      local: '192.168.9.1',
      mac: vtepMac('n1', 1),
      mtu: 1450,
    });
    expect(d.addresses).toEqual(['10.244.1.0/32']);
    expect(d.subnetEnv).toEqual({ networks: ['10.244.0.0/16'], subnets: ['10.244.1.0/24'], mtu: 1450, ipMasq: true });
  });

  it('uses 70 bytes of overhead over an IPv6 underlay, or the configured MTU', () => {
    expect(overlayMtu(cfg, { ...underlay, ip: 'fd00::1' })).toBe(1430);
    expect(overlayMtu(parseOverlayConfig({ mtu: 1300 }), underlay)).toBe(1300);
  });

  it('installs neighbour, FDB and onlink route per annotated peer', () => {
    const d = planOverlay(cfg, n1, [n1, n2, n3], underlay);
    expect(d.neighbours).toEqual([
      { ip: '10.244.2.0', mac: vtepMac('n2', 1) },
      { ip: '10.244.3.0', mac: vtepMac('n3', 1) },
    ]);
    expect(d.fdb).toEqual([
      { mac: vtepMac('n2', 1), dst: '192.168.9.2' },
      { mac: vtepMac('n3', 1), dst: '192.168.7.3' },
    ]);
    expect(d.routes).toEqual([
      { dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flatnet.1', onlink: true },
      { dst: '10.244.3.0/24', via: '10.244.3.0', dev: 'flatnet.1', onlink: true },
    ]);
  });

  it('skips peers without annotations, podCIDR or with another VNI', () => {
    const bare = node('n4', '192.168.9.4', ['10.244.4.0/24'], false);
    const noCidr = node('n5', '192.168.9.5', []);
    const otherVni = node('n6', '192.168.9.6', ['10.244.6.0/24'], true, 7);
    const clone = { ...node('n7', '192.168.9.7', ['10.244.7.0/24']), annotations: { ...n1.annotations } };
    const d = planOverlay(cfg, n1, [n1, bare, noCidr, otherVni, clone], underlay);
    expect(d.routes).toEqual([]);
    expect(d.skipped.map((s) => s.node)).toEqual(['n4', 'n5', 'n6', 'n7']);
    expect(d.skipped[3]!.reason).toMatch(/own address/);
  });

  it('uses plain routes via the node IP for peers on the same underlay subnet with directRouting', () => {
    const d = planOverlay({ ...cfg, directRouting: true }, n1, [n1, n2, n3], underlay);
    expect(d.routes).toEqual([
      { dst: '10.244.2.0/24', via: '192.168.9.2', dev: 'eth0', onlink: false },
      { dst: '10.244.3.0/24', via: '10.244.3.0', dev: 'flatnet.1', onlink: true },
    ]);
    expect(d.fdb.map((f) => f.dst)).toEqual(['192.168.7.3']);
  });

  it('handles dual-stack podCIDRs over one device', () => {
    const a = node('a', '192.168.9.1', ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    const b = node('b', '192.168.9.2', ['10.244.2.0/24', 'fd00:10:244:2::/64']);
    const c6 = parseOverlayConfig({ clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'] });
    const d = planOverlay(c6, a, [a, b], underlay);
    expect(d.addresses).toEqual(['10.244.1.0/32', 'fd00:10:244:1::/128']);
    expect(d.neighbours.map((n) => n.ip)).toEqual(['10.244.2.0', 'fd00:10:244:2::']);
    expect(d.routes.map((r) => `${r.dst} via ${r.via}`)).toEqual([
      '10.244.2.0/24 via 10.244.2.0',
      'fd00:10:244:2::/64 via fd00:10:244:2::',
    ]);
    expect(d.fdb).toHaveLength(1);
    expect(d.masquerade?.sources).toEqual({ 4: ['10.244.1.0/24'], 6: ['fd00:10:244:1::/64'] });
  });

  it('masquerades the local pod CIDR except to the cluster, its own node IP and extra CIDRs (remote node IPs are masqueraded)', () => {
    const d = planOverlay({ ...cfg, nonMasqueradeCIDRs: ['172.16.0.0/12'] }, n1, [n1, n2, n3], underlay);
    expect(d.masquerade).toEqual({
      table: 'flatnet_overlay',
      sources: { 4: ['10.244.1.0/24'], 6: [] },
      exempt: { 4: ['10.244.0.0/16', '172.16.0.0/12', '192.168.9.1/32'], 6: [] },
    });
    const text = renderMasquerade(d.masquerade!);
    expect(text).toContain('delete table inet flatnet_overlay');
    expect(text).toContain('ip saddr { 10.244.1.0/24 } ip daddr != @nomasq4 ip daddr != 224.0.0.0/4 counter masquerade');
    expect(text).not.toContain('ip6 saddr');
  });

  it('accepts VXLAN only from peer node IPs: one table with the source filter beside the masquerade', () => {
    const d = planOverlay(cfg, n1, [n1, n2, n3, { ...node('n4', '192.168.9.4', []), annotations: {} }], underlay);
    // every other node's address counts, usable peer or not yet (its packets are dropped only by the FDB otherwise)
    expect(d.sourceFilter).toEqual({ port: 8472, peers: { 4: ['192.168.7.3', '192.168.9.2', '192.168.9.4'], 6: [] } });
    const text = renderOverlayTable('flatnet_overlay', d.masquerade, d.sourceFilter)!;
    expect(text).toContain('elements = { 192.168.7.3, 192.168.9.2, 192.168.9.4 }');
    expect(text).toContain('type filter hook input priority filter - 10; policy accept;');
    expect(text).toContain('meta nfproto ipv4 udp dport 8472 ip saddr != @vxlan_peers4 counter drop');
    expect(text).toContain('meta nfproto ipv6 udp dport 8472 ip6 saddr != @vxlan_peers6 counter drop');
    expect(text).toContain('masquerade fully-random');
    // alone (no podCIDR yet: no masquerade), and off on request
    expect(renderOverlayTable('t', undefined, d.sourceFilter)).not.toContain('postrouting');
    expect(planOverlay(parseOverlayConfig({ peerSourceFilter: false, port: 4789 }), n1, [n1, n2], underlay).sourceFilter).toBeUndefined();
    expect(renderOverlayTable('t', undefined, undefined)).toBeUndefined();
  });

  it('falls back to all node podCIDRs when no cluster CIDR is configured', () => {
    const d = planOverlay(parseOverlayConfig({}), n1, [n1, n2], underlay);
    expect(d.subnetEnv?.networks).toEqual(['10.244.1.0/24', '10.244.2.0/24']);
  });

  it('plans no subnet file or masquerade before the podCIDR is allocated', () => {
    const d = planOverlay(cfg, { ...n1, podCIDRs: [] }, [n2], underlay);
    expect(d.subnetEnv).toBeUndefined();
    expect(d.masquerade).toBeUndefined();
    expect(d.addresses).toEqual([]);
    expect(d.annotations[ANNOTATIONS.vtepMac]).toBe(vtepMac('n1', 1));
  });

  it('publishes only annotations that differ', () => {
    const d = planOverlay(cfg, n1, [n1], underlay);
    expect(annotationPatch(n1, d.annotations)).toBeUndefined();
    expect(annotationPatch({ ...n1, annotations: {} }, d.annotations)).toEqual(d.annotations);
  });

  it('derives a stable locally administered unicast MAC', () => {
    const m = vtepMac('node-a', 1);
    expect(m).toBe(vtepMac('node-a', 1));
    expect(m).not.toBe(vtepMac('node-b', 1));
    expect(parseInt(m.slice(0, 2), 16) & 0x03).toBe(0x02);
  });
});

describe('diffProgram', () => {
  const want = planOverlay(cfg, n1, [n1, n2], underlay);
  const converged: ObservedState = {
    device: { kind: 'vxlan', mac: vtepMac('n1', 1), mtu: 1450, up: true, vni: 1, port: 8472, local: '192.168.9.1', learning: false },
    addresses: ['10.244.1.0/32'],
    neighbours: [{ ip: '10.244.2.0', mac: vtepMac('n2', 1), permanent: true }],
    fdb: [{ mac: vtepMac('n2', 1), dst: '192.168.9.2' }],
    routes: [{ dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flatnet.1', onlink: true }],
  };

  it('creates everything from scratch', () => {
    const p = diffProgram(want, empty, 77);
    expect(p.recreate).toBe(true);
    expect(p.ip).toEqual([
      `link add flatnet.1 address ${vtepMac('n1', 1)} type vxlan id 1 dstport 8472 local 192.168.9.1 nolearning`,
      'link set dev flatnet.1 mtu 1450 up',
      'addr replace 10.244.1.0/32 dev flatnet.1',
      `neigh replace 10.244.2.0 lladdr ${vtepMac('n2', 1)} dev flatnet.1 nud permanent`,
    ]);
    expect(p.routes).toEqual(['route replace 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink proto 77']);
    expect(p.bridge).toEqual([`fdb append ${vtepMac('n2', 1)} dev flatnet.1 dst 192.168.9.2 self permanent`]);
  });

  it('does nothing when converged', () => {
    expect(diffProgram(want, converged, 77)).toEqual({ recreate: false, ip: [], bridge: [], routes: [] });
  });

  it('recreates a device with the wrong shape (learning on, other port)', () => {
    for (const bad of [{ learning: true }, { port: 4789 }, { vni: 2 }, { kind: 'bridge' }]) {
      const p = diffProgram(want, { ...converged, device: { ...converged.device!, ...bad } }, 77);
      expect(p.recreate).toBe(true);
      expect(p.ip[0]).toBe('link del dev flatnet.1');
      expect(p.bridge).toHaveLength(1);
    }
  });

  it('fixes MTU and removes stale peers', () => {
    const stale: ObservedState = {
      ...converged,
      device: { ...converged.device!, mtu: 1500 },
      addresses: ['10.244.1.0/32', '10.244.9.0/32'],
      neighbours: [...converged.neighbours, { ip: '10.244.3.0', mac: '02:00:00:00:00:03', permanent: true }],
      fdb: [...converged.fdb, { mac: '02:00:00:00:00:03', dst: '192.168.9.3' }],
      routes: [...converged.routes, { dst: '10.244.3.0/24', via: '10.244.3.0', dev: 'flatnet.1', onlink: true }],
    };
    const p = diffProgram(want, stale, 77);
    expect(p.ip).toEqual([
      'link set dev flatnet.1 mtu 1450 up',
      'addr del 10.244.9.0/32 dev flatnet.1',
      'route del 10.244.3.0/24 proto 77',
      'neigh del 10.244.3.0 dev flatnet.1',
    ]);
    expect(p.routes).toEqual([]);
    expect(p.bridge).toEqual(['fdb del 02:00:00:00:00:03 dev flatnet.1 dst 192.168.9.3 self']);
  });

  it('moves a peer whose node IP changed', () => {
    const moved = planOverlay(cfg, n1, [n1, { ...n2, annotations: { ...n2.annotations, [ANNOTATIONS.publicIp]: '192.168.9.22' } }], underlay);
    const p = diffProgram(moved, converged, 77);
    expect(p.ip).toEqual([]);
    expect(p.routes).toEqual([]);
    expect(p.bridge).toEqual([
      `fdb del ${vtepMac('n2', 1)} dev flatnet.1 dst 192.168.9.2 self`,
      `fdb append ${vtepMac('n2', 1)} dev flatnet.1 dst 192.168.9.22 self permanent`,
    ]);
  });
});
