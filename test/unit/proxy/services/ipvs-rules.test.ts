// IPVS backend: generated programs as text, the virtual-server tracer, and the proxier's kernel checks.
import { describe, expect, it } from 'vitest';
import type { RunOptions, RunResult, Runner } from '../../../../lib/exec/runner.ts';
import { IpvsProxier, IpvsUnavailableError, checkIpvsSupport } from '../../../../proxy/services/backends/ipvs/proxier.ts';
import { CHAINS, iptablesProgram, parseIpvsadmSave, renderFull, renderIncremental, ipvsDiff, type VirtualServer } from '../../../../proxy/services/backends/ipvs/rules.ts';
import type { ServicePlan } from '../../../../proxy/services/model/types.ts';
import { IpvsModel, type IpvsPacket } from '../../../helpers/tracer-ipvs.ts';
import { config, ep, plan, svc, syncInput } from '../../../helpers/proxy-plans.ts';

const NODE_IP = '192.168.10.2';
const empty = { vss: new Map<string, VirtualServer>(), addrs: new Set<string>(), linkExists: false };

const web = svc('web', {
  nodePort: 30080,
  externalIPs: ['192.168.10.50'],
  loadBalancerIPs: [{ ip: '192.168.10.60', ipMode: 'VIP' }],
  loadBalancerSourceRanges: ['203.0.113.0/24'],
});
const dns = svc('dns', { clusterIP: '10.96.0.11', protocol: 'UDP', port: 53, nodePort: 30053, externalTrafficPolicyLocal: true });
const sticky = svc('sticky', { clusterIP: '10.96.0.14', affinityTimeoutSeconds: 60, protocol: 'SCTP' });
const none = svc('none', { clusterIP: '10.96.0.12' });
const term = svc('term', { clusterIP: '10.96.0.15' });

function plans(): ServicePlan[] {
  return [
    plan(web, [ep('10.244.1.2'), ep('10.244.2.3')]),
    plan(dns, [ep('10.244.1.5', 53, { isLocal: true }), ep('10.244.2.5', 53)]),
    plan(sticky, [ep('10.244.1.21'), ep('10.244.2.22')]),
    plan(none, []),
    plan(term, [ep('10.244.1.30'), ep('10.244.1.31', 8080, { ready: false, terminating: true })]),
  ];
}

function loaded(ps = plans(), cfg = config) {
  const r = renderFull(syncInput(ps, { config: cfg }), empty);
  const m = new IpvsModel();
  m.applyDummy(r.programs.dummy);
  m.applyIpset(r.programs.ipset);
  m.applyIpvsadm(r.programs.ipvs);
  m.applyIptables(r.programs.iptables!);
  return { r, m };
}

const env = { localAddrs: [NODE_IP], chains: { services: CHAINS.services, firewall: CHAINS.firewall, postrouting: CHAINS.postrouting } };
const pkt = (src: string, dst: string, dport: number, proto: IpvsPacket['proto'] = 'tcp', origin: IpvsPacket['origin'] = 'remote'): IpvsPacket => ({ src, dst, dport, proto, origin });
const view = (o: ReturnType<IpvsModel['trace']>) => o.map((x) => `${x.verdict} ${x.dst}:${x.dport}${x.masquerade ? ' masq' : ''}${x.persistence ? ` p${x.persistence}` : ''}`).sort();

describe('ipvs rules: programs', () => {
  it('virtual servers, real servers, persistence, weights and protocols', () => {
    const { r } = loaded();
    const lines = r.programs.ipvs.trim().split('\n');
    expect(lines).toContain('-A -t 10.96.0.10:80 -s rr');
    expect(lines).toContain('-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1');
    expect(lines).toContain('-A -t 192.168.10.2:30080 -s rr');
    expect(lines).toContain('-A -u 192.168.10.2:30053 -s rr');
    expect(lines.filter((l) => l.startsWith('-a -u 192.168.10.2:30053'))).toEqual(['-a -u 192.168.10.2:30053 -r 10.244.1.5:53 -m -w 1']);
    expect(lines).toContain('-A --sctp-service 10.96.0.14:80 -s rr -p 60');
    expect(lines).toContain('-a -t 10.96.0.15:80 -r 10.244.1.31:8080 -m -w 0');
    expect(lines).toContain('-A -t 10.96.0.12:80 -s rr');
    expect(lines.some((l) => l.startsWith('-a -t 10.96.0.12:80'))).toBe(false);
    expect(r.programs.ipvs).not.toMatch(/^-C/m);
  });

  it('dummy addresses and ipsets', () => {
    const { r } = loaded();
    expect(r.programs.dummy.split('\n').slice(0, 2)).toEqual(['link add flatnet-ipvs0 type dummy', 'link set flatnet-ipvs0 up']);
    expect(r.programs.dummy).toContain('addr add 192.168.10.60/32 dev flatnet-ipvs0');
    expect(r.programs.dummy).not.toContain(NODE_IP);
    expect(r.programs.ipset).toContain('add FLATNET-CLUSTER-IP-T 10.96.0.10,tcp:80 -exist');
    expect(r.programs.ipset).toContain('add FLATNET-LOOP-BACK-T 10.244.1.2,tcp:8080,10.244.1.2 -exist');
    expect(r.programs.ipset).toContain('add FLATNET-NODE-PORT-LOCAL-UDP-T 30053 -exist');
    expect(r.programs.ipset).toContain('add FLATNET-LOAD-BALANCER-SOURCE-CIDR-T 192.168.10.60,tcp:80,203.0.113.0/24 -exist');
    expect(r.programs.ipset).toContain('swap FLATNET-CLUSTER-IP-T FLATNET-CLUSTER-IP');
  });

  it('a full sync diffs against the kernel table instead of clearing it', () => {
    const first = loaded().r;
    const kernel = parseIpvsadmSave(first.programs.ipvs.replace(/^-A (.*) -s rr/gm, '-A $1 -s rr'));
    const again = renderFull(syncInput(plans()), { vss: kernel, addrs: new Set(['10.96.0.10', '10.96.0.99']), linkExists: true });
    expect(again.programs.ipvs).toBe('');
    expect(again.programs.dummy).toContain('addr del 10.96.0.99/32 dev flatnet-ipvs0');
    expect(again.programs.dummy).not.toContain('link add');
    // a foreign virtual server of the other family is left alone
    const withV6 = new Map(kernel);
    withV6.set('tcp|fd00::1|80', { proto: 'tcp', addr: 'fd00::1', port: 80, scheduler: 'rr', reals: [] });
    expect(renderFull(syncInput(plans()), { vss: withV6, addrs: new Set(), linkExists: true }).programs.ipvs).not.toContain('fd00::1');
    // so is a foreign virtual server on an address flatnet does not manage; a stale one on our dummy goes
    const foreign = new Map(kernel);
    foreign.set('tcp|172.16.0.1|443', { proto: 'tcp', addr: '172.16.0.1', port: 443, scheduler: 'rr', reals: [] });
    foreign.set('tcp|10.96.0.99|80', { proto: 'tcp', addr: '10.96.0.99', port: 80, scheduler: 'rr', reals: [] });
    const f = renderFull(syncInput(plans()), { vss: foreign, addrs: new Set(['10.96.0.99']), linkExists: true });
    expect(f.programs.ipvs).toBe('-D -t 10.96.0.99:80\n');
  });

  it('incremental: only the changed service, with minimal real-server edits', () => {
    const { r, m } = loaded();
    const ps = plans();
    ps[0] = plan(web, [ep('10.244.1.2'), ep('10.244.3.4')]);
    const inc = renderIncremental(syncInput(ps, { full: false, changed: new Set([web.key]) }), r.state);
    expect(inc.programs.iptables).toBeUndefined();
    const lines = inc.programs.ipvs.trim().split('\n');
    expect(lines).toContain('-d -t 10.96.0.10:80 -r 10.244.2.3:8080');
    expect(lines).toContain('-a -t 10.96.0.10:80 -r 10.244.3.4:8080 -m -w 1');
    expect(inc.programs.ipvs).not.toMatch(/10\.96\.0\.1[1-5]|10\.244\.1\.2:8080/);
    expect(inc.programs.ipset.trim().split('\n').sort()).toEqual([
      'add FLATNET-LOOP-BACK 10.244.3.4,tcp:8080,10.244.3.4 -exist',
      'del FLATNET-LOOP-BACK 10.244.2.3,tcp:8080,10.244.2.3 -exist',
    ]);
    m.applyIpvsadm(inc.programs.ipvs);
    m.applyIpset(inc.programs.ipset);
    expect(view(m.trace(pkt('10.244.1.9', '10.96.0.10', 80), env))).toEqual(['ipvs 10.244.1.2:8080', 'ipvs 10.244.3.4:8080']);
    // deleting a service removes its virtual servers and addresses
    const ps2 = ps.filter((p) => p.svc.key !== web.key);
    const del = renderIncremental(syncInput(ps2, { full: false, changed: new Set([web.key]) }), inc.state);
    expect(del.programs.ipvs.trim().split('\n').sort()).toEqual(['-D -t 10.96.0.10:80', '-D -t 192.168.10.2:30080', '-D -t 192.168.10.50:80', '-D -t 192.168.10.60:80']);
    expect(del.programs.dummy.trim().split('\n').sort()).toEqual([
      'addr del 10.96.0.10/32 dev flatnet-ipvs0',
      'addr del 192.168.10.50/32 dev flatnet-ipvs0',
      'addr del 192.168.10.60/32 dev flatnet-ipvs0',
    ]);
    m.applyIpvsadm(del.programs.ipvs);
    m.applyDummy(del.programs.dummy);
    m.applyIpset(del.programs.ipset);
    expect(view(m.trace(pkt('10.244.1.9', '10.96.0.10', 80), env))).toEqual(['forward 10.96.0.10:80']);
  });

  it('affinity change edits the virtual server in place', () => {
    const cur = new Map([['tcp|10.96.0.10|80', { proto: 'tcp' as const, addr: '10.96.0.10', port: 80, scheduler: 'rr', reals: [{ addr: '10.244.1.2', port: 80, weight: 1 }] }]]);
    const want = new Map([['tcp|10.96.0.10|80', { ...cur.get('tcp|10.96.0.10|80')!, persistence: 30 }]]);
    expect(ipvsDiff(cur, want)).toBe('-E -t 10.96.0.10:80 -s rr -p 30\n');
  });

  it('IPv6 uses bracketed addresses, /128 and FLATNET6- sets', () => {
    const s6 = svc('web6', { family: 6, clusterIP: 'fd00:10:96::10' });
    const r = renderFull(
      syncInput([plan(s6, [ep('fd00:10:244:1::2')])], { family: 6, node: { name: 'n', ips: ['fd00::2'], podCIDRs: ['fd00:10:244:1::/64'] } }),
      empty,
    );
    expect(r.programs.ipvs).toContain('-a -t [fd00:10:96::10]:80 -r [fd00:10:244:1::2]:8080 -m -w 1');
    expect(r.programs.dummy).toContain('addr add fd00:10:96::10/128 dev flatnet-ipvs0');
    expect(r.programs.ipset).toContain('create FLATNET6-CLUSTER-IP hash:ip,port family inet6 -exist');
    expect(parseIpvsadmSave(r.programs.ipvs).get('tcp|fd00:10:96::10|80')!.reals).toEqual([{ addr: 'fd00:10:244:1::2', port: 8080, weight: 1 }]);
  });

  it('iptables: detect-local variants and masqueradeAll', () => {
    expect(iptablesProgram(config, [], 4)).toContain('-A FLATNET-IPVS-SERVICES ! -s 10.244.0.0/16 -m set --match-set FLATNET-CLUSTER-IP dst,dst -j FLATNET-IPVS-MARK-MASQ');
    expect(iptablesProgram({ ...config, masqueradeAll: true }, [], 4)).toContain('-A FLATNET-IPVS-SERVICES -m set --match-set FLATNET-CLUSTER-IP dst,dst -j FLATNET-IPVS-MARK-MASQ');
    expect(iptablesProgram({ ...config, detectLocalMode: 'InterfaceNamePrefix', detectLocalInterface: 'veth' }, [], 4)).toContain('! -i veth+ -m set');
    expect(iptablesProgram({ ...config, masqueradeBit: 5 }, [], 4)).toContain('-j MARK --or-mark 0x20');
  });
});

describe('ipvs tracer over the virtual-server table', () => {
  const { m } = loaded();
  const cases: [string, IpvsPacket, string[]][] = [
    ['pod -> ClusterIP: rr over both, not masqueraded', pkt('10.244.1.9', '10.96.0.10', 80), ['ipvs 10.244.1.2:8080', 'ipvs 10.244.2.3:8080']],
    ['outside -> ClusterIP: masqueraded', pkt('198.51.100.7', '10.96.0.10', 80), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080 masq']],
    ['host -> ClusterIP: masqueraded', pkt(NODE_IP, '10.96.0.10', 80, 'tcp', 'host'), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080 masq']],
    ['outside -> NodePort eTP Cluster: masqueraded', pkt('198.51.100.7', NODE_IP, 30080), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080 masq']],
    ['outside -> externalIP: masqueraded', pkt('198.51.100.7', '192.168.10.50', 80), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080 masq']],
    ['allowed source -> LB', pkt('203.0.113.9', '192.168.10.60', 80), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080 masq']],
    ['other source -> LB: dropped', pkt('198.51.100.7', '192.168.10.60', 80), ['drop 192.168.10.60:80']],
    ['outside -> NodePort eTP Local: local endpoint, client IP kept', pkt('198.51.100.7', NODE_IP, 30053, 'udp'), ['ipvs 10.244.1.5:53']],
    ['host -> NodePort eTP Local: masqueraded', pkt(NODE_IP, NODE_IP, 30053, 'udp', 'host'), ['ipvs 10.244.1.5:53 masq']],
    ['affinity: persistence timeout', pkt('10.244.1.9', '10.96.0.14', 80, 'sctp'), ['ipvs 10.244.1.21:8080 p60', 'ipvs 10.244.2.22:8080 p60']],
    ['no endpoints: rejected by IPVS', pkt('10.244.1.9', '10.96.0.12', 80), ['reject 10.96.0.12:80']],
    ['terminating endpoint gets weight 0 while a ready one exists', pkt('10.244.1.9', '10.96.0.15', 80), ['ipvs 10.244.1.30:8080']],
    ['hairpin: endpoint through its own service is masqueraded', pkt('10.244.1.2', '10.96.0.10', 80), ['ipvs 10.244.1.2:8080 masq', 'ipvs 10.244.2.3:8080']],
    ['unknown port on a ClusterIP: delivered locally (no listener: RST)', pkt('10.244.1.9', '10.96.0.10', 81), ['local 10.96.0.10:81']],
    ['unrelated traffic: forwarded untouched', pkt('10.244.1.9', '192.0.2.1', 53, 'udp'), ['forward 192.0.2.1:53']],
  ];
  it.each(cases)('%s', (_name, p, want) => {
    expect(view(m.trace(p, env))).toEqual(want);
  });

  it('the tracer is strict', () => {
    const x = new IpvsModel();
    expect(() => x.applyIpvsadm('-a -t 10.0.0.1:80 -r 10.1.1.1:80 -m -w 1\n')).toThrow(/no virtual server/);
    expect(() => x.applyIpvsadm('-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n')).toThrow(/exists/);
    expect(() => x.applyDummy('addr add 10.0.0.1/32 dev flatnet-ipvs0\n')).toThrow(/missing dummy/);
    expect(() => x.applyIpset('add NOPE 1 -exist\n')).toThrow(/no set/);
    expect(() => x.applyIpvsadm('-C\n')).toThrow();
  });
});

class FakeRunner implements Runner {
  calls: string[] = [];
  inputs: string[] = [];
  private readonly fail: (argv: string) => boolean;
  constructor(fail: (argv: string) => boolean) {
    this.fail = fail;
  }
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const a = argv.join(' ');
    this.calls.push(a);
    if (opts.input) this.inputs.push(`${a}\n${opts.input}`);
    const code = this.fail(a) ? 1 : 0;
    if (code && !opts.allowFail) throw new Error(`${a} failed`);
    const stdout = a.startsWith('ip -j addr') ? '[]' : '';
    return { code, stdout, stderr: code ? 'modprobe: FATAL: Module ip_vs not found' : '' };
  }
}

describe('ipvs proxier', () => {
  it('refuses to start without IPVS, with a clear error', async () => {
    const r = new FakeRunner((a) => a.startsWith('test -e /proc/net/ip_vs') || a.startsWith('modprobe'));
    const err = await checkIpvsSupport(r).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpvsUnavailableError);
    expect(String(err)).toMatch(/no IPVS .*modprobe ip_vs.*Module ip_vs not found.*nftables or iptables/);
  });
  it('refuses to start without dummy interfaces', async () => {
    const r = new FakeRunner((a) => a.startsWith('ip link show') || a.startsWith('ip link add'));
    await expect(checkIpvsSupport(r)).rejects.toThrow(/dummy interface flatnet-ipvs0/);
  });
  it('full then incremental sync apply the programs in order through the Runner', async () => {
    const r = new FakeRunner(() => false);
    const log = { debug() {}, info() {}, warn() {}, error() {} };
    const p = new IpvsProxier({ family: 4, runner: r, log, iptablesMode: 'nft' });
    await p.sync(syncInput(plans()));
    const order = r.inputs.map((x) => x.split('\n')[0]);
    expect(order).toEqual(['ip -batch -', 'ipset restore', 'ipvsadm-restore', 'iptables-nft-restore --noflush -w']);
    expect(r.calls.some((c) => c.startsWith('ipvsadm -S -n'))).toBe(true);
    r.inputs = [];
    r.calls = [];
    const ps = plans();
    ps[3] = plan(none, [ep('10.244.1.40')]);
    await p.sync(syncInput(ps, { full: false, changed: new Set([none.key]) }));
    expect(r.calls.some((c) => c.startsWith('ipvsadm -S'))).toBe(false);
    expect(r.inputs.map((x) => x.split('\n')[0])).toEqual(['ipset restore', 'ipvsadm-restore']);
    expect(r.inputs[1]).toContain('-a -t 10.96.0.12:80 -r 10.244.1.40:8080 -m -w 1');
  });
});
