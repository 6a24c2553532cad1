// `down` leaves the machine clean: a separate small cluster with a running pod is brought up and removed, and the
// machine is then searched (independently of the teardown code) for namespaces, links, processes, mounts, files.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { down } from '../cluster/cli.ts';
import { clusterDir, type ClusterState } from '../cluster/state.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { clusterHandle, manifest, netexecPod, startCluster } from './helpers/cluster.ts';

function procs(): { pid: number; cmd: string[]; netns: string; root: string }[] {
  const out: { pid: number; cmd: string[]; netns: string; root: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      out.push({
        pid: Number(d),
        cmd: readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').filter(Boolean),
        netns: readlinkSync(`/proc/${d}/ns/net`),
        root: readlinkSync(`/proc/${d}/root`),
      });
    } catch {
      /* gone or a kernel thread */
    }
  }
  return out;
}

describe('cluster teardown', () => {
  const name = runPrefix();
  let s: ClusterState | undefined;

  afterAll(async () => {
    // safety net if an assertion failed before down ran
    await down(name).catch(() => {});
  });

  it('removes every namespace, link, process, mount and file the cluster made', async () => {
    s = await startCluster({ name, nodes: 2, proxyMode: 'iptables' });
    const c = clusterHandle(s);
    const ns = await c.createNamespace('teardown');
    await c.apply(manifest(netexecPod({ name: 'p', namespace: ns, node: c.nodeNames[1]! })));
    await c.waitPodReady(`${ns}/p`, 180_000);

    // what exists while it runs: this is what must disappear
    const dir = clusterDir(name);
    const nsNames = readdirSync('/var/run/netns').filter((n) => n.startsWith(`${name}-`));
    expect(nsNames.sort()).toEqual([`${name}-control-plane`, `${name}-external`, `${name}-worker`].sort());
    const links = readdirSync('/sys/class/net').filter((l) => l.startsWith(`${name}-`));
    expect(links).toContain(`${name}-br`);
    const nodeNetns = new Set(nsNames.map((n) => `net:[${statSync(`/var/run/netns/${n}`).ino}]`));
    const running = procs().filter((p) => p.cmd.some((a) => a.includes(dir + '/')));
    expect(running.length).toBeGreaterThanOrEqual(3 + 2 * 2); // etcd, apiserver, kcm; containerd + agent per node
    const podNetnsPath = (await c.exec(`${ns}/p`, ['readlink', '/proc/self/ns/net'])).stdout.trim();
    const shimSockets = running
      .filter((p) => p.cmd[0]?.includes('containerd-shim'))
      .map((p) => {
        const arg = (k: string) => p.cmd[p.cmd.indexOf(k) + 1]!;
        return join('/run/containerd/s', createHash('sha256').update(join(arg('-address'), arg('-namespace'), arg('-id'))).digest('hex'));
      });
    expect(shimSockets.length).toBeGreaterThan(0);
    expect(shimSockets.every((p) => existsSync(p))).toBe(true);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toContain(dir);

    const left = await down(name);
    expect(left).toEqual({ netns: [], links: [], pids: [], mounts: [], files: [] });

    // independent checks
    expect(readdirSync('/var/run/netns').filter((n) => n.startsWith(`${name}-`))).toEqual([]);
    expect(readdirSync('/sys/class/net').filter((l) => l.startsWith(`${name}-`))).toEqual([]);
    const after = procs();
    expect(after.filter((p) => p.cmd.some((a) => a.includes(dir)))).toEqual([]);
    expect(after.filter((p) => p.netns === podNetnsPath || nodeNetns.has(p.netns) || p.root.startsWith(dir))).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(dir);
    expect(existsSync(dir)).toBe(false);
    expect(shimSockets.filter((p) => existsSync(p))).toEqual([]);
  });
});
