import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../ipam/host-local/config.ts';
import { parseResolvConf } from '../../../../ipam/host-local/dns.ts';
import { CniError, type NetConf } from '../../../../lib/cni/types.ts';
import { formatIP } from '../../../../lib/net/ip.ts';

const conf = (ipam: Record<string, unknown>, extra: Partial<NetConf> = {}): NetConf =>
  ({ cniVersion: '1.0.0', name: 'net', type: 'bridge', ipam: { type: 'host-local', ...ipam }, ...extra }) as NetConf;

function err(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

describe('host-local config', () => {
  it('defaults: gateway .1, start .1 (gateway skipped later), end before broadcast, dataDir', () => {
    const c = loadConfig(conf({ ranges: [[{ subnet: '10.0.0.0/24' }]] }), {});
    const r = c.ranges[0]![0]!;
    expect([formatIP(r.gateway), formatIP(r.rangeStart), formatIP(r.rangeEnd)]).toEqual(['10.0.0.1', '10.0.0.1', '10.0.0.254']);
    expect(c.dataDir).toBe('/var/lib/cni/networks');
    expect(c.routes).toEqual([]);
  });
  it('legacy single subnet form comes first, then ranges', () => {
    const c = loadConfig(conf({ subnet: '10.0.0.0/24', rangeStart: '10.0.0.50', gateway: '10.0.0.254', ranges: [[{ subnet: 'fd00::/64' }]] }), {});
    expect(c.ranges.length).toBe(2);
    expect(formatIP(c.ranges[0]![0]!.rangeStart)).toBe('10.0.0.50');
    expect(formatIP(c.ranges[0]![0]!.gateway)).toBe('10.0.0.254');
    expect(formatIP(c.ranges[1]![0]!.rangeEnd)).toBe('fd00::ffff:ffff:ffff:ffff');
  });
  it('requested IPs from CNI_ARGS, args.cni.ips and runtimeConfig.ips, de-duplicated', () => {
    const c = loadConfig(
      conf({ ranges: [[{ subnet: '10.0.0.0/24' }]] }, { args: { cni: { ips: ['10.0.0.7/24', 'fd00::7'] } }, runtimeConfig: { ips: ['10.0.0.8'] } }),
      { IP: '10.0.0.9,10.0.0.7' },
    );
    expect(c.requestedIPs.map(formatIP)).toEqual(['10.0.0.9', '10.0.0.7', 'fd00::7', '10.0.0.8']);
  });
  it('routes and resolvConf pass through', () => {
    const c = loadConfig(conf({ ranges: [[{ subnet: '10.0.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.0.0.254' }], resolvConf: '/etc/r' }), {});
    expect(c.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.0.0.254' }]);
    expect(c.resolvConf).toBe('/etc/r');
  });

  it.each([
    ['no ipam', { ipam: undefined }, 7],
    ['no ranges', {}, 7],
    ['empty range set', { ranges: [[]] }, 7],
    ['bad CIDR', { ranges: [[{ subnet: '10.0.0.0/33' }]] }, 7],
    ['not a CIDR', { ranges: [[{ subnet: 'banana' }]] }, 7],
    ['host bits set', { ranges: [[{ subnet: '10.0.0.5/24' }]] }, 7],
    ['too small', { ranges: [[{ subnet: '10.0.0.0/31' }]] }, 7],
    ['rangeStart outside', { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.1.5' }]] }, 7],
    ['rangeEnd outside', { ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.1.5' }]] }, 7],
    ['start after end', { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.9', rangeEnd: '10.0.0.5' }]] }, 7],
    ['bad gateway', { ranges: [[{ subnet: '10.0.0.0/24', gateway: 'x' }]] }, 7],
    ['mixed families in a set', { ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]] }, 7],
    ['overlap in a set', { ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: '10.0.0.0/25' }]] }, 7],
    ['overlap across sets', { ranges: [[{ subnet: '10.0.0.0/16' }], [{ subnet: '10.0.3.0/24' }]] }, 7],
    ['bad route', { ranges: [[{ subnet: '10.0.0.0/24' }]], routes: [{ dst: 'nope' }] }, 7],
    ['bad requested ip', { ranges: [[{ subnet: '10.0.0.0/24' }]], __args: ['10.0.0.x'] }, 7],
  ])('%s -> code %i', (_n, ipam, code) => {
    const { __args, ...rest } = ipam as Record<string, unknown>;
    const c = rest.ipam === undefined && 'ipam' in rest ? ({ cniVersion: '1.0.0', name: 'n', type: 't' } as NetConf) : conf(rest, __args ? { args: { cni: { ips: __args as string[] } } } : {});
    expect(err(() => loadConfig(c, {})).code).toBe(code);
  });
  it('a bad IP= in CNI_ARGS is code 4', () => {
    expect(err(() => loadConfig(conf({ ranges: [[{ subnet: '10.0.0.0/24' }]] }), { IP: '10.0.0.300' })).code).toBe(4);
  });
  it('disjoint ranges of one subnet are allowed', () => {
    const c = loadConfig(conf({ ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.0.9' }, { subnet: '10.0.0.0/24', rangeStart: '10.0.0.20' }]] }), {});
    expect(c.ranges[0]!.length).toBe(2);
  });
});

describe('resolv.conf', () => {
  it('reads nameserver, domain, search, options; skips comments', () => {
    expect(parseResolvConf('# c\nnameserver 10.96.0.10\nnameserver fd00::10\ndomain cluster.local\nsearch a.svc b.svc\noptions ndots:5 edns0\n')).toEqual({
      nameservers: ['10.96.0.10', 'fd00::10'],
      domain: 'cluster.local',
      search: ['a.svc', 'b.svc'],
      options: ['ndots:5', 'edns0'],
    });
  });
});
