// The agnhost-compatible netexec server, run as a real process in a per-run netns ("pod") and driven from a second
// netns ("client") over a veth pair: HTTP endpoints, /dial over HTTP and UDP, UDP commands, streams, SIGTERM flow.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, removeLinksWithPrefix, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

const P = runPrefix();
const MAIN = fileURLToPath(new URL('../cluster/netexec/main.ts', import.meta.url));
const POD_IP = '10.251.7.2';
const POD2_IP = '10.251.7.3';
const CLIENT_IP = '10.251.7.1';

let pod: TestNetns;
let pod2: TestNetns;
let client: TestNetns;
const procs: ChildProcess[] = [];

function startNetexec(ns: TestNetns, args: string[], env: Record<string, string> = {}, sub = 'netexec'): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
  const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, MAIN, sub, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  procs.push(child);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, exited, stderr: () => err };
}

function curl(ns: TestNetns, url: string): { code: number; body: string } {
  const out = execFileSync('ip', ['netns', 'exec', ns.name, 'curl', '-s', '-m', '8', '-w', '\n%{http_code}', url], { encoding: 'utf8' });
  const i = out.lastIndexOf('\n');
  return { body: out.slice(0, i), code: Number(out.slice(i + 1)) };
}

function udp(ns: TestNetns, host: string, port: number, msg: string): string {
  return execFileSync('ip', ['netns', 'exec', ns.name, 'socat', '-T', '3', '-', `UDP:${host}:${port}`], { input: msg, encoding: 'utf8' });
}

async function waitHttp(ns: TestNetns, url: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (Date.now() < end) {
    try {
      if (curl(ns, url).code === 200) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not up`);
}

beforeAll(async () => {
  pod = createNetns(`${P}pod`);
  pod2 = createNetns(`${P}pod2`);
  client = createNetns(`${P}cli`);
  // client <-> pod and client <-> pod2 on a tiny bridge in the client netns
  client.exec(['ip', 'link', 'add', 'br0', 'type', 'bridge']);
  client.exec(['ip', 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'br0']);
  client.exec(['ip', 'link', 'set', 'br0', 'up']);
  for (const [ns, ip, i] of [[pod, POD_IP, 0], [pod2, POD2_IP, 1]] as const) {
    execFileSync('ip', ['link', 'add', `${P}v${i}`, 'netns', client.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
    client.exec(['ip', 'link', 'set', `${P}v${i}`, 'master', 'br0', 'up']);
    ns.exec(['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    ns.exec(['ip', 'link', 'set', 'eth0', 'up']);
  }
  startNetexec(pod, ['--http-port=8080', '--udp-port=8081', '--stream-port=8082'], { POD_NAME: 'pod-one' });
  startNetexec(pod2, ['--http-port', '9090', '--udp-port', '9091'], { POD_NAME: 'pod-two' });
  await waitHttp(client, `http://${POD_IP}:8080/healthz`);
  await waitHttp(client, `http://${POD2_IP}:9090/healthz`);
}, 60_000);

afterAll(() => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  client?.remove();
  pod?.remove();
  pod2?.remove();
  removeNetnsWithPrefix(P);
  removeLinksWithPrefix(P);
});

describe('netexec (agnhost-compatible)', () => {
  it('serves /hostname, /clientip (peer ip:port), /echo, /serverport, /', () => {
    expect(curl(client, `http://${POD_IP}:8080/hostname`)).toEqual({ code: 200, body: 'pod-one' });
    expect(curl(client, `http://${POD_IP}:8080/hostName`).body).toBe('pod-one');
    const ip = curl(client, `http://${POD_IP}:8080/clientip`).body;
    expect(ip).toMatch(new RegExp(`^${CLIENT_IP.replace(/\./g, '\\.')}:\\d+$`));
    expect(curl(client, `http://${POD_IP}:8080/echo?msg=hello%20there`)).toEqual({ code: 200, body: 'hello there' });
    expect(curl(client, `http://${POD_IP}:8080/echo?msg=x&code=503`)).toEqual({ code: 503, body: 'x' });
    expect(curl(client, `http://${POD_IP}:8080/serverport`).body).toBe('8080');
    expect(curl(client, `http://${POD_IP}:8080/`).body).toMatch(/^NOW: /);
    expect(curl(client, `http://${POD_IP}:8080/nope`).code).toBe(404);
  });

  it('/healthz and /readyz answer 200 once the UDP server is up', () => {
    expect(curl(client, `http://${POD_IP}:8080/healthz`).code).toBe(200);
    expect(curl(client, `http://${POD_IP}:8080/readyz`)).toEqual({ code: 200, body: 'ok' });
  });

  it('answers UDP commands hostname, echo, clientip', () => {
    expect(udp(client, POD_IP, 8081, 'hostname')).toBe('pod-one');
    expect(udp(client, POD_IP, 8081, 'echo abc')).toBe('abc');
    expect(udp(client, POD_IP, 8081, 'clientip')).toMatch(new RegExp(`^${CLIENT_IP.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('/dial reaches another pod over HTTP and UDP with agnhost JSON', () => {
    const http = curl(client, `http://${POD_IP}:8080/dial?request=hostname&protocol=http&host=${POD2_IP}&port=9090&tries=2`);
    expect(http.code).toBe(200);
    expect(JSON.parse(http.body)).toEqual({ responses: ['pod-two', 'pod-two'] });
    const u = curl(client, `http://${POD_IP}:8080/dial?request=hostname&protocol=udp&host=${POD2_IP}&port=9091&tries=1`);
    expect(JSON.parse(u.body)).toEqual({ responses: ['pod-two'] });
    // the peer seen by pod2 is pod1's IP
    const seen = JSON.parse(curl(client, `http://${POD_IP}:8080/dial?request=clientip&protocol=http&host=${POD2_IP}&port=9090`).body) as { responses: string[] };
    expect(seen.responses[0]).toMatch(new RegExp(`^${POD_IP.replace(/\./g, '\\.')}:\\d+$`));
    const bad = JSON.parse(curl(client, `http://${POD_IP}:8080/dial?request=hostname&protocol=http&host=${POD2_IP}&port=9999`).body) as Record<string, string[]>;
    expect(bad['responses']).toBeUndefined();
    expect(bad['errors']).toHaveLength(1);
    expect(curl(client, `http://${POD_IP}:8080/dial?protocol=http&host=${POD2_IP}&port=9090`).code).toBe(400);
    expect(curl(client, `http://${POD_IP}:8080/dial?request=x&protocol=icmp&host=${POD2_IP}&port=9090`).code).toBe(400);
  });

  it('streams counter lines every 100 ms on the stream port and on /stream', () => {
    const check = (out: string): void => {
      const lines = out.trim().split('\n');
      // ~1 s of streaming at 100 ms: about 10 lines, numbered from 0 without gaps
      expect(lines.length).toBeGreaterThanOrEqual(6);
      expect(lines.length).toBeLessThanOrEqual(14);
      lines.forEach((l, i) => expect(l).toBe(`${i} pod-one`));
    };
    const raw = spawnSync('ip', ['netns', 'exec', client.name, 'timeout', '1', 'socat', '-u', `TCP:${POD_IP}:8082`, 'STDOUT'], { encoding: 'utf8' });
    check(raw.stdout);
    const web = spawnSync('ip', ['netns', 'exec', client.name, 'curl', '-s', '-N', '-m', '1', `http://${POD_IP}:8080/stream`], { encoding: 'utf8' });
    check(web.stdout);
  });

  it('SIGTERM: /readyz turns 503 during --delay-shutdown, then the process exits 0; /exit?code= exits with that code', async () => {
    const ns = pod2;
    const t = startNetexec(ns, ['--http-port=7070', '--udp-port=-1', '--delay-shutdown=2'], { POD_NAME: 'pod-term' });
    await waitHttp(client, `http://${POD2_IP}:7070/healthz`);
    t.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(curl(client, `http://${POD2_IP}:7070/readyz`)).toEqual({ code: 503, body: 'shutting down' });
    expect(curl(client, `http://${POD2_IP}:7070/hostname`).body).toBe('pod-term');
    expect(await t.exited).toBe(0);

    const e = startNetexec(ns, ['--http-port=7071', '--udp-port=-1'], { POD_NAME: 'pod-exit' });
    await waitHttp(client, `http://${POD2_IP}:7071/healthz`);
    curl(client, `http://${POD2_IP}:7071/exit?code=3`);
    expect(await e.exited).toBe(3);
  });

  it('serve-hostname answers its hostname over HTTP (any path), raw TCP and UDP', async () => {
    startNetexec(pod2, ['--port', '9376'], { POD_NAME: 'sh-http' }, 'serve-hostname');
    startNetexec(pod2, ['--tcp', '--udp', '--http=false', '--port=9377'], { POD_NAME: 'sh-raw' }, 'serve-hostname');
    await waitHttp(client, `http://${POD2_IP}:9376/`);
    expect(curl(client, `http://${POD2_IP}:9376/anything`)).toEqual({ code: 200, body: 'sh-http' });
    const end = Date.now() + 10_000;
    let tcp = '';
    while (Date.now() < end && tcp !== 'sh-raw') {
      tcp = spawnSync('ip', ['netns', 'exec', client.name, 'socat', '-T', '2', '-u', `TCP:${POD2_IP}:9377`, 'STDOUT'], { encoding: 'utf8' }).stdout;
      if (tcp !== 'sh-raw') await new Promise((r) => setTimeout(r, 100));
    }
    expect(tcp).toBe('sh-raw');
    expect(udp(client, POD2_IP, 9377, 'x')).toBe('sh-raw');
  });

  it('porter serves each SERVE_PORT_<n> body on its port', async () => {
    startNetexec(pod2, [], { SERVE_PORT_9080: 'foo', SERVE_PORT_9081: 'bar' }, 'porter');
    await waitHttp(client, `http://${POD2_IP}:9081/`);
    expect(curl(client, `http://${POD2_IP}:9080/x`)).toEqual({ code: 200, body: 'foo' });
    expect(curl(client, `http://${POD2_IP}:9081/`)).toEqual({ code: 200, body: 'bar' });
  });

  it('rejects unknown flags with a clear error', async () => {
    const bad = startNetexec(pod, ['--http-port=7072', '--bogus=1']);
    expect(await bad.exited).toBe(1);
    expect(bad.stderr()).toContain('unknown flag --bogus');
  });
});
