// Validates kind-config.yaml (and its IPv6 / dual-stack variants) and the manifests in deploy/: they parse, carry the
// settings flatnet depends on, and agree with each other on subnets.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../proxy/config/config.ts';
import { parseOverlayConfig } from '../../../proxy/overlay/config.ts';

const root = join(import.meta.dirname, '../../..');
type Obj = Record<string, unknown> & { kind?: string; metadata?: { name?: string; namespace?: string } };

function docs(rel: string): Obj[] {
  const all = parseAllDocuments(readFileSync(join(root, rel), 'utf8'));
  for (const d of all) expect(d.errors, `${rel}: ${d.errors.join('; ')}`).toEqual([]);
  return all.map((d) => d.toJS() as Obj).filter(Boolean);
}
const manifests = () => readdirSync(join(root, 'deploy/manifests')).filter((f) => f !== 'kustomization.yaml').flatMap((f) => docs(`deploy/manifests/${f}`));
const find = (kind: string) => {
  const o = manifests().find((m) => m.kind === kind);
  expect(o, kind).toBeDefined();
  return o as Obj;
};
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const get = (o: unknown, path: string): any => path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], o);

function configMapFiles(rel = 'deploy/manifests/config.yaml') {
  const cm = docs(rel).find((d) => d.kind === 'ConfigMap')!;
  const data = cm.data as Record<string, string>;
  const proxy = docs2(data['config.yaml']!);
  return {
    text: data['config.yaml']!,
    proxy,
    overlay: proxy.overlay as Obj,
    conflist: JSON.parse(data['cni-conflist.json']!) as { name: string; cniVersion: string; plugins: { type: string }[] },
  };
}
function docs2(text: string): Obj {
  const [d] = parseAllDocuments(text);
  expect(d!.errors).toEqual([]);
  return d!.toJS() as Obj;
}

describe('kind configs', () => {
  for (const [file, family, overlayFile] of [
    ['kind-config.yaml', 'ipv4', 'deploy/manifests/config.yaml'],
    ['deploy/kind/kind-config-ipv6.yaml', 'ipv6', 'deploy/overlays/ipv6/config.yaml'],
    ['deploy/kind/kind-config-dual.yaml', 'dual', 'deploy/overlays/dual/config.yaml'],
  ] as const) {
    it(`${file}: no kindnet, no kube-proxy, 1 control plane + 2 workers, subnets match the ConfigMap`, () => {
      const [cfg] = docs(file);
      expect(cfg!.kind).toBe('Cluster');
      expect(cfg!.apiVersion).toBe('kind.x-k8s.io/v1alpha4');
      const net = cfg!.networking as Record<string, unknown>;
      expect(net.disableDefaultCNI).toBe(true);
      expect(net.kubeProxyMode).toBe('none');
      expect(net.ipFamily).toBe(family);
      const roles = (cfg!.nodes as { role: string }[]).map((n) => n.role);
      expect(roles).toEqual(['control-plane', 'worker', 'worker']);
      const { proxy, overlay } = configMapFiles(overlayFile);
      expect(proxy.clusterCIDR).toBe(net.podSubnet);
      expect(overlay.clusterCIDR).toBe(net.podSubnet);
      expect(overlay.serviceCIDR).toBe(net.serviceSubnet);
    });
  }
});

describe('deploy/ manifests', () => {
  it('kustomization lists every manifest', () => {
    const [k] = docs('deploy/manifests/kustomization.yaml');
    const manifests = readdirSync(join(root, 'deploy/manifests')).filter((f) => f !== 'kustomization.yaml');
    expect((k!.resources as string[]).sort()).toEqual(manifests.sort());
    // deploy/ and each overlay build on that one list
    expect(docs('deploy/kustomization.yaml')[0]!.resources).toEqual(['manifests']);
    for (const o of readdirSync(join(root, 'deploy/overlays'))) expect(docs(`deploy/overlays/${o}/kustomization.yaml`)[0]!.resources, o).toEqual(['../../manifests']);
  });

  it('RBAC grants exactly what the daemon uses', () => {
    const role = find('ClusterRole');
    const grants = new Set<string>();
    for (const r of role.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]) {
      for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) grants.add(`${g || 'core'}/${res}:${v}`);
    }
    expect([...grants].sort()).toEqual(
      [
        'core/services:get', 'core/services:list', 'core/services:watch',
        'core/nodes:get', 'core/nodes:list', 'core/nodes:watch', 'core/nodes:patch',
        'discovery.k8s.io/endpointslices:get', 'discovery.k8s.io/endpointslices:list', 'discovery.k8s.io/endpointslices:watch',
        'core/events:create', 'core/events:patch', 'events.k8s.io/events:create', 'events.k8s.io/events:patch',
        'core/pods:get', 'core/pods:list', 'core/pods:watch', 'core/namespaces:get', 'core/namespaces:list', 'core/namespaces:watch',
        'networking.k8s.io/networkpolicies:get', 'networking.k8s.io/networkpolicies:list', 'networking.k8s.io/networkpolicies:watch',
      ].sort(),
    );
    const binding = find('ClusterRoleBinding');
    expect(get(binding, 'roleRef.name')).toBe('flatnet');
    expect(get(binding, 'subjects')).toEqual([{ kind: 'ServiceAccount', name: 'flatnet', namespace: 'flatnet-system' }]);
  });

  it('the DaemonSet runs on every node with the mounts, probes and capabilities it needs', () => {
    const ds = find('DaemonSet');
    const spec = get(ds, 'spec.template.spec');
    expect(spec.hostNetwork).toBe(true);
    expect(spec.priorityClassName).toBe('system-node-critical');
    expect(spec.serviceAccountName).toBe('flatnet');
    expect(spec.tolerations).toEqual([{ operator: 'Exists' }]);
    const main = spec.containers[0];
    expect(main.securityContext.privileged).toBe(false);
    expect(main.securityContext.capabilities.add).toEqual(expect.arrayContaining(['NET_ADMIN', 'NET_RAW']));
    expect(main.livenessProbe.httpGet).toMatchObject({ path: '/livez', port: 10256 });
    expect(main.readinessProbe.httpGet).toMatchObject({ path: '/healthz', port: 10256 });
    const mounts = Object.fromEntries(main.volumeMounts.map((m: { name: string; mountPath: string; readOnly?: boolean }) => [m.mountPath, m]));
    for (const p of ['/run/xtables.lock', '/lib/modules', '/var/lib/cni', '/etc/cni/net.d', '/opt/cni/bin']) expect(mounts[p], p).toBeDefined();
    expect(mounts['/lib/modules'].readOnly).toBe(true);
    const vols = Object.fromEntries(spec.volumes.map((v: { name: string; hostPath?: { path: string } }) => [v.name, v.hostPath?.path]));
    expect(vols['xtables-lock']).toBe('/run/xtables.lock');
    const inits = Object.fromEntries(spec.initContainers.map((c: { name: string }) => [c.name, c]));
    expect(spec.initContainers.map((c: { name: string }) => c.name)).toEqual(['init-node', 'install-cni']);
    expect(inits['install-cni'].command.join(' ')).toContain('install-cni.sh');
    expect(inits['install-cni'].restartPolicy).toBe('Always');
    // the one privileged step runs the daemon's --init-node and exits; the daemon itself stays unprivileged
    expect(inits['init-node'].command).toEqual(['node', '/opt/flatnet/flatnet-proxy.mjs', '--config=/etc/flatnet/config.yaml', '--init-node']);
    expect(inits['init-node'].securityContext.privileged).toBe(true);
    expect(inits['init-node'].restartPolicy).toBeUndefined();
  });

  it('the conflist template names flatnet plugins only, and the vxlan plugin first', () => {
    const { conflist, overlay, proxy } = configMapFiles();
    expect(conflist.plugins.map((p) => p.type)).toEqual(['vxlan', 'portmap']);
    expect(proxy.kind).toBe('KubeProxyConfiguration');
    expect(proxy.apiVersion).toBe('kubeproxy.config.k8s.io/v1alpha1');
    expect(overlay.port).toBe(8472);
    expect(overlay.vni).toBe(1);
  });

  for (const rel of ['deploy/manifests/config.yaml', 'deploy/overlays/ipv6/config.yaml', 'deploy/overlays/dual/config.yaml']) {
    it(`${rel}: the daemon accepts the shipped config with the DaemonSet's flags`, () => {
      const { text } = configMapFiles(rel);
      const ds = find('DaemonSet');
      const args = (get(ds, 'spec.template.spec.containers')[0].args as string[]).map((a) => a.replace('$(NODE_NAME)', 'node-a'));
      const { config } = loadConfig(args, (p) => {
        expect(p).toBe('/etc/flatnet/config.yaml');
        return text;
      });
      expect(config.mode).toBe('iptables');
      expect(config.hostnameOverride).toBe('node-a');
      expect(config.overlay).toBe('vxlan');
      const overlay = parseOverlayConfig(config.overlayConfig, 'node-a');
      expect(overlay.port).toBe(8472);
      expect(overlay.vni).toBe(1);
      expect(overlay.clusterCIDRs.join(',')).toBe(config.clusterCIDRs.join(','));
    });
  }
});

describe('the daemon finds the API server without the Services it programs', () => {
  for (const [kindFile, cmFile] of [
    ['kind-config.yaml', 'deploy/manifests/config.yaml'],
    ['kind-config.yaml', 'deploy/flatnet.yaml'],
    ['deploy/kind/kind-config-ipv6.yaml', 'deploy/overlays/ipv6/config.yaml'],
    ['deploy/kind/kind-config-dual.yaml', 'deploy/overlays/dual/config.yaml'],
  ] as const) {
    it(`${cmFile}: kubeconfig.conf names ${kindFile}'s control plane and the ServiceAccount's token and CA`, () => {
      const cm = docs(cmFile).find((d) => d.kind === 'ConfigMap')!;
      const data = cm.data as Record<string, string>;
      const cfg = loadConfig(['--config', '/cfg.yaml'], () => data['config.yaml']!).config;
      expect(cfg.kubeconfig).toBe('/etc/flatnet/kubeconfig.conf');
      const kc = docs2(data['kubeconfig.conf']!);
      const name = (docs(kindFile)[0]!.name as string) ?? 'kind';
      const cluster = (kc.clusters as { cluster: Record<string, string> }[])[0]!.cluster;
      expect(cluster.server).toBe(`https://${name}-control-plane:6443`);
      expect(cluster['certificate-authority']).toBe('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
      const user = (kc.users as { user: Record<string, string> }[])[0]!.user;
      expect(user).toEqual({ tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' });
    });
  }

  it('the DaemonSet mounts the ConfigMap at /etc/flatnet and resolves names with the node resolver, not cluster DNS', () => {
    const ds = find('DaemonSet');
    const pod = get(ds, 'spec.template.spec');
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('Default');
    const daemon = (pod.containers as { name: string; volumeMounts: { name: string; mountPath: string }[] }[]).find((c) => c.name === 'flatnet')!;
    const mount = daemon.volumeMounts.find((m) => m.mountPath === '/etc/flatnet')!;
    const vol = (pod.volumes as { name: string; configMap?: { name: string } }[]).find((v) => v.name === mount.name)!;
    expect(vol.configMap?.name).toBe('flatnet-config');
  });
});
