import { describe, expect, it } from 'vitest';
import { allocate, candidates, HostLocalCode } from '../../../../ipam/host-local/allocator.ts';
import { loadConfig, type RangeSet } from '../../../../ipam/host-local/config.ts';
import { CniError, type NetConf } from '../../../../lib/cni/types.ts';
import { formatIP, parseIP } from '../../../../lib/net/ip.ts';
import { MemoryStore } from '../../../helpers/fake-store.ts';

const sets = (ranges: unknown[][]): readonly RangeSet[] =>
  loadConfig({ cniVersion: '1.0.0', name: 'n', type: 't', ipam: { type: 'host-local', ranges } } as NetConf, {}).ranges;

const addrs = (s: RangeSet, last?: string): string[] => [...candidates(s, last ? parseIP(last) : undefined)].map((c) => formatIP(c.ip));

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof CniError ? e.code : -1;
  }
  return undefined;
}

describe('candidate order', () => {
  it('starts at rangeStart, skips the gateway, excludes network and broadcast', () => {
    expect(addrs(sets([[{ subnet: '10.0.0.0/29' }]])[0]!)).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
  });
  it('continues after the last reserved address and wraps, ending with it', () => {
    expect(addrs(sets([[{ subnet: '10.0.0.0/29' }]])[0]!, '10.0.0.4')).toEqual(['10.0.0.5', '10.0.0.6', '10.0.0.2', '10.0.0.3', '10.0.0.4']);
  });
  it('ignores a last reserved address outside the set', () => {
    expect(addrs(sets([[{ subnet: '10.0.0.0/29' }]])[0]!, '10.9.9.9')[0]).toBe('10.0.0.2');
  });
  it('honours rangeStart / rangeEnd and a custom gateway', () => {
    const s = sets([[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.10', rangeEnd: '10.0.0.14', gateway: '10.0.0.12' }]])[0]!;
    expect(addrs(s)).toEqual(['10.0.0.10', '10.0.0.11', '10.0.0.13', '10.0.0.14']);
  });
  it('walks several ranges of a set in order and wraps across them', () => {
    const s = sets([[{ subnet: '10.0.0.0/30' }, { subnet: '10.0.1.0/30' }]])[0]!;
    // /30: .1 is the gateway and .3 the broadcast, so each range offers .2 only
    expect(addrs(s)).toEqual(['10.0.0.2', '10.0.1.2']);
    expect(addrs(s, '10.0.0.2')).toEqual(['10.0.1.2', '10.0.0.2']);
  });
  it('IPv6 includes the last address of the block', () => {
    expect(addrs(sets([[{ subnet: 'fd00::/126' }]])[0]!)).toEqual(['fd00::2', 'fd00::3']);
  });
});

describe('allocate', () => {
  it('round-robins: a freed address is not reused until the range wraps', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.0.0.0/29' }]]);
    const a = allocate(st, s, 'c1', 'eth0', []);
    const b = allocate(st, s, 'c2', 'eth0', []);
    expect([a[0]!.address, b[0]!.address]).toEqual(['10.0.0.2/29', '10.0.0.3/29']);
    expect(a[0]!.gateway).toBe('10.0.0.1');
    st.releaseByID('c1', 'eth0');
    expect(allocate(st, s, 'c3', 'eth0', [])[0]!.address).toBe('10.0.0.4/29');
    allocate(st, s, 'c4', 'eth0', []);
    allocate(st, s, 'c5', 'eth0', []);
    // wrapped: .2 is free again
    expect(allocate(st, s, 'c6', 'eth0', [])[0]!.address).toBe('10.0.0.2/29');
    // exhausted now
    expect(codeOf(() => allocate(st, s, 'c7', 'eth0', []))).toBe(HostLocalCode.Exhausted);
    expect(st.getByID('c7', 'eth0')).toEqual([]);
  });

  it('dual-stack gives one address per range set', () => {
    const st = new MemoryStore();
    const r = allocate(st, sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd01::/64' }]]), 'c1', 'eth0', []);
    expect(r).toEqual([
      { address: '10.1.0.2/24', gateway: '10.1.0.1' },
      { address: 'fd01::2/64', gateway: 'fd01::1' },
    ]);
  });

  it('dual-stack exhaustion of v6 releases the v4 address just taken', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd01::/64', rangeStart: 'fd01::5', rangeEnd: 'fd01::5' }]]);
    allocate(st, s, 'c1', 'eth0', []);
    expect(st.ips()).toEqual(['10.1.0.2', 'fd01::5']);
    expect(codeOf(() => allocate(st, s, 'c2', 'eth0', []))).toBe(HostLocalCode.Exhausted);
    expect(st.ips()).toEqual(['10.1.0.2', 'fd01::5']);
  });

  it('refuses a second allocation for the same container and ifname', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.1.0.0/24' }]]);
    allocate(st, s, 'c1', 'eth0', []);
    expect(codeOf(() => allocate(st, s, 'c1', 'eth0', []))).toBe(HostLocalCode.Duplicate);
    expect(allocate(st, s, 'c1', 'net1', [])[0]!.address).toBe('10.1.0.3/24');
  });

  it('requested addresses go to the set containing them', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd01::/64' }]]);
    const r = allocate(st, s, 'c1', 'eth0', [parseIP('fd01::99')!, parseIP('10.1.0.77')!]);
    expect(r.map((x) => x.address)).toEqual(['10.1.0.77/24', 'fd01::99/64']);
    // the cursor moved to the requested address
    expect(allocate(st, s, 'c2', 'eth0', [])[0]!.address).toBe('10.1.0.78/24');
  });

  it('requested address taken, outside every set, or the gateway: error and nothing kept', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd01::/64' }]]);
    allocate(st, s, 'c1', 'eth0', [parseIP('10.1.0.5')!]);
    const before = st.ips();
    expect(codeOf(() => allocate(st, s, 'c2', 'eth0', [parseIP('10.1.0.5')!]))).toBe(HostLocalCode.Exhausted);
    expect(codeOf(() => allocate(st, s, 'c2', 'eth0', [parseIP('10.1.0.1')!]))).toBe(HostLocalCode.BadRequest);
    expect(codeOf(() => allocate(st, s, 'c2', 'eth0', [parseIP('10.2.0.5')!]))).toBe(HostLocalCode.BadRequest);
    expect(codeOf(() => allocate(st, s, 'c2', 'eth0', [parseIP('fd01::7')!, parseIP('fd01::8')!]))).toBe(HostLocalCode.BadRequest);
    expect(st.ips()).toEqual(before);
  });

  it('a requested address outside rangeStart..rangeEnd is refused', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.100', rangeEnd: '10.1.0.110' }]]);
    expect(codeOf(() => allocate(st, s, 'c1', 'eth0', [parseIP('10.1.0.50')!]))).toBe(HostLocalCode.BadRequest);
    expect(allocate(st, s, 'c1', 'eth0', [])[0]!.address).toBe('10.1.0.100/24');
  });

  it('fills a range exactly once in parallel-free sequence (no duplicates)', () => {
    const st = new MemoryStore();
    const s = sets([[{ subnet: '10.3.0.0/24' }]]);
    const got = new Set<string>();
    for (let i = 0; i < 253; i++) got.add(allocate(st, s, `c${i}`, 'eth0', [])[0]!.address);
    expect(got.size).toBe(253);
    expect(got.has('10.3.0.1/24')).toBe(false);
    expect(got.has('10.3.0.255/24')).toBe(false);
    expect(codeOf(() => allocate(st, s, 'x', 'eth0', []))).toBe(HostLocalCode.Exhausted);
  });
});
