// Brings up etcd, kube-apiserver and kube-controller-manager for one local cluster, recording every process in the
// cluster state as it starts. The apiserver listens on the underlay bridge's host address.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../../lib/exec/runner.ts';
import { record, type ClusterState } from '../state.ts';
import { apiserverArgv, controllerManagerArgv, etcdArgv, renderKubeconfig } from './config.ts';
import { Kubectl } from './kubectl.ts';
import { clusterCertSpecs, createPki } from './pki.ts';
import { freePort, isAlive, startDetached, tailFile } from './proc.ts';
import { waitFor } from '../../helpers/wait.ts';

const REPO = join(import.meta.dirname, '..', '..', '..');

export function pkiDir(s: ClusterState): string {
  return join(s.dir, 'pki');
}

export function kubeconfigPath(s: ClusterState, identity: string): string {
  return join(s.dir, 'kubeconfig', `${identity}.kubeconfig`);
}

export function writeKubeconfig(s: ClusterState, identity: string, user: string): string {
  const path = kubeconfigPath(s, identity);
  mkdirSync(join(s.dir, 'kubeconfig'), { recursive: true });
  writeFileSync(
    path,
    renderKubeconfig({
      cluster: s.name,
      server: s.apiserverURL!,
      caFile: join(pkiDir(s), 'ca.crt'),
      user,
      certFile: join(pkiDir(s), `${identity}.crt`),
      keyFile: join(pkiDir(s), `${identity}.key`),
    }),
    { mode: 0o600 },
  );
  return path;
}

export function adminKubectl(s: ClusterState, runner: Runner): Kubectl {
  return new Kubectl(join(s.binDir, 'kubectl'), s.adminKubeconfig!, runner);
}

function logPath(s: ClusterState, name: string): string {
  return join(s.dir, 'logs', `${name}.log`);
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return r.ok;
  } catch {
    return false;
  }
}

function assertAlive(s: ClusterState, role: string): void {
  const p = s.processes.find((x) => x.role === role);
  if (p && !isAlive(p)) throw new Error(`${role} exited; last log lines:\n${tailFile(p.log)}`);
}

export async function startControlPlane(s: ClusterState, runner: Runner, log: (m: string) => void): Promise<Kubectl> {
  const nodeNames = s.nodes.map((n) => n.name);
  log('creating PKI');
  await createPki(runner, pkiDir(s), clusterCertSpecs(s.hostIP, nodeNames));

  // etcd on loopback, ports chosen free
  const clientPort = await freePort();
  const peerPort = await freePort();
  const etcdURL = `http://127.0.0.1:${clientPort}`;
  record(s, (x) => {
    x.etcdURL = etcdURL;
  });
  log(`starting etcd on ${etcdURL}`);
  const etcd = startDetached(
    etcdArgv({ bin: join(s.binDir, 'etcd'), name: s.name, dataDir: join(s.dir, 'etcd'), clientPort, peerPort }),
    { role: 'etcd', log: logPath(s, 'etcd') },
  );
  record(s, (x) => x.processes.push(etcd));
  await waitFor('etcd health', async () => (assertAlive(s, 'etcd'), (await httpOk(`${etcdURL}/health`)) || undefined), 60_000);

  const apiPort = await freePort(s.hostIP);
  const apiserverURL = `https://${s.hostIP}:${apiPort}`;
  record(s, (x) => {
    x.apiserverURL = apiserverURL;
  });
  const admin = writeKubeconfig(s, 'admin', 'kubernetes-admin');
  const kcmConfig = writeKubeconfig(s, 'controller-manager', 'system:kube-controller-manager');
  const daemonConfig = writeKubeconfig(s, 'daemon', 'flatnet-daemon');
  writeKubeconfig(s, 'coredns', 'coredns');
  for (const n of s.nodes) writeKubeconfig(s, `node-${n.name}`, `system:node:${n.name}`);
  record(s, (x) => {
    x.adminKubeconfig = admin;
    x.daemonKubeconfig = daemonConfig;
  });

  log(`starting kube-apiserver on ${apiserverURL}`);
  const api = startDetached(
    apiserverArgv({ bin: join(s.binDir, 'kube-apiserver'), etcdURL, hostIP: s.hostIP, port: apiPort, pkiDir: pkiDir(s) }),
    { role: 'kube-apiserver', log: logPath(s, 'kube-apiserver') },
  );
  record(s, (x) => x.processes.push(api));
  const kubectl = adminKubectl(s, runner);
  await waitFor(
    'kube-apiserver /readyz',
    async () => {
      assertAlive(s, 'kube-apiserver');
      const r = await kubectl.run(['get', '--raw=/readyz'], { allowFail: true, timeoutMs: 10_000 });
      return r.code === 0 && r.stdout.trim() === 'ok' ? true : undefined;
    },
    120_000,
    500,
  );

  const kcmPort = await freePort();
  log('starting kube-controller-manager');
  const kcm = startDetached(
    controllerManagerArgv({
      bin: join(s.binDir, 'kube-controller-manager'),
      kubeconfig: kcmConfig,
      pkiDir: pkiDir(s),
      port: kcmPort,
      clusterName: s.name,
    }),
    { role: 'kube-controller-manager', log: logPath(s, 'kube-controller-manager') },
  );
  record(s, (x) => x.processes.push(kcm));

  await applyDaemonRbac(kubectl);
  await useDaemonServiceAccountToken(s, kubectl, log);
  // the apiserver creates the kubernetes Service on start; make sure it has its ClusterIP before going on
  await waitFor(
    'the kubernetes Service',
    async () => {
      assertAlive(s, 'kube-controller-manager');
      const r = await kubectl.run(['get', 'svc', 'kubernetes', '-n', 'default', '-o', 'jsonpath={.spec.clusterIP}'], { allowFail: true });
      return r.code === 0 && r.stdout.trim() !== '' ? r.stdout.trim() : undefined;
    },
    60_000,
    500,
  );
  return kubectl;
}

/**
 * The node daemon authenticates exactly as the DaemonSet's pod would: with a token of the flatnet ServiceAccount from
 * the TokenRequest API (the kubelet projects such a token into the pod). Falls back to the client certificate named
 * as that ServiceAccount when the ServiceAccount does not exist (no deploy/ manifests).
 */
async function useDaemonServiceAccountToken(s: ClusterState, kubectl: Kubectl, log: (m: string) => void): Promise<void> {
  const r = await kubectl.run(['-n', 'flatnet-system', 'create', 'token', 'flatnet', '--duration=48h'], { allowFail: true });
  const token = r.stdout.trim();
  if (r.code !== 0 || !token) {
    log(`no ServiceAccount token for the daemon (${r.stderr.trim()}); it keeps its client certificate`);
    return;
  }
  const path = kubeconfigPath(s, 'daemon');
  writeFileSync(
    path,
    renderKubeconfig({ cluster: s.name, server: s.apiserverURL!, caFile: join(pkiDir(s), 'ca.crt'), user: 'flatnet', token, certFile: '', keyFile: '' }),
    { mode: 0o600 },
  );
}

/** The node daemon runs with the DaemonSet's RBAC (deploy/manifests), so the local cluster checks it is sufficient. */
async function applyDaemonRbac(kubectl: Kubectl): Promise<void> {
  const files = ['namespace.yaml', 'rbac.yaml'].map((f) => join(REPO, 'deploy', 'manifests', f));
  if (files.every((f) => existsSync(f))) {
    await kubectl.apply(files.map((f) => readFileSync(f, 'utf8')).join('\n---\n'));
  } else {
    await kubectl.apply(FALLBACK_DAEMON_RBAC);
  }
}

const FALLBACK_DAEMON_RBAC = `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: flatnet-local-daemon }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin }
subjects: [{ kind: User, name: "system:serviceaccount:flatnet-system:flatnet", apiGroup: rbac.authorization.k8s.io }]
`;
