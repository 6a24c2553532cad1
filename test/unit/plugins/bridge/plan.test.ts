import { describe, expect, it } from 'vitest';
import { CniError, type CniResult, type NetConf } from '../../../../lib/cni/types.ts';
import { parseLinks } from '../../../../lib/link/parse.ts';
import { parseBridgeConfig } from '../../../../plugins/bridge/config.ts';
import { calcGateways, hostVethName, planAdd, planGatewayAddr, randomMac, BridgeErrorCode } from '../../../../plugins/bridge/plan.ts';
import { parseCidr } from '../../../../lib/net/ip.ts';

const conf = (extra: Record<string, unknown> = {}): NetConf => ({
  cniVersion: '1.0.0',
  name: 'net',
  type: 'bridge',
  bridge: 'br0',
  ipam: { type: 'host-local' },
  ...extra,
});
const ipam: CniResult = { cniVersion: '1.0.0', ips: [{ address: '10.1.0.5/24' }], routes: [{ dst: '10.9.0.0/16' }] };
let n = 0;
const rnd = (): Uint8Array => Uint8Array.from([n++, 1, 2, 3, 4, 5]);

const brLinks = (addrs: string) =>
  parseLinks(
    JSON.stringify([
      { ifindex: 5, ifname: 'br0', flags: ['UP'], mtu: 1500, operstate: 'UP', address: '02:aa:bb:cc:dd:ee', linkinfo: { info_kind: 'bridge' }, addr_info: JSON.parse(addrs) },
    ]),
  );

describe('calcGateways', () => {
  it('points every IP at interface 2 and computes network+1 gateways', () => {
    const g = calcGateways(parseBridgeConfig(conf({ isGateway: true })), ipam);
    expect(g.ips).toEqual([{ address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 2 }]);
    expect(g.routes).toEqual([{ dst: '10.9.0.0/16' }]);
  });
  it('adds one default route per family when isDefaultGateway', () => {
    const g = calcGateways(parseBridgeConfig(conf({ isDefaultGateway: true })), {
      cniVersion: '1.0.0',
      ips: [{ address: '10.1.0.5/24' }, { address: 'fd00::5/64' }, { address: '10.2.0.5/24' }],
    });
    expect(g.routes).toEqual([
      { dst: '0.0.0.0/0', gw: '10.1.0.1' },
      { dst: '::/0', gw: 'fd00::1' },
    ]);
    expect(g.gws[4].length).toBe(2);
  });
  it('keeps an IPAM default route with a gateway', () => {
    const g = calcGateways(parseBridgeConfig(conf({ isDefaultGateway: true })), { cniVersion: '1.0.0', ips: ipam.ips, routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.254' }] });
    expect(g.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.1.0.254' }]);
  });
});

describe('planGatewayAddr', () => {
  const gw = parseCidr('10.1.0.1/24')!;
  it('is a no-op when the address is there', () => {
    expect(planGatewayAddr('br0', [{ family: 'inet', local: '10.1.0.1', prefixlen: 24 }], gw, false)).toEqual({ remove: [] });
  });
  it('fails on a different IPv4 address without forceAddress', () => {
    expect(() => planGatewayAddr('br0', [{ family: 'inet', local: '10.7.0.1', prefixlen: 24 }], gw, false)).toThrow(CniError);
  });
  it('replaces it with forceAddress', () => {
    expect(planGatewayAddr('br0', [{ family: 'inet', local: '10.7.0.1', prefixlen: 24 }], gw, true)).toEqual({ add: '10.1.0.1/24', remove: ['10.7.0.1/24'] });
  });
  it('allows non-overlapping IPv6 addresses side by side', () => {
    const g6 = parseCidr('fd00:1::1/64')!;
    expect(planGatewayAddr('br0', [{ family: 'inet6', local: 'fe80::1', prefixlen: 64 }], g6, false)).toEqual({ add: 'fd00:1::1/64', remove: [] });
  });
});

describe('planAdd', () => {
  const base = { containerId: 'c1', ifname: 'eth0', netns: '/var/run/netns/x', hostPid: 42, randomBytes: rnd };
  it('creates bridge, veth (peer into the host pid netns), addresses, routes and the result', () => {
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ isGateway: true, mtu: 1400, hairpinMode: true })), ipam, hostLinks: [] });
    expect(p.bridgeCreated).toBe(true);
    expect(p.hostVeth).toBe(hostVethName('c1', 'eth0', '/var/run/netns/x'));
    expect(p.containerProgram).toContain(`ip link add eth0 address ${p.containerMac} mtu 1400 type veth peer name ${p.hostVeth} address ${p.hostVethMac} mtu 1400 netns 42`);
    expect(p.containerProgram).toContain('arp_notify');
    expect(p.containerBatch).toBe('address add 10.1.0.5/24 dev eth0\nlink set eth0 up\nroute add 10.9.0.0/16 via 10.1.0.1 dev eth0\n');
    expect(p.hostBatch.split('\n')).toEqual([
      `link add br0 address ${p.bridgeMac} mtu 1400 type bridge`,
      'link set br0 up',
      `link set ${p.hostVeth} master br0`,
      `link set ${p.hostVeth} type bridge_slave hairpin on isolated off`,
      `link set ${p.hostVeth} up`,
      'address replace 10.1.0.1/24 dev br0',
      '',
    ]);
    expect(p.hostSysctls.map((s) => s.key)).toContain('net/ipv4/ip_forward');
    expect(p.result.interfaces?.map((i) => i.name)).toEqual(['br0', p.hostVeth, 'eth0']);
    expect(p.result.interfaces?.[2]?.sandbox).toBe('/var/run/netns/x');
    expect(p.result.ips).toEqual([{ address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 2 }]);
  });
  it('uses the requested MAC and pins an existing bridge MAC', () => {
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ runtimeConfig: { mac: '02:11:22:33:44:55' } })), ipam, hostLinks: brLinks('[]') });
    expect(p.containerMac).toBe('02:11:22:33:44:55');
    expect(p.bridgeCreated).toBe(false);
    expect(p.hostBatch.split('\n')[0]).toBe('link set br0 address 02:aa:bb:cc:dd:ee');
    expect(p.bridgeMac).toBe('02:aa:bb:cc:dd:ee');
  });
  it('fails when the bridge name is taken by something else', () => {
    const links = parseLinks(JSON.stringify([{ ifindex: 5, ifname: 'br0', mtu: 1500, linkinfo: { info_kind: 'veth' } }]));
    try {
      planAdd({ ...base, cfg: parseBridgeConfig(conf()), ipam, hostLinks: links });
      expect.unreachable();
    } catch (e) {
      expect((e as CniError).code).toBe(BridgeErrorCode.NotABridge);
    }
  });
  it('fails on a conflicting bridge address without forceAddress', () => {
    const links = brLinks('[{"family":"inet","local":"10.3.0.1","prefixlen":24}]');
    expect(() => planAdd({ ...base, cfg: parseBridgeConfig(conf({ isGateway: true })), ipam, hostLinks: links })).toThrow(/already has an IP address/);
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ isGateway: true, forceAddress: true })), ipam, hostLinks: links });
    expect(p.hostBatch).toContain('address del 10.3.0.1/24 dev br0\naddress replace 10.1.0.1/24 dev br0');
  });
  it('vlan: filtering bridge, pvid untagged on the port, gateway on BR.VLAN', () => {
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ vlan: 100, isGateway: true })), ipam, hostLinks: [] });
    expect(p.hostBatch).toContain('type bridge vlan_filtering 1');
    expect(p.bridgeBatch).toContain(`vlan del dev ${p.hostVeth} vid 1\nvlan add dev ${p.hostVeth} vid 100 pvid untagged`);
    expect(p.hostBatch).toContain('address replace 10.1.0.1/24 dev br0.100');
    expect(p.result.interfaces?.[3]?.name).toBe('br0.100');
  });
  it('vlanTrunk: trunk ids tagged, native vlan 1 untagged; preserveDefaultVlan keeps vid 1', () => {
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ vlanTrunk: [{ minID: 10, maxID: 11 }, { id: 20 }] })), ipam, hostLinks: [] });
    const hv = p.hostVeth;
    expect(p.bridgeBatch).toBe(
      `vlan del dev ${hv} vid 1\nvlan add dev ${hv} vid 10\nvlan add dev ${hv} vid 11\nvlan add dev ${hv} vid 20\nvlan add dev ${hv} vid 1 pvid untagged\n`,
    );
    const q = planAdd({ ...base, cfg: parseBridgeConfig(conf({ vlan: 7, preserveDefaultVlan: true })), ipam, hostLinks: [] });
    expect(q.bridgeBatch).toBe(`vlan add dev ${q.hostVeth} vid 7 pvid untagged\n`);
  });
  it('dual stack enables IPv6 in the container and adds both addresses', () => {
    const p = planAdd({
      ...base,
      cfg: parseBridgeConfig(conf({ isDefaultGateway: true })),
      ipam: { cniVersion: '1.0.0', ips: [{ address: '10.1.0.5/24' }, { address: 'fd00::5/64' }] },
      hostLinks: [],
    });
    expect(p.containerProgram).toContain('/proc/sys/net/ipv6/conf/eth0/disable_ipv6');
    expect(p.containerBatch).toContain('route add ::/0 via fd00::1 dev eth0');
    expect(p.hostBatch).toContain('address replace fd00::1/64 dev br0');
  });
  it('L2 only: no IPAM, the container link is still brought up', () => {
    const p = planAdd({ ...base, cfg: parseBridgeConfig(conf({ ipam: undefined })), ipam: undefined, hostLinks: [] });
    expect(p.containerBatch).toBe('link set eth0 up\n');
    expect(p.result.ips).toBeUndefined();
  });
  it('randomMac is unicast and locally administered', () => {
    expect(randomMac(Uint8Array.from([0xff, 0, 0, 0, 0, 1]))).toBe('fe:00:00:00:00:01');
  });
});
