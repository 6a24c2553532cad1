// The local multi-node cluster's CLI (no Docker: network namespaces on an underlay bridge, a real control plane, a
// containerd per node). Commands: up, down, status, env, exec, restart-daemon. See `node test/cluster/cli.ts help`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { corednsAvailable, startDns } from './control-plane/dns.ts';
import { adminKubectl, startControlPlane } from './control-plane/index.ts';
import type { Kubectl } from './control-plane/kubectl.ts';
import { isAlive } from './control-plane/proc.ts';
import { linkCniBinDir } from './nodes/cni-conf.ts';
import {
  createUnderlay,
  buildDaemonBundle,
  daemonAvailable,
  planNodes,
  registerNodes,
  startDaemon,
  startRuntimes,
  stopDaemon,
  waitDaemonsHealthy,
  waitNodesReady,
} from './nodes/index.ts';
import { teardownCluster, type Leftovers } from './nodes/teardown.ts';
import { assertSubnetFree, pickUnderlaySubnet } from './nodes/underlay.ts';
import {
  DEFAULT_CLUSTER_NAME,
  K8S_BIN_DIR,
  listClusters,
  loadState,
  newState,
  record,
  saveState,
  validateClusterName,
  type ClusterOptions,
  type ClusterState,
  type PodNetwork,
  type ProxyImpl,
  type ProxyMode,
} from './state.ts';

const REPO = join(import.meta.dirname, '..', '..');
const DIST_BIN = join(REPO, 'dist', 'bin');
const CONTROL_PLANE_BINS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl'];

export interface UpOptions extends Partial<ClusterOptions> {
  /** skip containerd + agents (control plane, namespaces and Node objects only) */
  noRuntime?: boolean;
  /** no cluster DNS (kube-dns Service + CoreDNS in a kube-system pod) */
  noDns?: boolean;
  /** leave a half-made cluster in place when up fails (default: tear it down) */
  keepOnFailure?: boolean;
  log?: (m: string) => void;
}

const stderrLog = (m: string) => process.stderr.write(`[cluster] ${m}\n`);

/** overlay when the vxlan plugin, its controller and the daemon exist (and a daemon runs); else plain routes. */
export function defaultPodNetwork(proxyMode: ProxyMode): PodNetwork {
  const env = process.env.FLATNET_POD_NETWORK;
  if (env === 'overlay' || env === 'routes') return env;
  const overlayBuilt =
    existsSync(join(DIST_BIN, 'vxlan')) && existsSync(join(REPO, 'plugins', 'vxlan', 'controller', 'index.ts')) && daemonAvailable();
  return overlayBuilt && proxyMode !== 'none' ? 'overlay' : 'routes';
}

async function ensureControlPlaneBins(log: (m: string) => void): Promise<void> {
  if (CONTROL_PLANE_BINS.every((b) => existsSync(join(K8S_BIN_DIR, b)))) return;
  const running = spawnSync('pgrep', ['-f', 'build-control-plane'], { encoding: 'utf8' });
  if (running.status === 0) {
    log('a control-plane build is running; waiting for it');
    while (spawnSync('pgrep', ['-f', 'build-control-plane']).status === 0) await new Promise((r) => setTimeout(r, 5000));
  } else {
    log('building the control plane (test/cluster/build-control-plane.sh; takes a while the first time)');
    const r = spawnSync('bash', [join(REPO, 'test', 'cluster', 'build-control-plane.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error('control-plane build failed');
  }
  const missing = CONTROL_PLANE_BINS.filter((b) => !existsSync(join(K8S_BIN_DIR, b)));
  if (missing.length) throw new Error(`control-plane binaries missing in ${K8S_BIN_DIR}: ${missing.join(', ')}`);
}

function ensurePlugins(log: (m: string) => void): void {
  if (existsSync(DIST_BIN) && readdirSync(DIST_BIN).length > 0) return;
  if (!existsSync(join(REPO, 'deploy', 'build.mjs'))) return;
  log('dist/bin missing: npm run build');
  const r = spawnSync(process.execPath, [join(REPO, 'deploy', 'build.mjs')], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) log('plugin build failed; the reference plugins in /usr/lib/cni stand in for the missing ones');
}

export function clusterAlive(s: ClusterState): boolean {
  const api = s.processes.find((p) => p.role === 'kube-apiserver');
  return s.phase === 'up' && !!api && isAlive(api) && s.processes.every((p) => isAlive(p));
}

/** Brings a cluster up (or returns the running one with the same name). */
export async function up(o: UpOptions = {}, runner: Runner = new ExecRunner()): Promise<ClusterState> {
  const log = o.log ?? stderrLog;
  const name = o.name ?? DEFAULT_CLUSTER_NAME;
  validateClusterName(name);
  const existing = loadState(name);
  if (existing) {
    if (clusterAlive(existing)) {
      const e = existing.options;
      const differs =
        (o.nodes !== undefined && o.nodes !== e.nodes) ||
        (o.proxyMode !== undefined && o.proxyMode !== e.proxyMode) ||
        (o.proxyImpl !== undefined && o.proxyImpl !== (e.proxyImpl ?? 'flatnet')) ||
        (o.podNetwork !== undefined && o.podNetwork !== e.podNetwork);
      log(`cluster ${name} is already up (${e.nodes} nodes, proxy ${e.proxyMode}, pod network ${e.podNetwork})${differs ? '; it differs from what was asked: run cluster:down first to change it' : ''}`);
      return existing;
    }
    log(`cluster ${name}: cleaning up a stale or broken previous run`);
    await teardownCluster(name, runner, log);
  }
  const nodes = o.nodes ?? 2;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 20) throw new Error(`--nodes ${nodes}: expected 1..20`);
  const proxyMode = o.proxyMode ?? 'iptables';
  if (!['iptables', 'nftables', 'ipvs', 'none'].includes(proxyMode)) throw new Error(`--proxy-mode ${proxyMode}: expected iptables|nftables|ipvs|none`);
  const proxyImpl = o.proxyImpl ?? 'flatnet';
  if (!['flatnet', 'kube-proxy'].includes(proxyImpl)) throw new Error(`--proxy ${proxyImpl}: expected flatnet|kube-proxy`);
  if (proxyImpl === 'kube-proxy' && o.podNetwork === 'overlay') throw new Error('--proxy kube-proxy runs no overlay controller: use --pod-network routes');
  const podNetwork = o.podNetwork ?? (proxyImpl === 'kube-proxy' ? 'routes' : defaultPodNetwork(proxyMode));
  if (!['routes', 'overlay'].includes(podNetwork)) throw new Error(`--pod-network ${podNetwork}: expected routes|overlay`);
  if (podNetwork === 'overlay' && proxyMode === 'none') throw new Error('--pod-network overlay needs the node daemon: use a --proxy-mode other than none');

  if (o.underlaySubnet) await assertSubnetFree(runner, o.underlaySubnet);
  await ensureControlPlaneBins(log);
  ensurePlugins(log);
  const taken = listClusters()
    .map((c) => loadState(c)?.options.underlaySubnet ?? '')
    .filter(Boolean);
  const opts: ClusterOptions = {
    name,
    nodes,
    proxyMode,
    proxyImpl,
    podNetwork,
    underlaySubnet: o.underlaySubnet ?? (await pickUnderlaySubnet(runner, taken)),
    mtu: o.mtu ?? 1500,
  };
  const s = newState(opts, K8S_BIN_DIR);
  planNodes(s);
  saveState(s);
  const t0 = Date.now();
  try {
    log(`underlay ${s.bridge} ${opts.underlaySubnet}, ${nodes} node namespace(s) + external; proxy ${proxyMode}, pod network ${podNetwork}`);
    await createUnderlay(s, runner);
    const kubectl = await startControlPlane(s, runner, log);
    log('registering nodes and waiting for podCIDRs');
    await registerNodes(s, kubectl, runner);
    const from = linkCniBinDir(join(s.dir, 'cni-bin'), DIST_BIN);
    record(s, (x) => {
      x.cniBinDir = join(x.dir, 'cni-bin');
    });
    const ref = Object.entries(from).filter(([, p]) => !p.startsWith(DIST_BIN)).map(([k]) => k);
    if (ref.length) log(`CNI plugins from /usr/lib/cni (not built in dist/bin yet): ${ref.join(', ')}`);
    // the daemon first (as its DaemonSet pod would be): in overlay mode it writes the subnet file the CNI plugin needs
    if (proxyMode !== 'none') {
      if (proxyImpl === 'kube-proxy' || daemonAvailable()) {
        log(`starting ${proxyImpl === 'kube-proxy' ? 'upstream kube-proxy' : "flatnet's node daemon"} (${proxyMode}) on every node`);
        if (proxyImpl !== 'kube-proxy') await buildDaemonBundle(s);
        for (const n of s.nodes) await startDaemon(s, n);
      } else {
        log(`proxy/main.ts does not exist yet: no node daemon started (services will not work)`);
      }
    }
    if (!o.noRuntime) {
      log('starting containerd and the node agent on every node');
      await startRuntimes(s, (n) => n.kubeconfig);
    }
    await waitNodesReady(kubectl, s.nodes.map((n) => n.name));
    await waitDaemonsHealthy(s);
    if (!o.noRuntime && !o.noDns && corednsAvailable(s)) {
      await startDns(s, kubectl, runner, (ns, pod) => podNetnsPath(s, kubectl, ns, pod), log);
    }
    record(s, (x) => {
      x.phase = 'up';
    });
    log(`cluster ${name} up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return s;
  } catch (e) {
    if (!o.keepOnFailure) {
      log(`up failed: ${e instanceof Error ? e.message : String(e)}; tearing down`);
      await teardownCluster(name, runner, log).catch(() => {});
    }
    throw e;
  }
}

export function down(name = DEFAULT_CLUSTER_NAME, runner: Runner = new ExecRunner(), log: (m: string) => void = stderrLog): Promise<Leftovers> {
  validateClusterName(name);
  return teardownCluster(name, runner, log);
}

export function requireState(name: string): ClusterState {
  const s = loadState(name);
  if (!s) throw new Error(`no cluster named ${name} (run: npm run cluster:up -- --name ${name})`);
  return s;
}

export function envLines(s: ClusterState): string {
  return `export KUBECONFIG=${s.adminKubeconfig}\nexport KUBECTL=${join(s.binDir, 'kubectl')}\n`;
}

export async function podNetnsPath(s: ClusterState, kubectl: Kubectl, ns: string, pod: string): Promise<string> {
  const r = await kubectl.run(['get', 'pod', '-n', ns, pod, '-o', 'jsonpath={.spec.nodeName}']);
  const node = s.nodes.find((n) => n.name === r.stdout.trim());
  if (!node?.criSocket) throw new Error(`pod ${ns}/${pod} is not on a node of cluster ${s.name} with a runtime`);
  const { CriClient } = await import('./cri/client.ts');
  const cri = new CriClient(node.criSocket);
  try {
    const sbs = (await cri.listPodSandbox({ state: 'SANDBOX_READY' })).filter((x) => x.metadata.name === pod && x.metadata.namespace === ns);
    if (!sbs.length) throw new Error(`no ready sandbox for ${ns}/${pod} on ${node.name}`);
    sbs.sort((a, b) => Number(BigInt(b.createdAt) - BigInt(a.createdAt)));
    const st = await cri.podSandboxStatus(sbs[0]!.id);
    if (!st.netnsPath) throw new Error(`sandbox of ${ns}/${pod} has no netns path`);
    return st.netnsPath;
  } finally {
    cri.close();
  }
}

/** The netns path for an exec target: a node name, `external`, or namespace/pod. */
export async function resolveTarget(s: ClusterState, target: string, runner: Runner = new ExecRunner()): Promise<string> {
  if (target === 'external') return `/var/run/netns/${s.external!.netns}`;
  const node = s.nodes.find((n) => n.name === target);
  if (node) return `/var/run/netns/${node.netns}`;
  const m = /^([^/]+)\/([^/]+)$/.exec(target);
  if (m) return podNetnsPath(s, adminKubectl(s, runner), m[1]!, m[2]!);
  throw new Error(`unknown exec target ${target}: use a node name (${s.nodes.map((n) => n.name).join(', ')}), external, or namespace/pod`);
}

export async function restartDaemon(s: ClusterState, node: string): Promise<number> {
  const n = s.nodes.find((x) => x.name === node);
  if (!n) throw new Error(`no node ${node} in cluster ${s.name}`);
  await stopDaemon(s, node);
  const pid = (await startDaemon(s, n)).pid;
  await waitDaemonsHealthy(s);
  return pid;
}

async function status(s: ClusterState, runner: Runner): Promise<string> {
  const lines = [
    `cluster ${s.name}: ${s.phase}, created ${s.createdAt}`,
    `  apiserver ${s.apiserverURL ?? '-'}  underlay ${s.bridge} ${s.options.underlaySubnet}  proxy ${s.options.proxyImpl ?? 'flatnet'} ${s.options.proxyMode}  pod network ${s.options.podNetwork}`,
    `  state ${s.dir}`,
  ];
  for (const p of s.processes) {
    lines.push(`  ${isAlive(p) ? 'running' : 'DEAD   '} ${p.role}${p.node ? ` (${p.node})` : ''} pid ${p.pid}  log ${p.log}`);
  }
  for (const n of s.nodes) lines.push(`  node ${n.name}  ${n.ip}  podCIDR ${n.podCIDR ?? '-'}  netns ${n.netns}`);
  if (s.external) lines.push(`  external ${s.external.ip}  netns ${s.external.netns}`);
  const api = s.processes.find((p) => p.role === 'kube-apiserver');
  if (api && isAlive(api)) {
    const r = await adminKubectl(s, runner).run(['get', 'nodes', '-o', 'wide'], { allowFail: true, timeoutMs: 10_000 });
    lines.push('', r.stdout.trim() || r.stderr.trim());
  }
  return lines.join('\n');
}

function usage(s: ClusterState): string {
  const first = s.nodes[0]!.name;
  return `
Cluster ${s.name} is up: ${s.nodes.map((n) => n.name).join(', ')} (proxy ${s.options.proxyMode}, pod network ${s.options.podNetwork}).
  eval "$(npm run -s cluster:env${s.name === DEFAULT_CLUSTER_NAME ? '' : ` -- --name ${s.name}`})"; $KUBECTL get nodes -o wide
  npm run -s cluster:exec -- ${first} -- ip route            # a node's network namespace
  npm run -s cluster:exec -- default/<pod> -- ip addr        # a pod's network namespace
  npm run -s cluster:exec -- external -- curl http://${s.nodes[0]!.ip}:<nodePort>   # a client outside the cluster
  npm run cluster:restart-daemon -- ${first}
  npm run cluster:status; npm run cluster:down${s.name === DEFAULT_CLUSTER_NAME ? '' : ` -- --name ${s.name}`}
Logs: ${join(s.dir, 'logs')} (control plane), ${join(s.dir, 'n', '<node>')} (daemon.log, rt/containerd, rt/agent)
`;
}

interface Parsed {
  cmd: string;
  flags: Map<string, string | true>;
  positional: string[];
  rest: string[];
}

export function parseArgs(argv: readonly string[]): Parsed {
  const [cmd = 'help', ...args] = argv;
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  let rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest = args.slice(i + 1);
      break;
    }
    if (a.startsWith('--') && positional.length === 0) {
      const eq = a.indexOf('=');
      if (eq > 0) flags.set(a.slice(2, eq), a.slice(eq + 1));
      else if (i + 1 < args.length && !args[i + 1]!.startsWith('--') && !['--no-runtime', '--no-dns', '--keep-on-failure'].includes(a)) flags.set(a.slice(2), args[++i]!);
      else flags.set(a.slice(2), true);
    } else positional.push(a);
  }
  return { cmd, flags, positional, rest };
}

const HELP = `usage: node test/cluster/cli.ts <command> [--name NAME]
  up [--nodes N] [--proxy-mode iptables|nftables|ipvs|none] [--proxy flatnet|kube-proxy] [--pod-network routes|overlay]
     [--subnet 172.30.X.0/24] [--mtu M] [--no-dns]
     (--proxy kube-proxy runs upstream kube-proxy instead of flatnet's daemon, as a reference; pod network routes)
     (pod network default: overlay when the vxlan plugin and the daemon exist, else routes; env FLATNET_POD_NETWORK)
  down | status | env
  exec <node | namespace/pod | external> -- <command...>
  restart-daemon <node>
Default NAME: $FLATNET_CLUSTER or ${DEFAULT_CLUSTER_NAME}.`;

async function main(argv: readonly string[]): Promise<number> {
  const p = parseArgs(argv);
  const str = (k: string) => (typeof p.flags.get(k) === 'string' ? (p.flags.get(k) as string) : undefined);
  const name = str('name') ?? process.env.FLATNET_CLUSTER ?? DEFAULT_CLUSTER_NAME;
  const runner = new ExecRunner();
  switch (p.cmd) {
    case 'up': {
      const s = await up({
        name,
        nodes: str('nodes') ? Number(str('nodes')) : undefined,
        proxyMode: str('proxy-mode') as ProxyMode | undefined,
        proxyImpl: str('proxy') as ProxyImpl | undefined,
        podNetwork: str('pod-network') as PodNetwork | undefined,
        underlaySubnet: str('subnet'),
        mtu: str('mtu') ? Number(str('mtu')) : undefined,
        noRuntime: p.flags.has('no-runtime'),
        noDns: p.flags.has('no-dns'),
        keepOnFailure: p.flags.has('keep-on-failure'),
      });
      process.stdout.write(usage(s));
      return 0;
    }
    case 'down': {
      const left = await down(name, runner);
      const n = left.netns.length + left.links.length + left.pids.length + left.mounts.length + left.files.length;
      if (n) {
        process.stderr.write(`cluster ${name}: leftovers after down: ${JSON.stringify(left)}\n`);
        return 1;
      }
      process.stdout.write(`cluster ${name} removed\n`);
      return 0;
    }
    case 'status': {
      if (!loadState(name)) {
        const all = listClusters();
        process.stdout.write(`no cluster named ${name}${all.length ? `; clusters here: ${all.join(', ')} (use --name)` : ''}\n`);
        return 1;
      }
      process.stdout.write((await status(requireState(name), runner)) + '\n');
      return 0;
    }
    case 'env':
      process.stdout.write(envLines(requireState(name)));
      return 0;
    case 'exec': {
      const target = p.positional[0];
      if (!target || p.rest.length === 0) throw new Error('usage: exec <node | namespace/pod | external> -- <command...>');
      const path = await resolveTarget(requireState(name), target, runner);
      const child = spawn('nsenter', [`--net=${path}`, '--', ...p.rest], { stdio: 'inherit' });
      return await new Promise<number>((resolve) => child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
    }
    case 'restart-daemon': {
      const node = p.positional[0];
      if (!node) throw new Error('usage: restart-daemon <node>');
      const pid = await restartDaemon(requireState(name), node);
      process.stdout.write(`daemon on ${node} restarted: pid ${pid}\n`);
      return 0;
    }
    case 'help':
    case '--help':
      process.stdout.write(HELP + '\n');
      return 0;
    default:
      process.stderr.write(HELP + '\n');
      return 2;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
