// NetworkPolicy on a real kernel: the policy controller programs its table in a node netns (test/netns/policy-fixture.ts)
// from NetworkPolicy/Pod/Namespace objects, and real packets between pods on the node's bridge, a routed "remote"
// pod, an outside host and the node itself are delivered or dropped. Service DNAT comes from flatnet's real
// nftables and iptables proxy backends.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { MemoryPolicySource, PolicyController } from '../../proxy/policy/controller.ts';
import { IptablesProxier } from '../../proxy/services/backends/iptables/proxier.ts';
import { createBackend } from '../../proxy/services/backends/nftables/index.ts';
import { planServicePort } from '../../proxy/services/model/plan.ts';
import type { Endpoint, ProxyBackend, ServicePlan } from '../../proxy/services/model/types.ts';
import { proxyConfig, servicePort } from '../helpers/proxy-fixtures.ts';
import { waitFor } from '../helpers/wait.ts';
import { nsObj, podObj, policyObj } from '../unit/proxy/policy/fixtures.ts';
import { IP, setupPolicyFixture, type PolicyFixture } from './policy-fixture.ts';

const silent = { debug() {}, info() {}, warn() {}, error() {} };
const runner = new ExecRunner();

const PODS = [
  { ns: 'x', name: 'a', ip: IP.a, labels: { pod: 'a' }, ports: [{ name: 'http', containerPort: 8080 }] },
  { ns: 'x', name: 'b', ip: IP.b, labels: { pod: 'b' } },
  { ns: 'y', name: 'c', ip: IP.c, labels: { pod: 'c' } },
  { ns: 'y', name: 'r', ip: IP.r, labels: { pod: 'r' }, node: 'n2' },
];

const ok = (answers: string[]): boolean[] => answers.map((a) => !a.startsWith('ERR'));

describe('NetworkPolicy on a real kernel', () => {
  let fx: PolicyFixture;
  let src: MemoryPolicySource;
  let ctl: PolicyController;
  const table = (): string => `${fx.prefix}-pol`;

  const newController = (): PolicyController =>
    new PolicyController({ nodeName: 'n1', runner, log: silent, source: src, table: table(), netns: fx.node.path });

  const settle = async (): Promise<void> => {
    await waitFor('policy programmed', () => ctl.settled, 20_000, 20);
  };
  const setPolicies = async (...pols: Record<string, unknown>[]): Promise<void> => {
    for (const p of current) if (!pols.some((q) => JSON.stringify(q.metadata) === JSON.stringify(p.metadata))) src.remove('policy', p);
    for (const p of pols) src.set('policy', p);
    current = pols;
    await settle();
  };
  let current: Record<string, unknown>[] = [];

  beforeAll(async () => {
    fx = await setupPolicyFixture();
    src = new MemoryPolicySource();
    src.set('namespace', nsObj('x', { team: 'x' }));
    src.set('namespace', nsObj('y', { team: 'y' }));
    for (const p of PODS) src.set('pod', podObj(p));
    ctl = newController();
    await ctl.start();
    await settle();
  });

  afterAll(async () => {
    try {
      await ctl?.stop();
    } finally {
      fx?.teardown();
    }
  });

  it('bridged pod traffic reaches the inet forward hook (bridge-nf-call-iptables on)', () => {
    expect(fx.node.exec(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']).trim()).toBe('1');
  });

  it('no policy: everything reaches a', () => {
    const r = fx.probe('c', [`tcp:${IP.a}:80`, `tcp:${IP.b}:80`]);
    expect(r).toEqual([`a ${IP.c}`, `b ${IP.c}`]);
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`]))).toEqual([true]);
    expect(ok(fx.probe('o', [`tcp:${IP.a}:80`]))).toEqual([true]);
  });

  it('default deny ingress in namespace x: bridged, routed and outside peers dropped; the node (probes) still allowed', async () => {
    await setPolicies(policyObj('x', 'deny', { podSelector: {} }));
    expect(ok(fx.probe('c', [`tcp:${IP.a}:80`, `tcp:${IP.b}:8080`, `udp:${IP.a}:53`], 700))).toEqual([false, false, false]);
    expect(ok(fx.probe('b', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
    expect(ok(fx.probe('o', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
    // the kubelet's probes come from the node's own addresses
    expect(fx.probe('node', [`tcp:${IP.a}:80`])).toEqual([`a ${IP.gw}`]);
    // namespace y is not isolated, and x's pods may still go out
    expect(ok(fx.probe('a', [`tcp:${IP.c}:80`, `tcp:${IP.r}:80`]))).toEqual([true, true]);
  });

  it('podSelector + namespaceSelector: only c (pod=c in team=y) reaches a', async () => {
    await setPolicies(
      policyObj('x', 'deny', { podSelector: {} }),
      policyObj('x', 'from-c', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } }, podSelector: { matchLabels: { pod: 'c' } } }] }],
      }),
    );
    expect(ok(fx.probe('c', [`tcp:${IP.a}:80`, `tcp:${IP.b}:80`], 700))).toEqual([true, false]);
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
    expect(ok(fx.probe('b', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
  });

  it('a pod coming and going moves in and out of the peer set', async () => {
    await setPolicies(policyObj('x', 'from-r', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'r' } }, namespaceSelector: {} }] }] }));
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([true]);
    src.set('pod', podObj({ ...PODS[3]!, labels: { pod: 'other' } }));
    await settle();
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
    src.set('pod', podObj(PODS[3]!));
    await settle();
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([true]);
  });

  it('ipBlock with except', async () => {
    await setPolicies(
      policyObj('x', 'blocks', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: [`${IP.r}/32`] } }, { ipBlock: { cidr: '192.168.77.0/24' } }] }],
      }),
    );
    expect(ok(fx.probe('c', [`tcp:${IP.a}:80`], 700))).toEqual([true]);
    expect(ok(fx.probe('o', [`tcp:${IP.a}:80`], 700))).toEqual([true]);
    expect(ok(fx.probe('r', [`tcp:${IP.a}:80`], 700))).toEqual([false]);
  });

  it('ports: a named port (resolved on a), an endPort range, UDP', async () => {
    await setPolicies(
      policyObj('x', 'ports', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ ports: [{ port: 'http' }, { port: 9000, endPort: 9010 }, { port: 53, protocol: 'UDP' }] }],
      }),
    );
    expect(ok(fx.probe('c', [`tcp:${IP.a}:8080`, `tcp:${IP.a}:9005`, `udp:${IP.a}:53`, `tcp:${IP.a}:80`], 700))).toEqual([true, true, true, false]);
  });

  it('egress: only to c on TCP 8080; to the node itself (input hook) too', async () => {
    await setPolicies(
      policyObj('x', 'egress', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ podSelector: { matchLabels: { pod: 'c' } }, namespaceSelector: {} }], ports: [{ port: 8080 }] }],
      }),
    );
    expect(ok(fx.probe('a', [`tcp:${IP.c}:8080`, `tcp:${IP.c}:80`, `tcp:${IP.b}:8080`, `tcp:${IP.r}:8080`, `tcp:${IP.gw}:8181`], 700))).toEqual([
      true,
      false,
      false,
      false,
      false,
    ]);
    // ingress to a is not isolated by an egress-only policy
    expect(ok(fx.probe('b', [`tcp:${IP.a}:80`], 700))).toEqual([true]);
  });

  describe.each(['nftables', 'iptables'] as const)('after Service DNAT (%s proxy)', (mode) => {
    let backend: ProxyBackend;
    beforeAll(async () => {
      const svc = servicePort({ name: 'web', clusterIP: '10.96.0.10', port: 80 });
      const eps: Endpoint[] = [{ ip: IP.a, port: 8080, ready: true, serving: true, terminating: false, isLocal: true, nodeName: 'n1' }];
      const node = { name: 'n1', ips: [IP.node], podCIDRs: ['10.244.1.0/24'] };
      const plans = new Map<string, ServicePlan>([[svc.key, planServicePort(svc, eps, node)]]);
      backend =
        mode === 'nftables'
          ? await createBackend({ family: 4, runner, log: silent, table: `${fx.prefix}-proxy`, netns: fx.node.path })
          : new IptablesProxier({ runner, log: silent, netns: fx.node.path, chainPrefix: fx.prefix.toUpperCase() });
      await backend.sync({ full: true, changed: new Set(), plans, node, config: proxyConfig(), family: 4 });
    });
    afterAll(async () => {
      await backend?.cleanup();
    });

    it('policy judges the real endpoint and port, not the ClusterIP', async () => {
      await setPolicies(policyObj('x', 'svc', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } }, namespaceSelector: {} }], ports: [{ port: 8080 }] }] }));
      expect(fx.probe('c', ['tcp:10.96.0.10:80'], 1000)).toEqual([`a ${IP.c}`]);
      expect(ok(fx.probe('b', ['tcp:10.96.0.10:80'], 700))).toEqual([false]);
      // a policy naming the service port (80) allows nothing on the endpoint's 8080
      await setPolicies(policyObj('x', 'svc', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ port: 80 }] }] }));
      expect(ok(fx.probe('c', ['tcp:10.96.0.10:80'], 700))).toEqual([false]);
    });
  });

  it('an established flow survives a change that still allows it and is cut by one that does not', async () => {
    await setPolicies(policyObj('x', 'flow', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: {}, namespaceSelector: {} }] }] }));
    const flow = await fx.flow('c', IP.a, 8080);
    try {
      expect(await flow.ping()).toBe('ok');
      // still allowed, by another rule shape: the flow goes on
      await setPolicies(policyObj('x', 'flow', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.244.1.0/24' } }], ports: [{ port: 8080 }] }] }));
      expect(await flow.ping()).toBe('ok');
      const deleted = ctl.flowsDeleted;
      // no longer allowed: the conntrack entry goes and the next packets are dropped
      await setPolicies(policyObj('x', 'flow', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
      expect(ctl.flowsDeleted).toBeGreaterThan(deleted);
      expect(await flow.ping()).toBe('timeout');
      expect(await flow.ping()).toBe('timeout');
      expect(ok(fx.probe('b', [`tcp:${IP.a}:8080`], 700))).toEqual([true]);
    } finally {
      flow.close();
    }
  });

  it('a controller restart never opens a gap: denied stays denied, allowed stays allowed', async () => {
    await setPolicies(policyObj('x', 'restart', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
    const denied = await fx.loop('c', IP.a, 8080, 300);
    const allowed = await fx.loop('b', IP.a, 8080, 1000);
    try {
      for (let i = 0; i < 3; i++) {
        await ctl.stop();
        // a policy change while the controller is down is picked up by the first full sync of the next one
        src.set('policy', policyObj('x', `restart-extra-${i}`, { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ ipBlock: { cidr: `10.244.${3 + i}.0/24` } }] }] }));
        ctl = newController();
        await ctl.start();
        await settle();
        expect(fx.probe('b', [`tcp:${IP.a}:8080`])).toEqual([`a ${IP.b}`]);
      }
    } finally {
      const d = await denied.stop();
      const a = await allowed.stop();
      expect(d.ok, 'denied connections that got through').toBe(0);
      expect(d.fail).toBeGreaterThan(0);
      expect(a.fail, 'allowed connections that failed').toBe(0);
      expect(a.ok).toBeGreaterThan(0);
      for (let i = 0; i < 3; i++) src.remove('policy', policyObj('x', `restart-extra-${i}`, {}));
    }
  });

  it('changes go through the long-lived nft; with the table deleted by hand its transaction fails and the retry rebuilds the table', async () => {
    const fromB = policyObj('x', 'hand', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] });
    await setPolicies(fromB);
    expect(ctl.lastApplyVia).toBe('session');
    expect(ok(fx.probe('c', [`tcp:${IP.a}:8080`], 700))).toEqual([false]);
    fx.node.exec(['nft', 'delete', 'table', 'inet', table()]);
    // the next change: its diff names a table that is gone, nft rejects it, and the retry is a full nft -f
    await setPolicies(fromB, policyObj('x', 'hand-udp', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ port: 53, protocol: 'UDP' }] }] }));
    expect(ctl.lastApplyVia).toBe('nft -f');
    expect(ctl.lastSyncError).toBeUndefined();
    expect(ok(fx.probe('c', [`tcp:${IP.a}:8080`, `udp:${IP.a}:53`], 700))).toEqual([false, true]);
    expect(ok(fx.probe('b', [`tcp:${IP.a}:8080`], 700))).toEqual([true]);
    // and the session carries the changes after it
    await setPolicies(fromB);
    expect(ctl.lastApplyVia).toBe('session');
    expect(ok(fx.probe('c', [`udp:${IP.a}:53`], 700))).toEqual([false]);
  });

  it('cleanup removes the table', async () => {
    await PolicyController.cleanup(runner, table(), fx.node.path);
    expect(fx.node.exec(['nft', 'list', 'tables'])).not.toContain(table());
    expect(ok(fx.probe('c', [`tcp:${IP.a}:80`]))).toEqual([true]);
  });
});
