// Behaviour of the generated nftables programs, through the packet tracer: where each packet ends up and whether it
// is masqueraded.
import { describe, expect, it } from 'vitest';
import { renderFull, renderIncremental, type NftState } from '../../../../proxy/services/backends/nftables/rules.ts';
import { NftModel, summarize, type Packet, type Proto } from '../../../helpers/tracer-nft.ts';
import { config, ep, plan, svc, syncInput } from '../../../helpers/proxy-plans.ts';
import type { ProxyConfigView, ServicePlan } from '../../../../proxy/services/model/types.ts';

const NODE_IP = '192.168.10.2';
const env = { localAddrs: [NODE_IP] };
const opts = { table: 'flatnet-proxy', family: 4 as const };

const web = svc('web', {
  nodePort: 30080,
  externalIPs: ['192.168.10.50'],
  loadBalancerIPs: [{ ip: '192.168.10.60', ipMode: 'VIP' }],
  loadBalancerSourceRanges: ['203.0.113.0/24'],
});
const web443 = svc('web', { portName: 'https', port: 443 });
const dns = svc('dns', { clusterIP: '10.96.0.11', protocol: 'UDP', port: 53, nodePort: 30053, externalTrafficPolicyLocal: true });
const empty = svc('empty', { clusterIP: '10.96.0.12', protocol: 'SCTP' });
const itp = svc('itp', { clusterIP: '10.96.0.13', internalTrafficPolicyLocal: true });
const sticky = svc('sticky', { clusterIP: '10.96.0.14', affinityTimeoutSeconds: 60, nodePort: 30014 });
const proxyLb = svc('proxylb', { clusterIP: '10.96.0.15', loadBalancerIPs: [{ ip: '192.168.10.70', ipMode: 'Proxy' }] });
const noLocal = svc('nolocal', { clusterIP: '10.96.0.16', nodePort: 30090, externalTrafficPolicyLocal: true });

function plans(): ServicePlan[] {
  return [
    plan(web, [ep('10.244.1.2'), ep('10.244.2.3')]),
    plan(web443, [ep('10.244.1.2', 8443), ep('10.244.2.3', 8443)]),
    plan(dns, [ep('10.244.1.5', 53, { isLocal: true }), ep('10.244.2.5', 53)]),
    plan(empty, []),
    plan(itp, [ep('10.244.2.7')]),
    plan(sticky, [ep('10.244.1.21'), ep('10.244.2.22'), ep('10.244.3.23')]),
    plan(proxyLb, [ep('10.244.2.8')]),
    plan(noLocal, [ep('10.244.2.9')]),
  ];
}

function load(cfg: ProxyConfigView = config, ps: ServicePlan[] = plans()): { model: NftModel; state: NftState } {
  const model = new NftModel();
  const r = renderFull(syncInput(ps, { config: cfg }), opts);
  model.apply(r.program);
  return { model, state: r.state };
}

const pod = '10.244.1.9';
const outside = '198.51.100.7';

function pkt(src: string, dst: string, dport: number, proto: Proto = 'tcp', over: Partial<Packet> = {}): Packet {
  return { src, dst, dport, proto, origin: src === NODE_IP ? 'host' : 'remote', iif: src.startsWith('10.244.') ? 'veth1' : 'eth0', ...over };
}

const half = (ip1: string, ip2: string, port: number, masquerade: boolean) => ({
  [`${ip1}:${port}`]: { weight: 512, masquerade },
  [`${ip2}:${port}`]: { weight: 512, masquerade },
});

interface Case {
  name: string;
  p: Packet;
  want: ReturnType<typeof summarize>;
}

const cases: Case[] = [
  { name: 'pod -> ClusterIP: both endpoints, not masqueraded', p: pkt(pod, '10.96.0.10', 80), want: half('10.244.1.2', '10.244.2.3', 8080, false) },
  { name: 'outside -> ClusterIP: masqueraded', p: pkt(outside, '10.96.0.10', 80), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  { name: 'host -> ClusterIP: masqueraded', p: pkt(NODE_IP, '10.96.0.10', 80), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  { name: 'multi-port: second port has its own endpoints', p: pkt(pod, '10.96.0.10', 443), want: half('10.244.1.2', '10.244.2.3', 8443, false) },
  { name: 'ClusterIP, unknown port: rejected', p: pkt(pod, '10.96.0.10', 81), want: { reject: { weight: 1024, masquerade: false } } },
  { name: 'ClusterIP, other protocol on a TCP port: rejected', p: pkt(pod, '10.96.0.10', 80, 'udp'), want: { reject: { weight: 1024, masquerade: false } } },
  { name: 'outside -> NodePort (eTP Cluster): masqueraded', p: pkt(outside, NODE_IP, 30080), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  { name: 'outside -> externalIP: masqueraded', p: pkt(outside, '192.168.10.50', 80), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  { name: 'allowed source -> LB VIP', p: pkt('203.0.113.5', '192.168.10.60', 80), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  { name: 'source outside loadBalancerSourceRanges -> LB VIP: dropped', p: pkt(outside, '192.168.10.60', 80), want: { drop: { weight: 1024, masquerade: false } } },
  { name: 'source ranges do not restrict the externalIP', p: pkt(outside, '192.168.10.50', 80), want: half('10.244.1.2', '10.244.2.3', 8080, true) },
  {
    name: 'outside -> NodePort eTP Local: local endpoint only, client IP kept',
    p: pkt(outside, NODE_IP, 30053, 'udp'),
    want: { '10.244.1.5:53': { weight: 1024, masquerade: false } },
  },
  { name: 'host -> NodePort eTP Local: all endpoints, masqueraded', p: pkt(NODE_IP, NODE_IP, 30053, 'udp'), want: half('10.244.1.5', '10.244.2.5', 53, true) },
  { name: 'pod -> NodePort eTP Local: all endpoints (short-circuit), not masqueraded', p: pkt(pod, NODE_IP, 30053, 'udp'), want: half('10.244.1.5', '10.244.2.5', 53, false) },
  { name: 'ClusterIP of an eTP Local service: every endpoint', p: pkt(pod, '10.96.0.11', 53, 'udp'), want: half('10.244.1.5', '10.244.2.5', 53, false) },
  { name: 'no endpoints at all: rejected', p: pkt(pod, '10.96.0.12', 80, 'sctp'), want: { reject: { weight: 1024, masquerade: false } } },
  { name: 'iTP Local with endpoints elsewhere only: dropped', p: pkt(pod, '10.96.0.13', 80), want: { drop: { weight: 1024, masquerade: false } } },
  { name: 'ipMode Proxy LB address is not captured', p: pkt(outside, '192.168.10.70', 80), want: { '192.168.10.70:80': { weight: 1024, masquerade: false } } },
  { name: 'eTP Local without local endpoints: outside dropped', p: pkt(outside, NODE_IP, 30090), want: { drop: { weight: 1024, masquerade: false } } },
  { name: 'eTP Local without local endpoints: pod short-circuits', p: pkt(pod, NODE_IP, 30090), want: { '10.244.2.9:8080': { weight: 1024, masquerade: false } } },
  { name: 'NodePort on an address that is not a node address: untouched', p: pkt(outside, '192.168.10.3', 30080), want: { '192.168.10.3:30080': { weight: 1024, masquerade: false } } },
  { name: 'unrelated traffic: untouched', p: pkt(pod, '192.0.2.1', 53, 'udp'), want: { '192.0.2.1:53': { weight: 1024, masquerade: false } } },
  {
    name: 'hairpin: an endpoint reaching itself through the service is masqueraded',
    p: pkt('10.244.1.2', '10.96.0.10', 80),
    want: { '10.244.1.2:8080': { weight: 512, masquerade: true }, '10.244.2.3:8080': { weight: 512, masquerade: false } },
  },
];

describe('nftables tracer: full sync', () => {
  const { model } = load();
  it.each(cases)('$name', ({ p, want }) => {
    expect(summarize(model.trace(p, env))).toEqual(want);
  });

  it('three endpoints get a third each', () => {
    const s = summarize(model.trace(pkt(pod, '10.96.0.14', 80), env));
    expect(Object.values(s)).toHaveLength(3);
    for (const x of Object.values(s)) expect(x.weight).toBeCloseTo(1024 / 3, 6);
  });

  it('session affinity: the first connection records the endpoint, later ones stick to it', () => {
    const m = load().model;
    const first = m.trace(pkt(pod, '10.96.0.14', 80), env);
    expect(first).toHaveLength(3);
    for (const o of first) expect(o.affinityTimeout).toBe(60);
    const chosen = first[1]!;
    m.remember(chosen);
    const again = summarize(m.trace(pkt(pod, '10.96.0.14', 80), env));
    expect(again).toEqual({ [`${chosen.dst}:${chosen.dport}`]: { weight: 1024, masquerade: false } });
    // another client is not affected
    expect(m.trace(pkt('10.244.1.10', '10.96.0.14', 80), env)).toHaveLength(3);
    // NodePort of the sticky service records too
    expect(m.trace(pkt(outside, NODE_IP, 30014), env).every((o) => o.affinityTimeout === 60)).toBe(true);
    // services without affinity record nothing
    expect(m.trace(pkt(pod, '10.96.0.10', 80), env).every((o) => o.affinityTimeout === undefined)).toBe(true);
  });
});

describe('nftables tracer: masquerade configuration', () => {
  it('masqueradeAll masquerades pod -> ClusterIP', () => {
    const { model } = load({ ...config, masqueradeAll: true });
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env))).toEqual(half('10.244.1.2', '10.244.2.3', 8080, true));
  });
  it('detect-local by node pod CIDR', () => {
    const { model } = load({ ...config, detectLocalMode: 'NodeCIDR' });
    // 10.244.1.0/24 is this node's: not masqueraded; 10.244.2.x (another node's pod) is
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env))['10.244.2.3:8080']!.masquerade).toBe(false);
    expect(summarize(model.trace(pkt('10.244.2.50', '10.96.0.10', 80), env))['10.244.2.3:8080']!.masquerade).toBe(true);
  });
  it('detect-local by bridge interface', () => {
    const { model } = load({ ...config, detectLocalMode: 'BridgeInterface', detectLocalInterface: 'cni0' });
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80, 'tcp', { iif: 'cni0' }), env))['10.244.2.3:8080']!.masquerade).toBe(false);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80, 'tcp', { iif: 'eth0' }), env))['10.244.2.3:8080']!.masquerade).toBe(true);
  });
  it('detect-local by interface prefix', () => {
    const { model } = load({ ...config, detectLocalMode: 'InterfaceNamePrefix', detectLocalInterface: 'veth' });
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80, 'tcp', { iif: 'veth9' }), env))['10.244.2.3:8080']!.masquerade).toBe(false);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80, 'tcp', { iif: 'eth0' }), env))['10.244.2.3:8080']!.masquerade).toBe(true);
  });
  it('a different masquerade bit', () => {
    const r = renderFull(syncInput(plans(), { config: { ...config, masqueradeBit: 5 } }), opts);
    expect(r.program).toContain('meta mark set meta mark | 0x00000020');
    const m = new NftModel();
    m.apply(r.program);
    expect(summarize(m.trace(pkt(outside, '10.96.0.10', 80), env))['10.244.2.3:8080']!.masquerade).toBe(true);
  });
  it('nodePortAddresses restricts NodePorts to matching node addresses', () => {
    const cfg = { ...config, nodePortAddresses: ['192.168.20.0/24'] };
    const { model } = load(cfg);
    const e = { localAddrs: [NODE_IP, '192.168.20.2'] };
    expect(summarize(model.trace(pkt(outside, NODE_IP, 30080), e))).toEqual({ [`${NODE_IP}:30080`]: { weight: 1024, masquerade: false } });
    expect(summarize(model.trace(pkt(outside, '192.168.20.2', 30080), e))).toEqual(half('10.244.1.2', '10.244.2.3', 8080, true));
  });
});

describe('nftables tracer: incremental syncs', () => {
  it('adding an endpoint changes only that service', () => {
    const { model, state } = load();
    const ps = plans();
    ps[0] = plan(web, [ep('10.244.1.2'), ep('10.244.2.3'), ep('10.244.3.4')]);
    const r = renderIncremental(syncInput(ps, { full: false, changed: new Set([web.key]) }), opts, state);
    model.apply(r.program);
    const s = summarize(model.trace(pkt(pod, '10.96.0.10', 80), env));
    expect(Object.keys(s).sort()).toEqual(['10.244.1.2:8080', '10.244.2.3:8080', '10.244.3.4:8080']);
    // nothing else moved
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 443), env))).toEqual(half('10.244.1.2', '10.244.2.3', 8443, false));
    expect(r.program).not.toMatch(/flush (set|map)|delete table|10\.96\.0\.1[1-6]|10\.244\.1\.5/);
    // rules are only added to the new class chains (3 endpoints)
    for (const l of r.program.split('\n').filter((x) => x.startsWith('add rule'))) expect(l).toMatch(/ (cluster|ext|np)-3 /);
  });

  it('deleting a service port keeps the shared cluster IP while another port uses it', () => {
    const { model, state } = load();
    const ps = plans().filter((p) => p.svc.key !== web443.key);
    const r = renderIncremental(syncInput(ps, { full: false, changed: new Set([web443.key]) }), opts, state);
    model.apply(r.program);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 443), env))).toEqual({ reject: { weight: 1024, masquerade: false } });
    expect(Object.keys(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env)))).toHaveLength(2);
    expect(model.elements('flatnet-proxy', 'cluster-ips').has('10.96.0.10')).toBe(true);
    // deleting the last port frees the address
    const ps2 = ps.filter((p) => p.svc.key !== web.key);
    const r2 = renderIncremental(syncInput(ps2, { full: false, changed: new Set([web.key]) }), opts, r.state);
    model.apply(r2.program);
    expect(model.elements('flatnet-proxy', 'cluster-ips').has('10.96.0.10')).toBe(false);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env))).toEqual({ '10.96.0.10:80': { weight: 1024, masquerade: false } });
  });

  it('a service losing its endpoints is rejected, and regains them', () => {
    const { model, state } = load();
    const ps = plans();
    ps[0] = plan(web, []);
    const r = renderIncremental(syncInput(ps, { full: false, changed: new Set([web.key]) }), opts, state);
    model.apply(r.program);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env))).toEqual({ reject: { weight: 1024, masquerade: false } });
    expect(summarize(model.trace(pkt(outside, NODE_IP, 30080), env))).toEqual({ reject: { weight: 1024, masquerade: false } });
    const r2 = renderIncremental(syncInput(plans(), { full: false, changed: new Set([web.key]) }), opts, r.state);
    model.apply(r2.program);
    expect(summarize(model.trace(pkt(pod, '10.96.0.10', 80), env))).toEqual(half('10.244.1.2', '10.244.2.3', 8080, false));
  });

  it('changing the affinity timeout swaps the affinity chain; removing an endpoint marks affinity stale', () => {
    const { model, state } = load();
    const ps = plans();
    ps[5] = plan({ ...sticky, affinityTimeoutSeconds: 30 }, [ep('10.244.1.21'), ep('10.244.2.22')]);
    const r = renderIncremental(syncInput(ps, { full: false, changed: new Set([sticky.key]) }), opts, state);
    expect(r.program).toContain('add chain ip flatnet-proxy aff-30');
    expect(r.program).toContain('delete chain ip flatnet-proxy aff-60');
    expect([...r.affinityStale]).toEqual([sticky.key]);
    model.apply(r.program);
    expect(model.trace(pkt(pod, '10.96.0.14', 80), env).map((o) => o.affinityTimeout)).toEqual([30, 30]);
  });

  it('an incremental sync with nothing changed emits nothing', () => {
    const { state } = load();
    const r = renderIncremental(syncInput(plans(), { full: false, changed: new Set([web.key, dns.key]) }), opts, state);
    expect(r.program).toBe('');
  });

  it('a second full sync keeps the affinity map and loads cleanly over the first', () => {
    const { model, state } = load();
    const first = model.trace(pkt(pod, '10.96.0.14', 80), env);
    model.remember(first[0]!);
    const r = renderFull(syncInput(plans()), opts, state);
    expect(r.program).not.toContain('delete table');
    expect(r.program).not.toContain('flush map ip flatnet-proxy affinity');
    model.apply(r.program);
    expect(model.trace(pkt(pod, '10.96.0.14', 80), env)).toHaveLength(1);
  });
});

describe('nftables tracer: IPv6', () => {
  it('renders an ip6 table and dispatches', () => {
    const s6 = svc('web6', { family: 6, clusterIP: 'fd00:10:96::10', nodePort: 30080 });
    const p6 = plan(s6, [ep('fd00:10:244:1::2'), ep('fd00:10:244:2::3')]);
    const r = renderFull(
      syncInput([p6], { family: 6, node: { name: 'n', ips: ['fd00:192::2'], podCIDRs: ['fd00:10:244:1::/64'] }, config: { ...config, clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'] } }),
      { table: 'flatnet-proxy', family: 6 },
    );
    expect(r.program).toContain('add table ip6 flatnet-proxy');
    expect(r.program).toContain('ip6 saddr != { fd00:10:244::/56 }');
    const m = new NftModel();
    m.apply(r.program);
    const e6 = { localAddrs: ['fd00:192::2'] };
    expect(summarize(m.trace(pkt('fd00:10:244:1::9', 'fd00:10:96::10', 80, 'tcp', { iif: 'veth1' }), e6))).toEqual({
      'fd00:10:244:1::2:8080': { weight: 512, masquerade: false },
      'fd00:10:244:2::3:8080': { weight: 512, masquerade: false },
    });
    expect(summarize(m.trace(pkt('2001:db8::1', 'fd00:192::2', 30080), e6))['fd00:10:244:2::3:8080']!.masquerade).toBe(true);
  });
});

describe('nftables tracer is strict', () => {
  it('refuses unknown rule shapes, missing chains and missing elements', () => {
    const m = new NftModel();
    expect(() => m.apply('add table ip t\nadd chain ip t c\nadd rule ip t c tcp flags syn drop\n')).toThrow(/unknown rule shape/);
    expect(() => m.apply('add table ip t\nadd chain ip t c\nadd rule ip t c jump nowhere\n')).toThrow(/missing chain/);
    expect(() => m.apply('add table ip t\nadd set ip t s { type ipv4_addr ; }\ndelete element ip t s { 1.2.3.4 }\n')).toThrow(/not in s/);
    expect(m.tables.size).toBe(0);
  });
  it('refuses overlapping intervals and a class chain without its endpoints', () => {
    const { model } = load();
    expect(() => model.apply('add element ip flatnet-proxy fw-allow { 192.168.10.60 . tcp . 80 . 203.0.113.128/25 }\n')).toThrow(/overlap/);
    model.apply('add chain ip flatnet-proxy cluster-5\nadd rule ip flatnet-proxy cluster-5 meta l4proto tcp dnat to ip daddr . tcp dport . numgen random mod 5 map @cluster-ep-tcp\ndelete element ip flatnet-proxy cluster-n { 10.96.0.10 . tcp . 80 }\nadd element ip flatnet-proxy cluster-n { 10.96.0.10 . tcp . 80 : goto cluster-5 }\n');
    expect(() => model.trace(pkt(pod, '10.96.0.10', 80), env)).toThrow(/cover/);
  });
});
