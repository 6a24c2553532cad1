// Cluster DNS as in kind: Service kube-system/kube-dns on 10.96.0.10 (53/UDP, 53/TCP, 9153/TCP) in front of a
// coredns pod on the control-plane node. The agent runs non-agnhost images as placeholders, so the real CoreDNS
// binary (from the control-plane build) is started inside that pod's network namespace, with its own identity
// (the coredns service account's RBAC) and no upstream: names outside cluster.local are not forwarded anywhere.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../../lib/exec/runner.ts';
import { record, type ClusterState } from '../state.ts';
import type { Kubectl } from './kubectl.ts';
import { isAlive, startDetached, tailFile } from './proc.ts';
import { waitFor } from '../../helpers/wait.ts';

export const DNS_SERVICE_IP = '10.96.0.10';
export const DNS_POD = 'coredns';
export const CLUSTER_DOMAIN = 'cluster.local';

export function corefile(kubeconfig: string, context: string): string {
  return `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfig} ${context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
}
`;
}

export function dnsManifests(node: string): Record<string, unknown>[] {
  const labels = { 'k8s-app': 'kube-dns' };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'coredns', namespace: 'kube-system' } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:coredns' },
      rules: [
        { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:coredns' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' },
      subjects: [{ kind: 'ServiceAccount', name: 'coredns', namespace: 'kube-system' }],
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { ...labels, 'kubernetes.io/name': 'CoreDNS' } },
      spec: {
        clusterIP: DNS_SERVICE_IP,
        selector: labels,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
          { name: 'metrics', port: 9153, protocol: 'TCP', targetPort: 9153 },
        ],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: DNS_POD, namespace: 'kube-system', labels },
      spec: {
        nodeName: node,
        serviceAccountName: 'coredns',
        automountServiceAccountToken: false,
        dnsPolicy: 'Default',
        priorityClassName: 'system-cluster-critical',
        containers: [
          {
            name: 'coredns',
            image: 'registry.k8s.io/coredns/coredns:v1.14.7',
            args: ['-conf', '/etc/coredns/Corefile'],
            ports: [
              { name: 'dns', containerPort: 53, protocol: 'UDP' },
              { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
              { name: 'metrics', containerPort: 9153, protocol: 'TCP' },
            ],
          },
        ],
      },
    },
  ];
}

export function corednsAvailable(s: ClusterState): boolean {
  return existsSync(join(s.binDir, 'coredns'));
}

/**
 * Creates kube-dns and the coredns pod, then runs CoreDNS in the pod's netns once the sandbox exists.
 * `podNetns` resolves namespace/pod to its netns path (through CRI).
 */
export async function startDns(
  s: ClusterState,
  kubectl: Kubectl,
  runner: Runner,
  podNetns: (ns: string, pod: string) => Promise<string>,
  log: (m: string) => void,
): Promise<void> {
  const node = s.nodes[0]!;
  await kubectl.apply(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: dnsManifests(node.name) }));
  const podIP = await waitFor(
    'the coredns pod IP',
    async () => {
      const r = await kubectl.run(['get', 'pod', '-n', 'kube-system', DNS_POD, '-o', 'jsonpath={.status.podIP}'], { allowFail: true });
      return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
    },
    120_000,
    500,
  );
  const netns = await podNetns('kube-system', DNS_POD);
  const dir = join(s.dir, 'coredns');
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'Corefile');
  writeFileSync(conf, corefile(join(s.dir, 'kubeconfig', 'coredns.kubeconfig'), s.name));
  const rec = startDetached([join(s.binDir, 'coredns'), '-conf', conf], {
    role: 'coredns',
    node: node.name,
    log: join(s.dir, 'logs', 'coredns.log'),
    netns,
  });
  record(s, (x) => x.processes.push(rec));
  await waitFor(
    'CoreDNS /ready',
    async () => {
      if (!isAlive(rec)) throw new Error(`coredns exited; log:\n${tailFile(rec.log)}`);
      const r = await runner.run(['curl', '-sf', '-m', '2', `http://${podIP}:8181/ready`], { netns: `/var/run/netns/${node.netns}`, allowFail: true });
      return r.code === 0 ? true : undefined;
    },
    60_000,
    500,
  );
  log(`cluster DNS: kube-dns ${DNS_SERVICE_IP} -> coredns ${podIP}`);
}
