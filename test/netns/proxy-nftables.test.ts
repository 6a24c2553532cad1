// Real-kernel test of the nftables proxy backend: rules loaded into a "node" netns, real TCP/UDP traffic from an
// outside client and from pods, endpoint netns running a tiny echo server that reports the peer address.
//
// Fixture: a "node" netns holding the rules, an outside client on a veth,
// and pod netns (endpoints running a tiny TCP/UDP echo server, plus a pod client) on a bridge inside the node.
//
//   client (192.168.77.2) --veth-- node (192.168.77.1 | br 10.244.1.1/24) --bridge-- e1 .2, e2 .3, e3 .4, pc .9
//
// Every name carries the per-run prefix; teardown kills the servers by PID and removes the netns.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNetns, killChildren, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner, RunOptions, RunResult } from '../../lib/exec/runner.ts';
import { createBackend, NftablesProxier } from '../../proxy/services/backends/nftables/index.ts';
import type { Endpoint, ProxyConfigView, ServicePlan, ServicePort, SyncInput } from '../../proxy/services/model/types.ts';
import { planServicePort } from '../../proxy/services/model/plan.ts';
import { proxyConfig, servicePort } from '../helpers/proxy-fixtures.ts';

const NODE = resolve('node_modules/.bin/node');

const SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const name = process.argv[2];
const port = Number(process.argv[3]);
net.createServer((s) => { s.end(name + ' ' + s.remoteAddress + '\\n'); s.on('error', () => {}); }).listen(port, '0.0.0.0');
const u = dgram.createSocket('udp4');
u.on('message', (_m, r) => u.send(name + ' ' + r.address + '\\n', r.port, r.address));
u.bind(port, '0.0.0.0', () => process.stdout.write('ready\\n'));
`;

/** argv: proto host port count timeoutMs -> prints JSON [reply | 'ERR:<code>'] */
const CLIENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const [proto, host, portS, countS, toS] = process.argv.slice(2);
const port = Number(portS), count = Number(countS), to = Number(toS);
function tcp() {
  return new Promise((res) => {
    const s = net.connect({ host, port });
    let buf = '';
    const t = setTimeout(() => { s.destroy(); res('ERR:TIMEOUT'); }, to);
    s.on('data', (d) => (buf += d));
    s.on('end', () => { clearTimeout(t); res(buf.trim()); });
    s.on('error', (e) => { clearTimeout(t); res('ERR:' + e.code); });
  });
}
function udp() {
  return new Promise((res) => {
    const u = dgram.createSocket('udp4');
    const t = setTimeout(() => { u.close(); res('ERR:TIMEOUT'); }, to);
    u.on('message', (m) => { clearTimeout(t); u.close(); res(String(m).trim()); });
    u.on('error', (e) => { clearTimeout(t); u.close(); res('ERR:' + e.code); });
    u.send('x', port, host);
  });
}
const out = [];
for (let i = 0; i < count; i++) out.push(await (proto === 'udp' ? udp() : tcp()));
process.stdout.write(JSON.stringify(out));
`;

interface Fixture {
  prefix: string;
  node: TestNetns;
  client: TestNetns;
  podClient: TestNetns;
  endpoints: TestNetns[];
  endpointIPs: string[];
  /** run the client script inside a netns; returns the replies */
  request(ns: TestNetns, proto: 'tcp' | 'udp', host: string, port: number, count: number, timeoutMs?: number): string[];
  teardown(): void;
}

const ENDPOINTS = ['10.244.1.2', '10.244.1.3', '10.244.1.4'];

async function setupFixture(port = 8080): Promise<Fixture> {
  const prefix = runPrefix();
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  writeFileSync(join(dir, 'server.mjs'), SERVER);
  writeFileSync(join(dir, 'client.mjs'), CLIENT);
  const servers: ChildProcess[] = [];
  const made: TestNetns[] = [];
  const teardown = (): void => {
    killChildren(servers);
    for (const n of made) n.remove();
    removeNetnsWithPrefix(prefix);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const mk = (n: string): TestNetns => {
      const ns = createNetns(`${prefix}-${n}`);
      made.push(ns);
      return ns;
    };
    const node = mk('node');
    const client = mk('cl');
    const podClient = mk('pc');
    const endpoints = ENDPOINTS.map((_, i) => mk(`e${i + 1}`));
    const ipn = (ns: TestNetns, ...args: string[]): void => {
      execFileSync('ip', ['-n', ns.name, ...args]);
    };
    node.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const br = `${prefix}br`;
    ipn(node, 'link', 'add', br, 'type', 'bridge');
    ipn(node, 'addr', 'add', '10.244.1.1/24', 'dev', br);
    ipn(node, 'link', 'set', br, 'up');
    const attach = (ns: TestNetns, ifname: string, addr: string, gw: string, bridge?: string, nodeAddr?: string): void => {
      ipn(node, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name);
      // hairpin on the bridge ports, as the bridge CNI plugin's hairpinMode does: with br_netfilter a pod reaching
      // itself through a service is DNATed back out of the port it came in on
      if (bridge) ipn(node, 'link', 'set', ifname, 'master', bridge);
      if (bridge) ipn(node, 'link', 'set', ifname, 'type', 'bridge_slave', 'hairpin', 'on');
      if (nodeAddr) ipn(node, 'addr', 'add', nodeAddr, 'dev', ifname);
      ipn(node, 'link', 'set', ifname, 'up');
      ipn(ns, 'addr', 'add', addr, 'dev', 'eth0');
      ipn(ns, 'link', 'set', 'eth0', 'up');
      ipn(ns, 'route', 'add', 'default', 'via', gw);
    };
    attach(client, `${prefix}c`, '192.168.77.2/24', '192.168.77.1', undefined, '192.168.77.1/24');
    attach(podClient, `${prefix}p`, '10.244.1.9/24', '10.244.1.1', br);
    endpoints.forEach((ns, i) => attach(ns, `${prefix}e${i + 1}`, `${ENDPOINTS[i]}/24`, '10.244.1.1', br));
    // services without endpoints must reach the forward hook (kind nodes have a default route)
    ipn(node, 'route', 'add', 'default', 'via', '192.168.77.2');
    // servers
    await Promise.all(
      endpoints.map(
        (ns, i) =>
          new Promise<void>((res, rej) => {
            const p = spawn('ip', ['netns', 'exec', ns.name, NODE, join(dir, 'server.mjs'), `e${i + 1}`, String(port)], {
              stdio: ['ignore', 'pipe', 'pipe'],
            });
            servers.push(p);
            const t = setTimeout(() => rej(new Error('server did not start')), 10_000);
            p.stdout!.on('data', (d: Buffer) => {
              if (String(d).includes('ready')) {
                clearTimeout(t);
                res();
              }
            });
            p.on('exit', (c) => rej(new Error(`server exited ${c}`)));
          }),
      ),
    );
    return {
      prefix,
      node,
      client,
      podClient,
      endpoints,
      endpointIPs: ENDPOINTS,
      request(ns, proto, host, p, count, timeoutMs = 2000) {
        const out = execFileSync('ip', ['netns', 'exec', ns.name, NODE, join(dir, 'client.mjs'), proto, host, String(p), String(count), String(timeoutMs)], {
          encoding: 'utf8',
          timeout: 120_000,
        });
        return JSON.parse(out) as string[];
      },
      teardown,
    };
  } catch (err) {
    teardown();
    throw err;
  }
}

/** counts replies by the endpoint name (first word) */
function countBy(replies: readonly string[], f: (r: string) => string = (r) => r.split(' ')[0]!): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of replies) out[f(r)] = (out[f(r)] ?? 0) + 1;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// the tests

const silent = { debug() {}, info() {}, warn() {}, error() {} };

class RecordingRunner implements Runner {
  readonly inner = new ExecRunner();
  readonly programs: string[] = [];
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    if (argv.includes('-f') && opts?.input) this.programs.push(opts.input);
    return this.inner.run(argv, opts);
  }
}

function svcPort(name: string, over: Partial<ServicePort>): ServicePort {
  return servicePort({ portName: 'p', name, ...over });
}

const nodeInfo = { name: 'node-a', ips: ['192.168.77.1'], podCIDRs: ['10.244.1.0/24'] };
const cfg: ProxyConfigView = proxyConfig();

function eps(ips: string[], port = 8080, local = true): Endpoint[] {
  return ips.map((ip) => ({ ip, port, ready: true, serving: true, terminating: false, isLocal: local, nodeName: local ? 'node-a' : 'node-b' }));
}

function input(svcs: [ServicePort, Endpoint[]][], full: boolean, changed: string[] = []): SyncInput {
  const plans = new Map<string, ServicePlan>();
  for (const [s, e] of svcs) plans.set(s.key, planServicePort(s, e, nodeInfo));
  return { full, changed: new Set(changed), plans, node: nodeInfo, config: cfg, family: 4 };
}

const names = (r: readonly string[]): string[] => [...new Set(r.map((x) => x.split(' ')[0]!))].sort();
const sources = (r: readonly string[]): string[] => [...new Set(r.map((x) => x.split(' ')[1]!))].sort();

describe('nftables proxy backend on a real kernel', () => {
  let fx: Fixture;
  let runner: RecordingRunner;
  let backend: NftablesProxier;
  const table = () => `${fx.prefix}-proxy`;
  const [E1, E2, E3] = ['10.244.1.2', '10.244.1.3', '10.244.1.4'];
  const web = svcPort('web', { nodePort: 30080 });
  const webUdp = svcPort('web', { protocol: 'UDP', port: 53 });
  const local = svcPort('local', { clusterIP: '10.96.0.11', nodePort: 30081, externalTrafficPolicyLocal: true });
  const sticky = svcPort('sticky', { clusterIP: '10.96.0.12', affinityTimeoutSeconds: 30 });
  const empty = svcPort('empty', { clusterIP: '10.96.0.13' });
  const added = svcPort('added', { clusterIP: '10.96.0.20' });
  let svcs: [ServicePort, Endpoint[]][];

  beforeAll(async () => {
    fx = await setupFixture();
    runner = new RecordingRunner();
    backend = (await createBackend({ family: 4, runner, log: silent, table: table(), netns: fx.node.path })) as NftablesProxier;
    svcs = [
      [web, eps([E1, E2, E3])],
      [webUdp, eps([E1, E2])],
      // one local endpoint and one on another node
      [local, [...eps([E1]), ...eps(['10.244.2.99'], 8080, false)]],
      [sticky, eps([E1, E2, E3])],
      [empty, []],
    ];
    await backend.sync(input(svcs, true));
  });

  afterAll(async () => {
    try {
      await backend?.cleanup();
    } finally {
      fx?.teardown();
    }
  });

  it('outside client -> ClusterIP: spread over every endpoint, masqueraded to the node', () => {
    const r = fx.request(fx.client, 'tcp', '10.96.0.10', 80, 60);
    const c = countBy(r);
    expect(Object.keys(c).sort()).toEqual(['e1', 'e2', 'e3']);
    for (const n of Object.values(c)) expect(n).toBeGreaterThanOrEqual(6);
    expect(sources(r)).toEqual(['10.244.1.1']);
  });

  it('pod -> ClusterIP keeps the pod source address', () => {
    const r = fx.request(fx.podClient, 'tcp', '10.96.0.10', 80, 15);
    expect(sources(r)).toEqual(['10.244.1.9']);
  });

  it('UDP on the same cluster IP goes to its own endpoints', () => {
    const r = fx.request(fx.podClient, 'udp', '10.96.0.10', 53, 30);
    expect(names(r)).toEqual(['e1', 'e2']);
  });

  it('NodePort (eTP Cluster) from outside: reaches the endpoints, masqueraded', () => {
    const r = fx.request(fx.client, 'tcp', '192.168.77.1', 30080, 30);
    expect(names(r)).toEqual(['e1', 'e2', 'e3']);
    expect(sources(r)).toEqual(['10.244.1.1']);
  });

  it('NodePort (eTP Local) from outside: local endpoint only, client IP preserved', () => {
    const r = fx.request(fx.client, 'tcp', '192.168.77.1', 30081, 20);
    expect(names(r)).toEqual(['e1']);
    expect(sources(r)).toEqual(['192.168.77.2']);
  });

  it('session affinity: every connection of a client lands on the same endpoint', () => {
    const r = fx.request(fx.podClient, 'tcp', '10.96.0.12', 80, 20);
    expect(names(r)).toHaveLength(1);
    const r2 = fx.request(fx.client, 'tcp', '10.96.0.12', 80, 20);
    expect(names(r2)).toHaveLength(1);
    // the kernel's dynamic map holds the two clients
    const list = fx.node.exec(['nft', 'list', 'map', 'ip', table(), 'affinity']);
    expect(list).toMatch(/10\.244\.1\.9 \. 10\.96\.0\.12 \. tcp \. 80/);
  });

  it('a service without endpoints is rejected at once', () => {
    const t0 = performance.now();
    const r = fx.request(fx.podClient, 'tcp', '10.96.0.13', 80, 3, 3000);
    expect(r).toEqual(['ERR:ECONNREFUSED', 'ERR:ECONNREFUSED', 'ERR:ECONNREFUSED']);
    expect(performance.now() - t0).toBeLessThan(2500);
    // and so is an unknown port on a cluster IP
    expect(fx.request(fx.podClient, 'tcp', '10.96.0.10', 81, 1, 3000)).toEqual(['ERR:ECONNREFUSED']);
  });

  it('hairpin: an endpoint reaching itself through its service is masqueraded', () => {
    const r = fx.request(fx.endpoints[0]!, 'tcp', '10.96.0.10', 80, 40);
    const self = r.filter((x) => x.startsWith('e1 '));
    const other = r.filter((x) => !x.startsWith('e1 '));
    expect(self.length).toBeGreaterThan(0);
    expect(other.length).toBeGreaterThan(0);
    expect(sources(self)).toEqual(['10.244.1.1']);
    expect(sources(other)).toEqual([E1]);
  });

  it('incremental sync: one endpoint removed, one service added, nothing else touched', async () => {
    const np30081 = (): string[] => [...fx.node.exec(['nft', 'list', 'map', 'ip', table(), 'np-ep-tcp']).matchAll(/30081 \. \d+ : [^,}\n]+/g)].map((m) => m[0].trim()).sort();
    const beforeLocal = np30081();
    expect(beforeLocal).toHaveLength(1);
    const n = runner.programs.length;
    svcs[0] = [web, eps([E1, E2])];
    svcs.push([added, eps([E3])]);
    await backend.sync(input(svcs, false, [web.key, added.key]));
    expect(backend.lastStats?.full).toBe(false);
    const prog = runner.programs.slice(n).join('');
    expect(prog).not.toMatch(/flush (set|map)|delete table/);
    // the only rules added belong to class chains (a first service with that many endpoints)
    for (const l of prog.split('\n').filter((x) => x.startsWith('add rule'))) expect(l).toMatch(/ (cluster|ext|ext-short|np|np-short)-\d+ /);
    expect(prog).not.toMatch(/10\.96\.0\.1[1-3]|30081/);
    expect(names(fx.request(fx.client, 'tcp', '10.96.0.10', 80, 30))).toEqual(['e1', 'e2']);
    expect(names(fx.request(fx.client, 'tcp', '10.96.0.20', 80, 5))).toEqual(['e3']);
    expect(names(fx.request(fx.client, 'tcp', '192.168.77.1', 30080, 20))).toEqual(['e1', 'e2']);
    expect(np30081()).toEqual(beforeLocal);
    // unchanged services still behave
    expect(names(fx.request(fx.client, 'tcp', '192.168.77.1', 30081, 5))).toEqual(['e1']);
  });

  it('affinity entries pointing at a removed endpoint are pruned', async () => {
    const entry = /10\.244\.1\.9 \. 10\.96\.0\.12 \. tcp \. 80 (?:timeout \S+ )?(?:expires \S+ )?: (10\.244\.1\.\d)/;
    const m = entry.exec(fx.node.exec(['nft', 'list', 'map', 'ip', table(), 'affinity']));
    expect(m).not.toBeNull();
    const chosen = m![1]!;
    const rest = [E1, E2, E3].filter((x) => x !== chosen);
    const i = svcs.findIndex(([s]) => s.key === sticky.key);
    svcs[i] = [sticky, eps(rest)];
    await backend.sync(input(svcs, false, [sticky.key]));
    expect(backend.lastStats?.affinityPruned).toBeGreaterThanOrEqual(1);
    const r = fx.request(fx.podClient, 'tcp', '10.96.0.12', 80, 10);
    expect(names(r)).toHaveLength(1);
    expect(rest.map((ip) => `e${[E1, E2, E3].indexOf(ip) + 1}`)).toContain(names(r)[0]);
  });

  it('a later full sync rebuilds in place and keeps working', async () => {
    await backend.sync(input(svcs, true));
    expect(backend.lastStats?.full).toBe(true);
    expect(runner.programs[runner.programs.length - 1]).not.toContain('delete table');
    expect(names(fx.request(fx.client, 'tcp', '10.96.0.10', 80, 20))).toEqual(['e1', 'e2']);
  });

  it('cleanup removes the table', async () => {
    await backend.cleanup();
    const r = await new ExecRunner().run(['nft', 'list', 'table', 'ip', table()], { netns: fx.node.path, allowFail: true });
    expect(r.code).not.toBe(0);
  });
});
