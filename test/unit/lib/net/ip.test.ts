import { describe, expect, it } from 'vitest';
import {
  addIP,
  canonicalIP,
  canonicalNetwork,
  cidrContainsText,
  familyOf,
  hostCidr,
  isUnspecified,
  mustParseCidr,
  cidrContains,
  cidrsOverlap,
  cidrSize,
  compareIP,
  formatIP,
  lastOf,
  networkOf,
  normalizeIP,
  parseCidr,
  parseIP,
} from '../../../../lib/net/ip.ts';

describe('parseIP / formatIP', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['::', '::'],
    ['::1', '::1'],
    ['fd00:0:0:0:0:0:0:1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // leftmost longest run
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:DB8::A', '2001:db8::a'],
    ['fe80::1:2:3:4', 'fe80::1:2:3:4'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['::ffff:10.1.2.3', '10.1.2.3'], // IPv4-mapped is IPv4, as in Go
    ['64:ff9b::10.1.2.3', '64:ff9b::a01:203'],
  ])('%s -> %s', (input, out) => {
    expect(normalizeIP(input)).toBe(out);
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-1', 'a.b.c.d', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', 'gggg::', '12345::', 'fe80::1%eth0', '1:2:3:4:5:6:7::8:9'])(
    'rejects %j',
    (s) => {
      expect(parseIP(s)).toBeUndefined();
    },
  );

  it('keeps families apart', () => {
    expect(parseIP('10.0.0.1')!.family).toBe(4);
    expect(parseIP('::a00:1')!.family).toBe(6);
    expect(compareIP(parseIP('255.255.255.255')!, parseIP('::')!)).toBeLessThan(0);
  });
});

describe('CIDR math', () => {
  it('parses and masks', () => {
    const c = parseCidr('10.1.2.3/24')!;
    expect(c.prefix).toBe(24);
    expect(formatIP(networkOf(c))).toBe('10.1.2.0');
    expect(formatIP(lastOf(c))).toBe('10.1.2.255');
    expect(cidrSize(c)).toBe(256n);
    const v6 = parseCidr('fd00:1::5/64')!;
    expect(formatIP(networkOf(v6))).toBe('fd00:1::');
    expect(formatIP(lastOf(v6))).toBe('fd00:1::ffff:ffff:ffff:ffff');
    expect(cidrSize(v6)).toBe(1n << 64n);
    expect(formatIP(networkOf(parseCidr('1.2.3.4/0')!))).toBe('0.0.0.0');
    expect(formatIP(lastOf(parseCidr('::/0')!))).toBe('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
  });

  it.each(['10.0.0.0', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/', '10.0.0.0/a', 'x/24', '::ffff:1.2.3.4/120'])('rejects %j', (s) => {
    expect(parseCidr(s)).toBeUndefined();
  });

  it('contains and overlaps', () => {
    const a = parseCidr('10.0.0.0/16')!;
    expect(cidrContains(a, parseIP('10.0.255.255')!)).toBe(true);
    expect(cidrContains(a, parseIP('10.1.0.0')!)).toBe(false);
    expect(cidrContains(a, parseIP('::a00:1')!)).toBe(false);
    expect(cidrsOverlap(a, parseCidr('10.0.5.0/24')!)).toBe(true);
    expect(cidrsOverlap(parseCidr('10.0.5.0/24')!, a)).toBe(true);
    expect(cidrsOverlap(a, parseCidr('10.1.0.0/16')!)).toBe(false);
    expect(cidrsOverlap(parseCidr('fd00::/64')!, parseCidr('fd00::/48')!)).toBe(true);
  });

  it('adds within the address space only', () => {
    expect(formatIP(addIP(parseIP('10.0.0.255')!, 1)!)).toBe('10.0.1.0');
    expect(formatIP(addIP(parseIP('fd00::ffff')!, 1)!)).toBe('fd00::1:0');
    expect(addIP(parseIP('255.255.255.255')!, 1)).toBeUndefined();
    expect(addIP(parseIP('0.0.0.0')!, -1)).toBeUndefined();
    expect(formatIP(addIP(parseIP('10.0.1.0')!, -1)!)).toBe('10.0.0.255');
  });
});

describe('text helpers', () => {
  it.each([
    ['10.244.1.7/24', '10.244.1.0/24'],
    ['fd00:10:244:1::5/64', 'fd00:10:244:1::/64'],
    ['FD00:0:0:0:0:0:0:1/128', 'fd00::1/128'],
    ['0.0.0.0/0', '0.0.0.0/0'],
  ])('canonicalNetwork(%s) = %s', (i, o) => expect(canonicalNetwork(i)).toBe(o));
  it.each(['10.0.0.0', '10.0.0.0/33', 'x/8', '1.2.3/8'])('mustParseCidr rejects %s', (c) => expect(() => mustParseCidr(c)).toThrow(/invalid CIDR/));
  it('canonicalIP', () => {
    expect(canonicalIP('2001:db8:0:1:0:0:0:1')).toBe('2001:db8:0:1::1');
    expect(canonicalIP('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIP('0000:0000:0000:0000:0000:0000:0000:0001')).toBe('::1');
    expect(canonicalIP('1:0:0:1:0:0:0:1')).toBe('1:0:0:1::1');
    expect(() => canonicalIP('10.0.0.256')).toThrow(/invalid IP address/);
  });
  it('cidrContainsText', () => {
    expect(cidrContainsText('10.244.0.0/16', '10.244.3.9')).toBe(true);
    expect(cidrContainsText('10.244.0.0/16', '10.245.0.1')).toBe(false);
    expect(cidrContainsText('10.244.0.0/16', 'fd00::1')).toBe(false);
    expect(cidrContainsText('fd00::/8', 'fd00::1')).toBe(true);
    expect(cidrContainsText('bad', '10.0.0.1')).toBe(false);
  });
  it.each([
    ['10.0.0.1', 4],
    ['10.0.0.0/8', 4],
    ['fd00::1', 6],
    ['fd00::/64', 6],
    ['::ffff:10.0.0.1', 6],
    ['010.0.0.1', undefined],
    ['10.0.0', undefined],
    ['fd00:::1', undefined],
    ['', undefined],
  ] as const)('familyOf(%s) = %s', (t, f) => expect(familyOf(t)).toBe(f));
  it('hostCidr and isUnspecified', () => {
    expect(hostCidr('10.0.0.1')).toBe('10.0.0.1/32');
    expect(hostCidr('FD00::1')).toBe('fd00::1/128');
    expect(isUnspecified(parseIP('0.0.0.0')!)).toBe(true);
    expect(isUnspecified(parseIP('::')!)).toBe(true);
    expect(isUnspecified(parseIP('::1')!)).toBe(false);
  });
});
