import { describe, expect, it } from 'vitest';
import { CniError, type NetConf } from '../../../../lib/cni/types.ts';
import { collectVlanTrunk, parseBridgeConfig, validateForAdd } from '../../../../plugins/bridge/config.ts';

const base: NetConf = { cniVersion: '1.0.0', name: 'net', type: 'bridge' };

function code(f: () => unknown): number | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof CniError ? e.code : -1;
  }
  return undefined;
}

describe('parseBridgeConfig', () => {
  it('defaults like the reference', () => {
    const c = parseBridgeConfig(base);
    expect(c).toMatchObject({ bridge: 'cni0', isGateway: false, ipMasq: false, mtu: 0, vlan: 0, vlanFiltering: false });
    expect(c.ipam).toBeUndefined();
    expect(c.ipMasqBackend).toBeUndefined(); // decided at ADD, as the reference does
  });
  it('isDefaultGateway implies isGateway', () => {
    expect(parseBridgeConfig({ ...base, isDefaultGateway: true }).isGateway).toBe(true);
  });
  it.each([
    [{ vlan: 4095 }, 7],
    [{ vlan: -1 }, 7],
    [{ mtu: 'x' }, 7],
    [{ isGateway: 'yes' }, 7],
    [{ ipMasqBackend: 'pf' }, 7],
    [{ bridge: 'a-very-long-bridge-name' }, 7],
    [{ bridge: 'br 0' }, 7],
    [{ runtimeConfig: { mac: 'zz:zz' } }, 7],
    [{ runtimeConfig: { mac: '01:00:5e:00:00:01' } }, 7],
    [{ vlanTrunk: [{ minID: 5 }] }, 7],
  ])('rejects %j with code %i', (extra, c) => {
    expect(code(() => parseBridgeConfig({ ...base, ...extra } as NetConf))).toBe(c);
  });
  it('MAC precedence: CNI_ARGS < args.cni.mac < runtimeConfig.mac', () => {
    expect(parseBridgeConfig(base, { MAC: '02:00:00:00:00:01' }).mac).toBe('02:00:00:00:00:01');
    expect(parseBridgeConfig({ ...base, args: { cni: { mac: '02:00:00:00:00:02' } } }, { MAC: '02:00:00:00:00:01' }).mac).toBe('02:00:00:00:00:02');
    expect(
      parseBridgeConfig({ ...base, args: { cni: { mac: '02:00:00:00:00:02' } }, runtimeConfig: { mac: '02:00:00:00:00:03' } }, { MAC: '02:00:00:00:00:01' }).mac,
    ).toBe('02:00:00:00:00:03');
  });
  it('vlan or vlanTrunk turns on vlan filtering', () => {
    expect(parseBridgeConfig({ ...base, vlan: 100 }).vlanFiltering).toBe(true);
    expect(parseBridgeConfig({ ...base, vlanTrunk: [] }).vlanFiltering).toBe(true);
  });
  it('validateForAdd rejects hairpin+promisc and IPAM without container interface', () => {
    expect(code(() => validateForAdd(parseBridgeConfig({ ...base, hairpinMode: true, promiscMode: true })))).toBe(7);
    expect(code(() => validateForAdd(parseBridgeConfig({ ...base, disableContainerInterface: true, ipam: { type: 'host-local' } })))).toBe(7);
    expect(code(() => validateForAdd(parseBridgeConfig({ ...base, hairpinMode: true })))).toBeUndefined();
  });
});

describe('collectVlanTrunk', () => {
  it('merges ranges and ids, sorted and unique', () => {
    expect(collectVlanTrunk([{ minID: 3, maxID: 5 }, { id: 4 }, { id: 10 }])).toEqual([3, 4, 5, 10]);
  });
  it.each([[[{ minID: 5, maxID: 3 }]], [[{ id: 0 }]], [[{ maxID: 3 }]], [[{ minID: 1, maxID: 5000 }]]])('rejects %j', (t) => {
    expect(code(() => collectVlanTrunk(t))).toBe(7);
  });
});
