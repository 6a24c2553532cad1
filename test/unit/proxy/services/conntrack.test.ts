import { describe, expect, it } from 'vitest';
import { planConntrackCleanup, runConntrackCleanup } from '../../../../proxy/services/conntrack/stale.ts';
import type { Endpoint, ServicePlan, ServicePort } from '../../../../proxy/services/model/types.ts';
import type { RunOptions, RunResult, Runner } from '../../../../lib/exec/runner.ts';
import { servicePort } from '../../../helpers/proxy-fixtures.ts';

const svc = (over: Partial<ServicePort> = {}): ServicePort =>
  servicePort({ namespace: 'ns', name: 'dns', portName: 'dns', protocol: 'UDP', clusterIP: '10.96.0.10', port: 53, ...over });
const ep = (ip: string): Endpoint => ({ ip, port: 53, ready: true, serving: true, terminating: false, isLocal: false });
const plan = (s: ServicePort, eps: Endpoint[]): ServicePlan => ({ svc: s, clusterEndpoints: eps, localEndpoints: [], hasEndpointsElsewhere: false });
const K = 'ns/dns:dns/UDP/v4';

describe('planConntrackCleanup', () => {
  it('deletes entries NATed to a removed UDP endpoint', () => {
    const s = svc({ nodePort: 30053, externalIPs: ['192.0.2.1'] });
    const cmds = planConntrackCleanup(new Map([[K, plan(s, [ep('10.244.1.2'), ep('10.244.1.3')])]]), new Map([[K, plan(s, [ep('10.244.1.3')])]]), [K]);
    expect(cmds.map((c) => c.join(' '))).toEqual([
      'conntrack -D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2',
      'conntrack -D -p udp --orig-dst 192.0.2.1 --dst-nat 10.244.1.2',
      'conntrack -D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.2',
    ]);
  });

  it('clears entries for a service that gets its first endpoint', () => {
    const s = svc();
    const cmds = planConntrackCleanup(new Map([[K, plan(s, [])]]), new Map([[K, plan(s, [ep('10.244.1.2')])]]), [K]);
    expect(cmds.map((c) => c.join(' '))).toEqual(['conntrack -D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53']);
  });

  it('a replaced backend yields only the stale-endpoint deletion', () => {
    const s = svc();
    const cmds = planConntrackCleanup(new Map([[K, plan(s, [ep('10.244.1.2')])]]), new Map([[K, plan(s, [ep('10.244.1.9')])]]), [K]);
    expect(cmds.map((c) => c.join(' '))).toEqual(['conntrack -D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2']);
  });

  it('ignores TCP and unchanged keys, handles deletion and IPv6', () => {
    const t = svc({ protocol: 'TCP', key: 'ns/t:/TCP/v4' });
    expect(planConntrackCleanup(new Map([[t.key, plan(t, [ep('10.0.0.1')])]]), new Map(), [t.key])).toEqual([]);
    const s = svc();
    expect(planConntrackCleanup(new Map([[K, plan(s, [ep('10.0.0.1')])]]), new Map(), [])).toEqual([]);
    expect(planConntrackCleanup(new Map([[K, plan(s, [ep('10.0.0.1')])]]), new Map(), [K])).toHaveLength(1);
    const s6 = svc({ family: 6, clusterIP: 'fd00::a', key: 'ns/dns:dns/UDP/v6' });
    const c6 = planConntrackCleanup(new Map([[s6.key, plan(s6, [ep('fd00::1')])]]), new Map([[s6.key, plan(s6, [])]]), [s6.key]);
    expect(c6[0]).toEqual(['conntrack', '-f', 'ipv6', '-D', '-p', 'udp', '--orig-dst', 'fd00::a', '--dst-nat', 'fd00::1']);
  });
});

describe('runConntrackCleanup', () => {
  it('tolerates exit 1 (nothing matched) and fails on worse', async () => {
    const calls: string[][] = [];
    const runner = (code: number): Runner => ({
      run(argv: readonly string[], _o?: RunOptions): Promise<RunResult> {
        calls.push([...argv]);
        return Promise.resolve({ code, stdout: '', stderr: 'x' });
      },
    });
    expect(await runConntrackCleanup(runner(1), [['conntrack', '-D']])).toBe(1);
    await expect(runConntrackCleanup(runner(2), [['conntrack', '-D']])).rejects.toThrow(/failed/);
  });
});

describe('conntrackSysctls', () => {
  it('maps the conntrack section to sysctls, only for fields given', async () => {
    const { conntrackSysctls } = await import('../../../../proxy/services/conntrack/sysctls.ts');
    expect(conntrackSysctls({}, 4)).toEqual([]);
    expect(conntrackSysctls({ maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: '24h0m0s', udpTimeout: '30s', tcpBeLiberal: true }, 2)).toEqual([
      { key: 'net.netfilter.nf_conntrack_max', value: '131072' },
      { key: 'net.netfilter.nf_conntrack_tcp_timeout_established', value: '86400' },
      { key: 'net.netfilter.nf_conntrack_udp_timeout', value: '30' },
      { key: 'net.netfilter.nf_conntrack_tcp_be_liberal', value: '1' },
    ]);
    expect(() => conntrackSysctls({ udpTimeout: 'soon' }, 1)).toThrow(/invalid duration/);
  });
});
