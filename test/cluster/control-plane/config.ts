// Pure builders: kubeconfigs and the command lines of etcd, kube-apiserver and kube-controller-manager.
import { stringify } from 'yaml';
import { CLUSTER_CIDR, NODE_CIDR_MASK, SERVICE_CIDR } from '../state.ts';

export interface KubeconfigInput {
  cluster: string;
  server: string;
  caFile: string;
  user: string;
  certFile: string;
  keyFile: string;
  /** bearer token instead of the client certificate */
  token?: string;
}

export function renderKubeconfig(k: KubeconfigInput): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: k.cluster, cluster: { server: k.server, 'certificate-authority': k.caFile } }],
    users: [{ name: k.user, user: k.token ? { token: k.token } : { 'client-certificate': k.certFile, 'client-key': k.keyFile } }],
    contexts: [{ name: k.cluster, context: { cluster: k.cluster, user: k.user } }],
    'current-context': k.cluster,
    preferences: {},
  });
}

export interface EtcdInput {
  bin: string;
  name: string;
  dataDir: string;
  clientPort: number;
  peerPort: number;
}

export function etcdArgv(e: EtcdInput): string[] {
  const client = `http://127.0.0.1:${e.clientPort}`;
  const peer = `http://127.0.0.1:${e.peerPort}`;
  return [
    e.bin,
    `--name=${e.name}`,
    `--data-dir=${e.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${e.name}=${peer}`,
    '--initial-cluster-state=new',
    // a throw-away test cluster on a shared disk: durability is not worth the fsync latency
    '--unsafe-no-fsync=true',
    '--log-level=warn',
  ];
}

export interface ApiserverInput {
  bin: string;
  etcdURL: string;
  hostIP: string;
  port: number;
  pkiDir: string;
}

export function apiserverArgv(a: ApiserverInput): string[] {
  const p = (f: string) => `${a.pkiDir}/${f}`;
  return [
    a.bin,
    `--etcd-servers=${a.etcdURL}`,
    `--bind-address=${a.hostIP}`,
    `--advertise-address=${a.hostIP}`,
    `--secure-port=${a.port}`,
    `--tls-cert-file=${p('apiserver.crt')}`,
    `--tls-private-key-file=${p('apiserver.key')}`,
    `--client-ca-file=${p('ca.crt')}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    // nobody removes the not-ready taint once nodelifecycle is off; our Node objects are created Ready
    '--disable-admission-plugins=TaintNodesByCondition',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${p('sa.pub')}`,
    `--service-account-signing-key-file=${p('sa.key')}`,
    '--allow-privileged=true',
    '--profiling=false',
    '--event-ttl=1h',
    '--v=1',
  ];
}

export interface ControllerManagerInput {
  bin: string;
  kubeconfig: string;
  pkiDir: string;
  port: number;
  clusterName: string;
}

/**
 * Every default controller except nodelifecycle: our nodes have no kubelet that renews a Lease, and the lifecycle
 * controller would mark them NotReady and taint them for eviction.
 */
export const CONTROLLERS = '*,-nodelifecycle';

export function controllerManagerArgv(c: ControllerManagerInput): string[] {
  const p = (f: string) => `${c.pkiDir}/${f}`;
  return [
    c.bin,
    `--kubeconfig=${c.kubeconfig}`,
    `--authentication-kubeconfig=${c.kubeconfig}`,
    `--authorization-kubeconfig=${c.kubeconfig}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${c.port}`,
    `--controllers=${CONTROLLERS}`,
    '--allocate-node-cidrs=true',
    `--cluster-cidr=${CLUSTER_CIDR}`,
    `--node-cidr-mask-size=${NODE_CIDR_MASK}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    '--use-service-account-credentials=true',
    `--service-account-private-key-file=${p('sa.key')}`,
    `--root-ca-file=${p('ca.crt')}`,
    `--cluster-signing-cert-file=${p('ca.crt')}`,
    `--cluster-signing-key-file=${p('ca.key')}`,
    `--cluster-name=${c.clusterName}`,
    '--leader-elect=false',
    '--v=1',
  ];
}
