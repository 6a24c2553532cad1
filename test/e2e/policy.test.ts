// NetworkPolicy e2e on the local cluster: real NetworkPolicy, Pod and Namespace objects in the apiserver, pods run
// by containerd through the node agent, flatnet's daemon (policy controller + proxy) on every node under deploy/'s
// RBAC. A connectivity matrix (pod -> pod IP, pod -> Service) before and after policies. The proxy mode comes from
// FLATNET_PROXY_MODE (default iptables); policy-nftables.test.ts runs the same scenarios in nftables mode.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.ts';
import { manifest, netexecPod, useCluster, type Cluster } from './helpers/cluster.ts';

type Mode = 'iptables' | 'nftables';
const MODE = (process.env.FLATNET_PROXY_MODE ?? 'iptables') as Mode;

function policy(ns: string, name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec };
}

describe(`NetworkPolicy e2e (${MODE} proxy)`, () => {
  let c: Cluster;
  let ns: string;
  let ns2: string;
  let worker: string;
  let worker2: string;
  const ips: Record<string, string> = {};
  let svcIP = '';
  let applied: Record<string, unknown>[] = [];

  // servers s1 (worker) and s2 (worker2); clients: c1 (worker, role=client: same node as s1, bridged), c2 (worker2,
  // role=other), c3 (worker, role=other, bridged with s1), d1 in the second namespace (role=client)
  const clients = (): string[] => [`${ns}/c1`, `${ns}/c2`, `${ns}/c3`, `${ns2}/d1`];
  const targets = (): [string, string][] => [
    ['s1', `http://${ips.s1}:8080/hostname`],
    ['s2', `http://${ips.s2}:8080/hostname`],
    ['svc', `http://${svcIP}/hostname`],
  ];

  async function matrix(): Promise<Record<string, boolean>> {
    const out: Record<string, boolean> = {};
    await Promise.all(
      clients().flatMap((from) =>
        targets().map(async ([name, url]) => {
          const r = await c.exec(from, ['curl', '-sS', '-m', '2', url], { allowFail: true });
          out[`${from.split('/')[1]}->${name}`] = r.code === 0 && r.stdout.trim().length > 0;
        }),
      ),
    );
    return Object.fromEntries(Object.entries(out).sort());
  }

  const expected = (allowed: string[]): Record<string, boolean> => {
    const out: Record<string, boolean> = {};
    for (const from of ['c1', 'c2', 'c3', 'd1']) for (const [t] of targets()) out[`${from}->${t}`] = allowed.includes(from);
    return Object.fromEntries(Object.entries(out).sort());
  };

  async function expectMatrix(want: Record<string, boolean>): Promise<void> {
    let last: Record<string, boolean> = {};
    await waitFor(
      'connectivity matrix',
      async () => {
        last = await matrix();
        return JSON.stringify(last) === JSON.stringify(want);
      },
      45_000,
      500,
    ).catch(() => undefined);
    expect(last).toEqual(want);
  }

  async function setPolicies(...pols: Record<string, unknown>[]): Promise<void> {
    if (applied.length) await c.deleteManifest(manifest(...applied));
    applied = pols;
    if (pols.length) await c.apply(manifest(...pols));
  }

  beforeAll(async () => {
    c = await useCluster({ nodes: 3, proxyMode: MODE });
    worker = c.nodeNames[1]!;
    worker2 = c.nodeNames[2]!;
    ns = await c.createNamespace('netpol');
    ns2 = await c.createNamespace('netpol2');
    await c.kubectl(['label', 'namespace', ns2, 'team=friends']);
    await c.apply(
      manifest(
        netexecPod({ name: 's1', namespace: ns, node: worker, labels: { app: 'server' } }),
        netexecPod({ name: 's2', namespace: ns, node: worker2, labels: { app: 'server' } }),
        netexecPod({ name: 'c1', namespace: ns, node: worker, labels: { role: 'client' } }),
        netexecPod({ name: 'c2', namespace: ns, node: worker2, labels: { role: 'other' } }),
        netexecPod({ name: 'c3', namespace: ns, node: worker, labels: { role: 'other' } }),
        netexecPod({ name: 'd1', namespace: ns2, node: worker2, labels: { role: 'client' } }),
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'web', namespace: ns },
          spec: { selector: { app: 'server' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
        },
      ),
    );
    for (const p of ['s1', 's2', 'c1', 'c2', 'c3']) await c.waitPodReady(`${ns}/${p}`);
    await c.waitPodReady(`${ns2}/d1`);
    for (const p of ['s1', 's2']) ips[p] = await c.podIP(`${ns}/${p}`);
    svcIP = await c.serviceIP(`${ns}/web`);
    await c.waitEndpoints(`${ns}/web`, 2);
  }, 600_000);

  afterAll(async () => {
    if (applied.length) await c?.deleteManifest(manifest(...applied));
    if (ns) await c.deleteNamespace(ns);
    if (ns2) await c.deleteNamespace(ns2);
  });

  it('no policy: every client reaches both servers and the Service', async () => {
    await expectMatrix(expected(['c1', 'c2', 'c3', 'd1']));
  });

  it('deny all ingress to the servers: nobody gets in, on the same node (bridged) or across nodes', async () => {
    await setPolicies(policy(ns, 'deny', { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'] }));
    await expectMatrix(expected([]));
  });

  it("the kubelet's readiness probes from the node still pass: servers stay Ready and in the Service", async () => {
    // the agent probes every 2 s and marks a pod unready after 3 failures: wait out more than that
    await new Promise((r) => setTimeout(r, 9000));
    for (const p of ['s1', 's2']) {
      const pod = await c.pod(`${ns}/${p}`);
      expect(pod.status.conditions?.find((x) => x.type === 'Ready')?.status, p).toBe('True');
    }
    await c.waitEndpoints(`${ns}/web`, 2, 5000);
  });

  it('allow role=client on the named port http: c1 only (d1 is in another namespace)', async () => {
    await setPolicies(
      policy(ns, 'deny', { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'] }),
      policy(ns, 'clients', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }], ports: [{ port: 'http' }] }],
      }),
    );
    await expectMatrix(expected(['c1']));
  });

  it('namespaceSelector + podSelector adds d1 (role=client in team=friends)', async () => {
    await setPolicies(
      policy(ns, 'clients', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [
          { from: [{ podSelector: { matchLabels: { role: 'client' } } }] },
          { from: [{ namespaceSelector: { matchLabels: { team: 'friends' } }, podSelector: { matchLabels: { role: 'client' } } }], ports: [{ port: 8080 }] },
        ],
      }),
    );
    await expectMatrix(expected(['c1', 'd1']));
  });

  it('egress deny on role=other, ingress open: c2 and c3 cannot get out', async () => {
    await setPolicies(policy(ns, 'no-egress', { podSelector: { matchLabels: { role: 'other' } }, policyTypes: ['Egress'] }));
    await expectMatrix(expected(['c1', 'd1']));
  });

  it('ipBlock: the servers accept the cluster CIDR except the worker2 pod CIDR', async () => {
    await setPolicies(
      policy(ns, 'blocks', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: [c.podCIDR(worker2)] } }] }],
      }),
    );
    // c1 and c3 live on worker; c2 and d1 on worker2
    await expectMatrix(expected(['c1', 'c3']));
  });

  it('a daemon restart keeps enforcing, then policies removed: everything reaches everything again', async () => {
    await c.restartDaemon(worker);
    await expectMatrix(expected(['c1', 'c3']));
    await setPolicies();
    await expectMatrix(expected(['c1', 'c2', 'c3', 'd1']));
  });
});
