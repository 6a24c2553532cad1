// The real invoker: containerd's CRI (libcni) drives the CNI plugins exactly as for the kubelet.
// One containerd runs inside a per-run netns that plays the node; a second netns plays a client on the node's
// underlay link. The plugins are flatnet's (dist/bin) when they all work, else the reference plugins
// (FLATNET_CRI_CNI=ours|reference forces one); each is wrapped so every call is logged with its env.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CriClient, type SandboxStatus } from '../cluster/cri/client.ts';
import { findShims, startContainerd, type ContainerdInstance } from '../cluster/runtime/containerd.ts';
import { choosePluginSource, parseCniArgs, prepareCniBinDir, readCniCalls, readCniStdins } from '../cluster/runtime/cnibin.ts';
import { createNetns, removeLinksWithPrefix, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

const P = runPrefix();
const SOURCE = choosePluginSource();
const NET = 'flatnet-cri';
const SUBNET = '10.244.61.0/24';
const GATEWAY = '10.244.61.1';
const NODE_IP = '10.250.61.1';
const CLIENT_IP = '10.250.61.2';
const BRIDGE = `${P}br`;

let dir: string;
let node: TestNetns;
let client: TestNetns;
let ctd: ContainerdInstance | undefined;
let cri: CriClient;
let callLog: string;
let stdinDir: string;
let ipamDir: string;
const procs: ChildProcess[] = [];

function inNetns(path: string, argv: string[], input?: string): string {
  return execFileSync('nsenter', [`--net=${path}`, '--', ...argv], { encoding: 'utf8', input, timeout: 20_000 });
}

function tryInNetns(path: string, argv: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: inNetns(path, argv) };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

/** A TCP server inside a netns that answers every connection with `reply`; stopped by PID in afterAll. */
async function serve(netnsPath: string, port: number, reply: string): Promise<ChildProcess> {
  const child = spawn('nsenter', [`--net=${netnsPath}`, '--', 'socat', `TCP-LISTEN:${port},fork,reuseaddr`, `SYSTEM:echo ${reply}`], {
    stdio: 'ignore',
  });
  procs.push(child);
  const end = Date.now() + 10_000;
  while (Date.now() < end) {
    if (inNetns(netnsPath, ['ss', '-Hltn', `sport = :${port}`]).includes(`:${port}`)) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server on :${port} did not start`);
}

function connect(fromNetns: string, host: string, port: number): string {
  try {
    return inNetns(fromNetns, ['socat', '-T', '3', '-', `TCP:${host}:${port},connect-timeout=3`], '').trim();
  } catch (e) {
    return `unreachable: ${String(e).split('\n')[1] ?? e}`;
  }
}

async function runPod(name: string, ports: { containerPort: number; hostPort: number }[] = []): Promise<SandboxStatus> {
  const id = await cri.runPodSandbox({
    metadata: { name, namespace: 'cri-test', uid: `uid-${name}` },
    hostname: name,
    logDirectory: join(dir, 'logs', name),
    dnsConfig: { servers: ['10.96.0.10'], searches: ['cri-test.svc.cluster.local'], options: ['ndots:5'] },
    portMappings: ports,
  });
  return cri.podSandboxStatus(id);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), `${P}-cri-`));
  callLog = join(dir, 'cni-calls.log');
  stdinDir = join(dir, 'cni-stdin');
  ipamDir = join(dir, 'ipam');
  node = createNetns(`${P}node`);
  client = createNetns(`${P}cli`);
  // underlay link node <-> client
  execFileSync('ip', ['link', 'add', `${P}u0`, 'netns', node.name, 'type', 'veth', 'peer', 'name', `${P}u1`, 'netns', client.name]);
  node.exec(['ip', 'addr', 'add', `${NODE_IP}/24`, 'dev', `${P}u0`]);
  node.exec(['ip', 'link', 'set', `${P}u0`, 'up']);
  client.exec(['ip', 'addr', 'add', `${CLIENT_IP}/24`, 'dev', `${P}u1`]);
  client.exec(['ip', 'link', 'set', `${P}u1`, 'up']);
  const binDir = prepareCniBinDir(join(dir, 'bin'), SOURCE, { logFile: callLog, stdinDir });
  const confDir = join(dir, 'conf');
  mkdirSync(confDir);
  writeFileSync(
    join(confDir, '10-flatnet.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: NET,
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: true,
          hairpinMode: true,
          ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: SUBNET, gateway: GATEWAY }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }),
  );
  ctd = await startContainerd({ name: `${P}ctd`, stateDir: join(dir, 'containerd'), netnsName: node.name, cniBinDir: binDir, cniConfDir: confDir });
  cri = new CriClient(ctd.socket);
});

afterAll(async () => {
  for (const p of procs) if (p.pid && p.exitCode === null) p.kill('SIGKILL');
  cri?.close();
  await ctd?.stop();
  client?.remove();
  node?.remove();
  removeNetnsWithPrefix(P);
  removeLinksWithPrefix(P);
  if (dir) rmSync(dir, { recursive: true, force: true });
});


/** true while the process exists and is not a zombie */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe(`CRI (containerd ${'1.6'}) invoking ${SOURCE} CNI plugins`, () => {
  let a: SandboxStatus;
  let b: SandboxStatus;

  it('runtime is ready and reports the CRI v1 API', async () => {
    const v = await cri.version();
    expect(v.runtimeName).toBe('containerd');
    expect(v.runtimeApiVersion).toBe('v1');
    const conds = await cri.status();
    expect(conds.find((c) => c.type === 'NetworkReady')?.status).toBe(true);
  });

  it('two pods get IPs from the node subnet, with lo up and eth0 addressed', async () => {
    a = await runPod('pod-a');
    b = await runPod('pod-b');
    for (const s of [a, b]) {
      expect(s.state).toBe('SANDBOX_READY');
      expect(s.ips).toHaveLength(1);
      expect(s.ips[0]).toMatch(/^10\.244\.61\.\d+$/);
      expect(s.netnsPath && existsSync(s.netnsPath)).toBeTruthy();
      // lo is up only because the runtime called loopback first
      expect(inNetns(s.netnsPath!, ['ip', '-o', 'link', 'show', 'lo'])).toMatch(/<LOOPBACK,UP,LOWER_UP>/);
      expect(inNetns(s.netnsPath!, ['ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain(`${s.ips[0]}/24`);
      expect(inNetns(s.netnsPath!, ['ip', 'route', 'show', 'default'])).toContain(`via ${GATEWAY}`);
    }
    expect(a.ips[0]).not.toBe(b.ips[0]);
    // host-local wrote one file per allocation
    expect(readdirSync(join(ipamDir, NET)).filter((f) => /^\d/.test(f)).sort()).toEqual([...a.ips, ...b.ips].sort());
  });

  it('pods reach each other, the gateway and the node reaches them (TCP)', async () => {
    await serve(a.netnsPath!, 7000, 'from-a');
    await serve(b.netnsPath!, 7000, 'from-b');
    await serve(node.path, 7001, 'from-node');
    expect(connect(a.netnsPath!, b.ips[0]!, 7000)).toBe('from-b');
    expect(connect(b.netnsPath!, a.ips[0]!, 7000)).toBe('from-a');
    expect(connect(a.netnsPath!, GATEWAY, 7001)).toBe('from-node');
    expect(connect(node.path, a.ips[0]!, 7000)).toBe('from-a');
  });

  it('the runtime called loopback on lo and the conflist on eth0 with K8S_POD_* CNI_ARGS', () => {
    // containerd 1.6 (go-cni Setup) attaches its loopback network and the conflist concurrently, so the order
    // of the two ADDs varies; both must be there, once each.
    const calls = readCniCalls(callLog).filter((c) => c.containerId === a.id);
    const lo = calls.filter((c) => c.plugin === 'loopback' && c.command === 'ADD');
    expect(lo).toHaveLength(1);
    expect(lo[0]).toMatchObject({ ifname: 'lo', netns: a.netnsPath });
    const bridge = calls.find((c) => c.plugin === 'bridge' && c.command === 'ADD');
    expect(bridge).toMatchObject({ ifname: 'eth0', netns: a.netnsPath });
    expect(calls.filter((c) => c.plugin === 'bridge' && c.command === 'ADD')).toHaveLength(1);
    expect(calls.some((c) => c.plugin === 'host-local' && c.command === 'ADD')).toBe(true);
    expect(calls.some((c) => c.plugin === 'portmap' && c.command === 'ADD')).toBe(true);
    const args = parseCniArgs(bridge!.args);
    expect(args).toMatchObject({
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: 'cri-test',
      K8S_POD_NAME: 'pod-a',
      K8S_POD_INFRA_CONTAINER_ID: a.id,
      K8S_POD_UID: 'uid-pod-a',
    });
  });

  it('containerd 1.6 hands portmap its portMappings with Go field names (HostPort, ContainerPort, Protocol, HostIP)', async () => {
    // go-cni 1.1 marshals its PortMapping struct without JSON tags; plugins must match keys case-insensitively,
    // as Go's encoding/json does in the reference plugins
    let id = '';
    try {
      id = await cri.runPodSandbox({ metadata: { name: 'pod-pm', namespace: 'cri-test', uid: 'uid-pod-pm' }, portMappings: [{ containerPort: 53, hostPort: 15353, protocol: 'UDP', hostIp: NODE_IP }] });
    } catch {
      /* the plugin under test may reject it; the config it was handed is what this test checks */
    }
    const sent = readCniStdins(stdinDir, { plugin: 'portmap', command: 'ADD' }).filter((c) => JSON.stringify(c).includes('15353'));
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(sent[0]).toMatchObject({
      type: 'portmap',
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ HostPort: 15353, ContainerPort: 53, Protocol: 'udp', HostIP: NODE_IP }] },
    });
    expect(sent[0]!['prevResult']).toBeTruthy();
    if (id) {
      await cri.stopPodSandbox(id);
      await cri.removePodSandbox(id);
    } else {
      for (const sb of await cri.listPodSandbox()) {
        if (sb.metadata.name === 'pod-pm') await cri.removePodSandbox(sb.id);
      }
    }
  });

  it('a hostPort is reachable from another netns through the node IP', async () => {
    const c = await runPod('pod-hp', [{ containerPort: 8080, hostPort: 18080 }]);
    await serve(c.netnsPath!, 8080, 'hello-from-pod-hp');
    // directly, then through the node's hostPort from the client netns (a different node on the underlay)
    expect(connect(client.path, NODE_IP, 18080)).toBe('hello-from-pod-hp');
    // the pod reaches itself through its own hostPort (hairpin: portmap masquerades, the bridge port hairpins)
    expect(connect(c.netnsPath!, NODE_IP, 18080)).toBe('hello-from-pod-hp');
    const rules = inNetns(node.path, ['iptables-save', '-t', 'nat']) + inNetns(node.path, ['nft', 'list', 'ruleset']);
    expect(rules).toContain('18080');
    await cri.stopPodSandbox(c.id);
    await cri.removePodSandbox(c.id);
    expect(tryInNetns(client.path, ['socat', '-T', '2', '-', `TCP:${NODE_IP}:18080,connect-timeout=2`]).ok).toBe(false);
    const after = inNetns(node.path, ['iptables-save', '-t', 'nat']) + inNetns(node.path, ['nft', 'list', 'ruleset']);
    expect(after).not.toContain('18080');
    expect(after).not.toContain(c.ips[0]!);
  });

  it('stop runs DEL with the netns, remove runs DEL again with an empty netns, and nothing is left behind', async () => {
    const vethsBefore = inNetns(node.path, ['ip', '-o', 'link', 'show', 'master', BRIDGE]).trim().split('\n').filter(Boolean);
    expect(vethsBefore).toHaveLength(2);
    for (const s of [a, b]) {
      await cri.stopPodSandbox(s.id);
      const dels = readCniCalls(callLog).filter((c) => c.containerId === s.id && c.command === 'DEL' && c.plugin === 'bridge');
      expect(dels).toHaveLength(1);
      expect(dels[0]!.netns).toBe(s.netnsPath);
      await cri.removePodSandbox(s.id);
      const dels2 = readCniCalls(callLog).filter((c) => c.containerId === s.id && c.command === 'DEL' && c.plugin === 'bridge');
      expect(dels2).toHaveLength(2);
      expect(dels2[1]!.netns).toBe('');
      expect(existsSync(s.netnsPath!)).toBe(false);
    }
    expect(await cri.listPodSandbox()).toHaveLength(0);
    // no veth on the bridge, no IP allocation file, no rule mentioning a pod IP
    expect(inNetns(node.path, ['ip', '-o', 'link', 'show', 'master', BRIDGE]).trim()).toBe('');
    expect(inNetns(node.path, ['ip', '-o', 'link', 'show', 'type', 'veth']).split('\n').filter((l) => l && !l.includes(`${P}u0`))).toEqual([]);
    expect(readdirSync(join(ipamDir, NET)).filter((f) => /^\d/.test(f))).toEqual([]);
    const rules = inNetns(node.path, ['iptables-save']) + inNetns(node.path, ['nft', 'list', 'ruleset']);
    for (const ip of [...a.ips, ...b.ips]) expect(rules).not.toContain(ip);
  });
});

describe('containerd instance lifecycle', () => {
  it('stop() tears down remaining sandboxes (CNI DEL), kills its shims and pause processes, unmounts and removes its state', async () => {
    const sub = join(dir, 'second');
    const ipam2 = join(sub, 'ipam');
    const conf2 = join(sub, 'conf');
    mkdirSync(conf2, { recursive: true });
    writeFileSync(
      join(conf2, '10-second.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'second',
        plugins: [{ type: 'bridge', bridge: `${P}b2`, isGateway: true, ipam: { type: 'host-local', dataDir: ipam2, ranges: [[{ subnet: '10.244.62.0/24' }]] } }],
      }),
    );
    const c2 = await startContainerd({ name: `${P}c2`, stateDir: join(sub, 'containerd'), netnsName: node.name, cniBinDir: join(dir, 'bin'), cniConfDir: conf2 });
    const cri2 = new CriClient(c2.socket);
    let stopped = false;
    try {
      const ids = [
        await cri2.runPodSandbox({ metadata: { name: 's1', namespace: 'x', uid: 's1' } }),
        await cri2.runPodSandbox({ metadata: { name: 's2', namespace: 'x', uid: 's2' } }),
      ];
      const pids = await Promise.all(ids.map(async (id) => (await cri2.podSandboxStatus(id)).pid!));
      expect(pids.every((p) => p > 0 && existsSync(`/proc/${p}`))).toBe(true);
      const shims = findShims(c2.socket);
      expect(shims.length).toBeGreaterThanOrEqual(1);
      expect(readdirSync(join(ipam2, 'second')).filter((f) => /^\d/.test(f))).toHaveLength(2);
      cri2.close();
      await c2.stop();
      stopped = true;
      // processes gone: containerd, its shims, the pause processes
      // (a zombie re-parented to PID 1 has exited; it just waits for init to reap it)
      for (const p of [c2.pid, ...shims, ...pids]) expect(running(p), `pid ${p}`).toBe(false);
      // the CNI DELs ran: no allocation, no veth on its bridge; nothing mounted under (or left of) its state dir
      expect(readdirSync(join(ipam2, 'second')).filter((f) => /^\d/.test(f))).toEqual([]);
      expect(inNetns(node.path, ['ip', '-o', 'link', 'show', 'master', `${P}b2`]).trim()).toBe('');
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(join(sub, 'containerd'));
      expect(existsSync(join(sub, 'containerd'))).toBe(false);
    } finally {
      if (!stopped) {
        cri2.close();
        await c2.stop();
      }
    }
  });
});

