// Node namespaces for one local cluster: the underlay, Node objects with podCIDRs, the CNI config, pod routes, and per
// node the runtime (containerd + agent, from test/cluster/runtime) and flatnet's node daemon.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../../lib/exec/runner.ts';
import type { ApiIdentity } from '../control-plane/api.ts';
import { kubeconfigPath, pkiDir } from '../control-plane/index.ts';
import { Kubectl } from '../control-plane/kubectl.ts';
import { isAlive, procStartTime, startDetached, stopProcess, tailFile } from '../control-plane/proc.ts';
import { waitFor } from '../../helpers/wait.ts';
import { CLUSTER_CIDR, NODE24, externalNetnsName, nodeNames, record, type ClusterState, type NodeRecord, type ProcRecord } from '../state.ts';
import { writeCniConf } from './cni-conf.ts';
import { registerNode, waitPodCIDR } from './node-objects.ts';
import { applyMasquerade, applyPodRoutes } from './routes.ts';
import { applyUnderlay, externalIP, hostVethName, nodeIP, type UnderlayPlan } from './underlay.ts';

const REPO = join(import.meta.dirname, '..', '..', '..');
export const DAEMON_MAIN = join(REPO, 'proxy', 'main.ts');

/** The daemon as it ships: one ES module bundled from the sources at `up` (deploy/bundle-daemon.mjs), per cluster. */
export function daemonBundle(s: ClusterState): string {
  return join(s.dir, 'flatnet-proxy.mjs');
}

export async function buildDaemonBundle(s: ClusterState): Promise<void> {
  const { bundleDaemon } = await import('../../../deploy/bundle-daemon.mjs');
  await bundleDaemon(daemonBundle(s));
}

/** Fills in the node records (names, addresses, dirs) before anything is created. */
export function planNodes(s: ClusterState): void {
  const names = nodeNames(s.name, s.options.nodes);
  s.nodes = names.map((name, i) => {
    const dir = join(s.dir, 'n', name.slice(s.name.length + 1));
    return {
      name,
      role: i === 0 ? 'control-plane' : 'worker',
      netns: name,
      ip: nodeIP(s.options.underlaySubnet, i),
      hostVeth: hostVethName(s.name, i),
      dir,
      kubeconfig: kubeconfigPath(s, `node-${name}`),
      cniConfDir: join(dir, 'cni', 'net.d'),
    } satisfies NodeRecord;
  });
  s.external = {
    name: 'external',
    netns: externalNetnsName(s.name),
    ip: externalIP(s.options.underlaySubnet),
    hostVeth: hostVethName(s.name, 'x'),
  };
}

export function underlayPlan(s: ClusterState): UnderlayPlan {
  return {
    bridge: s.bridge,
    hostIP: s.hostIP,
    prefixLen: s.prefixLen,
    mtu: s.options.mtu,
    members: [
      ...s.nodes.map((n) => ({ netns: n.netns, hostVeth: n.hostVeth, ip: n.ip, forward: true })),
      { netns: s.external!.netns, hostVeth: s.external!.hostVeth, ip: s.external!.ip, forward: false },
    ],
  };
}

/** Creates the bridge, the node and external namespaces; records them before creating so a crash leaves a trace. */
export async function createUnderlay(s: ClusterState, runner: Runner): Promise<void> {
  const plan = underlayPlan(s);
  record(s, (x) => {
    x.links = [x.bridge, ...plan.members.map((m) => m.hostVeth)];
    x.netns = plan.members.map((m) => m.netns);
  });
  await applyUnderlay(runner, plan);
}

export function nodeIdentity(s: ClusterState, n: NodeRecord): ApiIdentity {
  const pki = pkiDir(s);
  return { server: s.apiserverURL!, caFile: join(pki, 'ca.crt'), certFile: join(pki, `node-${n.name}.crt`), keyFile: join(pki, `node-${n.name}.key`) };
}

export function nodeKubectl(s: ClusterState, n: NodeRecord, runner: Runner): Kubectl {
  return new Kubectl(join(s.binDir, 'kubectl'), n.kubeconfig, runner);
}

/** Registers every Node, waits for node-ipam's podCIDRs, writes the CNI config and (routes mode) the pod routes. */
export async function registerNodes(s: ClusterState, admin: Kubectl, runner: Runner): Promise<void> {
  // one at a time, so node-ipam hands out podCIDRs in node order (control plane 10.244.0.0/24, as in kind)
  for (const n of s.nodes) {
    await registerNode(nodeKubectl(s, n, runner), nodeIdentity(s, n), admin, n);
    const cidr = await waitPodCIDR(admin, n.name);
    record(s, () => {
      n.podCIDR = cidr;
    });
    writeCniConf(n.cniConfDir, {
      cluster: s.name,
      node: n.name,
      podCIDR: cidr,
      ipamDataDir: join(n.dir, 'ipam'),
      mtu: s.options.mtu,
      podNetwork: s.options.podNetwork,
      subnetFile: subnetFile(n),
      overlayDataDir: join(n.dir, 'overlay'),
    });
  }
  if (s.options.podNetwork === 'routes') {
    await applyPodRoutes(runner, s.nodes);
    await applyMasquerade(runner, s.nodes, CLUSTER_CIDR);
  }
}

interface RuntimeModule {
  startNodeRuntime(o: {
    nodeName: string;
    netnsName: string;
    stateDir: string;
    cniBinDir: string;
    cniConfDir: string;
    kubeconfig: string;
    nodeIP?: string;
    registerNode?: boolean;
    podCIDR?: string;
  }): Promise<{ containerdPid: number; agentPid: number; criSocket: string; stop(): Promise<void> }>;
}

/** Starts containerd + agent on every node (in parallel) through the runtime engineer's startNodeRuntime. */
export async function startRuntimes(s: ClusterState, agentKubeconfig: (n: NodeRecord) => string): Promise<void> {
  const mod = (await import('../runtime/index.ts')) as RuntimeModule;
  await Promise.all(
    s.nodes.map(async (n) => {
      const rt = await mod.startNodeRuntime({
        nodeName: n.name,
        netnsName: n.netns,
        stateDir: join(n.dir, 'rt'),
        cniBinDir: s.cniBinDir!,
        cniConfDir: n.cniConfDir,
        kubeconfig: agentKubeconfig(n),
        nodeIP: n.ip,
        registerNode: false,
        podCIDR: n.podCIDR,
      });
      record(s, (x) => {
        n.criSocket = rt.criSocket;
        x.processes.push(procRecord('containerd', n.name, rt.containerdPid, join(n.dir, 'rt', 'containerd', 'containerd.log')));
        x.processes.push(procRecord('agent', n.name, rt.agentPid, join(n.dir, 'rt', 'agent', 'agent.log')));
      });
    }),
  );
}

function procRecord(role: string, node: string, pid: number, log: string): ProcRecord {
  return { role, node, pid, startTime: procStartTime(pid) ?? '', argv: [], log };
}

export function daemonAvailable(): boolean {
  return existsSync(DAEMON_MAIN);
}

export function subnetFile(n: NodeRecord): string {
  return join(n.dir, 'run', 'subnet.env');
}

/** The daemon's config file: only what flags cannot say (the overlay section; a per-node subnet file). */
export function daemonConfig(n: NodeRecord): string {
  return [
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
    'kind: KubeProxyConfiguration',
    'overlay:',
    `  subnetFile: ${JSON.stringify(subnetFile(n))}`,
    '',
  ].join('\n');
}

/** Upstream kube-proxy as the reference proxy, inside the node netns, with the daemon's identity and RBAC. */
export function kubeProxyArgv(s: ClusterState, n: NodeRecord): string[] {
  return [
    join(s.binDir, 'kube-proxy'),
    `--kubeconfig=${s.daemonKubeconfig}`,
    `--hostname-override=${n.name}`,
    `--proxy-mode=${s.options.proxyMode}`,
    `--cluster-cidr=${CLUSTER_CIDR}`,
    '--healthz-bind-address=0.0.0.0:10256',
    '--metrics-bind-address=127.0.0.1:10249',
    // nf_conntrack_max is host-wide: a node namespace must not change it
    '--conntrack-max-per-core=0',
    '--v=1',
  ];
}

export function daemonArgv(s: ClusterState, n: NodeRecord): string[] {
  if (s.options.proxyImpl === 'kube-proxy') return kubeProxyArgv(s, n);
  // the bundle built at `up`; the sources when there is none (clusters created before bundling)
  const argv = [NODE24, existsSync(daemonBundle(s)) ? daemonBundle(s) : DAEMON_MAIN];
  if (s.options.podNetwork === 'overlay') argv.push(`--config=${join(n.dir, 'daemon.yaml')}`);
  argv.push(
    `--kubeconfig=${s.daemonKubeconfig}`,
    `--hostname-override=${n.name}`,
    `--proxy-mode=${s.options.proxyMode}`,
    `--cluster-cidr=${CLUSTER_CIDR}`,
    // routes: the cluster installs plain pod routes and the overlay controller must stay off
    `--overlay=${s.options.podNetwork === 'overlay' ? 'vxlan' : 'none'}`,
  );
  return argv;
}

export function daemonLog(n: NodeRecord): string {
  return join(n.dir, 'daemon.log');
}

/** Starts flatnet's node daemon inside the node's netns, as its DaemonSet pod would run (hostNetwork). */
export async function startDaemon(s: ClusterState, n: NodeRecord): Promise<ProcRecord> {
  if (s.options.podNetwork === 'overlay') {
    mkdirSync(join(n.dir, 'run'), { recursive: true });
    writeFileSync(join(n.dir, 'daemon.yaml'), daemonConfig(n));
  }
  const rec = startDetached(daemonArgv(s, n), { role: 'daemon', node: n.name, log: daemonLog(n), netns: n.netns, cwd: REPO });
  record(s, (x) => x.processes.push(rec));
  // give it a moment to fail fast on bad flags
  await new Promise((r) => setTimeout(r, 1000));
  if (!isAlive(rec)) throw new Error(`node daemon on ${n.name} exited; log:\n${tailFile(rec.log)}`);
  return rec;
}

export async function stopDaemon(s: ClusterState, node: string): Promise<void> {
  for (const p of s.processes.filter((x) => x.role === 'daemon' && x.node === node)) await stopProcess(p, 10_000);
  record(s, (x) => {
    x.processes = x.processes.filter((p) => !(p.role === 'daemon' && p.node === node));
  });
}

/** Waits until every daemon answers /healthz 200 on its node (rules synced), as a DaemonSet's readiness probe would. */
export async function waitDaemonsHealthy(s: ClusterState, timeoutMs = 60_000): Promise<void> {
  await Promise.all(
    s.nodes
      .filter((n) => s.processes.some((p) => p.role === 'daemon' && p.node === n.name))
      .map((n) =>
        waitFor(
          `daemon /healthz on ${n.name}`,
          async () => {
            const d = s.processes.find((p) => p.role === 'daemon' && p.node === n.name);
            if (d && !isAlive(d)) throw new Error(`node daemon on ${n.name} exited; log:\n${tailFile(d.log)}`);
            const r = await fetch(`http://${n.ip}:10256/healthz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
            return r?.status === 200 ? true : undefined;
          },
          timeoutMs,
          500,
        ),
      ),
  );
}

export async function waitNodesReady(admin: Kubectl, names: readonly string[], timeoutMs = 60_000): Promise<void> {
  await waitFor(
    'nodes Ready with podCIDRs',
    async () => {
      const list = await admin.json<{ items: { metadata: { name: string }; spec: { podCIDR?: string }; status: { conditions?: { type: string; status: string }[] } }[] }>(['get', 'nodes']);
      const ok = names.every((n) => {
        const node = list.items.find((i) => i.metadata.name === n);
        return node?.spec.podCIDR && node.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      });
      return ok || undefined;
    },
    timeoutMs,
    500,
  );
}
