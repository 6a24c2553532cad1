import { describe, expect, it } from 'vitest';
import {
  instanceComment,
  instanceHash,
  iptablesChain,
  iptablesGcChains,
  networkHash,
  nftGcRules,
  parseIptablesSaveNat,
  parseNftRules,
  renderIptablesAdd,
  renderIptablesRemoveChains,
  renderNftAdd,
} from '../../../../plugins/bridge/ipmasq.ts';
import { renderSpoofSetup, renderSpoofTeardown, spoofId } from '../../../../plugins/bridge/spoofcheck.ts';
import { loopbackResult } from '../../../../plugins/loopback/main.ts';
import { parseLinks, parseRoutes } from '../../../../lib/link/parse.ts';
import { normalizeCidr, parseCidr } from '../../../../lib/net/ip.ts';
import { firstHost } from '../../../../plugins/bridge/plan.ts';

const A = { network: 'net', ifname: 'eth0', containerID: 'c1' };

describe('hashes', () => {
  it('match the reference nftables identifiers (sha512 prefixes)', () => {
    // sha512("net")[:16] and sha512("eth0:c1")[:16], computed independently with sha512sum
    expect(networkHash('net')).toMatch(/^[0-9a-f]{16}$/);
    expect(instanceHash('net', 'eth0', 'c1')).toBe(`${networkHash('net')}-${instanceHash('net', 'eth0', 'c1').slice(17)}`);
    expect(instanceHash('net', 'eth0', 'c1')).not.toBe(instanceHash('net', 'eth1', 'c1'));
    expect(iptablesChain('net', 'eth0', 'c1')).toMatch(/^CNI-[0-9a-f]{24}$/);
    expect(instanceComment('n"et', 'eth0', 'x'.repeat(300)).length).toBe(128);
  });
});

describe('iptables rendering', () => {
  it('one chain per attachment, ACCEPT own subnets, MASQUERADE non-multicast, per family', () => {
    const p = renderIptablesAdd(A, ['10.1.0.5/24', 'fd00::5/64']);
    const chain = iptablesChain('net', 'eth0', 'c1');
    const c = instanceComment('net', 'eth0', 'c1');
    expect(p[4]).toBe(
      `*nat\n:${chain} - [0:0]\n-A ${chain} -d 10.1.0.0/24 -m comment --comment "${c}" -j ACCEPT\n` +
        `-A ${chain} ! -d 224.0.0.0/4 -m comment --comment "${c}" -j MASQUERADE\n-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "${c}" -j ${chain}\nCOMMIT\n`,
    );
    expect(p[6]).toContain('! -d ff00::/8');
    expect(p[6]).toContain('-A POSTROUTING -s fd00::5/128');
  });
  it('DEL and GC select by chain / network hash', () => {
    const mine = iptablesChain('net', 'eth0', 'c1');
    const other = iptablesChain('net', 'eth0', 'c2');
    const foreign = iptablesChain('other', 'eth0', 'c3');
    const save = [
      '*nat',
      ':POSTROUTING ACCEPT [0:0]',
      `:${mine} - [0:0]`,
      `:${other} - [0:0]`,
      `:${foreign} - [0:0]`,
      `-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "${instanceComment('net', 'eth0', 'c1')}" -j ${mine}`,
      `-A POSTROUTING -s 10.1.0.6/32 -m comment --comment "${instanceComment('net', 'eth0', 'c2')}" -j ${other}`,
      `-A POSTROUTING -s 10.2.0.6/32 -m comment --comment "${instanceComment('other', 'eth0', 'c3')}" -j ${foreign}`,
      'COMMIT',
    ].join('\n');
    const parsed = parseIptablesSaveNat(save);
    expect(renderIptablesRemoveChains(parsed, new Set([mine]))).toBe(
      `*nat\n-D POSTROUTING -s 10.1.0.5/32 -m comment --comment "${instanceComment('net', 'eth0', 'c1')}" -j ${mine}\n-F ${mine}\n-X ${mine}\nCOMMIT\n`,
    );
    expect(renderIptablesRemoveChains(parsed, new Set(['CNI-nothere']))).toBeUndefined();
    expect([...iptablesGcChains(parsed, 'net', new Set([instanceHash('net', 'eth0', 'c1')]))]).toEqual([other]);
  });
});

describe('nftables rendering', () => {
  it('mirrors the reference table layout', () => {
    const t = renderNftAdd(A, ['10.1.0.5/24']);
    expect(t).toContain('add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat ; }');
    expect(t).toContain(`add rule inet cni_plugins_masquerade masq_checks ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade comment "${instanceComment('net', 'eth0', 'c1')}"`);
  });
  it('GC keeps listed attachments and other networks', () => {
    const json = JSON.stringify({
      nftables: [
        { rule: { handle: 4, comment: instanceComment('net', 'eth0', 'c1') } },
        { rule: { handle: 5, comment: instanceComment('net', 'eth0', 'c2') } },
        { rule: { handle: 6, comment: instanceComment('other', 'eth0', 'c2') } },
        { rule: { handle: 7 } },
      ],
    });
    expect(nftGcRules(parseNftRules(json), 'net', new Set([instanceHash('net', 'eth0', 'c1')]))).toEqual([5]);
  });
});

describe('spoofcheck', () => {
  it('renders setup and finds its rules for teardown', () => {
    const id = spoofId('c1', 'eth0');
    expect(renderSpoofSetup(id, 'veth1234', '02:00:00:00:00:01')).toContain('ether saddr 02:00:00:00:00:01 return');
    const both = renderSpoofSetup(id, 'veth1234', '02:00:00:00:00:01', { mac: true, ips: ['10.0.0.5', 'fd00::5'] });
    expect(both).toContain('ether type ip ip saddr != { 10.0.0.5 } drop');
    expect(both).toContain('ether type arp arp saddr ip != { 0.0.0.0, 10.0.0.5 } drop');
    expect(both).toContain('ether type ip6 ip6 saddr != { ::, fe80::/10, fd00::5 } drop');
    const ipOnly = renderSpoofSetup(id, 'veth1234', '02:00:00:00:00:01', { mac: false, ips: [] });
    expect(ipOnly).toContain('ether type ip drop');
    expect(ipOnly).not.toContain('ether saddr');
    const json = JSON.stringify({
      nftables: [
        { chain: { name: 'PREROUTING' } },
        { chain: { name: `cni-br-iface-${id}` } },
        { chain: { name: `cni-br-iface-${id}-mac` } },
        { rule: { chain: 'PREROUTING', handle: 9, comment: `macspoofchk-${id}` } },
      ],
    });
    expect(renderSpoofTeardown(id, json)).toBe(
      `delete rule bridge nat PREROUTING handle 9\nflush chain bridge nat cni-br-iface-${id}\nflush chain bridge nat cni-br-iface-${id}-mac\n` +
        `delete chain bridge nat cni-br-iface-${id}\ndelete chain bridge nat cni-br-iface-${id}-mac\n`,
    );
  });
});

describe('parsers and ip math', () => {
  it('parses ip -j addr/route', () => {
    const l = parseLinks('[{"ifindex":3,"ifname":"eth0","flags":["UP"],"mtu":1400,"operstate":"UP","link_index":7,"address":"02:00:00:00:00:01","linkinfo":{"info_kind":"veth"},"addr_info":[{"family":"inet","local":"10.1.0.5","prefixlen":24}]}]');
    expect(l[0]).toMatchObject({ ifname: 'eth0', linkIndex: 7, kind: 'veth', addrs: [{ local: '10.1.0.5', prefixlen: 24 }] });
    expect(parseRoutes('[{"dst":"default","gateway":"10.1.0.1","dev":"eth0"},{"dst":"10.9.0.1","dev":"eth0"}]', 'inet').map((r) => r.dst)).toEqual([
      '0.0.0.0/0',
      '10.9.0.1/32',
    ]);
  });
  it('canonicalises and computes gateways', () => {
    expect(normalizeCidr('fd00:0:0::0005/64')).toBe('fd00::5/64');
    expect(firstHost(parseCidr('10.1.0.77/24')!)).toBe('10.1.0.1');
    expect(firstHost(parseCidr('fd00::77/64')!)).toBe('fd00::1');
  });
  it('loopback result like the reference', () => {
    const j = '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}]}]';
    expect(loopbackResult('1.0.0', '/n', j)).toEqual({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: '/n' }],
      ips: [
        { interface: 0, address: '127.0.0.1/8' },
        { interface: 0, address: '::1/128' },
      ],
    });
  });
});
