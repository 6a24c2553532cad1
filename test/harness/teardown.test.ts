// `down` leaves the machine clean: a separate small cluster with a running pod is brought up and removed, and the
// machine is then searched (independently of the teardown code) for namespaces, links, processes, mounts, files.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { down } from '../cluster/cli.ts';
import { clusterDir, loadState, NODE24, REPO_ROOT, type ClusterState } from '../cluster/state.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { clusterHandle, manifest, netexecPod, startCluster } from '../e2e/helpers/handle.ts';

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

/** Nothing of cluster `name` is left on the machine (checked without the teardown code's own scans). */
function expectMachineClean(name: string, nodeNetns: ReadonlySet<string> = new Set()): void {
  const dir = clusterDir(name);
  expect(existsSync('/var/run/netns') ? readdirSync('/var/run/netns').filter((n) => n.startsWith(`${name}-`)) : []).toEqual([]);
  expect(readdirSync('/sys/class/net').filter((l) => l.startsWith(`${name}-`))).toEqual([]);
  const after = procs();
  expect(after.filter((p) => p.cmd.some((a) => a.includes(dir))).map((p) => p.cmd.join(' '))).toEqual([]);
  expect(after.filter((p) => nodeNetns.has(p.netns) || p.root.startsWith(dir)).map((p) => p.cmd.join(' '))).toEqual([]);
  expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(dir);
  expect(existsSync(dir)).toBe(false);
}

describe('cluster teardown', () => {
  const name = runPrefix();
  const crashed = runPrefix();
  let s: ClusterState | undefined;
  let cli: ChildProcess | undefined;

  afterAll(async () => {
    // safety net if an assertion failed before down ran
    if (cli?.pid && cli.exitCode === null) cli.kill('SIGKILL');
    await down(name).catch(() => {});
    await down(crashed).catch(() => {});
  });

  it('removes every namespace, link, process, mount and file the cluster made', async () => {
    // the routes pod network (the overlay is covered by smoke.test.ts)
    s = await startCluster({ name, nodes: 2, proxyMode: 'iptables', podNetwork: 'routes' });
    const c = clusterHandle(s);
    const ns = await c.createNamespace('teardown');
    await c.apply(manifest(netexecPod({ name: 'p', namespace: ns, node: c.nodeNames[1]! })));
    await c.waitPodReady(`${ns}/p`, 180_000);
    // a pod reaches the apiserver on the host through the kubernetes Service: its egress is masqueraded to the node
    // address (without that the host would answer the pod IP through its own default route)
    const version = await c.curl(`${ns}/p`, 'https://10.96.0.1/version', { extra: ['-k'] });
    expect(JSON.parse(version.stdout)).toMatchObject({ major: '1' });

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
    expectMachineClean(name, new Set([...nodeNetns, podNetnsPath]));
    expect(shimSockets.filter((p) => existsSync(p))).toEqual([]);
  }, 600_000);

  it('cleans up after `up` was killed half-way (from the state record plus scans)', async () => {
    cli = spawn(NODE24, [join(REPO_ROOT, 'test', 'cluster', 'cli.ts'), 'up', '--name', crashed, '--nodes', '2', '--proxy-mode', 'iptables'], {
      stdio: 'ignore',
    });
    // kill it once the runtimes are being started: control plane and namespaces exist, containerd may be mid-start
    const deadline = Date.now() + 240_000;
    for (;;) {
      const st = loadState(crashed);
      if (st?.processes.some((p) => p.role === 'daemon') || st?.nodes.some((n) => n.criSocket)) break;
      if (Date.now() > deadline || cli.exitCode !== null) throw new Error(`up of ${crashed} did not get far enough (exit ${cli.exitCode})`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 1500));
    cli.kill('SIGKILL');
    await new Promise((r) => cli!.once('close', r));
    const st = loadState(crashed)!;
    expect(st.phase).toBe('creating');
    expect(readdirSync('/var/run/netns').filter((n) => n.startsWith(`${crashed}-`)).length).toBe(3);
    const nodeNetns = new Set(st.netns.filter((n) => existsSync(`/var/run/netns/${n}`)).map((n) => `net:[${statSync(`/var/run/netns/${n}`).ino}]`));

    const left = await down(crashed);
    expect(left).toEqual({ netns: [], links: [], pids: [], mounts: [], files: [] });
    expectMachineClean(crashed, nodeNetns);
  });

  it.each([
    [['--nodes', '0'], /--nodes 0: expected 1\.\.20/],
    [['--proxy-mode', 'bogus'], /--proxy-mode bogus: expected iptables\|nftables\|ipvs\|none/],
    [['--pod-network', 'flat'], /--pod-network flat: expected routes\|overlay/],
    [['--subnet', '8.8.8.0/24'], /not a private IPv4 \/24/],
    [['--subnet', '10.244.3.0/24'], /overlaps the pod network 10\.244\.0\.0\/16/],
  ])('rejects up %j cleanly, creating nothing', (args, message) => {
    const bad = runPrefix();
    const r = spawnSync(NODE24, [join(REPO_ROOT, 'test', 'cluster', 'cli.ts'), 'up', '--name', bad, ...args], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expectMachineClean(bad);
  });
});
