// The node daemon never leaks its credentials: the bearer token from its kubeconfig reaches the apiserver (and only
// there), never its logs, even at debug level and on the error paths (every request refused with 401); /healthz, /livez and /metrics carry no token, kubeconfig path or key material, and
// metrics listen on loopback only. The daemon (dist/proxy/flatnet-proxy.mjs) and a stand-in apiserver run in a
// throw-away netns.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { REPO } from '../helpers/sbs.ts';
import { waitFor } from '../helpers/wait.ts';

const P = runPrefix();
const TOKEN = `flatnet-test-token-${P}-5b0c9e1f2a7d4c3e8f60a1b2c3d4e5f6`;
const DAEMON = join(REPO, 'dist/proxy/flatnet-proxy.mjs');
const NODE = join(REPO, 'node_modules/.bin/node');
let ns: TestNetns;
let dir: string;
const procs: ChildProcess[] = [];
let apiOut = '';
let daemonErr = '';

// answers every request with 401 and prints the Authorization header it got
const FAKE_API = `
const http = require('node:http');
http.createServer((req, res) => {
  process.stdout.write('AUTH ' + (req.headers.authorization || '-') + ' ' + req.url + '\\n');
  res.writeHead(401, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 }));
}).listen(16443, '127.0.0.1');`;

function start(argv: string[], onOut: (s: string) => void, onErr: (s: string) => void): ChildProcess {
  const p = spawn('ip', ['netns', 'exec', ns.name, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout!.on('data', (b: Buffer) => onOut(b.toString()));
  p.stderr!.on('data', (b: Buffer) => onErr(b.toString()));
  procs.push(p);
  return p;
}

async function curl(path: string, port: number): Promise<{ code: number; body: string }> {
  return new Promise((res) => {
    const p = spawn('ip', ['netns', 'exec', ns.name, 'curl', '-sS', '-m', '3', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('close', () => {
      const i = out.lastIndexOf('\n');
      res({ code: Number(out.slice(i + 1)), body: out.slice(0, i) });
    });
  });
}

beforeAll(async () => {
  if (!existsSync(DAEMON)) throw new Error('dist/proxy/flatnet-proxy.mjs is missing: run npm run build');
  ns = createNetns(`${P}d`);
  dir = mkdtempSync(join(tmpdir(), `${P}-secrets-`));
  writeFileSync(
    join(dir, 'kubeconfig'),
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: c, cluster: {server: "http://127.0.0.1:16443"}}]',
      `users: [{name: u, user: {token: "${TOKEN}"}}]`,
      'contexts: [{name: x, context: {cluster: c, user: u}}]',
      'current-context: x',
      '',
    ].join('\n'),
  );
  start([NODE, '-e', FAKE_API], (s) => (apiOut += s), () => {});
  await waitFor('the stand-in apiserver', async () => (await curl('/version', 16443)).code === 401, 10_000);
  apiOut = '';
  start(
    [NODE, DAEMON, `--kubeconfig=${join(dir, 'kubeconfig')}`, '--hostname-override=n1', '--proxy-mode=nftables', '--overlay=none', '--v=4', '--healthz-bind-address=0.0.0.0:20256', '--metrics-bind-address=127.0.0.1:20249'],
    (s) => (daemonErr += s),
    (s) => (daemonErr += s),
  );
  // enough refused requests for the error paths to have run, retries included
  await waitFor('the daemon to try the apiserver', () => apiOut.split('\n').filter(Boolean).length >= 4 && /401|Unauthorized/i.test(daemonErr), 30_000);
}, 60_000);

afterAll(() => {
  for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL');
  // the daemon's own tables in the throw-away netns go with it
  ns?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the daemon keeps its credentials to itself', () => {
  it('sends the token to the apiserver, and only there', () => {
    expect(apiOut).toContain(`AUTH Bearer ${TOKEN} `);
  });

  it('never writes the token to its logs, at debug level, on 401s', () => {
    expect(daemonErr.length).toBeGreaterThan(0);
    expect(daemonErr).not.toContain(TOKEN);
    expect(daemonErr).not.toContain(TOKEN.slice(0, 24));
    expect(daemonErr).not.toMatch(/Bearer\s+\S/);
  });

  it('health and metrics carry no token, kubeconfig path or key material; metrics answer on loopback only', async () => {
    for (const [path, port] of [['/healthz', 20256], ['/livez', 20256], ['/metrics', 20249]] as const) {
      const r = await curl(path, port);
      expect(r.code, path).toBeGreaterThan(0);
      expect(r.body, path).not.toContain(TOKEN.slice(0, 24));
      expect(r.body, path).not.toContain(dir);
      expect(r.body, path).not.toMatch(/BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)|Bearer|password/i);
    }
    // the health body is status only
    const h = JSON.parse((await curl('/healthz', 20256)).body) as Record<string, unknown>;
    expect(Object.keys(h).sort()).toEqual(expect.arrayContaining(['lastUpdated']));
    for (const v of Object.values(h)) expect(typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || v === null).toBe(true);
    const listeners = ns.exec(['ss', '-Hltn']);
    expect(listeners).toMatch(/127\.0\.0\.1:20249/);
    expect(listeners).not.toMatch(/(0\.0\.0\.0|\*|\[::\]):20249/);
  });
});
