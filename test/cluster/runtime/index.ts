// One call per node for the local cluster: a private containerd (CRI, CNI from cniBinDir/cniConfDir) and the node
// agent (kubelet stand-in), both inside the node's network namespace. State lives under stateDir/{containerd,agent}.
import { join } from 'node:path';
import { startAgent } from '../agent/index.ts';
import { startContainerd } from './containerd.ts';

export { startContainerd } from './containerd.ts';
export { ensurePauseImageTar, PAUSE_IMAGE } from './pause.ts';

export interface NodeRuntimeOptions {
  nodeName: string;
  /** the node's netns (/var/run/netns/<netnsName>) */
  netnsName: string;
  stateDir: string;
  cniBinDir: string;
  cniConfDir: string;
  kubeconfig: string;
  /** the node's InternalIP (default: the agent picks the netns's first global IPv4 not on a pod bridge) */
  nodeIP?: string;
  /** the agent creates the Node object and keeps its Ready condition / Lease (default false: the cluster does it) */
  registerNode?: boolean;
  podCIDR?: string;
  /** nameservers for ClusterFirst pods (default 10.96.0.10) and the cluster domain (default cluster.local) */
  clusterDNS?: string[];
  clusterDomain?: string;
  /** the agent renews the node's Lease and Ready condition (default true) */
  heartbeat?: boolean;
}

export interface NodeRuntime {
  containerdPid: number;
  agentPid: number;
  criSocket: string;
  /** stops the agent, then containerd (which stops and removes every sandbox first, running CNI DEL) */
  stop(): Promise<void>;
}

export async function startNodeRuntime(opts: NodeRuntimeOptions): Promise<NodeRuntime> {
  const ctd = await startContainerd({
    name: opts.nodeName,
    stateDir: join(opts.stateDir, 'containerd'),
    netnsName: opts.netnsName,
    cniBinDir: opts.cniBinDir,
    cniConfDir: opts.cniConfDir,
  });
  let agent;
  try {
    agent = await startAgent({
      nodeName: opts.nodeName,
      kubeconfig: opts.kubeconfig,
      criSocket: ctd.socket,
      stateDir: join(opts.stateDir, 'agent'),
      netnsName: opts.netnsName,
      nodeIP: opts.nodeIP,
      registerNode: opts.registerNode,
      podCIDR: opts.podCIDR,
      clusterDNS: opts.clusterDNS,
      clusterDomain: opts.clusterDomain,
      heartbeat: opts.heartbeat,
    });
  } catch (e) {
    await ctd.stop();
    throw e;
  }
  const a = agent;
  return {
    containerdPid: ctd.pid,
    agentPid: a.pid,
    criSocket: ctd.socket,
    async stop() {
      await a.stop().catch(() => {});
      await ctd.stop();
    },
  };
}
