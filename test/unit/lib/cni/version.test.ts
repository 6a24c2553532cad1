import { describe, expect, it } from 'vitest';
import { compareVersions, convertResult, isSupportedVersion, upgradeResult, versionAtLeast } from '../../../../lib/cni/version.ts';
import type { CniResult } from '../../../../lib/cni/types.ts';

const v11: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'cni0', mac: 'aa:bb:cc:dd:ee:ff', mtu: 1500 }, { name: 'eth0', sandbox: '/var/run/netns/p', mtu: 1450 }],
  ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 }, { address: 'fd00:10:244:1::5/64', interface: 1 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1', priority: 100, table: 254 }],
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
};

describe('versions', () => {
  it('compares numerically', () => {
    expect(compareVersions('0.10.0', '0.4.0')).toBe(1);
    expect(compareVersions('1.0.0', '1.0')).toBe(0);
    expect(versionAtLeast('0.4.0', '0.4.0')).toBe(true);
    expect(versionAtLeast('0.3.1', '0.4.0')).toBe(false);
    expect(isSupportedVersion('0.3.0')).toBe(true);
    expect(isSupportedVersion('0.2.0')).toBe(false);
    expect(isSupportedVersion(1)).toBe(false);
  });
});

describe('result conversion', () => {
  it('down to 0.4.0 and back up is lossless apart from 1.1-only fields', () => {
    const down = convertResult(v11, '0.4.0');
    expect(down.ips).toEqual([
      { version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 },
      { version: '6', address: 'fd00:10:244:1::5/64', interface: 1 },
    ]);
    expect(down.interfaces).toEqual([{ name: 'cni0', mac: 'aa:bb:cc:dd:ee:ff' }, { name: 'eth0', sandbox: '/var/run/netns/p' }]);
    expect(down.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.1.1' }]);
    const up = upgradeResult(down);
    expect(up.ips).toEqual(v11.ips);
    expect(up.dns).toEqual(v11.dns);
    expect(up.cniVersion).toBe('0.4.0');
  });
  it('1.0.0 drops 1.1-only fields, 1.1.0 keeps everything', () => {
    expect(convertResult(v11, '1.0.0').routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.1.1' }]);
    expect(convertResult(v11, '1.1.0')).toEqual(v11);
  });
  it('does not mutate its input', () => {
    const copy = structuredClone(v11);
    convertResult(v11, '0.3.1');
    expect(v11).toEqual(copy);
  });
  it('rejects non-objects and pre-0.3 results', () => {
    expect(() => upgradeResult('x')).toThrow(/not a JSON object/);
    expect(() => upgradeResult({ cniVersion: '0.2.0', ip4: { ip: '10.0.0.2/24' } })).toThrow(/older than/);
  });
});
