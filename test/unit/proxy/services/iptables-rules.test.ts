import { describe, expect, it } from 'vitest';
import { planServices } from '../../../../proxy/services/model/plan.ts';
import type { Endpoint, NodeInfo, ProxyConfigView, ServicePort, SyncInput } from '../../../../proxy/services/model/types.ts';
import { clusterIPBuckets, endpointChain, renderRules, serviceChains, topNames, type RenderResult } from '../../../../proxy/services/backends/iptables/rules.ts';
import { IptablesTracer, type Packet } from '../../../helpers/tracer-iptables.ts';
import { proxyConfig, servicePort } from '../../../helpers/proxy-fixtures.ts';

const node: NodeInfo = { name: 'n1', ips: ['192.168.0.1'], podCIDRs: ['10.244.1.0/24'], zone: 'za' };
const baseConfig: ProxyConfigView = proxyConfig();

function sp(name: string, over: Partial<ServicePort> = {}): ServicePort {
  return servicePort({ namespace: 'ns', clusterIP: '10.96.0.1', name, ...over });
}

function ep(ip: string, nodeName: string, port = 8080, over: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, nodeName, isLocal: nodeName === 'n1', ...over };
}

/** the fixture: services and endpoints exercising every feature */
function fixture(): { services: ServicePort[]; endpoints: Map<string, Endpoint[]> } {
  const services: ServicePort[] = [];
  const endpoints = new Map<string, Endpoint[]>();
  const add = (s: ServicePort, eps: Endpoint[]): void => {
    services.push(s);
    endpoints.set(s.key, eps);
  };
  add(sp('web', { clusterIP: '10.96.0.10', nodePort: 30080 }), [ep('10.244.1.5', 'n1'), ep('10.244.2.5', 'n2')]);
  add(sp('dns', { clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', portName: 'dns' }), [ep('10.244.2.9', 'n2', 53)]);
  add(sp('dns', { clusterIP: '10.96.0.53', port: 53, protocol: 'TCP', portName: 'dns-tcp' }), [ep('10.244.2.9', 'n2', 53)]);
  add(sp('empty', { clusterIP: '10.96.0.20', nodePort: 30020, externalIPs: ['192.0.2.20'] }), []);
  add(
    sp('etp', {
      clusterIP: '10.96.0.70',
      nodePort: 30090,
      externalTrafficPolicyLocal: true,
      healthCheckNodePort: 32000,
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: [{ ip: '198.51.100.1', ipMode: 'VIP' }],
    }),
    [ep('10.244.1.7', 'n1'), ep('10.244.2.7', 'n2')],
  );
  add(sp('etpnone', { clusterIP: '10.96.0.71', nodePort: 30091, externalTrafficPolicyLocal: true, healthCheckNodePort: 32001 }), [
    ep('10.244.2.8', 'n2'),
  ]);
  add(sp('itp', { clusterIP: '10.96.0.30', internalTrafficPolicyLocal: true }), [ep('10.244.2.30', 'n2')]);
  add(sp('itplocal', { clusterIP: '10.96.0.31', internalTrafficPolicyLocal: true }), [ep('10.244.1.31', 'n1'), ep('10.244.2.31', 'n2')]);
  add(sp('aff', { clusterIP: '10.96.0.40', affinityTimeoutSeconds: 60 }), [ep('10.244.2.40', 'n2'), ep('10.244.3.40', 'n3')]);
  add(
    sp('lb', {
      clusterIP: '10.96.0.80',
      nodePort: 30100,
      loadBalancerIPs: [
        { ip: '198.51.100.2', ipMode: 'VIP' },
        { ip: '198.51.100.3', ipMode: 'Proxy' },
      ],
      loadBalancerSourceRanges: ['203.0.113.0/24'],
    }),
    [ep('10.244.2.80', 'n2')],
  );
  add(sp('multi', { clusterIP: '10.96.0.50', port: 80, portName: 'http' }), [ep('10.244.2.50', 'n2', 8080)]);
  add(sp('multi', { clusterIP: '10.96.0.50', port: 443, portName: 'https' }), [ep('10.244.2.50', 'n2', 8443)]);
  add(sp('multi', { clusterIP: '10.96.0.50', port: 9999, portName: 'sctp', protocol: 'SCTP' }), [ep('10.244.2.50', 'n2', 9999)]);
  add(sp('term', { clusterIP: '10.96.0.60' }), [
    ep('10.244.2.60', 'n2', 8080, { ready: false, serving: true, terminating: true }),
    ep('10.244.2.61', 'n2', 8080, { ready: false, serving: false, terminating: true }),
  ]);
  return { services, endpoints };
}

function render(config: Partial<ProxyConfigView> = {}, opts: { localhostNodePorts?: boolean } = {}) {
  const { services, endpoints } = fixture();
  const plans = planServices(new Map(services.map((s) => [s.key, s])), endpoints, node, 4);
  const input: SyncInput = { full: true, changed: new Set(), plans, node, config: { ...baseConfig, ...config }, family: 4 };
  const res = renderRules(input, opts);
  return { res, tracer: new IptablesTracer(res.text, { localAddrs: node.ips }) };
}

const POD = '10.244.2.100';
const OUT = '203.0.113.5';
const tcp = (src: string, dst: string, dport: number, over: Partial<Packet> = {}): Packet => ({ src, dst, dport, protocol: 'TCP', ...over });

interface Case {
  name: string;
  packet: Packet;
  verdict: string;
  endpoints?: string[];
  masq?: boolean | 'mixed';
}

const cases: Case[] = [
  { name: 'pod -> ClusterIP', packet: tcp(POD, '10.96.0.10', 80), verdict: 'DNAT', endpoints: ['10.244.1.5:8080', '10.244.2.5:8080'], masq: false },
  { name: 'node -> ClusterIP is masqueraded', packet: tcp('192.168.0.1', '10.96.0.10', 80, { origin: 'local' }), verdict: 'DNAT', endpoints: ['10.244.1.5:8080', '10.244.2.5:8080'], masq: true },
  { name: 'off-cluster -> ClusterIP is masqueraded', packet: tcp(OUT, '10.96.0.10', 80), verdict: 'DNAT', masq: true },
  { name: 'wrong port -> untouched', packet: tcp(POD, '10.96.0.10', 81), verdict: 'ACCEPT' },
  { name: 'external -> NodePort', packet: tcp(OUT, '192.168.0.1', 30080), verdict: 'DNAT', endpoints: ['10.244.1.5:8080', '10.244.2.5:8080'], masq: true },
  { name: 'node -> own NodePort', packet: tcp('192.168.0.1', '192.168.0.1', 30080, { origin: 'local' }), verdict: 'DNAT', masq: true },
  { name: 'UDP dns', packet: { src: POD, dst: '10.96.0.53', dport: 53, protocol: 'UDP' }, verdict: 'DNAT', endpoints: ['10.244.2.9:53'] },
  { name: 'TCP dns, same port', packet: tcp(POD, '10.96.0.53', 53), verdict: 'DNAT', endpoints: ['10.244.2.9:53'] },
  { name: 'no endpoints: ClusterIP rejected', packet: tcp(POD, '10.96.0.20', 80), verdict: 'REJECT' },
  { name: 'no endpoints: UDP ClusterIP rejected', packet: { src: POD, dst: '10.96.0.53', dport: 54, protocol: 'UDP' }, verdict: 'ACCEPT' },
  { name: 'no endpoints: NodePort rejected', packet: tcp(OUT, '192.168.0.1', 30020), verdict: 'REJECT' },
  { name: 'no endpoints: externalIP rejected', packet: tcp(OUT, '192.0.2.20', 80), verdict: 'REJECT' },
  { name: 'ETP Local NodePort: local endpoint, client IP kept', packet: tcp(OUT, '192.168.0.1', 30090), verdict: 'DNAT', endpoints: ['10.244.1.7:8080'], masq: false },
  { name: 'ETP Local externalIP', packet: tcp(OUT, '192.0.2.10', 80), verdict: 'DNAT', endpoints: ['10.244.1.7:8080'], masq: false },
  { name: 'ETP Local LB VIP', packet: tcp(OUT, '198.51.100.1', 80), verdict: 'DNAT', endpoints: ['10.244.1.7:8080'], masq: false },
  { name: 'ETP Local: pod -> externalIP goes everywhere', packet: tcp(POD, '192.0.2.10', 80), verdict: 'DNAT', endpoints: ['10.244.1.7:8080', '10.244.2.7:8080'], masq: false },
  { name: 'ETP Local: node -> NodePort goes everywhere, masqueraded', packet: tcp('192.168.0.1', '192.168.0.1', 30090, { origin: 'local' }), verdict: 'DNAT', endpoints: ['10.244.1.7:8080', '10.244.2.7:8080'], masq: true },
  { name: 'ETP Local: ClusterIP unaffected', packet: tcp(POD, '10.96.0.70', 80), verdict: 'DNAT', endpoints: ['10.244.1.7:8080', '10.244.2.7:8080'] },
  { name: 'ETP Local without local endpoints: external dropped', packet: tcp(OUT, '192.168.0.1', 30091), verdict: 'DROP' },
  { name: 'ETP Local without local endpoints: pod -> NodePort works', packet: tcp(POD, '192.168.0.1', 30091), verdict: 'DNAT', endpoints: ['10.244.2.8:8080'] },
  { name: 'ITP Local without local endpoints: dropped', packet: tcp(POD, '10.96.0.30', 80), verdict: 'DROP' },
  { name: 'ITP Local: only the local endpoint', packet: tcp(POD, '10.96.0.31', 80), verdict: 'DNAT', endpoints: ['10.244.1.31:8080'] },
  { name: 'LB source range allowed', packet: tcp(OUT, '198.51.100.2', 80), verdict: 'DNAT', endpoints: ['10.244.2.80:8080'], masq: true },
  { name: 'LB source range denied', packet: tcp('8.8.8.8', '198.51.100.2', 80), verdict: 'DROP' },
  { name: 'LB source ranges do not apply to the NodePort', packet: tcp('8.8.8.8', '192.168.0.1', 30100), verdict: 'DNAT' },
  { name: 'LB ipMode Proxy is not proxied', packet: tcp(OUT, '198.51.100.3', 80), verdict: 'ACCEPT' },
  { name: 'multiport http', packet: tcp(POD, '10.96.0.50', 80), verdict: 'DNAT', endpoints: ['10.244.2.50:8080'] },
  { name: 'multiport https', packet: tcp(POD, '10.96.0.50', 443), verdict: 'DNAT', endpoints: ['10.244.2.50:8443'] },
  { name: 'SCTP', packet: { src: POD, dst: '10.96.0.50', dport: 9999, protocol: 'SCTP' }, verdict: 'DNAT', endpoints: ['10.244.2.50:9999'] },
  { name: 'terminating fallback', packet: tcp(POD, '10.96.0.60', 80), verdict: 'DNAT', endpoints: ['10.244.2.60:8080'] },
  { name: 'hairpin: pod to itself through its service is masqueraded', packet: tcp('10.244.1.5', '10.96.0.10', 80), verdict: 'DNAT', masq: 'mixed' },
  { name: 'localhost NodePort off by default', packet: tcp('127.0.0.1', '127.0.0.1', 30080, { origin: 'local' }), verdict: 'ACCEPT' },
];

describe('iptables rules: packet traces', () => {
  const { tracer } = render();
  it.each(cases)('$name', (c) => {
    const t = tracer.trace(c.packet);
    expect(t.verdict).toBe(c.verdict);
    if (c.endpoints) expect(t.endpoints).toEqual(c.endpoints);
    if (c.masq !== undefined) expect(t.masquerade).toBe(c.masq);
  });

  it('rejects TCP with a reset and UDP with port-unreachable', () => {
    const t = tracer.trace(tcp(POD, '10.96.0.20', 80));
    expect(t.outcomes[0]!.rejectWith).toBe('tcp-reset');
  });

  it('hairpin masquerades exactly the self-connection', () => {
    const t = tracer.trace(tcp('10.244.1.5', '10.96.0.10', 80));
    const byEp = new Map(t.outcomes.map((o) => [o.endpoint, o.masquerade]));
    expect(byEp.get('10.244.1.5:8080')).toBe(true);
    expect(byEp.get('10.244.2.5:8080')).toBe(false);
  });

  it('session affinity: records the client and then sticks to the remembered endpoint', () => {
    const key = 'ns/aff:/TCP/v4';
    const first = tracer.trace(tcp(POD, '10.96.0.40', 80));
    expect(first.endpoints).toEqual(['10.244.2.40:8080', '10.244.3.40:8080']);
    const sep = endpointChain(key, ep('10.244.3.40', 'n3'));
    expect(first.outcomes.find((o) => o.endpoint === '10.244.3.40:8080')!.recentSet).toEqual([sep]);
    const { res } = render();
    const sticky = new IptablesTracer(res.text, { localAddrs: node.ips, recent: new Set([sep]) });
    expect(sticky.trace(tcp(POD, '10.96.0.40', 80)).endpoints).toEqual(['10.244.3.40:8080']);
    expect(res.text).toContain(`-m recent --name ${sep} --rcheck --seconds 60 --reap -j ${sep}`);
  });

  it('health-check node ports are accepted in filter', () => {
    const { res } = render();
    expect(res.text).toMatch(/-A FLATNET-NODEPORTS .* -p tcp -m tcp --dport 32000 -j ACCEPT/);
  });
});

describe('iptables rules: configuration variants', () => {
  it('masqueradeAll masquerades pod traffic too', () => {
    const { tracer } = render({ masqueradeAll: true });
    expect(tracer.trace(tcp(POD, '10.96.0.10', 80)).masquerade).toBe(true);
  });

  it('without a cluster CIDR, off-cluster ClusterIP traffic is not masqueraded (detect-local off)', () => {
    const { tracer } = render({ clusterCIDRs: [] });
    expect(tracer.trace(tcp(OUT, '10.96.0.10', 80)).masquerade).toBe(false);
  });

  it('detect-local NodeCIDR', () => {
    const { tracer } = render({ detectLocalMode: 'NodeCIDR' });
    expect(tracer.trace(tcp('10.244.1.77', '10.96.0.10', 80)).masquerade).toBe(false);
    expect(tracer.trace(tcp(POD, '10.96.0.10', 80)).masquerade).toBe(true);
  });

  it('detect-local BridgeInterface and InterfaceNamePrefix', () => {
    const br = render({ detectLocalMode: 'BridgeInterface', detectLocalInterface: 'cni0' }).tracer;
    expect(br.trace(tcp(POD, '10.96.0.10', 80, { inIface: 'cni0' })).masquerade).toBe(false);
    expect(br.trace(tcp(POD, '10.96.0.10', 80, { inIface: 'eth0' })).masquerade).toBe(true);
    const pf = render({ detectLocalMode: 'InterfaceNamePrefix', detectLocalInterface: 'veth' }).tracer;
    expect(pf.trace(tcp(POD, '10.96.0.10', 80, { inIface: 'veth1234' })).masquerade).toBe(false);
    expect(pf.trace(tcp(POD, '10.96.0.10', 80, { inIface: 'eth0' })).masquerade).toBe(true);
  });

  it('nodePortAddresses CIDRs', () => {
    const { tracer, res } = render({ nodePortAddresses: ['192.168.0.0/24'] });
    expect(tracer.trace(tcp(OUT, '192.168.0.1', 30080)).verdict).toBe('DNAT');
    expect(res.text).toContain('-d 192.168.0.0/24 ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j FLATNET-NODEPORTS');
    const other = render({ nodePortAddresses: ['10.1.0.0/16'] }).tracer;
    expect(other.trace(tcp(OUT, '192.168.0.1', 30080)).verdict).toBe('ACCEPT');
  });

  it('localhost NodePorts when enabled, with the CVE-2020-8558 guard', () => {
    const { tracer, res } = render({}, { localhostNodePorts: true });
    const t = tracer.trace(tcp('127.0.0.1', '127.0.0.1', 30080, { origin: 'local' }));
    expect(t.verdict).toBe('DNAT');
    expect(t.masquerade).toBe(true);
    expect(res.text).toContain('-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP');
    // a neighbour sending to 127.0.0.1 (route_localnet) is dropped unless DNATed
    expect(tracer.trace(tcp(OUT, '127.0.0.1', 9999)).verdict).toBe('DROP');
  });

  it('IPv6', () => {
    const s = sp('v6', { family: 6, clusterIP: 'fd00::10', nodePort: 30080 });
    const plans = planServices(new Map([[s.key, s]]), new Map([[s.key, [ep('fd00:244::5', 'n2')]]]), { ...node, ips: ['fd00:1::1'] }, 6);
    const res = renderRules({ full: true, changed: new Set(), plans, node: { ...node, ips: ['fd00:1::1'] }, config: { ...baseConfig, clusterCIDRs: ['fd00:244::/56'] }, family: 6 });
    const tr = new IptablesTracer(res.text, { localAddrs: ['fd00:1::1'] });
    expect(tr.trace(tcp('fd00:244::9', 'fd00::10', 80)).endpoints).toEqual(['[fd00:244::5]:8080']);
    expect(tr.trace(tcp('2001:db8::1', 'fd00:1::1', 30080)).masquerade).toBe(true);
    expect(res.text).not.toContain('127.0.0.0/8');
  });
});

type Kernel = Map<string, string[]>; // "table chain" -> rule specs

/** A strict model of iptables-restore --noflush: declare flushes, -D must match, -X needs an empty unreferenced chain. */
function applyProgram(prev: Kernel, text: string): Kernel {
  const k: Kernel = new Map([...prev].map(([c, r]) => [c, [...r]]));
  let table = '';
  for (const line of text.split('\n')) {
    if (!line || line === 'COMMIT') continue;
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) k.set(`${table} ${line.slice(1).split(' ')[0]}`, []);
    else {
      const [op, chain, ...rest] = line.split(' ');
      const id = `${table} ${chain}`;
      const builtin = /^[A-Z]+$/.test(chain!) && !chain!.includes('-');
      if (!k.has(id) && !builtin) throw new Error(`no chain ${id}: ${line}`);
      const rules = k.get(id) ?? [];
      if (op === '-A') rules.push(rest.join(' '));
      else if (op === '-I') rules.splice(Number(rest[0]) - 1, 0, rest.slice(1).join(' '));
      else if (op === '-D') {
        const i = rules.indexOf(rest.join(' '));
        if (i < 0) throw new Error(`-D of a missing rule: ${line}`);
        rules.splice(i, 1);
      } else if (op === '-X') {
        if (rules.length) throw new Error(`-X of a non-empty chain: ${line}`);
        for (const [c, rs] of k) if (c.startsWith(table + ' ') && rs.some((r) => r.endsWith(`-j ${chain}`))) throw new Error(`-X of a referenced chain ${chain} (from ${c})`);
        k.delete(id);
        continue;
      } else throw new Error(`unknown op ${line}`);
      if (!builtin) k.set(id, rules);
    }
  }
  return k;
}

/**
 * chains with their rules; order-insensitive inside the shared per-service chains and the ClusterIP buckets, ordered
 * elsewhere. Empty ClusterIP buckets (left by partial syncs until the next full one) and the jumps to them are pruned.
 */
function snapshot(k0: Kernel): Record<string, string[]> {
  const k: Kernel = new Map([...k0].map(([c, r]) => [c, [...r]]));
  for (const level of ['SVCL', 'SVCT']) {
    for (const [c, rules] of [...k]) {
      const m = new RegExp(`^nat (FLATNET-${level}-\\S+)$`).exec(c);
      if (!m || rules.length) continue;
      k.delete(c);
      for (const [, rs] of k) for (let i = rs.length - 1; i >= 0; i--) if (rs[i]!.endsWith(`-j ${m[1]}`)) rs.splice(i, 1);
    }
  }
  const out: Record<string, string[]> = {};
  for (const [c, rules] of [...k].sort()) {
    const shared = /FLATNET-(SERVICES|EXTERNAL-SERVICES|NODEPORTS|PROXY-FIREWALL|SVCT-\S+|SVCL-\S+)$/.test(c);
    out[c] = shared ? [...rules.slice(0, rules.length - rules.filter((r) => r.includes('must be the last rule')).length)].sort().concat(rules.filter((r) => r.includes('must be the last rule'))) : rules;
  }
  return out;
}

describe('iptables rules: text', () => {
  it('one ClusterIP service renders exactly these rules (sorted)', () => {
    const s = sp('one', { clusterIP: '10.96.0.5' });
    const e = ep('10.244.2.5', 'n2');
    const plans = planServices(new Map([[s.key, s]]), new Map([[s.key, [e]]]), node, 4);
    const res = renderRules({ full: true, changed: new Set(), plans, node, config: baseConfig, family: 4 });
    const ch = serviceChains(s.key);
    const sep = endpointChain(s.key, e);
    const rules = res.text.split('\n').filter((l) => l.includes(ch.svc) || l.includes(sep)).sort();
    expect(rules).toEqual(
      [
        `:${ch.svc} - [0:0]`,
        `:${sep} - [0:0]`,
        `-A FLATNET-SVCL-0A6000 -m comment --comment "ns/one cluster IP" -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j ${ch.svc}`,
        `-A ${ch.svc} -m comment --comment "ns/one cluster IP" ! -s 10.244.0.0/16 -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j FLATNET-MARK-MASQ`,
        `-A ${ch.svc} -m comment --comment "ns/one -> 10.244.2.5:8080" -j ${sep}`,
        `-A ${sep} -m comment --comment "ns/one" -s 10.244.2.5/32 -j FLATNET-MARK-MASQ`,
        `-A ${sep} -m comment --comment "ns/one" -p tcp -m tcp -j DNAT --to-destination 10.244.2.5:8080`,
      ].sort(),
    );
    expect(res.text).toContain('-A FLATNET-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN');
    expect(res.text).toContain('-A FLATNET-MARK-MASQ -j MARK --or-mark 0x4000');
    for (const name of Object.values(topNames())) expect(res.text).toContain(`:${name} - [0:0]`);
    // the tree above the leaf
    expect(res.text).toContain('\n:FLATNET-SVCT-0A600 - [0:0]\n');
    expect(res.text).toContain('\n:FLATNET-SVCL-0A6000 - [0:0]\n');
    expect(res.text).toContain('\n-A FLATNET-SERVICES -d 10.96.0.0/20 -j FLATNET-SVCT-0A600\n');
    expect(res.text).toContain('\n-A FLATNET-SVCT-0A600 -d 10.96.0.0/24 -j FLATNET-SVCL-0A6000\n');
    expect(res.text).not.toMatch(/^-A FLATNET-SERVICES .*cluster IP/m);
    expect([...res.buckets].sort()).toEqual(['FLATNET-SVCL-0A6000', 'FLATNET-SVCT-0A600']);
  });

  it('masquerade bit is configurable', () => {
    const { res } = render({ masqueradeBit: 5 });
    expect(res.text).toContain('-j MARK --or-mark 0x20');
  });

  it('partial sync rewrites only changed services and deletes stale chains', () => {
    const { services, endpoints } = fixture();
    const all = new Map(services.map((s) => [s.key, s]));
    const full = renderRules({ full: true, changed: new Set(), plans: planServices(all, endpoints, node, 4), node, config: baseConfig, family: 4 });
    const webKey = 'ns/web:/TCP/v4';
    endpoints.set(webKey, [ep('10.244.1.5', 'n1')]);
    all.delete('ns/dns:dns/UDP/v4');
    const partial = renderRules(
      { full: false, changed: new Set([webKey, 'ns/dns:dns/UDP/v4']), plans: planServices(all, endpoints, node, 4), node, config: baseConfig, family: 4 },
      {},
      { chains: full.chains, top: full.top },
    );
    const declared = partial.text.split('\n').filter((l) => /^:FLATNET-(SVC|SEP|EXT|XLB|FW)-/.test(l)).map((l) => l.slice(1, -8));
    const web = serviceChains(webKey);
    const goneSep = endpointChain(webKey, ep('10.244.2.5', 'n2'));
    const dnsSvc = serviceChains('ns/dns:dns/UDP/v4').svc;
    expect(declared).toContain(web.svc);
    expect(declared).not.toContain(serviceChains('ns/aff:/TCP/v4').svc);
    expect(partial.deleted.nat).toContain(goneSep);
    expect(partial.deleted.nat).toContain(dnsSvc);
    expect(partial.text).toContain(`-X ${goneSep}`);
    // shared chains are edited, not flushed; unchanged services are not mentioned at all
    expect(partial.text).not.toContain(':FLATNET-SERVICES ');
    expect(partial.text).not.toContain(serviceChains('ns/aff:/TCP/v4').svc);
    expect(partial.text).toMatch(new RegExp(`^-D FLATNET-SVCL-0A6000 .* -j ${dnsSvc}$`, 'm'));
    // web's entry rule did not change (same SVC chain): it is neither deleted nor re-inserted
    expect(partial.text).not.toMatch(new RegExp(`^-[DI] FLATNET-\\S+ .* -j ${web.svc}$`, 'm'));
    // the bucket exists and is neither redeclared (flushed) nor deleted
    expect(partial.text).not.toContain('FLATNET-SVCT-');
    expect(partial.text).not.toContain(':FLATNET-SVCL-');
    expect(partial.chains.nat).toContain('FLATNET-SVCL-0A6000');
    // kernel model: full(old) + partial(new) == full(new)
    const fullNew = renderRules({ full: true, changed: new Set(), plans: planServices(all, endpoints, node, 4), node, config: baseConfig, family: 4 });
    const kernel = applyProgram(applyProgram(new Map(), full.text), partial.text);
    expect(snapshot(kernel)).toEqual(snapshot(applyProgram(new Map(), fullNew.text)));
  });

  it('chunked full syncs: same kernel state and traces as one transaction', () => {
    const { services, endpoints } = fixture();
    const plans = planServices(new Map(services.map((s) => [s.key, s])), endpoints, node, 4);
    const input: SyncInput = { full: true, changed: new Set(), plans, node, config: baseConfig, family: 4 };
    const one = renderRules(input, { chunkServices: 0 });
    const chunked = renderRules(input, { chunkServices: 3 });
    expect(one.programs).toHaveLength(1);
    expect(chunked.programs.length).toBeGreaterThan(3);
    // chunk 0 creates the missing top-level chains; only the last program touches the shared chains' rules
    expect(chunked.programs[0]).toContain(':FLATNET-MARK-MASQ - [0:0]');
    for (const p of chunked.programs.slice(0, -1)) expect(p).not.toMatch(/^-A FLATNET-(SERVICES|NODEPORTS) /m);
    let k: Kernel = new Map();
    for (const p of chunked.programs) k = applyProgram(k, p);
    expect(snapshot(k)).toEqual(snapshot(applyProgram(new Map(), one.text)));
    // with the top-level chains present, chunks do not redeclare (flush) them
    const again = renderRules(input, { chunkServices: 3 }, { chains: one.chains });
    expect(again.programs[0]).not.toContain(':FLATNET-SERVICES ');
    const t = new IptablesTracer(chunked.text, { localAddrs: node.ips });
    expect(t.trace(tcp(POD, '10.96.0.10', 80)).endpoints).toEqual(['10.244.1.5:8080', '10.244.2.5:8080']);
  });

  it('partial syncs chain correctly over many random changes', () => {
    const { services, endpoints } = fixture();
    const all = new Map(services.map((s) => [s.key, s]));
    let res = renderRules({ full: true, changed: new Set(), plans: planServices(all, endpoints, node, 4), node, config: baseConfig, family: 4 });
    let kernel = applyProgram(new Map(), res.text);
    const keys = [...all.keys()];
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let round = 0; round < 40; round++) {
      const changed = new Set<string>();
      for (let k = 0; k < 1 + rnd(3); k++) {
        const key = keys[rnd(keys.length)]!;
        changed.add(key);
        const r = rnd(4);
        if (r === 0) endpoints.set(key, []);
        else if (r === 1) all.delete(key);
        else if (r === 2) all.set(key, services.find((s) => s.key === key)!);
        else endpoints.set(key, [ep(`10.244.${rnd(3) + 1}.${rnd(200) + 2}`, rnd(2) ? 'n1' : 'n2'), ep('10.244.9.9', 'n9')]);
      }
      const plans = planServices(all, endpoints, node, 4);
      res = renderRules({ full: false, changed, plans, node, config: baseConfig, family: 4 }, {}, { chains: res.chains, top: res.top });
      kernel = applyProgram(kernel, res.text);
      const want = renderRules({ full: true, changed: new Set(), plans, node, config: baseConfig, family: 4 });
      expect(snapshot(kernel), `round ${round}`).toEqual(snapshot(applyProgram(new Map(), want.text)));
    }
  });
});

describe('iptables rules: ClusterIP prefix tree', () => {
  const input = (services: ServicePort[], endpoints: Map<string, Endpoint[]>, full = true, changed: string[] = []): SyncInput => ({
    full,
    changed: new Set(changed),
    plans: planServices(new Map(services.map((s) => [s.key, s])), endpoints, node, 4),
    node,
    config: baseConfig,
    family: 4,
  });
  /** services over three /20s (10.96.0.0/20 twice in one /24 and once in another, 10.96.16.0/20, 10.97.0.0/20) */
  function spread(): { services: ServicePort[]; endpoints: Map<string, Endpoint[]> } {
    const services = [
      sp('a', { clusterIP: '10.96.0.10', nodePort: 30080, externalIPs: ['192.0.2.10'] }),
      sp('b', { clusterIP: '10.96.0.11' }),
      sp('c', { clusterIP: '10.96.5.1', loadBalancerIPs: [{ ip: '198.51.100.7', ipMode: 'VIP' }] }),
      sp('d', { clusterIP: '10.96.17.200' }),
      sp('e', { clusterIP: '10.97.0.1', externalIPs: ['10.96.0.99'] }),
    ];
    const endpoints = new Map(services.map((s, i) => [s.key, [ep(`10.244.2.${i + 10}`, 'n2')]]));
    return { services, endpoints };
  }
  const natChain = (k: Kernel, c: string): string[] => k.get(`nat ${c}`) ?? [];
  const bucketChains = (k: Kernel): string[] => [...k.keys()].filter((c) => /^nat FLATNET-SVC[TL]-/.test(c)).map((c) => c.slice(4)).sort();

  it('bucket names: IPv4 hex of the prefix bits, deterministic, prefix kept', () => {
    expect(clusterIPBuckets('10.96.17.5')).toEqual({
      l1: 'FLATNET-SVCT-0A601',
      l1Cidr: '10.96.16.0/20',
      leaf: 'FLATNET-SVCL-0A6011',
      leafCidr: '10.96.17.0/24',
    });
    expect(clusterIPBuckets('200.255.255.254', 'FT1234X')).toEqual({
      l1: 'FT1234X-SVCT-C8FFF',
      l1Cidr: '200.255.240.0/20',
      leaf: 'FT1234X-SVCL-C8FFFF',
      leafCidr: '200.255.255.0/24',
    });
    expect(clusterIPBuckets('not-an-ip')).toBeUndefined();
  });

  it('IPv6 buckets: /116 and /120, names <= 28 characters', () => {
    const a = clusterIPBuckets('fd00:1234:5678:9abc:def0:1234:5678:9abc', 'ABCDEFG')!;
    expect(a.l1Cidr).toBe('fd00:1234:5678:9abc:def0:1234:5678:9000/116');
    expect(a.leafCidr).toBe('fd00:1234:5678:9abc:def0:1234:5678:9a00/120');
    expect(a.l1).toMatch(/^ABCDEFG-SVCT-[A-Z2-7]{12}$/);
    expect(a.leaf).toMatch(/^ABCDEFG-SVCL-[A-Z2-7]{12}$/);
    expect(a.l1.length).toBeLessThanOrEqual(28);
    expect(a.leaf.length).toBeLessThanOrEqual(28);
    expect(clusterIPBuckets('fd00::10')).toMatchObject({ l1Cidr: 'fd00::/116', leafCidr: 'fd00::/120' });
    const sameLeaf = clusterIPBuckets('fd00:1234:5678:9abc:def0:1234:5678:9a01', 'ABCDEFG')!;
    const sameL1 = clusterIPBuckets('fd00:1234:5678:9abc:def0:1234:5678:9b01', 'ABCDEFG')!;
    const other = clusterIPBuckets('fd00:1234:5678:9abc:def0:1234:5678:a001', 'ABCDEFG')!;
    expect(sameLeaf).toEqual(a);
    expect(sameL1.l1).toBe(a.l1);
    expect(sameL1.leaf).not.toBe(a.leaf);
    expect(other.l1).not.toBe(a.l1);
    // a v6 service is reached through its buckets
    const s = sp('v6', { family: 6, clusterIP: 'fd00:1234:5678:9abc:def0:1234:5678:9abc' });
    const n6 = { ...node, ips: ['fd00:1::1'] };
    const plans = planServices(new Map([[s.key, s]]), new Map([[s.key, [ep('fd00:244::5', 'n2')]]]), n6, 6);
    const res = renderRules({ full: true, changed: new Set(), plans, node: n6, config: { ...baseConfig, clusterCIDRs: ['fd00:244::/56'] }, family: 6 }, { chainPrefix: 'ABCDEFG' });
    expect(res.text).toContain(`-A ABCDEFG-SERVICES -d ${a.l1Cidr} -j ${a.l1}\n`);
    expect(res.text).toContain(`-A ${a.l1} -d ${a.leafCidr} -j ${a.leaf}\n`);
    expect(res.text).toMatch(new RegExp(`^-A ${a.leaf} .*cluster IP.* -j ABCDEFG-SVC-`, 'm'));
    const tr = new IptablesTracer(res.text, { localAddrs: n6.ips, chainPrefix: 'ABCDEFG' });
    expect(tr.trace(tcp('fd00:244::9', s.clusterIP, 80)).endpoints).toEqual(['[fd00:244::5]:8080']);
  });

  it('full sync: bucket jumps first in SERVICES, before externalIP/LB rules and the NodePorts rule (last)', () => {
    const { services, endpoints } = spread();
    const res = renderRules(input(services, endpoints));
    const k = applyProgram(new Map(), res.text);
    const svc = natChain(k, 'FLATNET-SERVICES');
    const kind = (r: string): string =>
      /-j FLATNET-SVCT-/.test(r) ? 'tree' : r.includes('must be the last rule') ? 'nodeports' : /external IP|loadbalancer IP/.test(r) ? 'ext' : r;
    expect(svc.map(kind)).toEqual(['tree', 'tree', 'tree', 'ext', 'ext', 'ext', 'nodeports']);
    expect(svc.slice(0, 3)).toEqual([
      '-d 10.96.0.0/20 -j FLATNET-SVCT-0A600',
      '-d 10.96.16.0/20 -j FLATNET-SVCT-0A601',
      '-d 10.97.0.0/20 -j FLATNET-SVCT-0A610',
    ]);
    expect(svc.some((r) => r.includes('cluster IP'))).toBe(false);
    // level 1 holds only jumps to its leaves
    expect(natChain(k, 'FLATNET-SVCT-0A600')).toEqual(['-d 10.96.0.0/24 -j FLATNET-SVCL-0A6000', '-d 10.96.5.0/24 -j FLATNET-SVCL-0A6005']);
    expect(bucketChains(k)).toEqual([
      'FLATNET-SVCL-0A6000',
      'FLATNET-SVCL-0A6005',
      'FLATNET-SVCL-0A6011',
      'FLATNET-SVCL-0A6100',
      'FLATNET-SVCT-0A600',
      'FLATNET-SVCT-0A601',
      'FLATNET-SVCT-0A610',
    ]);
    expect([...res.buckets].sort()).toEqual(bucketChains(k));
    // traces: every cluster IP through the tree; externalIP inside a bucket's /20 falls through the bucket (jump,
    // not goto) to its externalIP rule; NodePorts still work
    const tr = new IptablesTracer(res.text, { localAddrs: node.ips });
    services.forEach((s, i) => expect(tr.trace(tcp(POD, s.clusterIP, 80)).endpoints, s.name).toEqual([`10.244.2.${i + 10}:8080`]));
    expect(tr.trace(tcp(POD, '10.96.0.12', 80)).verdict).toBe('ACCEPT');
    expect(tr.trace(tcp(OUT, '10.96.0.99', 80)).endpoints).toEqual(['10.244.2.14:8080']);
    expect(tr.trace(tcp(OUT, '192.0.2.10', 80)).endpoints).toEqual(['10.244.2.10:8080']);
    expect(tr.trace(tcp(OUT, '198.51.100.7', 80)).endpoints).toEqual(['10.244.2.12:8080']);
    expect(tr.trace(tcp(OUT, '192.168.0.1', 30080)).endpoints).toEqual(['10.244.2.10:8080']);
  });

  it('services in the same /24 share a leaf', () => {
    const { services, endpoints } = spread();
    const k = applyProgram(new Map(), renderRules(input(services, endpoints)).text);
    const leaf = natChain(k, 'FLATNET-SVCL-0A6000');
    expect(leaf).toHaveLength(2);
    expect(leaf.join('\n')).toContain('-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j ' + serviceChains('ns/a:/TCP/v4').svc);
    expect(leaf.join('\n')).toContain('-d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j ' + serviceChains('ns/b:/TCP/v4').svc);
    expect(natChain(k, 'FLATNET-SVCL-0A6011')).toEqual([
      `-m comment --comment "ns/d cluster IP" -d 10.96.17.200/32 -p tcp -m tcp --dport 80 -j ${serviceChains('ns/d:/TCP/v4').svc}`,
    ]);
  });

  /** full sync, then partial syncs; checks each program against the strict kernel model and a fresh full sync */
  function chainOfSyncs() {
    const { services, endpoints } = spread();
    let res: RenderResult = renderRules(input(services, endpoints));
    let kernel = applyProgram(new Map(), res.text);
    const step = (next: ServicePort[], changed: string[]): RenderResult => {
      res = renderRules(input(next, endpoints, false, changed), {}, { chains: res.chains, top: res.top });
      kernel = applyProgram(kernel, res.text);
      expect(snapshot(kernel)).toEqual(snapshot(applyProgram(new Map(), renderRules(input(next, endpoints)).text)));
      return res;
    };
    return { services, endpoints, step, kernel: () => kernel, res: () => res };
  }

  it('partial sync adding a service in a new /20 declares only the new buckets and jumps to them', () => {
    const c = chainOfSyncs();
    const nw = sp('new', { clusterIP: '10.100.33.4' });
    c.endpoints.set(nw.key, [ep('10.244.2.99', 'n2')]);
    const before = new Map([...c.kernel()].map(([k, r]) => [k, [...r]]));
    const p = c.step([...c.services, nw], [nw.key]);
    const declared = p.text.split('\n').filter((l) => l.startsWith(':'));
    expect(declared.filter((l) => l.includes('-SVC') && !l.includes('-SVC-'))).toEqual([':FLATNET-SVCT-0A642 - [0:0]', ':FLATNET-SVCL-0A6421 - [0:0]']);
    expect(p.text).toContain('\n-I FLATNET-SERVICES 1 -d 10.100.32.0/20 -j FLATNET-SVCT-0A642\n');
    expect(p.text).toContain('\n-A FLATNET-SVCT-0A642 -d 10.100.33.0/24 -j FLATNET-SVCL-0A6421\n');
    expect(p.text).toMatch(/^-I FLATNET-SVCL-0A6421 1 .*"ns\/new cluster IP" -d 10\.100\.33\.4\/32 /m);
    // existing buckets untouched (not flushed), NodePorts still last
    for (const b of bucketChains(before)) expect(natChain(c.kernel(), b)).toEqual(natChain(before, b));
    const svc = natChain(c.kernel(), 'FLATNET-SERVICES');
    expect(svc[svc.length - 1]).toContain('must be the last rule');
    expect(p.chains.nat).toContain('FLATNET-SVCT-0A642');
    expect(p.buckets).toContain('FLATNET-SVCL-0A6421');
    // a new /24 in an existing /20: only the leaf is declared, and its jump appended to the existing level 1
    const nw2 = sp('new2', { clusterIP: '10.96.9.9' });
    c.endpoints.set(nw2.key, [ep('10.244.2.98', 'n2')]);
    const p2 = c.step([...c.services, nw, nw2], [nw2.key]);
    expect(p2.text.split('\n').filter((l) => /^:FLATNET-SVC[TL]-/.test(l))).toEqual([':FLATNET-SVCL-0A6009 - [0:0]']);
    expect(p2.text).toContain('\n-A FLATNET-SVCT-0A600 -d 10.96.9.0/24 -j FLATNET-SVCL-0A6009\n');
    expect(p2.text).not.toContain('-I FLATNET-SERVICES');
  });

  it('partial sync removing the last service of a bucket keeps the bucket; the next full sync deletes it', () => {
    const c = chainOfSyncs();
    const dKey = 'ns/d:/TCP/v4';
    const eKey = 'ns/e:/TCP/v4';
    const rest = c.services.filter((s) => s.key !== dKey && s.key !== eKey);
    const p = c.step(rest, [dKey, eKey]);
    expect(p.text).toMatch(new RegExp(`^-D FLATNET-SVCL-0A6011 .* -j ${serviceChains(dKey).svc}$`, 'm'));
    expect(p.text).not.toMatch(/FLATNET-SVCT-|:FLATNET-SVCL-|-X FLATNET-SVC[TL]/);
    expect(p.deleted.nat.filter((x) => /SVC[TL]-/.test(x))).toEqual([]);
    // the emptied buckets are still owned (referenced) and present, empty
    for (const b of ['FLATNET-SVCT-0A601', 'FLATNET-SVCL-0A6011', 'FLATNET-SVCT-0A610', 'FLATNET-SVCL-0A6100']) {
      expect(p.chains.nat.has(b), b).toBe(true);
      expect(c.kernel().has(`nat ${b}`), b).toBe(true);
    }
    expect(natChain(c.kernel(), 'FLATNET-SVCL-0A6011')).toEqual([]);
    // another partial sync that changes nothing in the tree keeps owning them
    const again = c.step(rest, ['ns/a:/TCP/v4']);
    expect(again.chains.nat.has('FLATNET-SVCL-0A6011')).toBe(true);
    // full sync: the empty buckets and their jumps are gone, the used ones rewritten
    const full = renderRules(input(rest, c.endpoints), {}, { chains: again.chains, top: again.top });
    expect(full.deleted.nat.filter((x) => /SVC[TL]-/.test(x))).toEqual(['FLATNET-SVCL-0A6011', 'FLATNET-SVCL-0A6100', 'FLATNET-SVCT-0A601', 'FLATNET-SVCT-0A610']);
    const k = applyProgram(c.kernel(), full.text);
    expect(bucketChains(k)).toEqual(['FLATNET-SVCL-0A6000', 'FLATNET-SVCL-0A6005', 'FLATNET-SVCT-0A600']);
    expect(natChain(k, 'FLATNET-SERVICES').filter((r) => r.includes('SVCT'))).toEqual(['-d 10.96.0.0/20 -j FLATNET-SVCT-0A600']);
    expect([...full.buckets].sort()).toEqual(bucketChains(k));
    // and a bucket that comes back in a partial sync after that is re-created
    const back = c.services.find((s) => s.key === dKey)!;
    const p2 = renderRules(input([...rest, back], c.endpoints, false, [dKey]), {}, { chains: full.chains, top: full.top });
    expect(p2.text).toContain(':FLATNET-SVCT-0A601 - [0:0]');
    expect(p2.text).toContain(':FLATNET-SVCL-0A6011 - [0:0]');
    expect(natChain(applyProgram(k, p2.text), 'FLATNET-SVCL-0A6011')).toHaveLength(1);
  });
});
