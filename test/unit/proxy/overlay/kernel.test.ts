import { describe, expect, it } from 'vitest';
import {
  findUnderlay,
  parseDevice,
  parseDeviceAddresses,
  parseFdb,
  parseNeighbours,
  parseRoutes,
} from '../../../../proxy/overlay/kernel.ts';
import { parseSubnetEnv, renderSubnetEnv } from '../../../../lib/overlay/subnet-file.ts';

// shapes captured from iproute2 6.1 on this machine
const link = JSON.stringify([
  {
    ifindex: 3,
    ifname: 'flatnet.1',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    mtu: 1450,
    address: '02:11:22:33:44:55',
    linkinfo: { info_kind: 'vxlan', info_data: { id: 1, local: '10.9.0.1', port: 8472, learning: false } },
  },
]);
const addrs = JSON.stringify([
  { ifname: 'lo', mtu: 65536, addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
  { ifname: 'eth0', mtu: 9000, addr_info: [{ family: 'inet', local: '10.9.0.1', prefixlen: 24, scope: 'global' }] },
  {
    ifname: 'flatnet.1',
    mtu: 1450,
    addr_info: [
      { family: 'inet', local: '10.244.1.0', prefixlen: 32, scope: 'global' },
      { family: 'inet6', local: 'fd00:244:1::', prefixlen: 128, scope: 'global' },
      { family: 'inet6', local: 'fe80::11:22ff:fe33:4455', prefixlen: 64, scope: 'link' },
    ],
  },
]);

describe('kernel JSON parsing', () => {
  it('reads the VXLAN device shape', () => {
    expect(parseDevice(link)).toEqual({
      kind: 'vxlan',
      mac: '02:11:22:33:44:55',
      mtu: 1450,
      up: true,
      vni: 1,
      port: 8472,
      local: '10.9.0.1',
      learning: false,
    });
    expect(parseDevice('')).toBeUndefined();
  });
  it('reads global device addresses and locates the underlay', () => {
    expect(parseDeviceAddresses(addrs, 'flatnet.1')).toEqual(['10.244.1.0/32', 'fd00:244:1::/128']);
    expect(findUnderlay(addrs, '10.9.0.1')).toEqual({ dev: 'eth0', ip: '10.9.0.1', prefix: 24, mtu: 9000 });
    expect(findUnderlay(addrs, '10.9.0.7')).toBeUndefined();
  });
  it('reads neighbours, FDB and routes', () => {
    expect(
      parseNeighbours('[{"dst":"10.244.2.0","lladdr":"02:AA:bb:cc:dd:ee","state":["PERMANENT"]},{"dst":"10.244.3.0","state":["FAILED"]}]'),
    ).toEqual([
      { ip: '10.244.2.0', mac: '02:aa:bb:cc:dd:ee', permanent: true },
      { ip: '10.244.3.0', mac: '', permanent: false },
    ]);
    expect(parseFdb('[{"mac":"02:aa:bb:cc:dd:ee","dst":"10.9.0.2","flags":["self"],"state":"permanent"},{"mac":"33:33:00:00:00:01","flags":["self"]}]')).toEqual([
      { mac: '02:aa:bb:cc:dd:ee', dst: '10.9.0.2' },
    ]);
    expect(
      parseRoutes('[{"dst":"10.244.2.0/24","gateway":"10.244.2.0","dev":"flatnet.1","flags":["onlink"]},{"dst":"10.1.1.1","gateway":"10.9.0.3","dev":"eth0","flags":[]}]'),
    ).toEqual([
      { dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flatnet.1', onlink: true },
      { dst: '10.1.1.1/32', via: '10.9.0.3', dev: 'eth0', onlink: false },
    ]);
  });
});

describe('subnet file', () => {
  it('round-trips', () => {
    const s = { networks: ['10.244.0.0/16', 'fd00:10:244::/56'], subnets: ['10.244.1.0/24', 'fd00:10:244:1::/64'], mtu: 1450, ipMasq: true };
    expect(parseSubnetEnv(renderSubnetEnv(s))).toEqual(s);
  });
  it.each([
    ['FLATNET_MTU=1450\n', /FLATNET_SUBNET missing/],
    ['FLATNET_SUBNET=10.244.1.0/24\nFLATNET_MTU=abc\n', /FLATNET_MTU/],
    ['FLATNET_SUBNET=10.244.1.0/99\nFLATNET_MTU=1450\n', /invalid CIDR/],
    ['garbage\n', /malformed line/],
  ])('rejects %j', (text, re) => expect(() => parseSubnetEnv(text)).toThrow(re));
});
