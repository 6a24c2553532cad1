import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockRanges, computeState, flowAllowed, formatRange, type Flow, type PolicyState } from '../../../../proxy/policy/compute.ts';
import { parseConntrack, planFlowDeletions } from '../../../../proxy/policy/conntrack.ts';
import { parseNamespace, parsePod, parsePolicy, parseSelector, selectorMatches, type NamespaceInfo, type PodInfo, type Policy } from '../../../../proxy/policy/model.ts';
import { diffProgram, fullProgram, render } from '../../../../proxy/policy/render.ts';
import { PolicyNftModel } from '../../../helpers/tracer-policy.ts';
import { nsObj, podObj, policyObj, type PodSpecLite } from './fixtures.ts';

const T = 'tpol';

interface World {
  pods: PodSpecLite[];
  namespaces: [string, Record<string, string>][];
  policies: Record<string, unknown>[];
}

function view(w: World): { policies: Policy[]; pods: PodInfo[]; namespaces: Map<string, NamespaceInfo> } {
  return {
    policies: w.policies.map(parsePolicy),
    pods: w.pods.map((p) => parsePod(podObj(p))).filter((p): p is PodInfo => !!p),
    namespaces: new Map(w.namespaces.map(([n, l]) => [n, parseNamespace(nsObj(n, l))])),
  };
}

const state = (w: World, node = 'n1'): PolicyState => computeState(view(w), node);

function model(s: PolicyState): PolicyNftModel {
  const m = new PolicyNftModel(T);
  m.apply(fullProgram(T, render(s)).render());
  return m;
}

const NODE = new Set(['172.30.0.2']);
const tcp = (src: string, dst: string, dport: number): Flow => ({ src, dst, proto: 'tcp', dport });

/** the reference decision and the traced ruleset agree, and give `want` */
function expectFlow(s: PolicyState, m: PolicyNftModel, f: Flow, want: boolean): void {
  expect(flowAllowed(s, f, NODE), `reference ${JSON.stringify(f)}`).toBe(want);
  expect(m.trace({ ...f }), `tracer ${JSON.stringify(f)}`).toBe(want ? 'accept' : 'drop');
}

// two namespaces, pods on n1 (local) and n2 (remote)
const base = (): World => ({
  namespaces: [
    ['x', { team: 'a' }],
    ['y', { team: 'b' }],
  ],
  pods: [
    { ns: 'x', name: 'a', ip: '10.244.1.2', labels: { pod: 'a' }, ports: [{ name: 'serve-80', containerPort: 80 }, { name: 'dns', containerPort: 53, protocol: 'UDP' }] },
    { ns: 'x', name: 'b', ip: '10.244.1.3', labels: { pod: 'b' }, ports: [{ name: 'serve-81', containerPort: 81 }] },
    { ns: 'x', name: 'c', ip: '10.244.2.4', labels: { pod: 'c' }, node: 'n2', ports: [{ name: 'serve-80', containerPort: 8080 }] },
    { ns: 'y', name: 'a', ip: '10.244.2.5', labels: { pod: 'a' }, node: 'n2' },
    { ns: 'y', name: 'b', ip: '10.244.1.6', labels: { pod: 'b' } },
    { ns: 'y', name: 'h', ip: '172.30.0.2', labels: { pod: 'h' }, hostNetwork: true },
  ],
  policies: [],
});

describe('model', () => {
  it.each([
    [{ matchLabels: { a: '1' } }, { a: '1', b: '2' }, true],
    [{ matchLabels: { a: '1' } }, { a: '2' }, false],
    [{}, {}, true],
    [{ matchExpressions: [{ key: 'a', operator: 'In', values: ['1', '2'] }] }, { a: '2' }, true],
    [{ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, {}, true],
    [{ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, { a: '1' }, false],
    [{ matchExpressions: [{ key: 'a', operator: 'Exists' }] }, { a: '' }, true],
    [{ matchExpressions: [{ key: 'a', operator: 'DoesNotExist' }] }, { a: '' }, false],
    [{ matchExpressions: [{ key: 'a', operator: 'Bogus' }] }, {}, false],
    [{ matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }, { a: '' }, false],
  ])('selector %j on %j -> %s', (sel, labels, want) => {
    expect(selectorMatches(parseSelector(sel), labels)).toBe(want);
  });

  it('policyTypes: Ingress by default, Egress when egress rules exist or when listed', () => {
    expect(parsePolicy(policyObj('x', 'p', { podSelector: {} }))).toMatchObject({ ingress: [] });
    expect(parsePolicy(policyObj('x', 'p', { podSelector: {} })).egress).toBeUndefined();
    expect(parsePolicy(policyObj('x', 'p', { podSelector: {}, egress: [{}] })).egress).toEqual([{ ports: [] }]);
    const e = parsePolicy(policyObj('x', 'p', { podSelector: {}, policyTypes: ['Egress'] }));
    expect(e.ingress).toBeUndefined();
    expect(e.egress).toEqual([]);
  });

  it('ports: default TCP, named, endPort, protocol only; an unusable port list allows nothing', () => {
    const p = parsePolicy(
      policyObj('x', 'p', {
        podSelector: {},
        ingress: [
          { ports: [{ port: 80 }, { port: 'http', protocol: 'UDP' }, { port: 1000, endPort: 2000, protocol: 'SCTP' }, { protocol: 'UDP' }] },
          { ports: [{ port: 80, protocol: 'ICMP' }] },
        ],
      }),
    );
    expect(p.ingress).toEqual([
      {
        ports: [
          { protocol: 'TCP', port: 80 },
          { protocol: 'UDP', port: 'http' },
          { protocol: 'SCTP', port: 1000, endPort: 2000 },
          { protocol: 'UDP' },
        ],
      },
    ]);
  });

  it('pods: terminal pods and pods without addresses take no part; named ports are kept', () => {
    expect(parsePod(podObj({ ns: 'x', name: 'a', ip: '10.0.0.1', phase: 'Succeeded' }))).toBeUndefined();
    expect(parsePod({ metadata: { namespace: 'x', name: 'a' }, spec: {}, status: {} })?.ips).toEqual([]);
    const p = parsePod(podObj({ ns: 'x', name: 'a', ip: ['10.0.0.1', 'fd00::0001'], ports: [{ name: 'h', containerPort: 80 }] }))!;
    expect(p.ips).toEqual(['10.0.0.1', 'fd00::1']);
    expect(p.ports).toEqual([{ name: 'h', port: 80, protocol: 'TCP' }]);
  });

  it('ipBlock except as disjoint ranges', () => {
    const r = blockRanges('10.0.0.0/16', ['10.0.1.0/24', '10.0.3.0/24', '192.168.0.0/24'])!;
    expect(r.ranges.map((x) => formatRange(x, 4))).toEqual(['10.0.0.0-10.0.0.255', '10.0.2.0-10.0.2.255', '10.0.4.0-10.0.255.255']);
    expect(blockRanges('fd00::/64', ['fd00::/65'])!.ranges.map((x) => formatRange(x, 6))).toEqual(['fd00::8000:0:0:0-fd00::ffff:ffff:ffff:ffff']);
    expect(blockRanges('nonsense', [])).toBeUndefined();
  });
});

describe('desired state, reference decision and traced ruleset agree', () => {
  it('no policy: nothing isolated, everything allowed', () => {
    const s = state(base());
    const m = model(s);
    expect([...s.pods.keys()].sort()).toEqual(['x/a', 'x/b', 'y/b']);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.2', 80), true);
  });

  it('default deny ingress in a namespace; node traffic and other namespaces unaffected', () => {
    const w = base();
    w.policies.push(policyObj('x', 'deny', { podSelector: {} }));
    const s = state(w);
    const m = model(s);
    expectFlow(s, m, tcp('10.244.1.6', '10.244.1.2', 80), false);
    expectFlow(s, m, tcp('10.244.1.2', '10.244.1.3', 81), false);
    expectFlow(s, m, tcp('10.244.1.2', '10.244.1.6', 80), true);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.2', proto: 'icmp' }, false);
    // the kubelet's probes come from the node: never filtered (and in the kernel they do not cross forward)
    expect(flowAllowed(s, tcp('172.30.0.2', '10.244.1.2', 80), NODE)).toBe(true);
  });

  it('allow-all ingress beside a deny: the union allows', () => {
    const w = base();
    w.policies.push(policyObj('x', 'deny', { podSelector: {} }), policyObj('x', 'all', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{}] }));
    const s = state(w);
    const m = model(s);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.2', proto: 'icmp' }, true);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.3', 81), false);
  });

  it('podSelector, namespaceSelector, and both combined', () => {
    const w = base();
    w.policies.push(
      policyObj('x', 'p', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
      policyObj('x', 'q', {
        podSelector: { matchLabels: { pod: 'b' } },
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'b' } }, podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
      policyObj('y', 'r', {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }] }],
      }),
    );
    const s = state(w);
    const m = model(s);
    // p: only x/b reaches x/a (not y/b, same labels in another namespace)
    expectFlow(s, m, tcp('10.244.1.3', '10.244.1.2', 80), true);
    expectFlow(s, m, tcp('10.244.1.6', '10.244.1.2', 80), false);
    // q: y/a (namespace team=b and pod=a) reaches x/b; x/a (pod=a but team=a) does not
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.3', 81), true);
    expectFlow(s, m, tcp('10.244.1.2', '10.244.1.3', 81), false);
    // r: every pod of namespace x reaches y/b; y/a does not; host-network pods are never peers
    expectFlow(s, m, tcp('10.244.2.4', '10.244.1.6', 80), true);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.6', 80), false);
    expect(s.rules.size).toBe(3);
  });

  it('ipBlock with except, both directions', () => {
    const w = base();
    w.policies.push(
      policyObj('x', 'p', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24'] } }] }],
        egress: [{ to: [{ ipBlock: { cidr: '192.168.0.0/16', except: ['192.168.5.0/24'] } }] }],
      }),
    );
    const s = state(w);
    const m = model(s);
    expectFlow(s, m, tcp('10.244.1.3', '10.244.1.2', 80), true);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.2', 80), false);
    expectFlow(s, m, tcp('10.244.1.2', '192.168.4.1', 443), true);
    expectFlow(s, m, tcp('10.244.1.2', '192.168.5.1', 443), false);
    expectFlow(s, m, tcp('10.244.1.2', '10.244.1.3', 81), false);
  });

  it('ports: numbers, endPort ranges, named per target pod, protocols', () => {
    const w = base();
    w.policies.push(
      policyObj('x', 'p', {
        podSelector: {},
        ingress: [{ ports: [{ port: 'serve-80' }, { port: 'dns', protocol: 'UDP' }, { port: 9000, endPort: 9010 }, { protocol: 'SCTP' }] }],
      }),
    );
    const s = state(w);
    const m = model(s);
    // x/a has serve-80 = 80 and dns = udp 53; x/b has no such names: only the numeric ports
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.2', 80), true);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.2', proto: 'udp', dport: 53 }, true);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.2', proto: 'tcp', dport: 53 }, false);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.3', 80), false);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.3', 9005), true);
    expectFlow(s, m, tcp('10.244.2.5', '10.244.1.3', 9011), false);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.3', proto: 'sctp', dport: 7 }, true);
    expectFlow(s, m, { src: '10.244.2.5', dst: '10.244.1.3', proto: 'udp', dport: 7 }, false);
  });

  it('egress named ports resolve on the destination pod', () => {
    const w = base();
    w.policies.push(
      policyObj('x', 'p', {
        podSelector: { matchLabels: { pod: 'b' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ podSelector: {} }], ports: [{ port: 'serve-80' }] }],
      }),
    );
    const s = state(w);
    const m = model(s);
    // x/a names port 80 serve-80, x/c names 8080 serve-80
    expectFlow(s, m, tcp('10.244.1.3', '10.244.1.2', 80), true);
    expectFlow(s, m, tcp('10.244.1.3', '10.244.2.4', 8080), true);
    expectFlow(s, m, tcp('10.244.1.3', '10.244.2.4', 80), false);
    expectFlow(s, m, tcp('10.244.1.3', '10.244.1.6', 80), false);
  });

  it('egress deny also covers traffic to the node (input hook); ingress-only policy does not', () => {
    const w = base();
    w.policies.push(policyObj('x', 'p', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Egress'] }));
    const s = state(w);
    const m = model(s);
    expect(m.trace({ src: '10.244.1.2', dst: '172.30.0.2', proto: 'tcp', dport: 6443, hook: 'input' })).toBe('drop');
    expect(m.trace({ src: '10.244.1.3', dst: '172.30.0.2', proto: 'tcp', dport: 6443, hook: 'input' })).toBe('accept');
  });

  it('established flows are accepted first; a mid-stream TCP packet without conntrack to an isolated pod is dropped', () => {
    const w = base();
    w.policies.push(policyObj('x', 'deny', { podSelector: { matchLabels: { pod: 'a' } } }));
    const m = model(state(w));
    expect(m.trace({ ...tcp('10.244.1.6', '10.244.1.2', 80), ct: 'established' })).toBe('accept');
    // the reverse direction (from the isolated pod) too: a deleted flow must not be re-created from either end
    expect(m.trace({ ...tcp('10.244.1.2', '10.244.1.6', 5555), syn: false })).toBe('drop');
    expect(m.trace({ ...tcp('10.244.1.3', '10.244.1.6', 5555), syn: false })).toBe('accept');
  });

  it('host-network pods are not subject to policy', () => {
    const w = base();
    w.policies.push(policyObj('y', 'deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    const s = state(w);
    expect([...s.pods.keys()]).not.toContain('y/h');
    expect(model(s).elements('ing4').has('172.30.0.2')).toBe(false);
  });

  it('dual-stack pods get both families', () => {
    const w = base();
    w.pods.push({ ns: 'x', name: 'd', ip: ['10.244.1.9', 'fd00:10:244:1::9'], labels: { pod: 'd' } });
    w.pods.push({ ns: 'x', name: 'e', ip: ['10.244.2.9', 'fd00:10:244:2::9'], labels: { pod: 'e' }, node: 'n2' });
    w.policies.push(policyObj('x', 'p', { podSelector: { matchLabels: { pod: 'd' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'e' } } }] }] }));
    const s = state(w);
    const m = model(s);
    expectFlow(s, m, tcp('fd00:10:244:2::9', 'fd00:10:244:1::9', 80), true);
    expectFlow(s, m, tcp('fd00:10:244:2::4', 'fd00:10:244:1::9', 80), false);
    expectFlow(s, m, tcp('10.244.2.9', '10.244.1.9', 80), true);
  });
});

describe('rules as text', () => {
  it('one isolated pod', () => {
    const w = base();
    w.policies.push(
      policyObj('x', 'p', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }, { ipBlock: { cidr: '192.168.0.0/16', except: ['192.168.1.0/24'] } }], ports: [{ port: 80 }, { port: 8000, endPort: 8080 }] }],
      }),
    );
    const r = render(state(w));
    const chain = r.sets.get('ing4')!.elements.get('10.244.1.2')!.replace('jump ', '');
    expect(chain).toMatch(/^in-[0-9a-f]{12}$/);
    const rules = r.chains.get(chain)!;
    expect(rules).toHaveLength(3);
    expect(rules[0]).toMatch(/^ip saddr @s[0-9a-f]{10}-4 meta l4proto \. th dport \{ tcp \. 80, tcp \. 8000-8080 \} return$/);
    expect(rules[1]).toBe('ip saddr { 192.168.0.0-192.168.0.255, 192.168.2.0-192.168.255.255 } meta l4proto . th dport { tcp . 80, tcp . 8000-8080 } return');
    expect(rules[2]).toBe('drop');
    expect([...r.sets.get('ing4')!.elements]).toEqual([['10.244.1.2', `jump ${chain}`]]);
    const setName = /@(\S+)/.exec(rules[0]!)![1]!;
    expect([...r.sets.get(setName)!.elements.keys()]).toEqual(['10.244.1.3']);
    const full = fullProgram(T, r).render().split('\n');
    expect(full.slice(0, 3)).toEqual([`add table inet ${T}`, `delete table inet ${T}`, `add table inet ${T} { comment "flatnet NetworkPolicy" ; }`]);
    expect(full).toContain(`add chain inet ${T} forward { type filter hook forward priority filter ; policy accept ; }`);
  });

  it('a peer pod coming and going is one element add / delete; another replica shares its chain', () => {
    const w = base();
    w.policies.push(policyObj('x', 'p', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: {} }] }] }));
    const before = render(state(w));
    w.pods.push({ ns: 'x', name: 'n', ip: '10.244.2.77', node: 'n2' });
    const after = render(state(w));
    const d = diffProgram(T, before, after);
    expect(d.tx.render().trim().split('\n')).toEqual([expect.stringMatching(/^add element inet tpol s[0-9a-f]{10}-4 \{ 10\.244\.2\.77 \}$/)]);
    expect(d.restricts).toBe(false);
    const back = diffProgram(T, after, before);
    expect(back.tx.render().trim().split('\n')).toEqual([expect.stringMatching(/^delete element inet tpol s[0-9a-f]{10}-4 \{ 10\.244\.2\.77 \}$/)]);
    expect(back.restricts).toBe(true);
    const chain = after.sets.get('ing4')!.elements.get('10.244.1.2')!;
    w.pods.push({ ns: 'x', name: 'a2', ip: '10.244.1.77', labels: { pod: 'a' } });
    // the replica is also a new peer of the rule (podSelector {}): two elements, no chain
    const more = diffProgram(T, after, render(state(w))).tx.render().trim().split('\n');
    expect(more).toContain(`add element inet ${T} ing4 { 10.244.1.77 : ${chain} }`);
    expect(more).toContain(`add element inet ${T} iso4 { 10.244.1.77 }`);
    expect(more.filter((l) => l.includes('chain'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// random worlds and random change sequences: incremental programs applied one after another (strictly) hold the
// same ruleset as a full program, and the traced verdict equals the reference decision for every probe

const LABELS = ['a', 'b', 'c'];
const arbLabels = fc.dictionary(fc.constantFrom('app', 'tier'), fc.constantFrom(...LABELS), { maxKeys: 2 });
const arbSel = fc.oneof(fc.constant({}), arbLabels.map((l) => ({ matchLabels: l })));
const arbPeer = fc.oneof(
  arbSel.map((s) => ({ podSelector: s })),
  arbSel.map((s) => ({ namespaceSelector: s })),
  fc.tuple(arbSel, arbSel).map(([p, n]) => ({ podSelector: p, namespaceSelector: n })),
  fc.constantFrom({ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.1.0/28'] } }, { ipBlock: { cidr: '10.244.2.0/24' } }),
);
const arbPort = fc.oneof(
  fc.constantFrom({ port: 80 }, { port: 'web' }, { port: 'dns', protocol: 'UDP' }, { protocol: 'UDP' }, { port: 8000, endPort: 8100 }, { port: 81, protocol: 'SCTP' }),
);
const arbRule = fc.record({ peers: fc.option(fc.array(arbPeer, { minLength: 1, maxLength: 2 }), { nil: undefined }), ports: fc.array(arbPort, { maxLength: 2 }) });
const arbPolicy = fc.record({
  ns: fc.constantFrom('x', 'y'),
  sel: arbSel,
  types: fc.constantFrom(['Ingress'], ['Egress'], ['Ingress', 'Egress']),
  ingress: fc.array(arbRule, { maxLength: 2 }),
  egress: fc.array(arbRule, { maxLength: 2 }),
});
const arbPod = fc.record({ ns: fc.constantFrom('x', 'y'), labels: arbLabels, local: fc.boolean(), named: fc.boolean() });

type Gen<A> = A extends fc.Arbitrary<infer T> ? T : never;

function buildWorld(pols: Gen<typeof arbPolicy>[], pods: Gen<typeof arbPod>[], nsLabels: Record<string, string>[]): World {
  return {
    namespaces: [
      ['x', nsLabels[0] ?? {}],
      ['y', nsLabels[1] ?? {}],
    ],
    pods: pods.map((p, i) => ({
      ns: p.ns,
      name: `p${i}`,
      ip: `10.244.${p.local ? 1 : 2}.${10 + i}`,
      labels: p.labels,
      node: p.local ? 'n1' : 'n2',
      ports: p.named ? [{ name: 'web', containerPort: 8080 + i }, { name: 'dns', containerPort: 53, protocol: 'UDP' }] : [],
    })),
    policies: pols.map((p, i) =>
      policyObj(p.ns, `pol${i}`, {
        podSelector: p.sel,
        policyTypes: p.types,
        ingress: p.ingress.map((r) => ({ ...(r.peers ? { from: r.peers } : {}), ports: r.ports })),
        egress: p.egress.map((r) => ({ ...(r.peers ? { to: r.peers } : {}), ports: r.ports })),
      }),
    ),
  };
}

function probes(w: World): Flow[] {
  const ips = [...w.pods.map((p) => p.ip as string), '10.244.1.5', '192.168.9.9'];
  const out: Flow[] = [];
  for (const s of ips)
    for (const d of ips) {
      if (s === d) continue;
      for (const [proto, dport] of [
        ['tcp', 80],
        ['tcp', 8050],
        ['tcp', 8085],
        ['udp', 53],
        ['sctp', 81],
        ['icmp', undefined],
      ] as const)
        out.push({ src: s, dst: d, proto, ...(dport !== undefined ? { dport } : {}) });
    }
  return out;
}

describe('tracer agrees with the reference decision over random policies, incrementally', () => {
  it('random worlds and changes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(arbPolicy, { maxLength: 3 }), fc.array(arbPod, { minLength: 1, maxLength: 6 }), fc.array(arbLabels, { minLength: 2, maxLength: 2 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (steps) => {
          const m = new PolicyNftModel(T);
          let prev: ReturnType<typeof render> | undefined;
          for (const [pols, pods, nsl] of steps) {
            const w = buildWorld(pols, pods, nsl);
            const s = state(w);
            const next = render(s);
            m.apply(prev ? diffProgram(T, prev, next).tx.render() : fullProgram(T, next).render());
            prev = next;
            const fresh = model(s);
            for (const f of probes(w)) {
              const want = flowAllowed(s, f, NODE) ? 'accept' : 'drop';
              const got = m.trace(f);
              if (got !== want || fresh.trace(f) !== want) throw new Error(`flow ${JSON.stringify(f)}: want ${want}, incremental ${got}, full ${fresh.trace(f)}`);
            }
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('conntrack re-check', () => {
  const text = [
    'tcp      6 431999 ESTABLISHED src=10.244.1.6 dst=10.96.0.10 sport=40000 dport=80 src=10.244.1.2 dst=10.244.1.6 sport=8080 dport=40000 [ASSURED] mark=0 use=1',
    'tcp      6 431999 ESTABLISHED src=10.244.1.3 dst=10.244.1.2 sport=40001 dport=8080 src=10.244.1.2 dst=10.244.1.3 sport=8080 dport=40001 [ASSURED] mark=0 use=1',
    'tcp      6 431999 ESTABLISHED src=172.30.0.2 dst=10.244.1.2 sport=40002 dport=8080 src=10.244.1.2 dst=172.30.0.2 sport=8080 dport=40002 [ASSURED] mark=0 use=1',
    'icmp     1 29 src=10.244.1.6 dst=10.244.1.2 type=8 code=0 id=7 src=10.244.1.2 dst=10.244.1.6 type=0 code=0 id=7 mark=0 use=1',
    'udp      17 20 src=10.244.9.9 dst=10.244.9.8 sport=1 dport=2 [UNREPLIED] src=10.244.9.8 dst=10.244.9.9 sport=2 dport=1 mark=0 use=1',
    // finished flows of the same client: reset (CLOSE) and closed (TIME_WAIT)
    'tcp      6 9 CLOSE src=10.244.1.6 dst=10.244.1.2 sport=40003 dport=8080 src=10.244.1.2 dst=10.244.1.6 sport=8080 dport=40003 [ASSURED] mark=0 use=1',
    'ipv4     2 tcp      6 110 TIME_WAIT src=10.244.1.6 dst=10.244.1.2 sport=40004 dport=8080 src=10.244.1.2 dst=10.244.1.6 sport=8080 dport=40004 [ASSURED] mark=0 use=1',
  ].join('\n');

  it('parses both tuples', () => {
    const e = parseConntrack(text);
    expect(e).toHaveLength(7);
    expect(e[0]).toEqual({ family: 4, proto: 'tcp', origSrc: '10.244.1.6', origDst: '10.96.0.10', origSport: 40000, origDport: 80, replySrc: '10.244.1.2', replySport: 8080, tcpState: 'ESTABLISHED' });
    expect(e[3]).toEqual({ family: 4, proto: 'icmp', origSrc: '10.244.1.6', origDst: '10.244.1.2', replySrc: '10.244.1.2' });
    expect(e.slice(5).map((x) => x.tcpState)).toEqual(['CLOSE', 'TIME_WAIT']);
  });

  it('deletes exactly the flows the new state denies, judged on the real (DNATed) server; finished TCP flows are left to expire', () => {
    const w = base();
    w.policies.push(policyObj('x', 'p', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
    const cmds = planFlowDeletions(state(w), parseConntrack(text), NODE);
    expect(cmds).toEqual([
      ['conntrack', '-D', '-f', 'ipv4', '-p', 'tcp', '--orig-src', '10.244.1.6', '--orig-dst', '10.96.0.10', '--orig-port-src', '40000', '--orig-port-dst', '80'],
      ['conntrack', '-D', '-f', 'ipv4', '-p', 'icmp', '--orig-src', '10.244.1.6', '--orig-dst', '10.244.1.2'],
    ]);
  });
});
