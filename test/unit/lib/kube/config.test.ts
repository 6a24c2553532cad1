import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inClusterConfig, loadKubeConfig, loadKubeConfigFile, parseKubeConfig } from '../../../../lib/kube/config.ts';

let dir: string;
const b64 = (s: string): string => Buffer.from(s).toString('base64');

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kubecfg-'));
  mkdirSync(join(dir, 'pki'));
  write('pki/ca.crt', 'CA-PEM');
  write('pki/client.crt', 'CERT-PEM');
  write('pki/client.key', 'KEY-PEM');
  write('pki/token', 'tok-from-file\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const full = `
apiVersion: v1
kind: Config
current-context: second
clusters:
- name: one
  cluster:
    server: https://one.example:6443
- name: two
  cluster:
    server: https://two.example:6443
    certificate-authority: pki/ca.crt
    tls-server-name: kubernetes
contexts:
- name: first
  context: { cluster: one, user: alice }
- name: second
  context: { cluster: two, user: bob }
users:
- name: alice
  user: { token: alice-token }
- name: bob
  user:
    client-certificate: pki/client.crt
    client-key: pki/client.key
`;

describe('parseKubeConfig', () => {
  it('uses current-context; resolves relative paths against the kubeconfig directory', () => {
    const f = write('full.yaml', full);
    const c = loadKubeConfigFile(f);
    expect(c.server).toBe('https://two.example:6443');
    expect(c.ca?.toString()).toBe('CA-PEM');
    expect(c.cert?.toString()).toBe('CERT-PEM');
    expect(c.key?.toString()).toBe('KEY-PEM');
    expect(c.tlsServerName).toBe('kubernetes');
    expect(c.insecureSkipTLSVerify).toBe(false);
    expect(c.token).toBeUndefined();
    expect(c.source).toBe(f);
  });

  it('falls back to the first context without current-context', () => {
    const c = parseKubeConfig(full.replace('current-context: second', ''), join(dir, 'x.yaml'));
    expect(c.server).toBe('https://one.example:6443');
    expect(c.token).toBe('alice-token');
    expect(c.ca).toBeUndefined();
  });

  it('falls back to the first cluster and user without contexts', () => {
    const c = parseKubeConfig(
      `
clusters:
- name: c
  cluster:
    server: https://c:443
    insecure-skip-tls-verify: true
users:
- name: u
  user: { tokenFile: pki/token }
`,
      join(dir, 'nocontext.yaml'),
    );
    expect(c.server).toBe('https://c:443');
    expect(c.insecureSkipTLSVerify).toBe(true);
    expect(c.tokenFile).toBe(join(dir, 'pki/token'));
  });

  it('reads -data fields as base64', () => {
    const c = parseKubeConfig(
      `
current-context: x
clusters: [{ name: c, cluster: { server: "https://c", certificate-authority-data: ${b64('CA-DATA')} } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
users: [{ name: u, user: { client-certificate-data: ${b64('CERT-DATA')}, client-key-data: ${b64('KEY-DATA')} } }]
`,
      join(dir, 'data.yaml'),
    );
    expect(c.ca?.toString()).toBe('CA-DATA');
    expect(c.cert?.toString()).toBe('CERT-DATA');
    expect(c.key?.toString()).toBe('KEY-DATA');
  });

  it('a context without a user is anonymous', () => {
    const c = parseKubeConfig(
      `
clusters: [{ name: c, cluster: { server: "http://127.0.0.1:8080" } }]
contexts: [{ name: x, context: { cluster: c } }]
users: [{ name: u, user: { token: t } }]
`,
      join(dir, 'anon.yaml'),
    );
    expect(c.token).toBeUndefined();
    expect(c.cert).toBeUndefined();
  });

  const f = '/etc/kc.yaml';
  it.each([
    ['not yaml: [', 'not valid YAML'],
    ['- a\n- b', 'not a kubeconfig'],
    ['clusters: []', 'no clusters defined'],
    ['current-context: nope\ncontexts: [{ name: x, context: { cluster: c } }]', 'current-context "nope" is not defined'],
    ['contexts: [{ name: x, context: { user: u } }]', 'context "x" has no cluster'],
    ['contexts: [{ name: x, context: { cluster: c } }]', 'cluster "c" (context "x") is not defined'],
    ['clusters: [{ name: c, cluster: { insecure-skip-tls-verify: true } }]', 'cluster "c" has no server'],
    ['clusters: [{ name: c }]', 'clusters[0] (c) has no "cluster" map'],
    ['clusters: [{ name: c, cluster: { server: "https://c" } }]\ncontexts: [{ name: x, context: { cluster: c, user: u } }]', 'user "u" (context "x") is not defined'],
    ['clusters: [{ name: c, cluster: { server: "https://c" } }]\nusers: [{ name: u, user: { client-certificate-data: QQ== } }]', 'user "u" has client-certificate but no client-key'],
    ['clusters: [{ name: c, cluster: { server: "https://c" } }]\nusers: [{ name: u, user: { exec: { command: aws } } }]', 'user "u" uses exec credentials'],
    ['clusters: [{ name: c, cluster: { server: "https://c", certificate-authority: /nonexistent/ca.crt } }]', 'cannot read certificate-authority of cluster "c" /nonexistent/ca.crt'],
  ])('error: %s', (text, msg) => {
    expect(() => parseKubeConfig(text, f)).toThrow(msg);
    expect(() => parseKubeConfig(text, f)).toThrow(f);
  });

  it('names a missing kubeconfig file', () => {
    expect(() => loadKubeConfigFile(join(dir, 'missing.yaml'))).toThrow(`cannot read kubeconfig ${join(dir, 'missing.yaml')}`);
  });
});

describe('inClusterConfig', () => {
  it('uses the service-account token file and CA', () => {
    const sa = join(dir, 'sa');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 'sa-token');
    writeFileSync(join(sa, 'ca.crt'), 'SA-CA');
    const c = inClusterConfig({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, sa)!;
    expect(c).toMatchObject({ server: 'https://10.96.0.1:443', tokenFile: join(sa, 'token'), insecureSkipTLSVerify: false, source: 'in-cluster' });
    expect(c.ca?.toString()).toBe('SA-CA');
    expect(inClusterConfig({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, sa)!.server).toBe('https://[fd00::1]:443');
  });

  it('is undefined outside a cluster; errors name a missing file', () => {
    expect(inClusterConfig({}, join(dir, 'sa'))).toBeUndefined();
    expect(() => inClusterConfig({ KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '1' }, join(dir, 'nosa'))).toThrow(join(dir, 'nosa', 'token'));
  });
});

describe('loadKubeConfig', () => {
  const noHome = '/nonexistent-home';

  it('master alone: that server, no TLS verification, anonymous', () => {
    expect(loadKubeConfig('', 'https://1.2.3.4:6443', {}, noHome)).toEqual({ server: 'https://1.2.3.4:6443', insecureSkipTLSVerify: true, source: 'master' });
  });

  it('master replaces the kubeconfig server', () => {
    const c = loadKubeConfig(write('m.yaml', full), 'https://5.6.7.8:6443', {}, noHome);
    expect(c.server).toBe('https://5.6.7.8:6443');
    expect(c.cert?.toString()).toBe('CERT-PEM');
  });

  it('$KUBECONFIG (first existing file), then ~/.kube/config, then in-cluster', () => {
    const f = write('env.yaml', full);
    expect(loadKubeConfig('', '', { KUBECONFIG: `${join(dir, 'nope.yaml')}:${f}` }, noHome).server).toBe('https://two.example:6443');
    const home = join(dir, 'home');
    mkdirSync(join(home, '.kube'), { recursive: true });
    writeFileSync(join(home, '.kube', 'config'), full.replace('current-context: second', 'current-context: first'));
    expect(loadKubeConfig('', '', {}, home).server).toBe('https://one.example:6443');
    const sa = join(dir, 'sa2');
    mkdirSync(sa);
    writeFileSync(join(sa, 'token'), 't');
    writeFileSync(join(sa, 'ca.crt'), 'c');
    expect(loadKubeConfig('', '', { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '6443' }, noHome, sa).server).toBe('https://10.0.0.1:6443');
    expect(() => loadKubeConfig('', '', {}, noHome, sa)).toThrow('no kubeconfig');
  });
});
