// The generated nft text (sorted) for full and incremental syncs.
import { describe, expect, it } from 'vitest';
import {
  planElements,
  renderFull,
  renderIncremental,
  staleAffinityEntries,
  affinityDeleteProgram,
  CHUNK,
} from '../../../../proxy/services/backends/nftables/rules.ts';
import { config, ep, plan, svc, syncInput } from '../../../helpers/proxy-plans.ts';

const opts = { table: 'flatnet-proxy', family: 4 as const };
const sorted = (text: string): string[] => text.trim().split('\n').sort();
const elementLines = (text: string): string[] => sorted(text).filter((l) => / element /.test(l));

const a = svc('a', { nodePort: 30080, affinityTimeoutSeconds: 600 });
const b = svc('b', { clusterIP: '10.96.0.11', protocol: 'UDP', port: 53 });

describe('nftables rules: full sync', () => {
  it('first sync deletes and recreates the table; elements as expected', () => {
    const r = renderFull(syncInput([plan(a, [ep('10.244.1.2'), ep('10.244.2.3')]), plan(b, [])]), opts);
    const lines = r.program.trim().split('\n');
    expect(lines.slice(0, 3)).toEqual(['add table ip flatnet-proxy', 'delete table ip flatnet-proxy', 'add table ip flatnet-proxy']);
    expect(elementLines(r.program)).toEqual([
      'add element ip flatnet-proxy aff-np { tcp . 30080 : goto aff-600 }',
      'add element ip flatnet-proxy aff-svc { 10.96.0.10 . tcp . 80 : goto aff-600 }',
      'add element ip flatnet-proxy cluster-ep-tcp { 10.96.0.10 . 80 . 0 : 10.244.1.2 . 8080, 10.96.0.10 . 80 . 1 : 10.244.2.3 . 8080 }',
      'add element ip flatnet-proxy cluster-ips { 10.96.0.10, 10.96.0.11 }',
      'add element ip flatnet-proxy cluster-keys { 10.96.0.10 . tcp . 80, 10.96.0.11 . udp . 53 }',
      'add element ip flatnet-proxy cluster-n { 10.96.0.10 . tcp . 80 : goto cluster-2 }',
      'add element ip flatnet-proxy hairpin { 10.244.1.2 . 10.244.1.2, 10.244.2.3 . 10.244.2.3 }',
      'add element ip flatnet-proxy no-ep-svc { 10.96.0.11 . udp . 53 : goto reject-chain }',
      'add element ip flatnet-proxy nodeport-ips { 192.168.10.2 }',
      'add element ip flatnet-proxy np-cluster-keys { tcp . 30080 }',
      'add element ip flatnet-proxy np-ep-tcp { 30080 . 0 : 10.244.1.2 . 8080, 30080 . 1 : 10.244.2.3 . 8080 }',
      'add element ip flatnet-proxy np-n { tcp . 30080 : goto np-2 }',
    ]);
    // one chain per distinct affinity timeout and per (path, endpoint count); none per service or endpoint
    const chains = [...new Set(sorted(r.program).filter((l) => l.startsWith('add chain')).map((l) => l.split(' ')[4]))];
    expect(chains).toHaveLength(18);
    expect(chains.filter((l) => /-\d+$/.test(l!)).sort()).toEqual(['aff-600', 'cluster-2', 'np-2']);
  });

  it('later full syncs flush instead of deleting, and keep the affinity map', () => {
    const first = renderFull(syncInput([plan(a, [ep('10.244.1.2')])]), opts);
    const r = renderFull(syncInput([plan(b, [ep('10.244.1.7', 53)])]), opts, first.state);
    expect(r.program).not.toMatch(/delete table/);
    expect(r.program).toMatch(/^delete map ip flatnet-proxy cluster-ep-tcp$/m);
    expect(r.program).toMatch(/^flush set ip flatnet-proxy cluster-keys$/m);
    expect(r.program).not.toMatch(/^flush map ip flatnet-proxy affinity$/m);
    // the old service's affinity chain goes away after its vmap was flushed
    const lines = r.program.trim().split('\n');
    expect(lines.indexOf('delete chain ip flatnet-proxy aff-600')).toBeGreaterThan(lines.indexOf('flush map ip flatnet-proxy aff-svc'));
    expect([...r.affinityStale]).toEqual([a.key]);
  });

  it('chunks large element lists', () => {
    const plans = [];
    for (let i = 0; i < 2500; i++) plans.push(plan(svc(`s${i}`, { clusterIP: `10.96.${i >> 8}.${i & 255}` }), [ep(`10.244.${i >> 8}.${i & 255}`)]));
    const r = renderFull(syncInput(plans), opts);
    const keyLines = r.program.split('\n').filter((l) => l.startsWith('add element ip flatnet-proxy cluster-keys'));
    expect(keyLines).toHaveLength(Math.ceil(2500 / CHUNK));
    expect(keyLines.map((l) => l.split(', ').length)).toEqual([1000, 1000, 500]);
  });

  it('services with the same endpoint count share one class chain', () => {
    const plans = [];
    for (let i = 0; i < 50; i++) plans.push(plan(svc(`s${i}`, { clusterIP: `10.96.1.${i}` }), [ep(`10.244.1.${i}`), ep(`10.244.2.${i}`), ep(`10.244.3.${i}`)]));
    plans.push(plan(svc('one', { clusterIP: '10.96.2.1' }), [ep('10.244.4.1')]));
    const r = renderFull(syncInput(plans), opts);
    const chains = [...new Set(r.program.split('\n').filter((l) => l.startsWith('add chain')).map((l) => l.split(' ')[4]))];
    expect(chains.filter((c) => /-\d+$/.test(c!)).sort()).toEqual(['cluster-1', 'cluster-3']);
    expect(r.program).toContain('add rule ip flatnet-proxy cluster-3 meta l4proto udp dnat to ip daddr . udp dport . numgen random mod 3 map @cluster-ep-udp');
  });

  it('skips services of the other family and LB addresses in Proxy mode', () => {
    expect(planElements(plan(svc('v6', { family: 6, clusterIP: 'fd00::1' }), [ep('fd00::2')]), 4)).toEqual([]);
    const els = planElements(plan(svc('p', { loadBalancerIPs: [{ ip: '1.2.3.4', ipMode: 'Proxy' }] }), [ep('10.244.1.2')]), 4);
    expect(els.some((e) => e.key.startsWith('1.2.3.4'))).toBe(false);
  });

  it('no ClusterIP masquerade rule when detect-local has no CIDR and masqueradeAll is off', () => {
    const r = renderFull(syncInput([], { config: { ...config, clusterCIDRs: [] } }), opts);
    expect(r.program).not.toMatch(/@cluster-keys .*meta mark set/);
    const r2 = renderFull(syncInput([], { config: { ...config, clusterCIDRs: [], masqueradeAll: true } }), opts);
    expect(r2.program).toMatch(/ip daddr \. meta l4proto \. th dport @cluster-keys meta mark set meta mark \| 0x00004000/);
  });
});

describe('nftables rules: incremental sync', () => {
  // renderIncremental updates the state in place: a fresh base per test
  const mkBase = () => renderFull(syncInput([plan(a, [ep('10.244.1.2'), ep('10.244.2.3')]), plan(b, [ep('10.244.1.7', 53)])]), opts);

  it('endpoint added: delete + add of that service only, sorted', () => {
    const base = mkBase();
    const r = renderIncremental(
      syncInput([plan(a, [ep('10.244.1.2'), ep('10.244.2.3'), ep('10.244.3.4')]), plan(b, [ep('10.244.1.7', 53)])], {
        full: false,
        changed: new Set([a.key]),
      }),
      opts,
      base.state,
    );
    expect(r.program.trim().split('\n')).toEqual([
      'add chain ip flatnet-proxy cluster-3',
      'flush chain ip flatnet-proxy cluster-3',
      'add rule ip flatnet-proxy cluster-3 meta l4proto tcp dnat to ip daddr . tcp dport . numgen random mod 3 map @cluster-ep-tcp',
      'add rule ip flatnet-proxy cluster-3 meta l4proto udp dnat to ip daddr . udp dport . numgen random mod 3 map @cluster-ep-udp',
      'add rule ip flatnet-proxy cluster-3 meta l4proto sctp dnat to ip daddr . sctp dport . numgen random mod 3 map @cluster-ep-sctp',
      'add chain ip flatnet-proxy np-3',
      'flush chain ip flatnet-proxy np-3',
      'add rule ip flatnet-proxy np-3 meta l4proto tcp dnat to tcp dport . numgen random mod 3 map @np-ep-tcp',
      'add rule ip flatnet-proxy np-3 meta l4proto udp dnat to udp dport . numgen random mod 3 map @np-ep-udp',
      'add rule ip flatnet-proxy np-3 meta l4proto sctp dnat to sctp dport . numgen random mod 3 map @np-ep-sctp',
      'delete element ip flatnet-proxy cluster-n { 10.96.0.10 . tcp . 80 }',
      'delete element ip flatnet-proxy np-n { tcp . 30080 }',
      'add element ip flatnet-proxy cluster-n { 10.96.0.10 . tcp . 80 : goto cluster-3 }',
      'add element ip flatnet-proxy np-n { tcp . 30080 : goto np-3 }',
      'add element ip flatnet-proxy cluster-ep-tcp { 10.96.0.10 . 80 . 2 : 10.244.3.4 . 8080 }',
      'add element ip flatnet-proxy np-ep-tcp { 30080 . 2 : 10.244.3.4 . 8080 }',
      'add element ip flatnet-proxy hairpin { 10.244.3.4 . 10.244.3.4 }',
      'flush chain ip flatnet-proxy cluster-2',
      'delete chain ip flatnet-proxy cluster-2',
      'flush chain ip flatnet-proxy np-2',
      'delete chain ip flatnet-proxy np-2',
    ]);
    expect(r.affinityStale.size).toBe(0);
    // the state is updated in place (no O(all elements) copy per sync)
    expect(r.state).toBe(base.state);
    expect(r.state.perService.get(a.key)!.filter((e) => e.set === 'cluster-ep-tcp')).toHaveLength(3);
    expect([...r.state.dynRefs.keys()].sort()).toEqual(['aff-600', 'cluster-1', 'cluster-3', 'np-3']);
  });

  it('service deleted: every element it owned goes, nothing else', () => {
    const base = mkBase();
    const r = renderIncremental(syncInput([plan(a, [ep('10.244.1.2'), ep('10.244.2.3')])], { full: false, changed: new Set([b.key]) }), opts, base.state);
    expect(sorted(r.program)).toEqual([
      'delete chain ip flatnet-proxy cluster-1',
      'delete element ip flatnet-proxy cluster-ep-udp { 10.96.0.11 . 53 . 0 }',
      'delete element ip flatnet-proxy cluster-ips { 10.96.0.11 }',
      'delete element ip flatnet-proxy cluster-keys { 10.96.0.11 . udp . 53 }',
      'delete element ip flatnet-proxy cluster-n { 10.96.0.11 . udp . 53 }',
      'delete element ip flatnet-proxy hairpin { 10.244.1.7 . 10.244.1.7 }',
      'flush chain ip flatnet-proxy cluster-1',
    ]);
  });

  it('affinity removal marks the service stale and drops its chain', () => {
    const base = mkBase();
    const r = renderIncremental(
      syncInput([plan({ ...a, affinityTimeoutSeconds: undefined }, [ep('10.244.1.2'), ep('10.244.2.3')]), plan(b, [ep('10.244.1.7', 53)])], {
        full: false,
        changed: new Set([a.key]),
      }),
      opts,
      base.state,
    );
    expect(sorted(r.program)).toEqual([
      'delete chain ip flatnet-proxy aff-600',
      'delete element ip flatnet-proxy aff-np { tcp . 30080 }',
      'delete element ip flatnet-proxy aff-svc { 10.96.0.10 . tcp . 80 }',
      'flush chain ip flatnet-proxy aff-600',
    ]);
    expect([...r.affinityStale]).toEqual([a.key]);
  });
});

describe('nftables rules: affinity pruning', () => {
  it('keeps entries that still point at a valid endpoint, drops the rest', () => {
    const r = renderFull(syncInput([plan(a, [ep('10.244.1.2')]), plan(b, [ep('10.244.1.7', 53)])]), opts);
    const entries = [
      { client: '10.244.1.9', vip: '10.96.0.10', proto: 'tcp', port: 80, endpoint: '10.244.1.2', endpointPort: 8080 },
      { client: '10.244.1.9', vip: '10.96.0.10', proto: 'tcp', port: 80, endpoint: '10.244.2.3', endpointPort: 8080 },
      { client: '1.2.3.4', vip: '192.168.10.2', proto: 'tcp', port: 30080, endpoint: '10.244.1.2', endpointPort: 8080 },
      { client: '1.2.3.4', vip: '192.168.10.2', proto: 'tcp', port: 30080, endpoint: '10.244.9.9', endpointPort: 8080 },
      { client: '10.244.1.9', vip: '10.96.0.11', proto: 'udp', port: 53, endpoint: '10.244.1.7', endpointPort: 53 },
    ];
    const stale = staleAffinityEntries(entries, r.state);
    expect(stale.map((e) => `${e.client}>${e.vip}:${e.port}>${e.endpoint}`)).toEqual([
      '10.244.1.9>10.96.0.10:80>10.244.2.3',
      '1.2.3.4>192.168.10.2:30080>10.244.9.9',
      '10.244.1.9>10.96.0.11:53>10.244.1.7',
    ]);
    expect(affinityDeleteProgram(opts, stale)).toBe(
      'delete element ip flatnet-proxy affinity { 1.2.3.4 . 192.168.10.2 . tcp . 30080, 10.244.1.9 . 10.96.0.10 . tcp . 80, 10.244.1.9 . 10.96.0.11 . udp . 53 }\n',
    );
  });
});
