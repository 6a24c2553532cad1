// Workloads: containers with an agnhost image and the subcommand netexec, serve-hostname, porter or pause (and the
// pause image) run flatnet's emulation (test/cluster/netexec/main.ts) in the pod's netns; other containers run a
// `sleep infinity` placeholder, or, with the pod annotation flatnet.io/run-command: "true", their command/args as is
// with the host's binaries (e.g. a busybox `sh -c "wget ..."` client pod). restartPolicy is honoured on exit.
//
// Launcher for the node agent (the kubelet stand-in), one per node. The agent runs as a child process inside the
// node's network namespace (nsenter --net, so it shares the host mount namespace with containerd's netns mounts).
//
// Flags of test/cluster/agent/main.ts:
//   --node NAME           the Node this agent plays the kubelet for (pods with spec.nodeName == NAME)
//   --kubeconfig FILE     admin kubeconfig of the local cluster
//   --cri-socket PATH     containerd's CRI socket (from startContainerd)
//   --state-dir DIR       agent state: agent.log, agent.ready, per-pod workload logs under pods/
//   --node-ip IP          optional: the node's InternalIP (default: first global IPv4 of the netns, excluding pod bridges)
//   --register-node       optional: create the Node object if missing and keep its Ready condition and Lease fresh
//   --pod-cidr CIDR       optional, with --register-node: spec.podCIDR for a Node the agent creates
//   --cluster-dns IP[,IP] nameservers for ClusterFirst pods (default 10.96.0.10)
//   --cluster-domain D    default cluster.local
//   --no-heartbeat        do not renew the Lease in kube-node-lease / the Node Ready condition (on by default)
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killPids } from '../control-plane/proc.ts';
import { killOrphans } from './workload.ts';

export interface AgentOptions {
  nodeName: string;
  kubeconfig: string;
  criSocket: string;
  stateDir: string;
  /** run inside /var/run/netns/<netnsName> */
  netnsName?: string;
  nodeIP?: string;
  registerNode?: boolean;
  podCIDR?: string;
  clusterDNS?: string[];
  clusterDomain?: string;
  /** renew the node Lease and Ready condition (default true) */
  heartbeat?: boolean;
  /** how long to wait for the agent's informers to sync (default 60 s) */
  readyTimeoutMs?: number;
}

export interface AgentHandle {
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function agentArgv(opts: AgentOptions, nodeBin = process.execPath): string[] {
  const args = [
    nodeBin, MAIN,
    '--node', opts.nodeName,
    '--kubeconfig', resolve(opts.kubeconfig),
    '--cri-socket', resolve(opts.criSocket),
    '--state-dir', resolve(opts.stateDir),
  ];
  if (opts.nodeIP) args.push('--node-ip', opts.nodeIP);
  if (opts.registerNode) args.push('--register-node');
  if (opts.podCIDR) args.push('--pod-cidr', opts.podCIDR);
  if (opts.clusterDNS?.length) args.push('--cluster-dns', opts.clusterDNS.join(','));
  if (opts.clusterDomain) args.push('--cluster-domain', opts.clusterDomain);
  if (opts.heartbeat === false) args.push('--no-heartbeat');
  return opts.netnsName ? ['nsenter', `--net=/var/run/netns/${opts.netnsName}`, '--', ...args] : args;
}

export async function startAgent(opts: AgentOptions): Promise<AgentHandle> {
  const stateDir = resolve(opts.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const ready = join(stateDir, 'agent.ready');
  rmSync(ready, { force: true });
  const logFile = join(stateDir, 'agent.log');
  const fd = openSync(logFile, 'a');
  const argv = agentArgv(opts);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.unref();
  const pid = child.pid;
  if (!pid) throw new Error(`agent ${opts.nodeName}: spawn failed`);
  let exited: string | undefined;
  child.on('exit', (code, sig) => {
    exited = `exited ${code ?? sig}`;
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (!alive(pid)) return void (await killOrphans(stateDir));
    await killPids([pid], 20_000);
    // workloads of an agent that did not get to stop them (SIGKILL) are found by their pid files + env marker
    await killOrphans(stateDir);
  };
  const end = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  while (!existsSync(ready)) {
    if (exited || Date.now() > end) {
      await stop();
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-20).join('\n') : '';
      throw new Error(`agent ${opts.nodeName} ${exited ?? 'not ready in time'}; log:\n${log}`);
    }
    await sleep(100);
  }
  return { pid, logFile, stop };
}
