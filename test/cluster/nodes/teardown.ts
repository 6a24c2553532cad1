// Removes everything a cluster's `up` made, from its state record plus scans by name prefix and by state directory,
// so it also works after a crash half-way through `up`. Idempotent.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../../lib/exec/runner.ts';
import { killPids, pidsInNetns, pidsWithCmdline, stopProcess } from '../control-plane/proc.ts';
import { clusterDir, loadState, saveState, type ClusterState } from '../state.ts';

export interface Leftovers {
  netns: string[];
  links: string[];
  pids: number[];
  mounts: string[];
  files: string[];
}

/** Mount points at or under dir, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): { path: string; fstype: string }[] {
  const out: { path: string; fstype: string }[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const mp = f[4];
    if (!mp) continue;
    const path = mp.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    const sep = f.indexOf('-');
    if (path === dir || path.startsWith(dir + '/')) out.push({ path, fstype: f[sep + 1] ?? '' });
  }
  return out.sort((a, b) => b.path.length - a.path.length);
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The exact shapes of the names a cluster gives its namespaces and links, so that a cluster named `a` never matches
 * the objects of a cluster named `a-b`. */
export function ownsNetns(cluster: string, netns: string): boolean {
  return new RegExp(`^${escape(cluster)}-(control-plane|worker\\d*|external)$`).test(netns);
}

export function ownsLink(cluster: string, link: string): boolean {
  return new RegExp(`^${escape(cluster)}-(br|v\\d+|vx)$`).test(link);
}

function netnsWithPrefix(cluster: string): string[] {
  if (!existsSync('/var/run/netns')) return [];
  return readdirSync('/var/run/netns').filter((n) => ownsNetns(cluster, n));
}

function linksWithPrefix(cluster: string): string[] {
  return readdirSync('/sys/class/net').filter((n) => ownsLink(cluster, n));
}

function inode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/** Everything on this machine that belongs to cluster `name` (empty lists when it is fully gone). */
export function findLeftovers(name: string): Leftovers {
  const dir = clusterDir(name);
  const netns = netnsWithPrefix(name);
  const mounts = mountsUnder(dir).map((m) => m.path);
  const inodes = new Set<number>();
  for (const p of [...netns.map((n) => `/var/run/netns/${n}`), ...mountsUnder(dir).filter((m) => m.fstype === 'nsfs').map((m) => m.path)]) {
    const i = inode(p);
    if (i !== undefined) inodes.add(i);
  }
  const pids = [...new Set([...pidsWithCmdline(dir + '/'), ...pidsInNetns(inodes), ...pidsRootedUnder(dir)])];
  return { netns, links: linksWithPrefix(name), pids, mounts, files: existsSync(dir) ? [dir] : [] };
}

function pidsRootedUnder(dir: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const root = process.getBuiltinModule('node:fs').readlinkSync(`/proc/${d}/root`);
      if (root.startsWith(dir + '/')) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** containerd 1.6 puts each shim's socket at /run/containerd/s/sha256(<grpc address>/<namespace>/<id>). */
function shimSockets(pids: readonly number[]): string[] {
  const out: string[] = [];
  for (const pid of pids) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!argv[0]?.includes('containerd-shim')) continue;
      const arg = (k: string) => argv[argv.indexOf(k) + 1];
      const address = arg('-address');
      const ns = arg('-namespace');
      const id = arg('-id');
      if (address && ns && id) out.push(join('/run/containerd/s', createHash('sha256').update(join(address, ns, id)).digest('hex')));
    } catch {
      /* gone */
    }
  }
  return out;
}

async function removeSandboxes(s: ClusterState, log: (m: string) => void): Promise<void> {
  const withCri = s.nodes.filter((n) => n.criSocket && existsSync(n.criSocket));
  if (!withCri.length) return;
  const { CriClient } = await import('../cri/client.ts');
  await Promise.all(
    withCri.map(async (n) => {
      const cri = new CriClient(n.criSocket!, { timeoutMs: 15_000 });
      try {
        for (const sb of await cri.listPodSandbox()) {
          await cri.stopPodSandbox(sb.id).catch(() => {});
          await cri.removePodSandbox(sb.id).catch(() => {});
        }
      } catch (e) {
        log(`${n.name}: could not list sandboxes (${e instanceof Error ? e.message : String(e)}); killing instead`);
      } finally {
        cri.close();
      }
    }),
  );
}

export async function teardownCluster(name: string, runner: Runner, log: (m: string) => void = () => {}): Promise<Leftovers> {
  const s = loadState(name);
  const dir = clusterDir(name);
  if (s) {
    s.phase = 'deleting';
    saveState(s);
    // daemons and agents first (they would react to the rest going away), then sandboxes through CRI, then the rest
    const order = ['daemon', 'agent'];
    for (const role of order) await Promise.all(s.processes.filter((p) => p.role === role).map((p) => stopProcess(p, 5000)));
    // stopping agents first: nothing recreates sandboxes while they are removed
    const agentsGone = s.processes.filter((p) => p.role === 'agent').length > 0;
    if (agentsGone) await removeSandboxes(s, log).catch(() => {});
    const rest = s.processes.filter((p) => !order.includes(p.role)).reverse();
    for (const p of rest) await stopProcess(p, 5000);
  }
  // anything still running that belongs to the cluster: shims, containers, processes inside its namespaces
  let left = findLeftovers(name);
  const sockets = shimSockets(left.pids);
  if (left.pids.length) {
    log(`killing ${left.pids.length} leftover process(es)`);
    await killPids(left.pids);
  }
  for (const sock of sockets) rmSync(sock, { force: true });
  for (const m of mountsUnder(dir)) {
    const r = await runner.run(['umount', m.path], { allowFail: true });
    if (r.code !== 0) await runner.run(['umount', '-l', m.path], { allowFail: true });
  }
  for (const n of [...(s?.netns ?? []), ...netnsWithPrefix(name)]) {
    if (existsSync(`/var/run/netns/${n}`)) await runner.run(['ip', 'netns', 'delete', n], { allowFail: true });
  }
  for (const l of [...(s?.links ?? []), ...linksWithPrefix(name)]) {
    if (existsSync(`/sys/class/net/${l}`)) await runner.run(['ip', 'link', 'delete', l], { allowFail: true });
  }
  // a second sweep catches processes that were started while we worked
  left = findLeftovers(name);
  if (left.pids.length) await killPids(left.pids);
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  return findLeftovers(name);
}
