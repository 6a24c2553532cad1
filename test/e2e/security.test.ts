// Least privilege on the local cluster's real apiserver and kernel:
//  - RBAC as "exactly this list": a SelfSubjectRulesReview made with the daemon's own ServiceAccount token lists
//    every rule it holds; the list must equal the one below, nothing more (kubectl auth can-i only checks samples);
//  - capabilities: a node's daemon restarted with only CAP_NET_ADMIN and CAP_NET_RAW in its bounding set (no
//    SYS_ADMIN, no DAC override, nothing else) syncs, serves a ClusterIP from the node and logs no permission error;
//  - the daemons' logs on every node hold neither their token nor a bearer header.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDetached } from '../cluster/control-plane/proc.ts';
import { daemonArgv, daemonLog, stopDaemon, waitDaemonsHealthy } from '../cluster/nodes/index.ts';
import { record } from '../cluster/state.ts';
import { useCluster, type Cluster } from './helpers/cluster.ts';

let c: Cluster;
let token = '';

beforeAll(async () => {
  c = await useCluster({ nodes: 3 });
  const kc = c.state.daemonKubeconfig!;
  token = /"?token"?:\s*"?([^"\s,]+)/.exec(readFileSync(kc, 'utf8'))?.[1] ?? '';
}, 900_000);

/** What a SelfSubjectRulesReview says the daemon's token may do in `namespace`, as "verb group/resource" lines. */
function rulesOf(namespace: string): string[] {
  const review = { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectRulesReview', spec: { namespace } };
  const out = execFileSync(c.kubectlBin, ['create', '--validate=false', '-f', '-', '-o', 'json'], {
    input: JSON.stringify(review),
    encoding: 'utf8',
    env: { ...process.env, KUBECONFIG: c.state.daemonKubeconfig! },
  });
  const status = (JSON.parse(out) as { status: { resourceRules: { verbs: string[]; apiGroups?: string[]; resources?: string[]; resourceNames?: string[] }[]; incomplete: boolean } }).status;
  expect(status.incomplete).toBe(false);
  const lines = new Set<string>();
  for (const r of status.resourceRules) {
    for (const g of r.apiGroups ?? ['']) for (const res of r.resources ?? []) for (const v of r.verbs) lines.add(`${v} ${g || 'core'}/${res}${r.resourceNames?.length ? `[${r.resourceNames.join(',')}]` : ''}`);
  }
  return [...lines].sort();
}

// deploy/manifests/rbac.yaml, plus what Kubernetes grants every authenticated identity (system:basic-user)
const EXPECTED = [
  'create authentication.k8s.io/selfsubjectreviews',
  'create authorization.k8s.io/selfsubjectaccessreviews',
  'create authorization.k8s.io/selfsubjectrulesreviews',
  'create core/events',
  'create events.k8s.io/events',
  'get core/namespaces',
  'get core/nodes',
  'get core/pods',
  'get core/services',
  'get discovery.k8s.io/endpointslices',
  'get networking.k8s.io/networkpolicies',
  'list core/namespaces',
  'list core/nodes',
  'list core/pods',
  'list core/services',
  'list discovery.k8s.io/endpointslices',
  'list networking.k8s.io/networkpolicies',
  'patch core/events',
  'patch core/nodes',
  'patch events.k8s.io/events',
  'watch core/namespaces',
  'watch core/nodes',
  'watch core/pods',
  'watch core/services',
  'watch discovery.k8s.io/endpointslices',
  'watch networking.k8s.io/networkpolicies',
].sort();

describe('least privilege on the local cluster', () => {
  it('RBAC: the daemon\'s own token can do exactly this list, in every namespace', () => {
    for (const ns of ['default', 'kube-system', 'flatnet-system']) expect(rulesOf(ns), ns).toEqual(EXPECTED);
  });

  describe('capabilities', () => {
    const node = (): string => c.nodeNames[1]!;
    afterAll(async () => {
      // back to the daemon as the cluster runs it
      await c.restartDaemon(node());
    }, 120_000);

    it('the daemon runs with only NET_ADMIN and NET_RAW: it syncs, serves a ClusterIP from the node, logs no EPERM', async () => {
      const s = c.state;
      const n = s.nodes.find((x) => x.name === node())!;
      await stopDaemon(s, n.name);
      const log = daemonLog(n);
      const from = readFileSync(log, 'utf8').length;
      const argv = ['setpriv', '--bounding-set=-all,+net_admin,+net_raw', '--inh-caps=-all', '--', ...daemonArgv(s, n)];
      const rec = startDetached(argv, { role: 'daemon', node: n.name, log, netns: n.netns, cwd: process.cwd() });
      record(s, (x) => x.processes.push(rec));
      await waitDaemonsHealthy(s, 120_000);
      // the process really has just those two (nsenter and setpriv exec, so the recorded PID is the daemon's)
      const capEff = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${rec.pid}/status`, 'utf8'))![1]!;
      expect(BigInt(`0x${capEff}`)).toBe((1n << 12n) | (1n << 13n)); // CAP_NET_ADMIN (12), CAP_NET_RAW (13)
      // a ClusterIP from the node's own netns: the kubernetes Service in front of the apiserver
      const r = await c.exec(n.name, ['curl', '-sk', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', 'https://10.96.0.1:443/version'], { allowFail: true });
      expect(['200', '401', '403']).toContain(r.stdout.trim());
      const text = readFileSync(log, 'utf8').slice(from);
      expect(text).not.toMatch(/Operation not permitted|EPERM|EACCES|Permission denied/);
    }, 180_000);
  });

  it('no daemon log holds its token or a bearer header', () => {
    expect(token.length).toBeGreaterThan(20);
    for (const n of c.state.nodes) {
      const text = readFileSync(daemonLog(n), 'utf8');
      expect(text.includes(token), n.name).toBe(false);
      expect(text, n.name).not.toMatch(/Bearer\s+\S/);
    }
  });
});
