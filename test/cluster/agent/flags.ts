// The agent's command line (documented in ./index.ts).
import { resolve } from 'node:path';

export interface AgentFlags {
  node: string;
  kubeconfig: string;
  criSocket: string;
  stateDir: string;
  nodeIP?: string;
  registerNode: boolean;
  podCIDR?: string;
  clusterDNS: string[];
  clusterDomain: string;
  heartbeat: boolean;
}

export function parseAgentFlags(argv: readonly string[]): AgentFlags {
  const v: Record<string, string> = {};
  const bools = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]!);
    if (!m) throw new Error(`unexpected argument ${argv[i]}`);
    const name = m[1]!;
    if (['register-node', 'no-heartbeat'].includes(name)) {
      bools.add(name);
      continue;
    }
    const val = m[2] ?? argv[++i];
    if (val === undefined) throw new Error(`flag --${name} needs a value`);
    v[name] = val;
  }
  const known = ['node', 'kubeconfig', 'cri-socket', 'state-dir', 'node-ip', 'pod-cidr', 'cluster-dns', 'cluster-domain'];
  for (const k of Object.keys(v)) if (!known.includes(k)) throw new Error(`unknown flag --${k}`);
  for (const k of ['node', 'kubeconfig', 'cri-socket', 'state-dir']) if (!v[k]) throw new Error(`--${k} is required`);
  return {
    node: v['node']!,
    kubeconfig: v['kubeconfig']!,
    criSocket: v['cri-socket']!,
    stateDir: resolve(v['state-dir']!),
    nodeIP: v['node-ip'],
    registerNode: bools.has('register-node'),
    podCIDR: v['pod-cidr'],
    clusterDNS: (v['cluster-dns'] ?? '10.96.0.10').split(',').filter(Boolean),
    clusterDomain: v['cluster-domain'] ?? 'cluster.local',
    heartbeat: !bools.has('no-heartbeat'),
  };
}

