// Kubeconfig loading for the small API client (client.ts): one cluster and one user out of a kubeconfig file, the
// in-cluster service account, or a bare --master URL. Only what the node daemon needs: server, CA (path or data),
// insecure-skip-tls-verify, tls-server-name, client certificate/key (paths or data), token and tokenFile.
// exec and auth-provider plugins are not supported (a clear error says so).

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';

/** The connection settings of one cluster + user. Certificates are PEM bytes. */
export interface KubeConfig {
  /** e.g. https://10.0.0.1:6443 (may carry a path prefix) */
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTLSVerify: boolean;
  /** SNI / certificate name override (kubeconfig tls-server-name) */
  tlsServerName?: string;
  /** a fixed bearer token */
  token?: string;
  /** a bearer token file, re-read periodically (projected service-account tokens rotate) */
  tokenFile?: string;
  /** where the settings came from, for messages: a file path, "in-cluster" or "master" */
  source: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Obj, key: string): string | undefined {
  const v = o[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The named entries of a kubeconfig list (clusters, users, contexts): name -> the inner object. */
function entries(doc: Obj, list: string, inner: string, file: string): { name: string; value: Obj }[] {
  const raw = doc[list];
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new Error(`${file}: "${list}" is not a list`);
  return raw.map((e: unknown, i) => {
    if (!isObj(e)) throw new Error(`${file}: ${list}[${i}] is not a map`);
    const name = typeof e.name === 'string' ? e.name : '';
    const value = e[inner];
    if (!isObj(value)) throw new Error(`${file}: ${list}[${i}] (${name || 'unnamed'}) has no "${inner}" map`);
    return { name, value };
  });
}

function readPem(file: string, path: string, what: string): Buffer {
  const p = resolve(dirname(file), path);
  try {
    return readFileSync(p);
  } catch (e) {
    throw new Error(`${file}: cannot read ${what} ${p}: ${(e as Error).message}`, { cause: e });
  }
}

function pem(file: string, o: Obj, key: string, owner: string): Buffer | undefined {
  const data = str(o, `${key}-data`);
  if (data) return Buffer.from(data, 'base64');
  const path = str(o, key);
  return path ? readPem(file, path, `${key} of ${owner}`) : undefined;
}

/**
 * Parses kubeconfig text. `file` names it in errors and is the base for relative paths. Uses current-context, or
 * the first context, or (with no contexts at all) the first cluster and the first user.
 */
export function parseKubeConfig(text: string, file: string): KubeConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid YAML: ${(e as Error).message}`, { cause: e });
  }
  if (!isObj(doc)) throw new Error(`${file}: not a kubeconfig (expected a map)`);
  const clusters = entries(doc, 'clusters', 'cluster', file);
  const users = entries(doc, 'users', 'user', file);
  const contexts = entries(doc, 'contexts', 'context', file);

  let clusterName: string | undefined;
  let userName: string | undefined;
  const current = str(doc, 'current-context');
  let ctx: { name: string; value: Obj } | undefined;
  if (current) {
    ctx = contexts.find((c) => c.name === current);
    if (!ctx) throw new Error(`${file}: current-context "${current}" is not defined in contexts`);
  } else ctx = contexts[0];
  if (ctx) {
    clusterName = str(ctx.value, 'cluster');
    if (!clusterName) throw new Error(`${file}: context "${ctx.name}" has no cluster`);
    userName = str(ctx.value, 'user');
  }

  const cluster = clusterName === undefined ? clusters[0] : clusters.find((c) => c.name === clusterName);
  if (!cluster) {
    throw new Error(clusterName === undefined ? `${file}: no clusters defined` : `${file}: cluster "${clusterName}" (context "${ctx?.name}") is not defined in clusters`);
  }
  const server = str(cluster.value, 'server');
  if (!server) throw new Error(`${file}: cluster "${cluster.name}" has no server`);
  const cfg: KubeConfig = {
    server,
    insecureSkipTLSVerify: cluster.value['insecure-skip-tls-verify'] === true,
    source: file,
  };
  const ca = pem(file, cluster.value, 'certificate-authority', `cluster "${cluster.name}"`);
  if (ca) cfg.ca = ca;
  const sni = str(cluster.value, 'tls-server-name');
  if (sni) cfg.tlsServerName = sni;

  // the user: the context's, or the first one when there are no contexts; none means anonymous
  const user = ctx ? (userName === undefined ? undefined : users.find((u) => u.name === userName)) : users[0];
  if (ctx && userName !== undefined && !user) throw new Error(`${file}: user "${userName}" (context "${ctx.name}") is not defined in users`);
  if (user) {
    const owner = `user "${user.name}"`;
    const cert = pem(file, user.value, 'client-certificate', owner);
    const key = pem(file, user.value, 'client-key', owner);
    if (!!cert !== !!key) throw new Error(`${file}: ${owner} has ${cert ? 'client-certificate but no client-key' : 'client-key but no client-certificate'}`);
    if (cert && key) {
      cfg.cert = cert;
      cfg.key = key;
    }
    const token = str(user.value, 'token');
    if (token) cfg.token = token;
    const tokenFile = str(user.value, 'tokenFile');
    if (tokenFile && !token) cfg.tokenFile = resolve(dirname(file), tokenFile);
    if (!cert && !token && !tokenFile && (user.value.exec !== undefined || user.value['auth-provider'] !== undefined)) {
      throw new Error(`${file}: ${owner} uses ${user.value.exec !== undefined ? 'exec' : 'auth-provider'} credentials, which are not supported (use a token, tokenFile or client certificate)`);
    }
  }
  return cfg;
}

export function loadKubeConfigFile(file: string): KubeConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read kubeconfig ${file}: ${(e as Error).message}`, { cause: e });
  }
  return parseKubeConfig(text, file);
}

/** The in-cluster config (service-account token and CA), or undefined when KUBERNETES_SERVICE_HOST/PORT are not set. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): KubeConfig | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const tokenFile = join(dir, 'token');
  const caFile = join(dir, 'ca.crt');
  if (!existsSync(tokenFile)) throw new Error(`in-cluster config: service-account token ${tokenFile} does not exist`);
  let ca: Buffer;
  try {
    ca = readFileSync(caFile);
  } catch (e) {
    throw new Error(`in-cluster config: cannot read ${caFile}: ${(e as Error).message}`, { cause: e });
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca,
    insecureSkipTLSVerify: false,
    tokenFile,
    source: 'in-cluster',
  };
}

/**
 * The daemon's rule (as with client-node before): an explicit kubeconfig file; else with only `master` that server,
 * anonymous and without TLS verification; else $KUBECONFIG (the first existing file of the list), ~/.kube/config,
 * and finally the in-cluster service account. `master`, when given with a kubeconfig, replaces its server.
 */
export function loadKubeConfig(kubeconfig = '', master = '', env: NodeJS.ProcessEnv = process.env, home: string = homedir(), saDir = SERVICE_ACCOUNT_DIR): KubeConfig {
  let cfg: KubeConfig | undefined;
  if (kubeconfig) cfg = loadKubeConfigFile(kubeconfig);
  else if (master) return { server: master, insecureSkipTLSVerify: true, source: 'master' };
  else {
    const fromEnv = (env.KUBECONFIG ?? '').split(':').filter((p) => p !== '');
    const file = [...fromEnv, ...(home ? [join(home, '.kube', 'config')] : [])].find((p) => existsSync(p));
    if (file) cfg = loadKubeConfigFile(file);
    else cfg = inClusterConfig(env, saDir);
    if (!cfg) {
      throw new Error('no kubeconfig: none given, $KUBECONFIG and ~/.kube/config do not exist, and KUBERNETES_SERVICE_HOST/PORT are not set');
    }
  }
  if (master) cfg.server = master;
  return cfg;
}
