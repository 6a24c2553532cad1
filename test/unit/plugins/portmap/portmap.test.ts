import { describe, expect, it } from 'vitest';
import { CniError, type CniResult, type NetConf } from '../../../../lib/cni/types.ts';
import { containerAddr, containerIPs, parseConfig, parseMappings } from '../../../../plugins/portmap/config.ts';
import {
  dnatChainName,
  dnatComment,
  markHex,
  nftTag,
  parseDnatComment,
  parseNftTag,
  planIptables,
  planNft,
  planNftJumps,
} from '../../../../plugins/portmap/plan.ts';

const conf = (extra: Record<string, unknown> = {}, portMappings: unknown = []): NetConf => ({
  cniVersion: '1.0.0',
  name: 'net1',
  type: 'portmap',
  runtimeConfig: { portMappings },
  ...extra,
});

describe('ip helpers', () => {
  it.each([
    ['10.1.2.3/24', '10.1.2.3', '10.1.2.0/24'],
    ['10.1.2.3/32', '10.1.2.3', '10.1.2.3/32'],
    ['0.0.0.0/0', '0.0.0.0', '0.0.0.0/0'],
    ['fd00:77:0:0:0:0:0:5/64', 'fd00:77::5', 'fd00:77::/64'],
    ['2001:DB8::1:0:0:1/48', '2001:db8::1:0:0:1', '2001:db8::/48'],
  ])('containerAddr(%s)', (cidr, ip, network) => {
    expect(containerAddr(cidr)).toMatchObject({ ip, network });
  });
  it.each(['10.0.0.1/33', 'x/1', '10.0.0/8', 'fd00::/129', '10.0.0.1/8/8', '::ffff:10.0.0.1/128'])('rejects %s', (c) => {
    expect(() => containerAddr(c)).toThrow(/invalid CIDR/);
  });
});

describe('parseConfig', () => {
  it('applies the reference defaults', () => {
    const c = parseConfig(conf());
    expect(c).toMatchObject({ snat: true, masqAll: false, markMasqBit: 13, backend: 'iptables', conditionsV4: [], conditionsV6: [], mappings: [] });
  });

  it('normalizes mappings: protocol case and default, hostIP family and wildcard', () => {
    const m = parseMappings([
      { hostPort: 80, containerPort: 8080 },
      { hostPort: 81, containerPort: 81, protocol: 'UDP', hostIP: '' },
      { hostPort: 82, containerPort: 82, protocol: 'sctp', hostIP: '0.0.0.0' },
      { hostPort: 83, containerPort: 83, protocol: 'tcp', hostIP: 'FD00::0:1' },
      { hostPort: 84, containerPort: 84, protocol: 'tcp', hostIP: '::' },
    ]);
    expect(m).toEqual([
      { hostPort: 80, containerPort: 8080, protocol: 'tcp', families: [4, 6] },
      { hostPort: 81, containerPort: 81, protocol: 'udp', families: [4, 6] },
      { hostPort: 82, containerPort: 82, protocol: 'sctp', families: [4] },
      { hostPort: 83, containerPort: 83, protocol: 'tcp', hostIP: 'fd00::1', families: [6] },
      { hostPort: 84, containerPort: 84, protocol: 'tcp', families: [6] },
    ]);
  });

  it("accepts containerd 1.6's Go-cased keys (HostPort, ContainerPort, Protocol, HostIP) like the reference", () => {
    const m = parseMappings([
      { HostPort: 18080, ContainerPort: 8080, Protocol: 'tcp', HostIP: '' },
      { HostPort: 18081, ContainerPort: 8081, Protocol: 'UDP', HostIP: '10.0.0.1' },
    ]);
    expect(m).toEqual([
      { hostPort: 18080, containerPort: 8080, protocol: 'tcp', families: [4, 6] },
      { hostPort: 18081, containerPort: 8081, protocol: 'udp', hostIP: '10.0.0.1', families: [4] },
    ]);
  });

  it('accepts duplicate hostPorts, as the reference does', () => {
    const m = parseMappings([{ hostPort: 1, containerPort: 1 }, { hostPort: 1, containerPort: 2, protocol: 'TCP' }]);
    expect(m.map((x) => x.containerPort)).toEqual([1, 2]);
  });

  it('takes nftables conditions with the nftables backend, and the caller-decided default backend', () => {
    const c = parseConfig(conf({ backend: 'nftables', conditionsV4: ['ip saddr 10.0.0.0/8'] }, [{ hostPort: 1, containerPort: 1 }]));
    expect(c.conditionsV4).toEqual(['ip saddr 10.0.0.0/8']);
    expect(parseConfig(conf({ conditionsV4: ['ip saddr 10.0.0.0/8'] }, []), 'nftables').backend).toBe('nftables');
    expect(parseConfig(conf({}, [])).backend).toBe('iptables');
    expect(planNftJumps(c)).toEqual([
      'meta nfproto ipv4 ip saddr 10.0.0.0/8 fib daddr type local jump hostip_hostports',
      'meta nfproto ipv4 ip saddr 10.0.0.0/8 fib daddr type local jump hostports',
      'meta nfproto ipv6 fib daddr type local jump hostip_hostports',
      'meta nfproto ipv6 fib daddr type local jump hostports',
    ]);
  });

  it('accepts the same hostPort on different hostIPs and protocols', () => {
    const m = parseMappings([
      { hostPort: 54321, containerPort: 80, protocol: 'TCP', hostIP: '10.0.0.1' },
      { hostPort: 54321, containerPort: 80, protocol: 'TCP', hostIP: '10.0.0.2' },
      { hostPort: 54321, containerPort: 80, protocol: 'UDP', hostIP: '10.0.0.1' },
    ]);
    expect(m).toHaveLength(3);
  });

  it.each([
    ['snat not boolean', { snat: 'yes' }, [], /snat must be a boolean/],
    ['unknown backend', { backend: 'bpf' }, [], /backend/],
    ['markMasqBit out of range', { markMasqBit: 32 }, [], /markMasqBit/],
    ['markMasqBit + externalSetMarkChain', { markMasqBit: 1, externalSetMarkChain: 'KUBE-MARK-MASQ' }, [], /cannot specify externalSetMarkChain and markMasqBit/],
    ['bad external chain', { externalSetMarkChain: 'has space' }, [], /externalSetMarkChain/],
    ['conditions not strings', { conditionsV4: [1] }, [], /conditionsV4/],
    ['iptables conditions with nftables', { backend: 'nftables', conditionsV4: ['-s', '1.2.3.4'] }, [], /nftables backend was requested but configuration contains iptables-specific options conditionsV4/],
    ['nftables conditions with iptables', { backend: 'iptables', conditionsV6: ['ip6 saddr ::1'] }, [], /iptables backend was requested but configuration contains nftables-specific options conditionsV6/],
    ['nftables conditions, no backend (iptables by default)', { conditionsV4: ['ip saddr 10.0.0.0/8'] }, [], /iptables backend was requested/],
    ['external chain with nftables', { backend: 'nftables', externalSetMarkChain: 'X' }, [], /iptables-specific options externalSetMarkChain/],
    ['portMappings not array', {}, { hostPort: 1 }, /must be an array/],
    ['hostPort 0', {}, [{ hostPort: 0, containerPort: 1 }], /hostPort/],
    ['containerPort float', {}, [{ hostPort: 1, containerPort: 1.5 }], /containerPort/],
    ['protocol icmp', {}, [{ hostPort: 1, containerPort: 1, protocol: 'icmp' }], /protocol/],
    ['hostIP garbage', {}, [{ hostPort: 1, containerPort: 1, hostIP: 'localhost' }], /hostIP/],
  ])('rejects %s with code 7', (_n, extra, maps, msg) => {
    let err: unknown;
    try {
      parseConfig(conf(extra, maps));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(7);
    expect((err as CniError).message).toMatch(msg);
  });
});

describe('containerIPs', () => {
  const prev: CniResult = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'cni0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/var/run/netns/x' }],
    ips: [
      { address: '10.0.0.1/24', interface: 0 },
      { address: '10.0.0.5/24', interface: 2, gateway: '10.0.0.1' },
      { address: '10.0.0.6/24', interface: 2 },
      { address: 'fd00::5/64', interface: 2 },
    ],
  };
  it('picks the first address of each family on the sandbox interface', () => {
    const ips = containerIPs(prev, 'eth0');
    expect(ips.v4).toMatchObject({ ip: '10.0.0.5', network: '10.0.0.0/24' });
    expect(ips.v6).toMatchObject({ ip: 'fd00::5', network: 'fd00::/64' });
  });
  it('skips addresses of another ifname; accepts addresses without interface', () => {
    expect(containerIPs(prev, 'eth1')).toEqual({});
    expect(containerIPs({ cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/16' }] }, 'eth0').v4?.ip).toBe('10.1.0.2');
  });
});

describe('names and tags', () => {
  it('names the per-container chain like the reference (CNI-DN- + sha512(name+id), 28 chars)', () => {
    const n = dnatChainName('net1', 'abc');
    expect(n).toMatch(/^CNI-DN-[0-9a-f]{21}$/);
    expect(n).not.toBe(dnatChainName('net2', 'abc'));
    expect(n).not.toBe(dnatChainName('net1', 'abd'));
  });
  it('round-trips the entry-rule comment and the nft tag', () => {
    expect(parseDnatComment(dnatComment('net1', 'c1'))).toEqual({ network: 'net1', containerId: 'c1' });
    expect(parseDnatComment('something else')).toBeUndefined();
    const t = nftTag('net1', 'c1');
    expect(parseNftTag(t.comment)).toEqual({ net: t.net, key: t.key });
    expect(t.comment.length).toBeLessThanOrEqual(128);
    expect(nftTag('net1', 'x'.repeat(300)).comment.length).toBeLessThanOrEqual(128);
    expect(markHex(13)).toBe('0x2000');
    expect(markHex(0)).toBe('0x1');
  });
});

describe('planIptables', () => {
  const maps = [
    { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
    { hostPort: 8081, containerPort: 81, protocol: 'udp', hostIP: '192.168.1.10' },
    { hostPort: 8082, containerPort: 82, protocol: 'tcp', hostIP: 'fd77::10' },
  ];
  const v4 = containerAddr('10.77.0.5/24');
  const v6 = containerAddr('fd00:77::5/64');

  it('v4: mark hairpin (subnet) and localhost, then DNAT; entry rules per protocol with the comment', () => {
    const p = planIptables(parseConfig(conf({}, maps)), 'cid', v4);
    const chain = dnatChainName('net1', 'cid');
    expect(p.dnatChain).toBe(chain);
    expect(p.dnatRules).toEqual([
      ['-p', 'tcp', '--dport', '8080', '-s', '10.77.0.0/24', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'tcp', '--dport', '8080', '-s', '127.0.0.1', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'tcp', '--dport', '8080', '-j', 'DNAT', '--to-destination', '10.77.0.5:80'],
      ['-p', 'udp', '--dport', '8081', '-d', '192.168.1.10', '-s', '10.77.0.0/24', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'udp', '--dport', '8081', '-d', '192.168.1.10', '-s', '127.0.0.1', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'udp', '--dport', '8081', '-d', '192.168.1.10', '-j', 'DNAT', '--to-destination', '10.77.0.5:81'],
    ]);
    const cm = 'dnat name: "net1" id: "cid"';
    expect(p.entryRules).toEqual([
      // like the reference: every port of the protocol, whatever the hostIP family
      ['-p', 'tcp', '-m', 'comment', '--comment', cm, '-m', 'multiport', '--destination-ports', '8080,8082', '-j', chain],
      ['-p', 'udp', '-m', 'comment', '--comment', cm, '-m', 'multiport', '--destination-ports', '8081', '-j', chain],
    ]);
    expect(p.setMarkRule).toEqual(['-m', 'comment', '--comment', 'CNI portfwd masquerade mark', '-j', 'MARK', '--set-xmark', '0x2000/0x2000']);
    expect(p.masqRule).toEqual(['-m', 'mark', '--mark', '0x2000/0x2000', '-j', 'MASQUERADE']);
  });

  it('v6: no localhost rule, bracketed destination, only v6 and wildcard mappings', () => {
    const p = planIptables(parseConfig(conf({ conditionsV6: ['!', '-s', 'fd00:1::/64'] }, maps)), 'cid', v6);
    expect(p.dnatRules).toEqual([
      ['-p', 'tcp', '--dport', '8080', '-s', 'fd00:77::/64', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'tcp', '--dport', '8080', '-j', 'DNAT', '--to-destination', '[fd00:77::5]:80'],
      ['-p', 'tcp', '--dport', '8082', '-d', 'fd77::10', '-s', 'fd00:77::/64', '-j', 'CNI-HOSTPORT-SETMARK'],
      ['-p', 'tcp', '--dport', '8082', '-d', 'fd77::10', '-j', 'DNAT', '--to-destination', '[fd00:77::5]:82'],
    ]);
    expect(p.entryRules).toHaveLength(2);
    expect(p.entryRules[0]).toContain('8080,8082');
    expect(p.entryRules[1]).toContain('8081');
    expect(p.entryRules[0]!.slice(-5)).toEqual(['!', '-s', 'fd00:1::/64', '-j', p.dnatChain]);
  });

  it('masqAll marks everything; snat:false marks nothing; externalSetMarkChain replaces the setmark chain', () => {
    const m1 = [{ hostPort: 1, containerPort: 2 }];
    expect(planIptables(parseConfig(conf({ masqAll: true }, m1)), 'c', v4).dnatRules[0]).toEqual(['-p', 'tcp', '--dport', '1', '-j', 'CNI-HOSTPORT-SETMARK']);
    const off = planIptables(parseConfig(conf({ snat: false }, m1)), 'c', v4);
    expect(off.dnatRules).toHaveLength(1);
    expect(off.setMarkRule).toBeUndefined();
    const ext = planIptables(parseConfig(conf({ externalSetMarkChain: 'KUBE-MARK-MASQ' }, m1)), 'c', v4);
    expect(ext.dnatRules[0]!.at(-1)).toBe('KUBE-MARK-MASQ');
    expect(ext.setMarkRule).toBeUndefined();
    expect(planIptables(parseConfig(conf({ markMasqBit: 5 }, m1)), 'c', v4).masqRule).toContain('0x20/0x20');
  });

  it('splits multiport lists at 15 ports and dedupes ports', () => {
    const many = Array.from({ length: 20 }, (_, i) => ({ hostPort: 1000 + i, containerPort: 1 }));
    many.push({ hostPort: 1000, containerPort: 1, hostIP: '10.0.0.9' } as (typeof many)[number]);
    const p = planIptables(parseConfig(conf({}, many)), 'c', v4);
    expect(p.entryRules.map((r) => r[r.indexOf('--destination-ports') + 1]!.split(',').length)).toEqual([15, 5]);
  });
});

describe('planNft', () => {
  const maps = [
    { hostPort: 8080, containerPort: 80 },
    { hostPort: 8081, containerPort: 81, protocol: 'udp', hostIP: '192.168.1.10' },
  ];
  it('puts hostIP mappings in hostip_hostports, wildcard in hostports, and per-container masquerade rules', () => {
    expect(planNft(parseConfig(conf({ backend: 'nftables' }, maps)), containerAddr('10.77.0.5/24'))).toEqual([
      { chain: 'hostports', body: 'meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 10.77.0.5:80' },
      { chain: 'hostip_hostports', body: 'ip daddr 192.168.1.10 meta l4proto udp th dport 8081 dnat ip to 10.77.0.5:81' },
      { chain: 'masquerading', body: 'ip saddr 10.77.0.0/24 ip daddr 10.77.0.5 meta l4proto tcp th dport 80 ct status dnat masquerade' },
      { chain: 'masquerading', body: 'ip saddr 127.0.0.0/8 ip daddr 10.77.0.5 meta l4proto tcp th dport 80 masquerade' },
      { chain: 'masquerading', body: 'ip saddr 10.77.0.0/24 ip daddr 10.77.0.5 meta l4proto udp th dport 81 ct status dnat masquerade' },
      { chain: 'masquerading', body: 'ip saddr 127.0.0.0/8 ip daddr 10.77.0.5 meta l4proto udp th dport 81 masquerade' },
    ]);
  });
  it('v6 skips v4 hostIPs and localhost; masqAll matches the original port', () => {
    const rules = planNft(parseConfig(conf({ backend: 'nftables', masqAll: true }, maps)), containerAddr('fd00::5/64'));
    expect(rules).toEqual([
      { chain: 'hostports', body: 'meta nfproto ipv6 meta l4proto tcp th dport 8080 dnat ip6 to [fd00::5]:80' },
      { chain: 'masquerading', body: 'ip6 daddr fd00::5 meta l4proto tcp th dport 80 ct original proto-dst 8080 ct status dnat masquerade' },
    ]);
  });
});
