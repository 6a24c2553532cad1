// KubeWatchSource (proxy) and KubeNodeSource (overlay) against a local fake apiserver.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KubeNodeSource } from '../../../proxy/overlay/kube.ts';
import { KubeWatchSource, loadKubeConfig } from '../../../proxy/services/watch/informers.ts';

const silent = { debug() {}, info() {}, warn() {}, error() {} };
let server: Server | undefined;
let dir: string | undefined;
afterEach(async () => {
  const s = server;
  s?.closeAllConnections();
  await new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

type Handler = (method: string, path: string, query: URLSearchParams, body: string, res: ServerResponse) => void;

async function fakeApi(h: Handler): Promise<string> {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      h(req.method ?? 'GET', u.pathname, u.searchParams, body, res);
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const list = (res: ServerResponse, items: unknown[], rv = '1'): void => {
  res.writeHead(200).end(JSON.stringify({ metadata: { resourceVersion: rv }, items }));
};

describe('KubeWatchSource', () => {
  it('delivers plain objects; start() resolves after the Service and EndpointSlice lists', async () => {
    const url = await fakeApi((_m, path, q, _b, res) => {
      if (q.get('watch') === '1') {
        res.writeHead(200);
        return; // quiet watches
      }
      if (path === '/api/v1/services') list(res, [{ metadata: { namespace: 'default', name: 'kubernetes', creationTimestamp: '2026-01-01T00:00:00Z' }, spec: { clusterIP: '10.96.0.1' } }]);
      else if (path === '/apis/discovery.k8s.io/v1/endpointslices') list(res, [{ metadata: { namespace: 'default', name: 'kubernetes', labels: { 'kubernetes.io/service-name': 'kubernetes' } }, addressType: 'IPv4' }]);
      else if (path === '/api/v1/nodes') list(res, [{ metadata: { name: 'n1' } }]);
      else res.writeHead(404).end('{}');
    });
    const src = new KubeWatchSource(loadKubeConfig('', url), silent);
    const seen: string[] = [];
    await src.start({
      service: (o, d) => {
        seen.push(`svc ${o.metadata?.name} ${d}`);
        // plain JSON: no Date conversion
        expect(typeof o.metadata?.creationTimestamp).toBe('string');
        expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
      },
      slice: (o, d) => seen.push(`slice ${o.metadata?.name} ${d}`),
      node: (o, d) => seen.push(`node ${o.metadata?.name} ${d}`),
    });
    expect(seen).toContain('svc kubernetes false');
    expect(seen).toContain('slice kubernetes false');
    await src.stop();
  });
});

describe('KubeNodeSource', () => {
  function kubeconfig(server: string): string {
    dir = mkdtempSync(join(tmpdir(), 'kns-'));
    const f = join(dir, 'kubeconfig');
    writeFileSync(f, `clusters: [{ name: c, cluster: { server: "${server}" } }]\ncontexts: [{ name: x, context: { cluster: c } }]\ncurrent-context: x\n`);
    return f;
  }

  it('lists nodes, follows the watch, annotates with a merge patch', async () => {
    let patch: { path: string; body: string } | undefined;
    let watchRes: ServerResponse | undefined;
    const node = (name: string, ip: string) => ({
      metadata: { name, annotations: { a: '1' } },
      spec: { podCIDR: '10.244.1.0/24' },
      status: { addresses: [{ type: 'InternalIP', address: ip }] },
    });
    const url = await fakeApi((method, path, q, body, res) => {
      if (method === 'PATCH') {
        patch = { path, body };
        res.writeHead(200).end('{}');
      } else if (q.get('watch') === '1') {
        res.writeHead(200);
        watchRes = res;
      } else list(res, [node('n1', '192.168.0.1')]);
    });
    const src = new KubeNodeSource(kubeconfig(url), silent);
    let changes = 0;
    await src.start(() => changes++);
    expect(src.list()).toEqual([{ name: 'n1', internalIPs: ['192.168.0.1'], podCIDRs: ['10.244.1.0/24'], annotations: { a: '1' } }]);
    while (!watchRes) await new Promise((r) => setTimeout(r, 5));
    const before = changes;
    watchRes.write(`${JSON.stringify({ type: 'ADDED', object: { ...node('n2', '192.168.0.2'), metadata: { name: 'n2', resourceVersion: '2' } } })}\n`);
    watchRes.write(`${JSON.stringify({ type: 'DELETED', object: { metadata: { name: 'n1', resourceVersion: '3' } } })}\n`);
    while (changes < before + 2) await new Promise((r) => setTimeout(r, 5));
    expect(src.list().map((n) => n.name)).toEqual(['n2']);
    await src.annotate('n2', { 'flatnet.io/vtep': 'x' });
    expect(patch).toEqual({ path: '/api/v1/nodes/n2', body: '{"metadata":{"annotations":{"flatnet.io/vtep":"x"}}}' });
    await src.stop();
  });

  it('start() resolves after the first failed attempt and keeps retrying', async () => {
    let lists = 0;
    const url = await fakeApi((_m, _p, q, _b, res) => {
      if (q.get('watch') === '1') {
        res.writeHead(200);
        return;
      }
      if (++lists === 1) res.writeHead(503).end('{"kind":"Status","message":"not ready"}');
      else list(res, [{ metadata: { name: 'late' } }]);
    });
    const src = new KubeNodeSource(kubeconfig(url), silent);
    let changed = 0;
    await src.start(() => changed++);
    expect(src.list()).toEqual([]);
    while (!changed) await new Promise((r) => setTimeout(r, 20));
    expect(src.list().map((n) => n.name)).toEqual(['late']);
    await src.stop();
  });
});
