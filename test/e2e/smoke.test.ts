// Smoke test of the local cluster: real control plane, node namespaces, containerd + agent per node, flatnet's CNI.
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../cluster/control-plane/proc.ts';
import { K8S_BIN_DIR, loadState, NODE24, REPO_ROOT } from '../cluster/state.ts';
import { manifest, netexecPod, useCluster, type Cluster } from './helpers/cluster.ts';

function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  const base = ipToInt(net!);
  const x = ipToInt(ip);
  return x >= base && x < base + size;
}

interface NodeJson {
  metadata: { name: string };
  spec: { podCIDR?: string };
  status: { addresses: { type: string; address: string }[]; conditions: { type: string; status: string }[] };
}

interface SliceJson {
  addressType: string;
  endpoints?: { addresses: string[]; nodeName?: string; targetRef?: { name: string }; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

describe('local cluster smoke', () => {
  let c: Cluster;
  let ns: string;
  // a pod per node, plus a second one on the first worker for the same-node case
  const pods: { name: string; node: () => string }[] = [
    { name: 'a', node: () => c.nodeNames[0]! },
    { name: 'b', node: () => c.nodeNames[1]! },
    { name: 'c', node: () => c.nodeNames[2]! },
    { name: 'd', node: () => c.nodeNames[1]! },
  ];

  beforeAll(async () => {
    c = await useCluster({ nodes: 3 });
    ns = await c.createNamespace('smoke');
    const svc = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: ns },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    };
    const pod = (p: (typeof pods)[number]) => netexecPod({ name: p.name, namespace: ns, node: p.node(), labels: { app: 'web' } });
    // one pod per node first, then the second pod of a node (a node's first ADD creates its bridge)
    await c.apply(manifest(svc, ...pods.slice(0, 3).map(pod)));
    await c.waitPodsReady(ns, 'app=web', 3, 180_000);
    await c.apply(manifest(pod(pods[3]!)));
    await c.waitPodsReady(ns, 'app=web', pods.length, 180_000);
  });

  afterAll(async () => {
    if (c && ns) await c.deleteNamespace(ns);
  });

  it('registers every node Ready, with its underlay InternalIP and a distinct podCIDR from 10.244.0.0/16', async () => {
    const nodes = await c.kubectlJson<{ items: NodeJson[] }>(['get', 'nodes']);
    expect(nodes.items.map((n) => n.metadata.name).sort()).toEqual([...c.nodeNames].sort());
    const cidrs = new Set<string>();
    for (const n of nodes.items) {
      expect(n.status.conditions.find((x) => x.type === 'Ready')?.status).toBe('True');
      expect(n.status.addresses.find((a) => a.type === 'InternalIP')?.address).toBe(c.nodeIP(n.metadata.name));
      expect(n.spec.podCIDR).toMatch(/^10\.244\.\d+\.0\/24$/);
      cidrs.add(n.spec.podCIDR!);
    }
    expect(cidrs.size).toBe(nodes.items.length);
  });

  it('serves the kubernetes Service on 10.96.0.1 with the underlay host address as its endpoint', async () => {
    const ip = await c.kubectl(['get', 'svc', 'kubernetes', '-n', 'default', '-o', 'jsonpath={.spec.clusterIP}']);
    expect(ip).toBe('10.96.0.1');
    const slice = await c.kubectlJson<SliceJson>(['get', 'endpointslice', 'kubernetes', '-n', 'default']);
    expect(slice.endpoints?.flatMap((e) => e.addresses)).toEqual([c.hostIP]);
  });

  it('gives each pod an address from its own node podCIDR, configured on eth0 in the pod netns', async () => {
    for (const p of pods) {
      const info = await c.pod(`${ns}/${p.name}`);
      expect(info.spec.nodeName).toBe(p.node());
      const ip = info.status.podIP!;
      expect(inCidr(ip, c.podCIDR(p.node())), `${p.name} ${ip} in ${c.podCIDR(p.node())}`).toBe(true);
      const addr = await c.exec(`${ns}/${p.name}`, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(addr.stdout).toContain(` ${ip}/24 `);
    }
  });

  it('lists the ready pods in the Service EndpointSlice written by the endpointslice controller', async () => {
    const want = new Map<string, string>();
    for (const p of pods) want.set(await c.podIP(`${ns}/${p.name}`), p.node());
    let got = new Map<string, string | undefined>();
    for (let i = 0; i < 60; i++) {
      const list = await c.kubectlJson<{ items: SliceJson[] }>(['get', 'endpointslices', '-n', ns, '-l', 'kubernetes.io/service-name=web']);
      got = new Map(
        list.items.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready).map((e) => [e.addresses[0]!, e.nodeName] as const)),
      );
      if (got.size === want.size) {
        expect(list.items[0]!.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(want));
  });

  it('delivers pod-to-pod traffic on the same node and across nodes, without SNAT', async () => {
    const src = `${ns}/b`;
    const srcIP = await c.podIP(src);
    for (const dst of ['d', 'a', 'c']) {
      const ip = await c.podIP(`${ns}/${dst}`);
      const host = await c.curl(src, `http://${ip}:8080/hostname`);
      expect(host.stdout.trim(), `b -> ${dst}`).toBe(dst);
      const client = await c.curl(src, `http://${ip}:8080/clientip`);
      expect(client.stdout.trim().replace(/:\d+$/, ''), `source seen by ${dst}`).toBe(srcIP);
    }
  });

  it('reaches pods from a node (own pods via cni0, remote pods via the pod network)', async () => {
    for (const dst of ['a', 'b', 'c']) {
      const ip = await c.podIP(`${ns}/${dst}`);
      const r = await c.curl(c.nodeNames[0]!, `http://${ip}:8080/hostname`);
      expect(r.stdout.trim()).toBe(dst);
    }
  });

  it('prints exactly the two export lines of cluster:env, pointing at a working kubeconfig and kubectl', () => {
    const out = execFileSync(NODE24, [join(REPO_ROOT, 'test', 'cluster', 'cli.ts'), 'env', '--name', c.name], { encoding: 'utf8' });
    const lines = out.split('\n').filter(Boolean);
    expect(lines).toHaveLength(2);
    const kc = /^export KUBECONFIG=(\S+)$/.exec(lines[0]!)?.[1];
    const kubectl = /^export KUBECTL=(\S+)$/.exec(lines[1]!)?.[1];
    expect(kc && existsSync(kc)).toBe(true);
    accessSync(kubectl!, constants.X_OK);
    const ns = execFileSync(kubectl!, ['get', 'ns', 'default', '-o', 'name'], { env: { ...process.env, KUBECONFIG: kc }, encoding: 'utf8' });
    expect(ns.trim()).toBe('namespace/default');
  });

  it('runs cluster:exec in a node, a pod and the external namespace', async () => {
    const cli = (target: string, argv: string[]) =>
      execFileSync(NODE24, [join(REPO_ROOT, 'test', 'cluster', 'cli.ts'), 'exec', '--name', c.name, target, '--', ...argv], { encoding: 'utf8' });
    expect(cli(c.nodeNames[1]!, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).toContain(` ${c.nodeIP(c.nodeNames[1]!)}/24 `);
    expect(cli('external', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).toContain(` ${c.externalIP}/24 `);
    expect(cli(`${ns}/c`, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).toContain(` ${await c.podIP(`${ns}/c`)}/24 `);
  });

  it.skipIf(!existsSync(join(REPO_ROOT, 'proxy', 'main.ts')))('serves the Service ClusterIP from a pod through the node daemon, also after restart-daemon', async () => {
    const ip = await c.serviceIP(`${ns}/web`);
    await c.waitEndpoints(`${ns}/web`, pods.length);
    const seen = async () => {
      const names = new Set<string>();
      for (let i = 0; i < 16; i++) names.add((await c.curl(`${ns}/b`, `http://${ip}:80/hostname`)).stdout.trim());
      return names;
    };
    const before = await seen();
    expect([...before].every((n) => pods.some((p) => p.name === n))).toBe(true);
    expect(before.size).toBeGreaterThan(1);

    const node = c.nodeNames[1]!;
    const old = loadState(c.name)!.processes.find((p) => p.role === 'daemon' && p.node === node)!;
    const pid = await c.restartDaemon(node);
    expect(pid).not.toBe(old.pid);
    expect(isAlive(old)).toBe(false);
    const now = loadState(c.name)!.processes.find((p) => p.role === 'daemon' && p.node === node)!;
    expect(now.pid).toBe(pid);
    expect(isAlive(now)).toBe(true);
    expect((await seen()).size).toBeGreaterThan(1);
  });

  it.skipIf(!existsSync(join(K8S_BIN_DIR, 'coredns')))(
    'resolves Service names through kube-dns (10.96.0.10) from pods and nodes',
    async () => {
      const ip = await c.serviceIP(`${ns}/web`);
      expect(await c.resolve(`${ns}/b`, `web.${ns}.svc.cluster.local`)).toEqual([ip]);
      expect(await c.resolve(`${ns}/c`, 'kubernetes.default.svc.cluster.local')).toEqual(['10.96.0.1']);
      expect(await c.resolve(c.nodeNames[2]!, 'kube-dns.kube-system.svc.cluster.local')).toEqual(['10.96.0.10']);
    },
  );
});
