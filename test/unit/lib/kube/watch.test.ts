import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KubeClient } from '../../../../lib/kube/client.ts';
import { defaultStub, LineSplitter, ListWatcher, objectKey, relistDeletions, watchTimeoutSeconds, type KubeObject } from '../../../../lib/kube/watch.ts';

describe('LineSplitter', () => {
  it('splits lines across chunks, including inside a multi-byte character', () => {
    const s = new LineSplitter();
    const text = Buffer.from('{"a":"ü"}\n{"b":2}\r\n\n{"c":', 'utf8');
    const cut = text.indexOf(0xbc); // the second byte of ü
    expect(s.push(text.subarray(0, cut))).toEqual([]);
    expect(s.push(text.subarray(cut))).toEqual(['{"a":"ü"}', '{"b":2}', '']);
    expect(s.push(Buffer.from('3}'))).toEqual([]);
    expect(s.push(Buffer.from('\n'))).toEqual(['{"c":3}']);
    expect(s.end()).toBe('');
    s.push(Buffer.from('tail'));
    expect(s.end()).toBe('tail');
    expect(s.end()).toBe('');
  });

  it('handles a chunk per byte', () => {
    const s = new LineSplitter();
    const out: string[] = [];
    for (const b of Buffer.from('one\ntwo\nthree')) out.push(...s.push(Buffer.from([b])));
    expect(out).toEqual(['one', 'two']);
    expect(s.end()).toBe('three');
  });
});

describe('relist helpers', () => {
  it('relistDeletions: known before, absent now', () => {
    const before = new Map([
      ['ns/a', 'A'],
      ['ns/b', 'B'],
      ['c', 'C'],
    ]);
    const listed = new Map([
      ['ns/a', 'A2'],
      ['ns/d', 'D'],
    ]);
    expect(relistDeletions(before, listed)).toEqual(['B', 'C']);
    expect(relistDeletions(new Map(), listed)).toEqual([]);
  });

  it('objectKey and defaultStub keep only namespace and name', () => {
    const o = { metadata: { namespace: 'ns', name: 'a', resourceVersion: '5', labels: { x: 'y' } }, spec: { big: true } };
    expect(objectKey(o)).toBe('ns/a');
    expect(objectKey({ metadata: { name: 'node1' } })).toBe('node1');
    expect(defaultStub(o)).toEqual({ metadata: { namespace: 'ns', name: 'a' } });
    expect(defaultStub({ metadata: { name: 'node1' } })).toEqual({ metadata: { name: 'node1' } });
  });

  it('watchTimeoutSeconds is within [300, 600)', () => {
    expect(watchTimeoutSeconds(() => 0)).toBe(300);
    expect(watchTimeoutSeconds(() => 0.999999)).toBe(599);
  });
});

type Obj = KubeObject & { v?: number };
const obj = (name: string, rv: string, v = 1): Obj => ({ metadata: { namespace: 'ns', name, resourceVersion: rv }, v });

let server: Server | undefined;
let watcher: ListWatcher<Obj> | undefined;
afterEach(async () => {
  await watcher?.stop();
  watcher = undefined;
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse, url: URL) => void): Promise<KubeClient> {
  server = createServer((req, res) => handler(req, res, new URL(req.url ?? '/', 'http://x')));
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return new KubeClient({ server: `http://127.0.0.1:${port}`, insecureSkipTLSVerify: false, token: 'secret', source: 'test' });
}

const ev = (type: string, object: unknown): string => `${JSON.stringify({ type, object })}\n`;

describe('ListWatcher against a local server', () => {
  it('pages, watches, bookmarks, relists on 410 (event and HTTP), re-watches after a normal end', async () => {
    // the three lists the server answers, in order, each in pages of 2
    const lists: Obj[][] = [[obj('a', '1'), obj('b', '2'), obj('c', '3')], [obj('a', '15', 2), obj('d', '11'), obj('e', '16')], [obj('a', '15', 2), obj('d', '11')]];
    const listRVs = ['10', '20', '30'];
    const requests: string[] = [];
    let listNo = 0;
    let watchNo = 0;
    let lastWatchRes: ServerResponse | undefined;
    let fourthWatch: () => void = () => {};
    const fourth = new Promise<void>((r) => (fourthWatch = r));

    const client = await serve((req, res, url) => {
      expect(req.headers.authorization).toBe('Bearer secret');
      requests.push(url.search);
      if (url.searchParams.get('watch') !== '1') {
        expect(url.searchParams.get('limit')).toBe('2');
        const items = lists[listNo]!;
        const offset = Number(url.searchParams.get('continue') ?? '0');
        const page = items.slice(offset, offset + 2);
        const more = offset + 2 < items.length;
        const body = { kind: 'List', metadata: { resourceVersion: listRVs[listNo], ...(more ? { continue: String(offset + 2) } : {}) }, items: page };
        if (!more) listNo++;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        return;
      }
      expect(url.searchParams.get('allowWatchBookmarks')).toBe('true');
      const t = Number(url.searchParams.get('timeoutSeconds'));
      expect(t >= 300 && t < 600).toBe(true);
      const rv = url.searchParams.get('resourceVersion');
      watchNo++;
      if (watchNo === 1) {
        expect(rv).toBe('10');
        res.writeHead(200, { 'content-type': 'application/json' });
        const added = ev('ADDED', obj('d', '11'));
        res.write(added.slice(0, 17)); // a line split over two chunks
        setTimeout(() => {
          res.write(added.slice(17) + ev('BOOKMARK', { metadata: { resourceVersion: '12' } }));
          setTimeout(() => res.write(ev('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version' })), 20);
        }, 20);
        lastWatchRes = res;
      } else if (watchNo === 2) {
        expect(rv).toBe('20');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(ev('DELETED', obj('e', '21')));
        setTimeout(() => res.end(ev('BOOKMARK', { metadata: { resourceVersion: '22' } })), 20); // the watch's timeout
      } else if (watchNo === 3) {
        expect(rv).toBe('22');
        res.writeHead(410, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 410, message: 'gone' }));
      } else {
        expect(rv).toBe('30');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(ev('MODIFIED', obj('d', '31', 3)));
        lastWatchRes = res;
        fourthWatch();
      }
    });

    const events: string[] = [];
    let synced = false;
    watcher = new ListWatcher<Obj>({
      client,
      path: '/api/v1/things',
      pageSize: 2,
      onEvent: (o, deleted) => events.push(`${deleted ? 'del' : 'upd'} ${objectKey(o)}${o.v ? ` v${o.v}` : ''}${deleted ? ` ${JSON.stringify(o)}` : ''}`),
    });
    watcher.start();
    await watcher.synced.then(() => (synced = true));
    expect(events).toEqual(['upd ns/a v1', 'upd ns/b v1', 'upd ns/c v1']);
    await fourth;
    await new Promise((r) => setTimeout(r, 50));
    expect(synced).toBe(true);
    expect(watcher.resourceVersion).toBe('31');
    expect(events).toEqual([
      'upd ns/a v1',
      'upd ns/b v1',
      'upd ns/c v1',
      'upd ns/d v1', // watch 1 (split line)
      // relist after ERROR 410: updates, then deletions of b and c as stubs
      'upd ns/a v2',
      'upd ns/d v1',
      'upd ns/e v1',
      'del ns/b {"metadata":{"name":"b","namespace":"ns"}}',
      'del ns/c {"metadata":{"name":"c","namespace":"ns"}}',
      `del ns/e v1 ${JSON.stringify(obj('e', '21'))}`, // watch 2, then a normal end -> watch 3 from RV 22 -> HTTP 410
      'upd ns/a v2',
      'upd ns/d v1',
      'upd ns/d v3', // watch 4
    ]);
    // lists of 3, 3 and 2 objects in pages of 2: 2 + 2 + 1 requests, 2 of them with a continue token
    expect(requests.filter((q) => !q.includes('watch=1')).length).toBe(5);
    expect(requests.filter((q) => q.includes('continue=')).length).toBe(2);
    const closed = new Promise((r) => lastWatchRes!.on('close', r));
    await watcher.stop();
    await closed; // the client cut the open watch
  });

  it('a connection lost mid-stream is re-watched from the last resourceVersion, without a relist', async () => {
    let lists = 0;
    const watchRVs: string[] = [];
    let rewatched: () => void = () => {};
    const second = new Promise<void>((r) => (rewatched = r));
    const client = await serve((_req, res, url) => {
      if (url.searchParams.get('watch') !== '1') {
        lists++;
        res.writeHead(200).end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: [] }));
        return;
      }
      watchRVs.push(url.searchParams.get('resourceVersion') ?? '');
      res.writeHead(200);
      if (watchRVs.length === 1) {
        res.write(ev('ADDED', obj('a', '6')));
        setTimeout(() => res.destroy(), 20);
      } else rewatched();
    });
    const errors: unknown[] = [];
    watcher = new ListWatcher<Obj>({ client, path: '/api/v1/things', onEvent: () => {}, onError: (e) => errors.push(e) });
    watcher.start();
    await second;
    expect(lists).toBe(1);
    expect(watchRVs).toEqual(['5', '6']);
    expect(String(errors[0])).toContain('watch /api/v1/things: connection lost');
  });

  it('retries a failed list with backoff and reports the error', async () => {
    let lists = 0;
    const client = await serve((_req, res, url) => {
      if (url.searchParams.get('watch') === '1') {
        res.writeHead(200);
        return; // held open
      }
      lists++;
      if (lists === 1) {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'etcd is sad' }));
        return;
      }
      res.writeHead(200).end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: [obj('x', '5')] }));
    });
    const errors: unknown[] = [];
    const got: string[] = [];
    watcher = new ListWatcher<Obj>({ client, path: '/api/v1/things', onEvent: (o) => got.push(objectKey(o)), onError: (e) => errors.push(e) });
    const t0 = Date.now();
    watcher.start();
    await watcher.synced;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
    expect(got).toEqual(['ns/x']);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ status: 500 });
    expect(String(errors[0])).toContain('etcd is sad');
  });

  it('stop() ends a watch in progress', async () => {
    let watchOpen = false;
    const client = await serve((_req, res, url) => {
      if (url.searchParams.get('watch') === '1') {
        watchOpen = true;
        res.writeHead(200);
        return;
      }
      res.writeHead(200).end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: [] }));
    });
    watcher = new ListWatcher<Obj>({ client, path: '/api/v1/things', onEvent: () => {} });
    watcher.start();
    await watcher.synced;
    while (!watchOpen) await new Promise((r) => setTimeout(r, 5));
    await watcher.stop();
  });
});

describe('KubeClient', () => {
  it('errors carry the HTTP status and the Status message; patch sends the content type', async () => {
    let patched: { type?: string; body: string } | undefined;
    const client = await serve((req, res, url) => {
      if (req.method === 'PATCH') {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          patched = { type: req.headers['content-type'], body };
          res.writeHead(200).end(JSON.stringify({ metadata: { name: 'n1' } }));
        });
        return;
      }
      if (url.pathname === '/api/v1/nodes/missing') {
        res.writeHead(404).end(JSON.stringify({ kind: 'Status', code: 404, reason: 'NotFound', message: 'nodes "missing" not found' }));
        return;
      }
      res.writeHead(502).end('bad gateway');
    });
    await expect(client.get('/api/v1/nodes/missing')).rejects.toMatchObject({ status: 404, reason: 'NotFound', message: expect.stringContaining('nodes "missing" not found') });
    await expect(client.get('/x')).rejects.toMatchObject({ status: 502, message: expect.stringContaining('bad gateway') });
    expect(await client.patch('/api/v1/nodes/n1', { metadata: { annotations: { a: 'b' } } })).toEqual({ metadata: { name: 'n1' } });
    expect(patched).toEqual({ type: 'application/merge-patch+json', body: '{"metadata":{"annotations":{"a":"b"}}}' });
    client.close();
  });

  it('times out a request', async () => {
    const client0 = await serve(() => {
      /* never answers */
    });
    const client = new KubeClient(client0.config, { timeoutMs: 100 });
    await expect(client.get('/slow')).rejects.toThrow('no complete answer within 100 ms');
    client.close();
    client0.close();
  });
});
