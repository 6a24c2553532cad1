// The node's liveness as the kubelet reports it: a Lease in kube-node-lease renewed every 10 s, and the Node's
// Ready condition refreshed (strategic merge on conditions, so other conditions stay as they are).
import { type Api, ApiError, microTime, rfc3339 } from './api.ts';

export interface HeartbeatOptions {
  api: Api;
  nodeName: string;
  leaseDurationSeconds?: number;
  renewIntervalMs?: number;
  /** refresh the Node Ready condition every N renewals (default 6, i.e. once a minute) */
  statusEvery?: number;
  log: (msg: string, extra?: Record<string, unknown>) => void;
}

interface Lease {
  metadata: { resourceVersion?: string };
  spec: Record<string, unknown>;
}

export async function renewLease(api: Api, nodeName: string, durationSeconds: number): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${nodeName}`;
  const spec = { holderIdentity: nodeName, leaseDurationSeconds: durationSeconds, renewTime: microTime() };
  let lease: Lease | undefined;
  try {
    lease = await api.call<Lease>('GET', path);
  } catch (e) {
    if (!(e instanceof ApiError && e.notFound)) throw e;
  }
  if (!lease) {
    await api.call('POST', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: nodeName, namespace: 'kube-node-lease' },
      spec,
    });
    return;
  }
  await api.call('PUT', path, {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { ...lease.metadata, name: nodeName, namespace: 'kube-node-lease' },
    spec: { ...lease.spec, ...spec },
  });
}

export async function patchNodeReady(api: Api, nodeName: string): Promise<void> {
  const now = rfc3339();
  await api.call(
    'PATCH',
    `/api/v1/nodes/${nodeName}/status`,
    { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'flatnet agent is posting ready status', lastHeartbeatTime: now }] } },
    'application/strategic-merge-patch+json',
  );
}

export function startHeartbeat(o: HeartbeatOptions): { stop(): void } {
  const every = o.statusEvery ?? 6;
  let n = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const beat = async (): Promise<void> => {
    try {
      await renewLease(o.api, o.nodeName, o.leaseDurationSeconds ?? 40);
      if (n % every === 0) await patchNodeReady(o.api, o.nodeName);
    } catch (e) {
      o.log('heartbeat failed', { err: String(e) });
    }
    n++;
    if (!stopped) timer = setTimeout(() => void beat(), o.renewIntervalMs ?? 10_000);
  };
  void beat();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
