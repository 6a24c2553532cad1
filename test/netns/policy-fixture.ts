// A node with pods for the NetworkPolicy traffic tests (and the netpol benchmark):
//
//   outside o (192.168.77.2) --veth-- node N (192.168.77.1 | br 10.244.1.1/24 | 10.244.2.1/24 --veth-- remote pod r .2.5)
//                                          bridge: pods a .1.2, b .1.3, c .1.4
//
// Pods a, b, c share the node's bridge (same-node traffic is bridged, not routed); r stands for a pod on another
// node (routed through N); o is outside the cluster. Every pod, and the node itself on 8181, runs a server that
// answers each TCP connection with "<name> <peer address>" and then echoes, on TCP 80, 8080, 9005 and UDP 53.
// Names carry the per-run prefix; teardown kills every server by PID and removes every netns.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNetns, killChildren, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

const NODE = resolve('node_modules/.bin/node');

const SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const [name, ...ports] = process.argv.slice(2);
let up = 0;
const ready = () => { if (++up === ports.length + 1) process.stdout.write('ready\\n'); };
for (const p of ports) {
  net.createServer((s) => { s.write(name + ' ' + s.remoteAddress + '\\n'); s.on('data', (d) => s.write(d)); s.on('error', () => {}); })
    .listen(Number(p), '0.0.0.0', ready);
}
const u = dgram.createSocket('udp4');
u.on('message', (_m, r) => u.send(name + ' ' + r.address + '\\n', r.port, r.address));
u.bind(53, '0.0.0.0', ready);
`;

/** argv: timeoutMs target... (proto:host:port) -> JSON [first line of the answer | 'ERR:<code>'] */
const PROBE = `
import net from 'node:net';
import dgram from 'node:dgram';
const [toS, ...targets] = process.argv.slice(2);
const to = Number(toS);
function tcp(host, port) {
  return new Promise((res) => {
    const s = net.connect({ host, port });
    let buf = '';
    const t = setTimeout(() => { s.destroy(); res('ERR:TIMEOUT'); }, to);
    s.on('data', (d) => { buf += d; if (buf.includes('\\n')) { clearTimeout(t); s.destroy(); res(buf.split('\\n')[0]); } });
    s.on('error', (e) => { clearTimeout(t); res('ERR:' + e.code); });
  });
}
function udp(host, port) {
  return new Promise((res) => {
    const u = dgram.createSocket('udp4');
    const t = setTimeout(() => { u.close(); res('ERR:TIMEOUT'); }, to);
    u.on('message', (m) => { clearTimeout(t); u.close(); res(String(m).trim()); });
    u.on('error', (e) => { clearTimeout(t); u.close(); res('ERR:' + e.code); });
    u.send('x', port, host);
  });
}
const out = await Promise.all(targets.map((x) => { const [p, h, port] = x.split(':'); return p === 'udp' ? udp(h, Number(port)) : tcp(h, Number(port)); }));
process.stdout.write(JSON.stringify(out));
`;

/** A long-lived TCP connection: each stdin line sends a ping; prints "ok" when it comes back, "timeout" otherwise. */
const FLOW = `
import net from 'node:net';
import readline from 'node:readline';
const [host, port] = process.argv.slice(2);
const s = net.connect({ host, port: Number(port) });
let waiting = null;
let greeted = false;
s.on('data', (d) => {
  const text = String(d);
  if (!greeted) { greeted = true; process.stdout.write('connected\\n'); if (!text.includes('p\\n')) return; }
  if (waiting && text.includes('p')) { clearTimeout(waiting); waiting = null; process.stdout.write('ok\\n'); }
});
s.on('error', (e) => process.stdout.write('error ' + e.code + '\\n'));
readline.createInterface({ input: process.stdin }).on('line', () => {
  s.write('p\\n');
  waiting = setTimeout(() => { waiting = null; process.stdout.write('timeout\\n'); }, 1500);
});
`;

/** Fresh connections in a loop until stdin closes: prints {"ok": n, "fail": n} */
const LOOP = `
import net from 'node:net';
const [host, port, toS] = process.argv.slice(2);
let ok = 0, fail = 0, stop = false;
process.stdin.on('data', () => {}); process.stdin.on('end', () => (stop = true));
const once = () => new Promise((res) => {
  const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); res(false); }, Number(toS));
  s.on('data', () => { clearTimeout(t); s.destroy(); res(true); });
  s.on('error', () => { clearTimeout(t); res(false); });
});
process.stdout.write('started\\n');
while (!stop) { if (await once()) ok++; else fail++; await new Promise((r) => setTimeout(r, 20)); }
process.stdout.write(JSON.stringify({ ok, fail }) + '\\n');
`;

export const IP = { a: '10.244.1.2', b: '10.244.1.3', c: '10.244.1.4', r: '10.244.2.5', o: '192.168.77.2', node: '192.168.77.1', gw: '10.244.1.1' };
export type PodName = 'a' | 'b' | 'c' | 'r' | 'o';

export interface PolicyFixture {
  prefix: string;
  node: TestNetns;
  ns: Record<PodName, TestNetns>;
  /** probe targets from one namespace: `tcp:host:port` / `udp:host:port`; returns the answers in order */
  probe(from: PodName | 'node', targets: string[], timeoutMs?: number): string[];
  /** a long-lived connection from `from`: ping() resolves 'ok' | 'timeout' | 'error ...' */
  flow(from: PodName, host: string, port: number): Promise<{ ping(): Promise<string>; close(): void }>;
  /** fresh connections in a loop until stop(), which resolves with the counts */
  loop(from: PodName, host: string, port: number, timeoutMs: number): Promise<{ stop(): Promise<{ ok: number; fail: number }> }>;
  teardown(): void;
}

export async function setupPolicyFixture(): Promise<PolicyFixture> {
  const prefix = runPrefix();
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  for (const [f, text] of Object.entries({ 'server.mjs': SERVER, 'probe.mjs': PROBE, 'flow.mjs': FLOW, 'loop.mjs': LOOP })) writeFileSync(join(dir, f), text);
  const procs: ChildProcess[] = [];
  const made: TestNetns[] = [];
  const teardown = (): void => {
    killChildren(procs);
    for (const n of made) n.remove();
    removeNetnsWithPrefix(prefix);
    rmSync(dir, { recursive: true, force: true });
  };
  const startServer = (ns: TestNetns, name: string, ports: number[]): Promise<void> =>
    new Promise((res, rej) => {
      const p = spawn('ip', ['netns', 'exec', ns.name, NODE, join(dir, 'server.mjs'), name, ...ports.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(p);
      const t = setTimeout(() => rej(new Error(`server ${name} did not start`)), 15_000);
      p.stdout!.on('data', (d: Buffer) => {
        if (String(d).includes('ready')) {
          clearTimeout(t);
          res();
        }
      });
      p.on('exit', (c) => rej(new Error(`server ${name} exited ${c}`)));
    });
  try {
    const mk = (n: string): TestNetns => {
      const ns = createNetns(`${prefix}-${n}`);
      made.push(ns);
      return ns;
    };
    const node = mk('node');
    const ns = { a: mk('a'), b: mk('b'), c: mk('c'), r: mk('r'), o: mk('o') };
    const ipn = (n: TestNetns, ...args: string[]): void => {
      execFileSync('ip', ['-n', n.name, ...args]);
    };
    node.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const br = `${prefix}br`;
    ipn(node, 'link', 'add', br, 'type', 'bridge');
    ipn(node, 'addr', 'add', `${IP.gw}/24`, 'dev', br);
    ipn(node, 'link', 'set', br, 'up');
    const attach = (n: TestNetns, ifname: string, addr: string, gw: string, opts: { bridge?: string; nodeAddr?: string }): void => {
      ipn(node, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.name);
      if (opts.bridge) ipn(node, 'link', 'set', ifname, 'master', opts.bridge);
      if (opts.nodeAddr) ipn(node, 'addr', 'add', opts.nodeAddr, 'dev', ifname);
      ipn(node, 'link', 'set', ifname, 'up');
      ipn(n, 'addr', 'add', addr, 'dev', 'eth0');
      ipn(n, 'link', 'set', 'eth0', 'up');
      ipn(n, 'route', 'add', 'default', 'via', gw);
    };
    for (const p of ['a', 'b', 'c'] as const) attach(ns[p], `${prefix}${p}`, `${IP[p]}/24`, IP.gw, { bridge: br });
    attach(ns.r, `${prefix}r`, `${IP.r}/24`, '10.244.2.1', { nodeAddr: '10.244.2.1/24' });
    attach(ns.o, `${prefix}o`, `${IP.o}/24`, IP.node, { nodeAddr: `${IP.node}/24` });
    await Promise.all([
      ...(['a', 'b', 'c', 'r'] as const).map((p) => startServer(ns[p], p, [80, 8080, 9005])),
      startServer(node, 'node', [8181]),
    ]);
    return {
      prefix,
      node,
      ns,
      probe(from, targets, timeoutMs = 1000) {
        const n = from === 'node' ? node : ns[from];
        const out = execFileSync('ip', ['netns', 'exec', n.name, NODE, join(dir, 'probe.mjs'), String(timeoutMs), ...targets], { encoding: 'utf8', timeout: 60_000 });
        return JSON.parse(out) as string[];
      },
      async flow(from, host, port) {
        const p = spawn('ip', ['netns', 'exec', ns[from].name, NODE, join(dir, 'flow.mjs'), host, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
        procs.push(p);
        const lines: string[] = [];
        const waiters: ((l: string) => void)[] = [];
        let buf = '';
        p.stdout!.on('data', (d: Buffer) => {
          buf += String(d);
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const l = buf.slice(0, i);
            buf = buf.slice(i + 1);
            const w = waiters.shift();
            if (w) w(l);
            else lines.push(l);
          }
        });
        const next = (): Promise<string> => (lines.length ? Promise.resolve(lines.shift()!) : new Promise((r) => waiters.push(r)));
        const first = await next();
        if (first !== 'connected') throw new Error(`flow from ${from} to ${host}:${port}: ${first}`);
        return {
          ping: () => {
            p.stdin!.write('\n');
            return next();
          },
          close: () => killChildren([p]),
        };
      },
      async loop(from, host, port, timeoutMs) {
        const p = spawn('ip', ['netns', 'exec', ns[from].name, NODE, join(dir, 'loop.mjs'), host, String(port), String(timeoutMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
        procs.push(p);
        let out = '';
        await new Promise<void>((res, rej) => {
          p.stdout!.on('data', (d: Buffer) => {
            out += String(d);
            if (out.includes('started\n')) res();
          });
          p.on('exit', (c) => rej(new Error(`loop exited ${c}`)));
        });
        return {
          stop: () =>
            new Promise((res, rej) => {
              p.on('exit', () => {
                const last = out.trim().split('\n').pop()!;
                try {
                  res(JSON.parse(last) as { ok: number; fail: number });
                } catch {
                  rej(new Error(`loop output: ${out}`));
                }
              });
              p.stdin!.end();
            }),
        };
      },
      teardown,
    };
  } catch (err) {
    teardown();
    throw err;
  }
}
