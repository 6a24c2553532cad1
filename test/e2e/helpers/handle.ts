// A handle on a running local cluster for tests and the demo: kubectl, exec in any netns, pod helpers.
// No vitest import here (the demo uses it outside the test runner); useCluster lives in cluster.ts.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ExecRunner } from '../../../lib/exec/exec.ts';
import type { RunResult } from '../../../lib/exec/runner.ts';
import { resolveTarget, restartDaemon as restartNodeDaemon } from '../../cluster/cli.ts';
import { adminKubectl } from '../../cluster/control-plane/index.ts';
import { waitFor } from '../../helpers/wait.ts';
import { daemonLog } from '../../cluster/nodes/index.ts';
import { loadState, NODE24, REPO_ROOT, type ClusterState, type PodNetwork, type ProxyImpl, type ProxyMode } from '../../cluster/state.ts';

export interface UseClusterOptions {
  /** at least this many nodes (the shared cluster has at least 3) */
  nodes?: number;
  proxyMode?: ProxyMode;
  /** 'kube-proxy' runs upstream kube-proxy instead of flatnet's daemon (a reference to compare behaviour with) */
  proxy?: ProxyImpl;
  podNetwork?: PodNetwork;
}

export interface ExecOptions {
  input?: string;
  /** do not throw on a non-zero exit (default: throw CommandError) */
  allowFail?: boolean;
  timeoutMs?: number;
}

export interface PodInfo {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: unknown[] };
}

export interface Cluster {
  name: string;
  state: ClusterState;
  /** kind-like: <name>-control-plane, <name>-worker, <name>-worker2, ... */
  nodeNames: string[];
  /** the underlay address of the "external" client namespace (exec target 'external') */
  externalIP: string;
  /** the host end of the underlay, where the apiserver listens */
  hostIP: string;
  kubeconfig: string;
  kubectlBin: string;
  nodeIP(node: string): string;
  podCIDR(node: string): string;
  /** kubectl with the admin kubeconfig; returns stdout, throws on failure */
  kubectl(args: readonly string[], opts?: { input?: string }): Promise<string>;
  /** kubectl, returning the full result (code, stdout, stderr) without throwing */
  kubectlResult(args: readonly string[], opts?: { input?: string }): Promise<RunResult>;
  kubectlJson<T>(args: readonly string[]): Promise<T>;
  apply(yaml: string): Promise<string>;
  /** kubectl delete -f - --ignore-not-found --wait=false */
  deleteManifest(yaml: string): Promise<void>;
  /** run argv in a network namespace: a node name, 'external', or 'namespace/pod' */
  exec(target: string, argv: readonly string[], opts?: ExecOptions): Promise<RunResult>;
  /** curl -sS -m 5 from a target; returns the body (throws on failure unless allowFail) */
  curl(target: string, url: string, opts?: ExecOptions & { extra?: string[] }): Promise<RunResult>;
  /** stops a node's daemon by PID and starts it again; returns the new PID */
  restartDaemon(node: string): Promise<number>;
  daemonLog(node: string): string;
  /** 'namespace/name' (or 'name' for default) */
  pod(ref: string): Promise<PodInfo>;
  podIP(ref: string): Promise<string>;
  waitPodReady(ref: string, timeoutMs?: number): Promise<PodInfo>;
  /** waits until every pod matching the selector in a namespace is Ready (and at least `min` exist) */
  waitPodsReady(namespace: string, selector: string, min?: number, timeoutMs?: number): Promise<PodInfo[]>;
  /** A records of `name` asked from `server` (default: the cluster DNS 10.96.0.10, over UDP) from inside a target's netns */
  resolve(target: string, name: string, server?: string): Promise<string[]>;
  /** spec.clusterIP of a Service ('namespace/name' or 'name') */
  serviceIP(ref: string): Promise<string>;
  /** waits until the Service's EndpointSlices hold exactly `count` ready endpoints; returns their addresses */
  waitEndpoints(ref: string, count: number, timeoutMs?: number): Promise<string[]>;
  /** a fresh namespace (prefix + random suffix); deleted by deleteNamespace */
  createNamespace(prefix?: string): Promise<string>;
  deleteNamespace(ns: string): Promise<void>;
}

const runner = new ExecRunner();

// argv: server name; prints the A records comma-separated, or the resolver's error code with exit 1
const RESOLVE_JS = `const r = new (require('node:dns').promises.Resolver)({ timeout: 3000, tries: 2 });
r.setServers([process.argv[1]]);
r.resolve4(process.argv[2]).then((a) => console.log(a.join(',')), (e) => { console.log(e.code); process.exitCode = 1; });`;

function splitRef(ref: string): [string, string] {
  const i = ref.indexOf('/');
  return i < 0 ? ['default', ref] : [ref.slice(0, i), ref.slice(i + 1)];
}

const isReady = (p: PodInfo) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/**
 * Runs `cluster:up` as a child process on Node 24: the agent and the daemon are started with the CLI's node binary,
 * and a vitest worker may run on another node (npx picks /usr/bin/node). Progress goes to stderr.
 */
export async function startCluster(o: UseClusterOptions & { name: string }): Promise<ClusterState> {
  const argv = [NODE24, join(REPO_ROOT, 'test', 'cluster', 'cli.ts'), 'up', '--name', o.name, '--nodes', String(o.nodes ?? 3), '--proxy-mode', o.proxyMode ?? 'iptables'];
  if (o.podNetwork) argv.push('--pod-network', o.podNetwork);
  if (o.proxy) argv.push('--proxy', o.proxy);
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'], cwd: REPO_ROOT });
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 1));
  });
  const s = loadState(o.name);
  if (code !== 0 || !s || s.phase !== 'up') throw new Error(`cluster:up --name ${o.name} failed (exit ${code}); see the output above`);
  return s;
}

export function clusterHandle(s: ClusterState): Cluster {
  const k = adminKubectl(s, runner);
  const node = (n: string) => {
    const rec = s.nodes.find((x) => x.name === n);
    if (!rec) throw new Error(`no node ${n} in cluster ${s.name}`);
    return rec;
  };
  const c: Cluster = {
    name: s.name,
    state: s,
    nodeNames: s.nodes.map((n) => n.name),
    externalIP: s.external!.ip,
    hostIP: s.hostIP,
    kubeconfig: s.adminKubeconfig!,
    kubectlBin: k.bin,
    nodeIP: (n) => node(n).ip,
    podCIDR: (n) => node(n).podCIDR!,
    kubectl: async (args, opts) => (await k.run(args, { input: opts?.input })).stdout,
    kubectlResult: (args, opts) => k.run(args, { input: opts?.input, allowFail: true }),
    kubectlJson: (args) => k.json(args),
    apply: (yaml) => k.apply(yaml),
    async deleteManifest(yaml) {
      await k.run(['delete', '-f', '-', '--ignore-not-found', '--wait=false'], { input: yaml });
    },
    async exec(target, argv, opts = {}) {
      const path = await resolveTarget(s, target, runner);
      return runner.run(['nsenter', `--net=${path}`, '--', ...argv], opts);
    },
    curl(target, url, opts = {}) {
      return c.exec(target, ['curl', '-sS', '-m', '5', ...(opts.extra ?? []), url], opts);
    },
    async restartDaemon(n) {
      node(n);
      const fresh = loadState(s.name) ?? s;
      return restartNodeDaemon(fresh, n);
    },
    daemonLog: (n) => daemonLog(node(n)),
    async pod(ref) {
      const [ns, name] = splitRef(ref);
      return k.json<PodInfo>(['get', 'pod', '-n', ns, name]);
    },
    async podIP(ref) {
      const p = await c.pod(ref);
      if (!p.status.podIP) throw new Error(`pod ${ref} has no IP yet (phase ${p.status.phase})`);
      return p.status.podIP;
    },
    async waitPodReady(ref, timeoutMs = 120_000) {
      let last: PodInfo | undefined;
      try {
        return await waitFor(
          `pod ${ref} Ready`,
          async () => {
            last = await c.pod(ref);
            return isReady(last) ? last : undefined;
          },
          timeoutMs,
          500,
        );
      } catch (e) {
        throw new Error(`${e instanceof Error ? e.message : String(e)}; last status: ${JSON.stringify(last?.status ?? null)}`);
      }
    },
    async waitPodsReady(ns, selector, min = 1, timeoutMs = 120_000) {
      return waitFor(
        `pods ${selector} in ${ns} Ready`,
        async () => {
          const list = await k.json<{ items: PodInfo[] }>(['get', 'pods', '-n', ns, '-l', selector]);
          return list.items.length >= min && list.items.every(isReady) ? list.items : undefined;
        },
        timeoutMs,
        500,
      );
    },
    async resolve(target, name, server = '10.96.0.10') {
      const r = await c.exec(target, [NODE24, '-e', RESOLVE_JS, server, name], { allowFail: true, timeoutMs: 15_000 });
      if (r.code !== 0) throw new Error(`resolving ${name} at ${server} from ${target}: ${r.stdout.trim() || r.stderr.trim()}`);
      return r.stdout.trim().split(',').filter(Boolean).sort();
    },
    async serviceIP(ref) {
      const [ns, name] = splitRef(ref);
      return (await k.run(['get', 'svc', '-n', ns, name, '-o', 'jsonpath={.spec.clusterIP}'])).stdout.trim();
    },
    async waitEndpoints(ref, count, timeoutMs = 60_000) {
      const [ns, name] = splitRef(ref);
      return waitFor(
        `${count} ready endpoints of service ${ref}`,
        async () => {
          const list = await k.json<{ items: { endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[] }[] }>([
            'get', 'endpointslices', '-n', ns, '-l', `kubernetes.io/service-name=${name}`,
          ]);
          const ready = list.items.flatMap((sl) => (sl.endpoints ?? []).filter((e) => e.conditions?.ready !== false).flatMap((e) => e.addresses));
          return ready.length === count ? ready.sort() : undefined;
        },
        timeoutMs,
        500,
      );
    },
    async createNamespace(prefix = 'e2e') {
      const ns = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
      await k.run(['create', 'namespace', ns]);
      // the namespace controller creates the default ServiceAccount; pods are admitted only once it exists
      await waitFor(`serviceaccount default in ${ns}`, async () => ((await k.run(['get', 'sa', 'default', '-n', ns], { allowFail: true })).code === 0 ? true : undefined), 30_000);
      return ns;
    },
    async deleteNamespace(ns) {
      await k.run(['delete', 'namespace', ns, '--ignore-not-found', '--wait=false']);
    },
  };
  return c;
}

/** An agnhost netexec pod pinned to a node (the local agent runs test/cluster/netexec for agnhost images). */
export function netexecPod(o: {
  name: string;
  namespace: string;
  node: string;
  labels?: Record<string, string>;
  httpPort?: number;
  udpPort?: number;
}): Record<string, unknown> {
  const http = o.httpPort ?? 8080;
  const udp = o.udpPort ?? 8081;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: o.name, namespace: o.namespace, labels: o.labels ?? { app: o.name } },
    spec: {
      nodeName: o.node,
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: 'netexec',
          image: 'registry.k8s.io/e2e-test-images/agnhost:2.53',
          args: ['netexec', `--http-port=${http}`, `--udp-port=${udp}`],
          ports: [
            { name: 'http', containerPort: http, protocol: 'TCP' },
            { name: 'udp', containerPort: udp, protocol: 'UDP' },
          ],
          readinessProbe: { httpGet: { path: '/healthz', port: http }, periodSeconds: 2 },
        },
      ],
    },
  };
}

/** Objects as a kubectl-applicable JSON list. */
export function manifest(...objs: Record<string, unknown>[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs });
}
