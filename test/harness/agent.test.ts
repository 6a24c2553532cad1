// The node agent (kubelet stand-in) against a real control plane: a per-run local cluster (test/cluster/cli.ts up,
// proxy none) whose nodes run containerd + the agent through startNodeRuntime. Pods are created with kubectl and
// observed through the API, the kernel and real traffic from the cluster's external netns.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { CriClient } from '../cluster/cri/client.ts';
import { down, up } from '../cluster/cli.ts';
import type { ClusterState } from '../cluster/state.ts';
import { startAgent } from '../cluster/agent/index.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { waitFor } from '../helpers/wait.ts';

const NAME = runPrefix();
const AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.53';
let s: ClusterState;
let worker: ClusterState['nodes'][number];
const log: string[] = [];

function kubectl(args: string[], input?: string): string {
  return execFileSync(join(s.binDir, 'kubectl'), ['--kubeconfig', s.adminKubeconfig!, ...args], { encoding: 'utf8', input, timeout: 60_000 });
}

function getPod(name: string, ns = 'default'): V1Pod | undefined {
  const r = spawnSync(join(s.binDir, 'kubectl'), ['--kubeconfig', s.adminKubeconfig!, '-n', ns, 'get', 'pod', name, '-o', 'json'], { encoding: 'utf8' });
  return r.status === 0 ? (JSON.parse(r.stdout) as V1Pod) : undefined;
}

const ready = (p: V1Pod | undefined): boolean => p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

/** curl from a netns of this cluster (its external client or a node). */
function curlFrom(netns: string, url: string): { code: number; body: string } {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'curl', '-s', '-m', '5', '-w', '\n%{http_code}', url], { encoding: 'utf8' });
  const out = r.stdout ?? '';
  const i = out.lastIndexOf('\n');
  return { body: out.slice(0, i), code: Number(out.slice(i + 1)) };
}

function netexecPod(name: string, extra: Record<string, unknown> = {}, container: Record<string, unknown> = {}): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { app: name } },
    spec: {
      nodeName: worker.name,
      terminationGracePeriodSeconds: 10,
      containers: [
        {
          name: 'agnhost',
          image: AGNHOST,
          args: ['netexec', '--http-port=8080', '--udp-port=8081'],
          ports: [{ containerPort: 8080, name: 'http' }],
          ...container,
        },
      ],
      ...extra,
    },
  });
}

beforeAll(async () => {
  // no cluster DNS: nothing here resolves names, and the cluster's CoreDNS is not what this file tests
  s = await up({ name: NAME, nodes: 2, proxyMode: 'none', podNetwork: 'routes', noDns: true, log: (m) => log.push(m) });
  worker = s.nodes.find((n) => n.role === 'worker')!;
}, 300_000);

afterAll(async () => {
  if (NAME) await down(NAME, undefined, (m) => log.push(m));
}, 300_000);

describe('node agent (kubelet stand-in)', () => {
  it('runs an agnhost netexec pod: sandbox through CRI, Running + Ready, pod IP in the node podCIDR, serving its name', async () => {
    kubectl(['apply', '-f', '-'], netexecPod('web-1', {}, { readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 1 } }));
    const p = await waitFor('web-1 ready', () => {
      const x = getPod('web-1');
      return ready(x) && x;
    });
    expect(p.status?.phase).toBe('Running');
    const prefix = worker.podCIDR!.split('.').slice(0, 3).join('.') + '.';
    expect(p.status?.podIP?.startsWith(prefix)).toBe(true);
    expect(p.status?.podIPs).toEqual([{ ip: p.status?.podIP }]);
    expect(p.status?.hostIP).toBe(worker.ip);
    expect(p.status?.containerStatuses?.[0]).toMatchObject({ name: 'agnhost', ready: true, started: true, restartCount: 0 });
    expect(p.status?.conditions?.map((c) => c.type).sort()).toEqual(['ContainersReady', 'Initialized', 'PodReadyToStartContainers', 'PodScheduled', 'Ready']);
    // real traffic: from the cluster's external netns through the routed pod network to the workload
    expect(curlFrom(worker.netns, `http://${p.status!.podIP}:8080/hostname`)).toEqual({ code: 200, body: 'web-1' });
    // the sandbox exists in this node's containerd with the pod's metadata, and the IP came from it
    const cri = new CriClient(worker.criSocket!);
    try {
      const sbs = await cri.listPodSandbox({ labels: { 'io.kubernetes.pod.uid': p.metadata!.uid! } });
      expect(sbs).toHaveLength(1);
      expect(sbs[0]!.metadata).toMatchObject({ name: 'web-1', namespace: 'default', uid: p.metadata!.uid });
      const st = await cri.podSandboxStatus(sbs[0]!.id);
      expect(st.ips).toEqual([p.status!.podIP]);
      // the workload runs inside that sandbox's netns: it lists the pod IP on eth0
      expect(execFileSync('nsenter', [`--net=${st.netnsPath}`, 'ip', '-4', '-o', 'addr', 'show', 'eth0'], { encoding: 'utf8' })).toContain(p.status!.podIP);
    } finally {
      cri.close();
    }
  });

  it('runs an opted-in command pod to completion in the pod netns (Succeeded / Failed by exit code)', async () => {
    const web = getPod('web-1')!;
    const client = (name: string, cmd: string): string =>
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, annotations: { 'flatnet.io/run-command': 'true' } },
        spec: { nodeName: s.nodes[0]!.name, restartPolicy: 'Never', containers: [{ name: 'c', image: 'busybox', command: ['sh', '-c', cmd] }] },
      });
    // from the other node's pod network to web-1 (routed across nodes), checking the answer
    kubectl(['apply', '-f', '-'], client('client-ok', `curl -s -m 5 http://${web.status!.podIP}:8080/hostname | grep -qx web-1`));
    kubectl(['apply', '-f', '-'], client('client-fail', 'exit 3'));
    const ok = await waitFor('client-ok done', () => {
      const x = getPod('client-ok');
      return x?.status?.phase === 'Succeeded' || x?.status?.phase === 'Failed' ? x : undefined;
    });
    expect(ok.status?.phase).toBe('Succeeded');
    const bad = await waitFor('client-fail done', () => {
      const x = getPod('client-fail');
      return x?.status?.phase === 'Failed' ? x : undefined;
    });
    expect(bad.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(3);
    // like the kubelet, a finished pod's sandbox is stopped (its CNI DEL ran, the IP is free again)
    const cri = new CriClient(s.nodes[0]!.criSocket!);
    try {
      await waitFor('client-ok sandbox stopped', async () => {
        const sbs = await cri.listPodSandbox({ labels: { 'io.kubernetes.pod.uid': ok.metadata!.uid! } });
        return sbs.length === 1 && sbs[0]!.state === 'SANDBOX_NOTREADY';
      });
    } finally {
      cri.close();
    }
  });

  it('honours a failing httpGet readinessProbe (Running but not Ready), and a pod without probe is Ready when its port answers', async () => {
    kubectl(['apply', '-f', '-'], netexecPod('never-ready', {}, { readinessProbe: { httpGet: { path: '/echo?msg=no&code=503', port: 8080 }, periodSeconds: 1 } }));
    kubectl(['apply', '-f', '-'], netexecPod('no-probe'));
    await waitFor('no-probe ready', () => ready(getPod('no-probe')));
    const p = await waitFor('never-ready running', () => {
      const x = getPod('never-ready');
      return x?.status?.phase === 'Running' && x.status.podIP ? x : undefined;
    });
    // the server answers, yet the probe's 503 keeps it unready
    expect(curlFrom(worker.netns, `http://${p.status!.podIP}:8080/hostname`).body).toBe('never-ready');
    await new Promise((r) => setTimeout(r, 3000));
    const again = getPod('never-ready')!;
    expect(ready(again)).toBe(false);
    expect(again.status?.conditions?.find((c) => c.type === 'ContainersReady')).toMatchObject({ status: 'False', reason: 'ContainersNotReady' });
  });

  it('runs a hostNetwork pod in the node netns with podIP = node IP', async () => {
    kubectl(['apply', '-f', '-'], netexecPod('hostnet', { hostNetwork: true }, { args: ['netexec', '--http-port=18181', '--udp-port=-1'] }));
    const p = await waitFor('hostnet ready', () => {
      const x = getPod('hostnet');
      return ready(x) && x;
    });
    expect(p.status?.podIP).toBe(worker.ip);
    // like agnhost in a hostNetwork pod, it reports the node's hostname
    expect(curlFrom(s.external!.netns, `http://${worker.ip}:18181/hostname`)).toEqual({ code: 200, body: worker.name });
  });

  it('graceful delete: SIGTERM, terminating endpoint (serving follows readiness), then sandbox removed and object gone', async () => {
    kubectl(['apply', '-f', '-'], netexecPod('term-1', {}, {
      args: ['netexec', '--http-port=8080', '--udp-port=8081', '--delay-shutdown=4'],
      readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 1 },
    }));
    kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'term-svc' }, spec: { selector: { app: 'term-1' }, ports: [{ port: 80, targetPort: 8080 }] } }));
    const p = await waitFor('term-1 ready', () => {
      const x = getPod('term-1');
      return ready(x) && x;
    });
    const uid = p.metadata!.uid!;
    const slice = (): { conditions: Record<string, boolean> }[] => {
      const out = JSON.parse(kubectl(['get', 'endpointslices', '-l', 'kubernetes.io/service-name=term-svc', '-o', 'json'])) as { items: { endpoints?: { conditions: Record<string, boolean> }[] }[] };
      return out.items.flatMap((i) => i.endpoints ?? []);
    };
    await waitFor('ready endpoint', () => slice()[0]?.conditions['ready'] === true);
    const t0 = Date.now();
    kubectl(['delete', 'pod', 'term-1', '--wait=false']);
    // during the 4 s delay-shutdown the endpoint is terminating; netexec's /readyz turns 503 so serving goes false
    await waitFor('terminating endpoint', () => slice()[0]?.conditions['terminating'] === true, 10_000);
    await waitFor('terminating, not serving', () => {
      const e = slice()[0];
      return e?.conditions['terminating'] === true && e.conditions['serving'] === false;
    }, 10_000);
    expect(getPod('term-1')?.metadata?.deletionTimestamp).toBeTruthy();
    await waitFor('pod object gone', () => getPod('term-1') === undefined, 30_000);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(3500); // the workload's own shutdown delay was honoured
    expect(took).toBeLessThan(20_000);
    const cri = new CriClient(worker.criSocket!);
    try {
      expect(await cri.listPodSandbox({ labels: { 'io.kubernetes.pod.uid': uid } })).toHaveLength(0);
    } finally {
      cri.close();
    }
    // the workload process is gone too (nothing carries the pod's name in its environment any more)
    const left = spawnSync('sh', ['-c', `grep -l "POD_NAME=term-1" /proc/[0-9]*/environ 2>/dev/null | wc -l`], { encoding: 'utf8' });
    expect(left.stdout.trim()).toBe('0');
  });

  it('keeps the node Lease renewed', () => {
    const lease = JSON.parse(kubectl(['-n', 'kube-node-lease', 'get', 'lease', worker.name, '-o', 'json'])) as { spec: { holderIdentity: string; renewTime: string } };
    expect(lease.spec.holderIdentity).toBe(worker.name);
    expect(Date.now() - Date.parse(lease.spec.renewTime)).toBeLessThan(30_000);
  });

  it('an agent killed with SIGKILL: the next one kills its orphaned workloads, adopts the sandboxes and restarts them (same pod IP)', async () => {
    const before = getPod('web-1')!;
    const oldPid = Number(/-(\d+)$/.exec(before.status?.containerStatuses?.[0]?.containerID ?? '')?.[1]);
    expect(existsPid(oldPid)).toBe(true);
    const rec = s.processes.find((p) => p.role === 'agent' && p.node === worker.name)!;
    process.kill(rec.pid, 'SIGKILL');
    await waitFor('old agent exit', () => !existsPid(rec.pid), 30_000);
    const agent = await startAgent({
      nodeName: worker.name,
      kubeconfig: worker.kubeconfig,
      criSocket: worker.criSocket!,
      stateDir: join(worker.dir, 'rt', 'agent'),
      netnsName: worker.netns,
      nodeIP: worker.ip,
    });
    try {
      await waitFor('web-1 served again', () => curlFrom(worker.netns, `http://${before.status!.podIP}:8080/hostname`).body === 'web-1', 30_000);
      const after = getPod('web-1')!;
      expect(after.status?.podIP).toBe(before.status?.podIP);
      expect(after.metadata?.uid).toBe(before.metadata?.uid);
      expect(readFileSync(agent.logFile, 'utf8')).toContain('sandbox adopted');
      expect(readFileSync(agent.logFile, 'utf8')).toContain('killed orphaned workloads');
      expect(existsPid(oldPid)).toBe(false);
      await waitFor('new container id', () => getPod('web-1')?.status?.containerStatuses?.[0]?.containerID !== before.status?.containerStatuses?.[0]?.containerID);
    } finally {
      await agent.stop();
    }
  });
});

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
