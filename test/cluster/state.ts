// The local cluster's record of everything `up` created, written as it goes (atomically: temp file + rename), so
// that `down` can undo it even after a crash. One directory per cluster under STATE_ROOT; nothing else lives there.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const STATE_ROOT = process.env.FLATNET_CLUSTER_ROOT ?? '/var/lib/flatnet-cluster';
export const DEFAULT_CLUSTER_NAME = 'flatnet';
export const K8S_VERSION = process.env.K8S_VERSION ?? 'v1.35.4';
export const K8S_BIN_DIR = join(process.env.FLATNET_CACHE ?? '/var/cache/flatnet', `k8s-${K8S_VERSION}`, 'bin');

/** Node 24 from node_modules (runs .ts directly); process.execPath may be an older node when run through npx. */
export const REPO_ROOT = join(import.meta.dirname, '..', '..');
export const NODE24 = existsSync(join(REPO_ROOT, 'node_modules', '.bin', 'node')) ? join(REPO_ROOT, 'node_modules', '.bin', 'node') : process.execPath;

export const SERVICE_CIDR = '10.96.0.0/16';
export const FIRST_SERVICE_IP = '10.96.0.1';
export const CLUSTER_CIDR = '10.244.0.0/16';
export const NODE_CIDR_MASK = 24;

export type ProxyMode = 'iptables' | 'nftables' | 'ipvs' | 'none';
export type PodNetwork = 'routes' | 'overlay';
/** which service proxy runs on the nodes: flatnet's daemon, or upstream kube-proxy (a reference to compare against) */
export type ProxyImpl = 'flatnet' | 'kube-proxy';

export interface ClusterOptions {
  name: string;
  nodes: number;
  proxyMode: ProxyMode;
  /** absent in older state files: flatnet */
  proxyImpl?: ProxyImpl;
  podNetwork: PodNetwork;
  /** underlay subnet, a /24 such as 172.30.7.0/24 */
  underlaySubnet: string;
  mtu: number;
}

/** A process up started; `startTime` (field 22 of /proc/PID/stat) guards against PID reuse. */
export interface ProcRecord {
  role: string;
  node?: string;
  pid: number;
  startTime: string;
  argv: string[];
  log: string;
}

export interface NodeRecord {
  name: string;
  role: 'control-plane' | 'worker';
  netns: string;
  ip: string;
  hostVeth: string;
  podCIDR?: string;
  dir: string;
  kubeconfig: string;
  cniConfDir: string;
  criSocket?: string;
}

export interface ClusterState {
  version: 1;
  name: string;
  dir: string;
  createdAt: string;
  phase: 'creating' | 'up' | 'deleting';
  options: ClusterOptions;
  bridge: string;
  hostIP: string;
  prefixLen: number;
  binDir: string;
  cniBinDir?: string;
  apiserverURL?: string;
  etcdURL?: string;
  adminKubeconfig?: string;
  daemonKubeconfig?: string;
  /** netns names created (ip netns add) */
  netns: string[];
  /** host-side links created */
  links: string[];
  nodes: NodeRecord[];
  external?: { name: string; netns: string; ip: string; hostVeth: string };
  processes: ProcRecord[];
}

export function clusterDir(name: string): string {
  return join(STATE_ROOT, name);
}

export function statePath(name: string): string {
  return join(clusterDir(name), 'state.json');
}

/** Cluster names become prefixes of netns, bridge and interface names: keep them short and plain. */
export function validateClusterName(name: string): void {
  if (!/^[a-z][a-z0-9-]{0,9}$/.test(name)) {
    throw new Error(`cluster name ${JSON.stringify(name)}: use 1-10 chars of [a-z0-9-], starting with a letter`);
  }
}

export function loadState(name: string): ClusterState | undefined {
  const p = statePath(name);
  if (!existsSync(p)) return undefined;
  return JSON.parse(readFileSync(p, 'utf8')) as ClusterState;
}

export function saveState(s: ClusterState): void {
  mkdirSync(s.dir, { recursive: true });
  const p = join(s.dir, 'state.json');
  const tmp = `${p}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n');
  renameSync(tmp, p);
}

/** Applies a change to the state and persists it immediately. */
export function record(s: ClusterState, change: (s: ClusterState) => void): void {
  change(s);
  saveState(s);
}

export function newState(opts: ClusterOptions, binDir: string): ClusterState {
  const base = opts.underlaySubnet.replace(/\.0\/24$/, '');
  return {
    version: 1,
    name: opts.name,
    dir: clusterDir(opts.name),
    createdAt: new Date().toISOString(),
    phase: 'creating',
    options: opts,
    bridge: `${opts.name}-br`,
    hostIP: `${base}.1`,
    prefixLen: 24,
    binDir,
    netns: [],
    links: [],
    nodes: [],
    processes: [],
  };
}

/** kind-like node names: <cluster>-control-plane, <cluster>-worker, <cluster>-worker2, ... */
export function nodeNames(cluster: string, count: number): string[] {
  const names = [`${cluster}-control-plane`];
  for (let i = 1; i < count; i++) names.push(i === 1 ? `${cluster}-worker` : `${cluster}-worker${i}`);
  return names;
}

export function externalNetnsName(cluster: string): string {
  return `${cluster}-external`;
}

/** List every cluster that has a state directory. */
export function listClusters(): string[] {
  if (!existsSync(STATE_ROOT)) return [];
  return readdirSync(STATE_ROOT).filter((n) => existsSync(statePath(n)));
}
