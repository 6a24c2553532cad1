// Node objects as a kubelet would register them: labels, addresses, a Ready condition, capacity and allocatable.
// Registered with each node's own identity (system:node:<name>), so the Node authorizer and NodeRestriction apply.
import { apiRequest, type ApiIdentity } from '../control-plane/api.ts';
import type { Kubectl } from '../control-plane/kubectl.ts';
import { waitFor } from '../../helpers/wait.ts';
import { K8S_VERSION, type NodeRecord } from '../state.ts';

export function nodeManifest(n: Pick<NodeRecord, 'name' | 'role'>): Record<string, unknown> {
  const labels: Record<string, string> = {
    'kubernetes.io/hostname': n.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    'beta.kubernetes.io/os': 'linux',
    'beta.kubernetes.io/arch': 'amd64',
  };
  return { apiVersion: 'v1', kind: 'Node', metadata: { name: n.name, labels }, spec: {} };
}

export function nodeStatus(n: Pick<NodeRecord, 'name' | 'ip'>, now: Date): Record<string, unknown> {
  const t = now.toISOString().replace(/\.\d+Z$/, 'Z');
  const cond = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: t,
    lastTransitionTime: t,
  });
  const resources = { cpu: '4', memory: '8Gi', pods: '110', 'ephemeral-storage': '20Gi' };
  return {
    status: {
      addresses: [
        { type: 'InternalIP', address: n.ip },
        { type: 'Hostname', address: n.name },
      ],
      conditions: [
        cond('Ready', 'True', 'KubeletReady', 'flatnet local node is ready'),
        cond('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'ok'),
        cond('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'ok'),
        cond('PIDPressure', 'False', 'KubeletHasSufficientPID', 'ok'),
      ],
      capacity: resources,
      allocatable: resources,
      nodeInfo: {
        architecture: 'amd64',
        operatingSystem: 'linux',
        osImage: 'flatnet local node (network namespace)',
        kernelVersion: '',
        containerRuntimeVersion: 'containerd://local',
        kubeletVersion: K8S_VERSION,
        kubeProxyVersion: '',
        machineID: '',
        systemUUID: '',
        bootID: '',
      },
      daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    },
  };
}

/**
 * Creates the Node (idempotent) and sets its status, both as the node itself. NodeRestriction forbids a node to set
 * node-role labels, so the role label is added by the admin, as kubeadm does.
 */
export async function registerNode(nodeKubectl: Kubectl, nodeId: ApiIdentity, admin: Kubectl, n: NodeRecord): Promise<void> {
  const exists = await nodeKubectl.run(['get', 'node', n.name, '-o', 'name'], { allowFail: true });
  if (exists.code !== 0) await nodeKubectl.run(['create', '-f', '-'], { input: JSON.stringify(nodeManifest(n)) });
  await heartbeat(nodeId, n);
  if (n.role === 'control-plane') await admin.run(['label', 'node', n.name, '--overwrite', 'node-role.kubernetes.io/control-plane=']);
}

/** PATCH nodes/<name>/status as the node (kubectl patch would first GET nodes/status, which a node may not). */
export async function heartbeat(nodeId: ApiIdentity, n: NodeRecord): Promise<void> {
  await apiRequest(nodeId, 'PATCH', `/api/v1/nodes/${n.name}/status`, nodeStatus(n, new Date()), 'application/merge-patch+json');
}

/** Waits for node-ipam to assign spec.podCIDR. */
export async function waitPodCIDR(kubectl: Kubectl, node: string, timeoutMs = 60_000): Promise<string> {
  return waitFor(
    `spec.podCIDR of ${node}`,
    async () => {
      const r = await kubectl.run(['get', 'node', node, '-o', 'jsonpath={.spec.podCIDR}'], { allowFail: true });
      return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
    },
    timeoutMs,
    500,
  );
}
