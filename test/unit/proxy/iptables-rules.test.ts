import { describe, expect, it } from 'vitest';
import { planServices } from '../../../proxy/model/plan.ts';
import type { Endpoint, NodeInfo, ProxyConfigView, ServicePort, SyncInput } from '../../../proxy/model/types.ts';
import { endpointChain, renderRules, serviceChains, topNames } from '../../../proxy/backends/iptables/rules.ts';
import { IptablesTracer, type Packet } from '../../helpers/tracer-iptables.ts';
import { servicePort } from '../../helpers/proxy-fixtures.ts';

const node: NodeInfo = { name: 'n1', ips: ['192.168.0.1'], podCIDRs: ['10.244.1.0/24'], zone: 'za' };
const baseConfig: ProxyConfigView = {
  clusterCIDRs: ['10.244.0.0/16'],
  detectLocalMode: 'ClusterCIDR',
  masqueradeAll: false,
  masqueradeBit: 14,
  nodePortAddresses: [],
};

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

/** chains with their rules; order-insensitive inside the shared per-service chains, ordered elsewhere */
function snapshot(k: Kernel): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [c, rules] of [...k].sort()) {
    const shared = /FLATNET-(SERVICES|EXTERNAL-SERVICES|NODEPORTS|PROXY-FIREWALL)$/.test(c);
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
        `-A FLATNET-SERVICES -m comment --comment "ns/one cluster IP" -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j ${ch.svc}`,
        `-A ${ch.svc} -m comment --comment "ns/one cluster IP" ! -s 10.244.0.0/16 -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j FLATNET-MARK-MASQ`,
        `-A ${ch.svc} -m comment --comment "ns/one -> 10.244.2.5:8080" -j ${sep}`,
        `-A ${sep} -m comment --comment "ns/one" -s 10.244.2.5/32 -j FLATNET-MARK-MASQ`,
        `-A ${sep} -m comment --comment "ns/one" -p tcp -m tcp -j DNAT --to-destination 10.244.2.5:8080`,
      ].sort(),
    );
    expect(res.text).toContain('-A FLATNET-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN');
    expect(res.text).toContain('-A FLATNET-MARK-MASQ -j MARK --or-mark 0x4000');
    for (const name of Object.values(topNames())) expect(res.text).toContain(`:${name} - [0:0]`);
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
    expect(partial.text).toMatch(new RegExp(`^-D FLATNET-SERVICES .* -j ${dnsSvc}$`, 'm'));
    // web's entry rule did not change (same SVC chain): it is neither deleted nor re-inserted
    expect(partial.text).not.toMatch(new RegExp(`^-[DI] FLATNET-SERVICES .* -j ${web.svc}$`, 'm'));
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
