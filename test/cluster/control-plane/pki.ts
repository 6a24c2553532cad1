// The cluster's PKI, made with openssl: a CA, the apiserver's serving certificate, client certificates for every
// identity (admin, controller manager, each node's agent, the node daemon) and the service-account key pair.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../../lib/exec/runner.ts';
import { FIRST_SERVICE_IP } from '../state.ts';

export interface CertSpec {
  /** file stem: <dir>/<name>.crt and .key */
  name: string;
  cn: string;
  /** subject organisations = Kubernetes groups */
  orgs?: string[];
  server?: boolean;
  client?: boolean;
  sans?: { ips?: string[]; dns?: string[] };
}

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  saKey: string;
  saPub: string;
  cert(name: string): { cert: string; key: string };
}

/** The subject as openssl -subj wants it; values must not contain '/'. */
export function subject(spec: Pick<CertSpec, 'cn' | 'orgs'>): string {
  for (const v of [spec.cn, ...(spec.orgs ?? [])]) {
    if (v.includes('/')) throw new Error(`certificate subject value ${v} contains '/'`);
  }
  return (spec.orgs ?? []).map((o) => `/O=${o}`).join('') + `/CN=${spec.cn}`;
}

/** The x509v3 extension section for a leaf certificate (pure). */
export function extensions(spec: CertSpec): string {
  const eku = [spec.server ? 'serverAuth' : '', spec.client ? 'clientAuth' : ''].filter(Boolean).join(',');
  const lines = [
    '[v3]',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${eku || 'clientAuth'}`,
  ];
  const sans = [...(spec.sans?.dns ?? []).map((d) => `DNS:${d}`), ...(spec.sans?.ips ?? []).map((i) => `IP:${i}`)];
  if (sans.length) lines.push(`subjectAltName=${sans.join(',')}`);
  return lines.join('\n') + '\n';
}

export function apiserverCertSpec(hostIP: string): CertSpec {
  return {
    name: 'apiserver',
    cn: 'kube-apiserver',
    server: true,
    sans: {
      ips: ['127.0.0.1', hostIP, FIRST_SERVICE_IP],
      dns: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
    },
  };
}

/** Every certificate a cluster needs. */
export function clusterCertSpecs(hostIP: string, nodes: readonly string[]): CertSpec[] {
  return [
    apiserverCertSpec(hostIP),
    { name: 'admin', cn: 'kubernetes-admin', orgs: ['system:masters'], client: true },
    { name: 'controller-manager', cn: 'system:kube-controller-manager', client: true },
    // the node daemon authenticates as the DaemonSet's service account would, so deploy/manifests/rbac.yaml is exercised
    {
      name: 'daemon',
      cn: 'system:serviceaccount:flatnet-system:flatnet',
      orgs: ['system:serviceaccounts', 'system:serviceaccounts:flatnet-system'],
      client: true,
    },
    { name: 'coredns', cn: 'system:serviceaccount:kube-system:coredns', orgs: ['system:serviceaccounts', 'system:serviceaccounts:kube-system'], client: true },
    ...nodes.map((n) => ({ name: `node-${n}`, cn: `system:node:${n}`, orgs: ['system:nodes'], client: true })),
  ];
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

export async function createPki(runner: Runner, dir: string, specs: readonly CertSpec[]): Promise<Pki> {
  mkdirSync(dir, { recursive: true });
  const caCert = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  if (!existsSync(caCert)) {
    await runner.run(['openssl', 'req', '-x509', ...EC, '-nodes', '-keyout', caKey, '-out', caCert, '-days', '3650',
      '-subj', '/CN=flatnet-local-ca', '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
  }
  const saKey = join(dir, 'sa.key');
  const saPub = join(dir, 'sa.pub');
  if (!existsSync(saPub)) {
    await runner.run(['openssl', 'genrsa', '-out', saKey, '2048']);
    await runner.run(['openssl', 'rsa', '-in', saKey, '-pubout', '-out', saPub]);
  }
  await Promise.all(specs.map((s) => issue(runner, dir, caCert, caKey, s)));
  return {
    dir,
    caCert,
    caKey,
    saKey,
    saPub,
    cert: (name) => ({ cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) }),
  };
}

async function issue(runner: Runner, dir: string, caCert: string, caKey: string, spec: CertSpec): Promise<void> {
  const crt = join(dir, `${spec.name}.crt`);
  if (existsSync(crt)) return;
  const key = join(dir, `${spec.name}.key`);
  const csr = join(dir, `${spec.name}.csr`);
  const ext = join(dir, `${spec.name}.ext`);
  writeFileSync(ext, extensions(spec));
  await runner.run(['openssl', 'req', '-new', ...EC, '-nodes', '-keyout', key, '-out', csr, '-subj', subject(spec)]);
  await runner.run(['openssl', 'x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-days', '365', '-extfile', ext, '-extensions', 'v3', '-out', `${crt}.tmp`]);
  await runner.run(['mv', `${crt}.tmp`, crt]);
}
