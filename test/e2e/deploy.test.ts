// deploy/ against the real apiserver of the local cluster: the manifests apply (server-side dry-run, then for real),
// the RBAC is minimal (kubectl auth can-i as the ServiceAccount), and the node daemons run with that ServiceAccount's
// token, so real RBAC governs them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { useCluster, type Cluster } from './helpers/cluster.ts';

const deployDir = join(import.meta.dirname, '../../deploy');
const SA = 'system:serviceaccount:flatnet-system:flatnet';

describe('deploy/ on the local cluster', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await useCluster({ nodes: 3 });
  });

  it('applies with a server-side dry-run, then for real', async () => {
    const dry = await c.kubectlResult(['apply', '--dry-run=server', '-k', deployDir]);
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/daemonset\.apps\/flatnet .*\(server dry run\)/);
    const real = await c.kubectlResult(['apply', '-k', deployDir]);
    expect(real.code, real.stderr).toBe(0);
    const ds = await c.kubectlJson<{ spec: { template: { spec: { serviceAccountName: string } } } }>(['-n', 'flatnet-system', 'get', 'ds', 'flatnet', '-o', 'json']);
    expect(ds.spec.template.spec.serviceAccountName).toBe('flatnet');
    const cm = await c.kubectlJson<{ data: Record<string, string> }>(['-n', 'flatnet-system', 'get', 'cm', 'flatnet-config', '-o', 'json']);
    expect(Object.keys(cm.data).sort()).toEqual(['cni-conflist.json', 'config.yaml', 'kubeconfig.conf']);
  });

  it('the rendered single-file manifest is what kustomize renders', async () => {
    const rendered = await c.kubectl(['kustomize', deployDir]);
    expect(readFileSync(join(deployDir, 'flatnet.yaml'), 'utf8')).toBe(rendered);
  });

  // [verb, resource, namespace (default: all), subresource]
  type Check = [string, string, string?, string?];
  const canI = (verb: string, res: string, ns?: string, sub?: string) =>
    c.kubectlResult(['auth', 'can-i', verb, res, '--as', SA, ...(ns ? ['-n', ns] : ['--all-namespaces']), ...(sub ? [`--subresource=${sub}`] : [])]);
  const allowed: Check[] = [
    ['get', 'services'], ['list', 'services'], ['watch', 'services'],
    ['get', 'endpointslices.discovery.k8s.io'], ['list', 'endpointslices.discovery.k8s.io'], ['watch', 'endpointslices.discovery.k8s.io'],
    ['get', 'nodes'], ['list', 'nodes'], ['watch', 'nodes'], ['patch', 'nodes'],
    ['create', 'events'], ['create', 'events.events.k8s.io'],
    ['get', 'pods'], ['list', 'pods'], ['watch', 'pods'], ['list', 'namespaces'], ['watch', 'namespaces'],
    ['list', 'networkpolicies.networking.k8s.io'], ['watch', 'networkpolicies.networking.k8s.io'],
  ];
  const denied: Check[] = [
    ['get', 'secrets'], ['list', 'secrets', 'kube-system'], ['create', 'pods'], ['delete', 'pods'], ['update', 'namespaces'],
    ['create', 'services'], ['update', 'services'], ['delete', 'services'], ['patch', 'services', undefined, 'status'],
    ['update', 'endpointslices.discovery.k8s.io'], ['create', 'endpointslices.discovery.k8s.io'],
    ['list', 'endpoints'], ['delete', 'nodes'], ['create', 'nodes'], ['update', 'nodes'], ['patch', 'nodes', undefined, 'status'], ['update', 'nodes', undefined, 'status'],
    ['list', 'configmaps'], ['create', 'serviceaccounts', 'flatnet-system', 'token'], ['create', 'networkpolicies.networking.k8s.io'],
    ['impersonate', 'users'], ['escalate', 'clusterroles.rbac.authorization.k8s.io'], ['*', '*'],
  ];

  it('RBAC: everything the daemon needs is allowed', async () => {
    for (const [verb, res, ns, sub] of allowed) {
      const r = await canI(verb, res, ns, sub);
      expect(`${verb} ${res}: ${r.stdout.trim()}`).toBe(`${verb} ${res}: yes`);
    }
  });

  it('RBAC: nothing else is', async () => {
    for (const [verb, res, ns, sub] of denied) {
      const r = await canI(verb, res, ns, sub);
      expect(`${verb} ${res}${sub ? '/' + sub : ''}: ${r.stdout.trim()}`).toBe(`${verb} ${res}${sub ? '/' + sub : ''}: no`);
    }
  });

  it("the node daemons run with the ServiceAccount's token", async () => {
    const kubeconfig = c.state.daemonKubeconfig;
    expect(kubeconfig, 'cluster state records the daemon kubeconfig').toBeTruthy();
    const who = await c.exec(c.nodeNames[0]!, [c.kubectlBin, '--kubeconfig', kubeconfig!, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}']);
    expect(who.stdout.trim()).toBe(SA);
    // and the daemons actually work under it: their health endpoint says synced
    for (const n of c.nodeNames) {
      const r = await c.exec(n, ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:10256/healthz']);
      expect(`${n}: ${r.stdout}`).toBe(`${n}: 200`);
    }
  });
});
