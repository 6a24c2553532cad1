// The VXLAN overlay on the local cluster (--pod-network overlay): 3 nodes, 2 netexec pods each, the daemon's overlay
// controller programming flatnet.1 and the vxlan CNI plugin attaching pods.
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveTarget } from '../cluster/cli.ts';
import { manifest, netexecPod, useCluster, type Cluster } from './helpers/cluster.ts';
import { waitFor } from '../helpers/wait.ts';

let c: Cluster;
let ns: string;
const PODS = ['a1', 'a2', 'b1', 'b2', 'c1', 'c2'];
const podNode = (p: string): string => c.nodeNames['abc'.indexOf(p[0]!)]!;
const ips = new Map<string, string>();
const started: ChildProcess[] = [];

interface LinkJson {
  address: string;
  mtu: number;
  linkinfo: { info_kind: string; info_data: { id: number; port: number; learning: boolean; local: string } };
}

async function sh(target: string, argv: string[], input?: string): Promise<string> {
  return (await c.exec(target, argv, input === undefined ? {} : { input })).stdout;
}

async function ok(target: string, argv: string[], input?: string): Promise<boolean> {
  return (await c.exec(target, argv, { allowFail: true, ...(input === undefined ? {} : { input }) })).code === 0;
}

async function device(node: string): Promise<LinkJson | undefined> {
  const r = await c.exec(node, ['ip', '-d', '-j', 'link', 'show', 'dev', 'flatnet.1'], { allowFail: true });
  return r.code === 0 ? (JSON.parse(r.stdout) as LinkJson[])[0] : undefined;
}

async function overlayRoutes(node: string): Promise<string[]> {
  const out = await sh(node, ['ip', '-j', 'route', 'show', 'proto', '77']);
  return (JSON.parse(out || '[]') as { dst: string; gateway?: string; dev: string }[]).map((r) => `${r.dst} via ${r.gateway} dev ${r.dev}`).sort();
}

/** A background process in a netns (killed in afterAll by PID). */
async function background(target: string, argv: string[]): Promise<ChildProcess> {
  const path = await resolveTarget(c.state, target);
  const p = spawn('nsenter', [`--net=${path}`, '--', ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  started.push(p);
  return p;
}

function kill(p: ChildProcess): void {
  if (p.pid && p.exitCode === null && p.signalCode === null) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** The client address a socat TCP server in `server` sees when `client` connects (server bound to ip:port). */
async function tcpPeer(client: string, server: string, ip: string, port: number): Promise<string> {
  const srv = await background(server, ['socat', `TCP-LISTEN:${port},bind=${ip},reuseaddr,fork`, 'SYSTEM:echo $SOCAT_PEERADDR']);
  try {
    let seen = '';
    await waitFor(`${client} -> ${ip}:${port}`, async () => {
      const r = await c.exec(client, ['socat', '-t5', '-T5', '-', `TCP:${ip}:${port}`], { input: 'x\n', allowFail: true });
      seen = r.stdout.trim();
      return r.code === 0 && seen !== '';
    }, 10_000);
    return seen;
  } finally {
    kill(srv);
  }
}

beforeAll(async () => {
  c = await useCluster({ nodes: 3, podNetwork: 'overlay' });
  ns = await c.createNamespace('overlay');
  await c.apply(manifest(...PODS.map((p) => netexecPod({ name: p, namespace: ns, node: podNode(p), labels: { app: 'ovl' } }))));
  await c.waitPodsReady(ns, 'app=ovl', PODS.length, 240_000);
  for (const p of PODS) ips.set(p, await c.podIP(`${ns}/${p}`));
});

afterAll(async () => {
  for (const p of started) kill(p);
  if (c && ns) await c.deleteNamespace(ns);
});

describe('vxlan overlay on the local cluster', () => {
  it('programs flatnet.1 (VNI 1, UDP 8472, learning off, MTU underlay-50) and publishes the VTEP on every Node', async () => {
    for (const n of c.nodeNames) {
      const d = await device(n);
      expect(d, n).toBeDefined();
      expect(d!.linkinfo.info_kind).toBe('vxlan');
      expect(d!.linkinfo.info_data).toMatchObject({ id: 1, port: 8472, learning: false, local: c.nodeIP(n) });
      const eth = JSON.parse(await sh(n, ['ip', '-j', 'route', 'get', c.nodeIP(c.nodeNames.find((x) => x !== n)!)])) as { dev: string }[];
      const under = (JSON.parse(await sh(n, ['ip', '-j', 'link', 'show', 'dev', eth[0]!.dev])) as { mtu: number }[])[0]!;
      expect(d!.mtu).toBe(under.mtu - 50);
      const node = await c.kubectlJson<{ metadata: { annotations: Record<string, string> } }>(['get', 'node', n]);
      expect(node.metadata.annotations['flatnet.io/vtep-mac']).toBe(d!.address);
      expect(node.metadata.annotations['flatnet.io/public-ip']).toBe(c.nodeIP(n));
      const others = c.nodeNames.filter((x) => x !== n);
      expect(await overlayRoutes(n)).toEqual(
        others.map((o) => `${c.podCIDR(o)} via ${c.podCIDR(o).split('/')[0]} dev flatnet.1`).sort(),
      );
    }
  });

  it('pod <-> pod on the same node and across nodes over TCP, UDP and ICMP, servers seeing the client pod IP', async () => {
    const pairs: [string, string][] = [
      ['a1', 'a2'], // same node
      ['a1', 'b1'],
      ['b2', 'c1'],
      ['c2', 'a2'],
    ];
    for (const [from, to] of pairs) {
      const dst = ips.get(to)!;
      const tcp = await c.curl(`${ns}/${from}`, `http://${dst}:8080/clientip`);
      expect(tcp.stdout.trim().replace(/:\d+$/, ''), `${from} -> ${to} TCP`).toBe(ips.get(from));
      const udp = await sh(`${ns}/${from}`, ['socat', '-t2', '-T2', '-', `UDP:${dst}:8081`], 'clientip\n');
      expect(udp.trim().replace(/:\d+$/, ''), `${from} -> ${to} UDP`).toBe(ips.get(from));
      expect(await ok(`${ns}/${from}`, ['ping', '-c1', '-W2', dst]), `${from} -> ${to} ICMP`).toBe(true);
    }
  });

  it('node -> pod and pod -> node across nodes (TCP, UDP, ICMP)', async () => {
    const [n0, n1] = c.nodeNames as [string, string];
    const b1 = ips.get('b1')!;
    expect((await c.curl(n0, `http://${b1}:8080/hostname`)).stdout.trim()).toBe('b1');
    expect(await ok(n0, ['ping', '-c1', '-W2', b1])).toBe(true);
    const udp = await sh(n0, ['socat', '-t2', '-T2', '-', `UDP:${b1}:8081`], 'hostname\n');
    expect(udp.trim()).toBe('b1');
    // pod -> a remote node's own address: masqueraded to the pod's node IP, so the answer takes the request's path
    // (strict rp_filter drops a request whose answer would go over the overlay)
    expect(await tcpPeer(`${ns}/a1`, n1, c.nodeIP(n1), 7201)).toBe(c.nodeIP(n0));
    expect(await ok(`${ns}/a1`, ['ping', '-c1', '-W2', c.nodeIP(n1)])).toBe(true);
  });

  it('masquerades pod egress to an external address to the node IP', async () => {
    const seen = await tcpPeer(`${ns}/b2`, 'external', c.externalIP, 7202);
    expect(seen).toBe(c.nodeIP(podNode('b2')));
  });

  it('carries 1400-byte packets with DF across nodes', async () => {
    expect(await ok(`${ns}/a1`, ['ping', '-c2', '-W2', '-M', 'do', '-s', String(1400 - 28), ips.get('c1')!])).toBe(true);
    expect(await ok(`${ns}/c2`, ['ping', '-c2', '-W2', '-M', 'do', '-s', String(1400 - 28), ips.get('b1')!])).toBe(true);
  });

  it('serves a ClusterIP Service whose endpoint sits on another node, client pod IP preserved', async () => {
    await c.kubectl(['label', 'pod', '-n', ns, 'c1', 'svc=ovl', '--overwrite']);
    await c.apply(
      manifest({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'ovl', namespace: ns },
        spec: { selector: { svc: 'ovl' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
      }),
    );
    const vip = await c.kubectl(['get', 'svc', '-n', ns, 'ovl', '-o', 'jsonpath={.spec.clusterIP}']);
    let body = '';
    await waitFor('ClusterIP answers', async () => {
      const r = await c.curl(`${ns}/a1`, `http://${vip}/clientip`, { allowFail: true });
      body = r.stdout.trim();
      return r.code === 0 && body !== '';
    }, 30_000);
    expect(body.replace(/:\d+$/, '')).toBe(ips.get('a1'));
    expect((await c.curl(`${ns}/b2`, `http://${vip}/hostname`)).stdout.trim()).toBe('c1');
  });

  it('adds and removes a peer on every node within 2 s of a Node appearing / going away', async () => {
    const name = `${c.name}-ovl-peer`;
    const cidr = '10.244.250.0/24';
    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name,
        annotations: {
          'flatnet.io/backend-type': 'vxlan',
          'flatnet.io/vtep-mac': '02:00:00:00:fa:01',
          'flatnet.io/public-ip': '192.0.2.250',
          'flatnet.io/vni': '1',
        },
      },
      spec: { podCIDR: cidr, podCIDRs: [cidr], unschedulable: true, taints: [{ key: 'flatnet.io/fake', effect: 'NoSchedule' }] },
    };
    try {
      await c.apply(manifest(node));
      let t0 = Date.now();
      await waitFor('peer route on every node', async () => {
        for (const n of c.nodeNames) if (!(await overlayRoutes(n)).includes(`${cidr} via 10.244.250.0 dev flatnet.1`)) return false;
        return true;
      }, 10_000);
      const added = Date.now() - t0;
      const fdb = await sh(c.nodeNames[0]!, ['bridge', 'fdb', 'show', 'dev', 'flatnet.1']);
      expect(fdb).toContain('02:00:00:00:fa:01 dst 192.0.2.250');
      await c.kubectl(['delete', 'node', name, '--wait=false']);
      t0 = Date.now();
      await waitFor('peer route gone on every node', async () => {
        for (const n of c.nodeNames) if ((await overlayRoutes(n)).some((r) => r.startsWith(cidr))) return false;
        return true;
      }, 10_000);
      const removed = Date.now() - t0;
      console.error(`[overlay e2e] peer propagation to all ${c.nodeNames.length} nodes: add ${added} ms, remove ${removed} ms (incl. polling)`);
      expect(added, 'add propagation ms').toBeLessThan(2000);
      expect(removed, 'remove propagation ms').toBeLessThan(2000);
    } finally {
      await c.kubectlResult(['delete', 'node', name, '--ignore-not-found']);
    }
  });

  it('heals a deleted VXLAN device', async () => {
    const n = c.nodeNames[1]!;
    await sh(n, ['ip', 'link', 'del', 'flatnet.1']);
    const t0 = Date.now();
    await waitFor('flatnet.1 back with routes', async () => (await device(n)) !== undefined && (await overlayRoutes(n)).length === 2, 15_000);
    const took = Date.now() - t0;
    await waitFor('cross-node traffic after heal', () => ok(`${ns}/a1`, ['ping', '-c1', '-W1', ips.get('b1')!]), 10_000);
    console.error(`[overlay e2e] flatnet.1 recreated with its routes ${took} ms after deletion`);
    expect(took).toBeLessThan(15_000);
  });

  it('keeps an established cross-node TCP stream through a daemon restart', async () => {
    const srvIp = ips.get('c1')!;
    const srv = await background(`${ns}/c1`, ['socat', `TCP-LISTEN:7203,bind=${srvIp},reuseaddr`, 'PIPE']);
    await new Promise((r) => setTimeout(r, 500));
    const cli = await background(`${ns}/a2`, ['socat', '-', `TCP:${srvIp}:7203`]);
    const got: string[] = [];
    cli.stdout!.on('data', (b: Buffer) => got.push(b.toString()));
    cli.stdin!.write('one\n');
    await waitFor('echo before restart', async () => got.join('').includes('one'), 10_000);
    await c.restartDaemon(podNode('a2'));
    await c.restartDaemon(podNode('c1'));
    cli.stdin!.write('two\n');
    await waitFor('echo after restart', async () => got.join('').includes('two'), 10_000);
    expect(cli.exitCode).toBeNull();
    kill(cli);
    kill(srv);
  });
});
