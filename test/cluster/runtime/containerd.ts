// A private containerd (Debian 1.6.x + runc, cgroupfs) with its CRI plugin, optionally running in a node's netns.
// Everything it owns lives under stateDir (root, state, runc root, opt, sockets, netns mounts) so stop() can kill its
// processes by PID, unmount what is left and remove the directory. Only the shim sockets go to /run/containerd/s.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync, readlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ExecRunner } from '../../../lib/exec/exec.ts';
import { CriClient } from '../cri/client.ts';
import { ensurePauseImageTar, PAUSE_IMAGE } from './pause.ts';
import { killPids } from '../control-plane/proc.ts';

export interface ContainerdOptions {
  /** instance name, used for the socket fallback directory and logs */
  name: string;
  /** everything the instance owns lives here (created; removed by stop() unless keepState) */
  stateDir: string;
  /** run containerd inside /var/run/netns/<netnsName> (the node's netns) */
  netnsName?: string;
  cniBinDir: string;
  cniConfDir: string;
  /** containerd log level (default info) */
  logLevel?: string;
  /** keep stateDir on stop (for debugging) */
  keepState?: boolean;
  /** stop() first stops and removes every sandbox through CRI so the CNI DELs run (default true) */
  cleanSandboxesOnStop?: boolean;
}

export interface ContainerdInstance {
  pid: number;
  /** the CRI/containerd grpc socket */
  socket: string;
  stateDir: string;
  logFile: string;
  stop(): Promise<void>;
}

const SUN_PATH_MAX = 107;

function socketPaths(name: string, stateDir: string): { grpc: string; ttrpc: string } {
  const grpc = join(stateDir, 'containerd.sock');
  const ttrpc = join(stateDir, 'containerd-ttrpc.sock');
  if (ttrpc.length <= SUN_PATH_MAX) return { grpc, ttrpc };
  const dir = join('/run/flatnet', name);
  mkdirSync(dir, { recursive: true });
  return { grpc: join(dir, 'c.sock'), ttrpc: join(dir, 't.sock') };
}

/** The containerd config for a private instance (pure). */
export function renderContainerdConfig(o: {
  stateDir: string;
  grpcSocket: string;
  ttrpcSocket: string;
  cniBinDir: string;
  cniConfDir: string;
  sandboxImage: string;
  logLevel?: string;
}): string {
  const q = (s: string): string => JSON.stringify(s);
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${q(join(o.stateDir, 'root'))}
state = ${q(join(o.stateDir, 'state'))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = ${q(o.grpcSocket)}

[ttrpc]
  address = ${q(o.ttrpcSocket)}

[debug]
  level = ${q(o.logLevel ?? 'info')}

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(join(o.stateDir, 'opt'))}

[${cri}]
  sandbox_image = ${q(o.sandboxImage)}
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false

[${cri}.cni]
  bin_dir = ${q(o.cniBinDir)}
  conf_dir = ${q(o.cniConfDir)}
  max_conf_num = 1

[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = ${q(join(o.stateDir, 'runc'))}
`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function allPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

function ppidOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...; comm may contain spaces and parens
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return -1;
  }
}

/** Shims started by the instance: containerd-shim-runc-v2 ... -address <grpc socket>. */
export function findShims(grpcSocket: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    const argv = readCmdline(pid);
    if (!argv[0] || !argv[0].includes('containerd-shim')) continue;
    const i = argv.indexOf('-address');
    if (i >= 0 && argv[i + 1] === grpcSocket) out.push(pid);
  }
  return out;
}

/** Processes whose cwd or exe or cmdline points into stateDir (e.g. pause processes orphaned by a killed shim). */
function descendants(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const pid of allPids()) {
    const pp = ppidOf(pid);
    if (pp > 0) children.set(pp, [...(children.get(pp) ?? []), pid]);
  }
  const out: number[] = [];
  const stack = [...roots];
  while (stack.length) {
    const p = stack.pop()!;
    for (const c of children.get(p) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}

/** Processes whose root (container rootfs) lives under stateDir: the containers of this instance. */
function processesRootedUnder(stateDir: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    try {
      const root = readlinkSync(`/proc/${pid}/root`);
      if (root.startsWith(stateDir + '/')) out.push(pid);
    } catch {
      /* gone or not ours */
    }
  }
  return out;
}

function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const mp = f[4];
    if (!mp) continue;
    const decoded = mp.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (decoded === dir || decoded.startsWith(dir + '/')) out.push(decoded);
  }
  // deepest first
  return out.sort((a, b) => b.length - a.length);
}

export async function startContainerd(opts: ContainerdOptions): Promise<ContainerdInstance> {
  const stateDir = resolve(opts.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const { grpc, ttrpc } = socketPaths(opts.name, stateDir);
  for (const s of [grpc, ttrpc]) rmSync(s, { force: true });
  const configPath = join(stateDir, 'config.toml');
  writeFileSync(
    configPath,
    renderContainerdConfig({
      stateDir,
      grpcSocket: grpc,
      ttrpcSocket: ttrpc,
      cniBinDir: opts.cniBinDir,
      cniConfDir: opts.cniConfDir,
      sandboxImage: PAUSE_IMAGE,
      logLevel: opts.logLevel,
    }),
  );
  const tar = ensurePauseImageTar();
  const logFile = join(stateDir, 'containerd.log');
  const fd = openSync(logFile, 'a');
  // nsenter --net (not `ip netns exec`): containerd must stay in the host mount namespace so its netns bind mounts
  // and container rootfs mounts are visible to the agent and to tests.
  const argv = opts.netnsName
    ? ['nsenter', `--net=/var/run/netns/${opts.netnsName}`, '--', 'containerd', '--config', configPath]
    : ['containerd', '--config', configPath];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  child.unref();
  const pid = child.pid;
  if (!pid) throw new Error(`containerd ${opts.name}: spawn failed`);
  let exited: string | undefined;
  child.on('exit', (code, sig) => {
    exited = `exited ${code ?? sig}`;
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (opts.cleanSandboxesOnStop !== false && alive(pid) && existsSync(grpc)) {
      const cri = new CriClient(grpc, { timeoutMs: 30_000 });
      try {
        // a few at a time: each teardown runs the CNI DELs
        const queue = await cri.listPodSandbox();
        const worker = async (): Promise<void> => {
          for (let sb = queue.shift(); sb; sb = queue.shift()) {
            await cri.stopPodSandbox(sb.id).catch(() => {});
            await cri.removePodSandbox(sb.id).catch(() => {});
          }
        };
        await Promise.all(Array.from({ length: 4 }, worker));
      } catch {
        /* best effort */
      } finally {
        cri.close();
      }
    }
    const shims = findShims(grpc);
    const contained = [...descendants(shims), ...processesRootedUnder(stateDir)];
    await killPids([pid], 10_000);
    await killPids([...new Set([...contained, ...shims, ...descendants(shims)])], 2000);
    const runner = new ExecRunner();
    for (const m of mountsUnder(stateDir)) {
      const r = await runner.run(['umount', m], { allowFail: true });
      if (r.code !== 0) await runner.run(['umount', '-l', m], { allowFail: true });
    }
    for (const s of [grpc, ttrpc]) rmSync(s, { force: true });
    if (!opts.keepState) rmSync(stateDir, { recursive: true, force: true });
  };

  try {
    const end = Date.now() + 60_000;
    while (!existsSync(grpc)) {
      if (exited) throw new Error(`containerd ${opts.name} ${exited}; log: ${tail(logFile)}`);
      if (Date.now() > end) throw new Error(`containerd ${opts.name}: socket ${grpc} did not appear; log: ${tail(logFile)}`);
      await sleep(50);
    }
    const cri = new CriClient(grpc);
    try {
      await cri.waitReady(30_000);
    } finally {
      cri.close();
    }
    await new ExecRunner().run(['ctr', '-a', grpc, '-n', 'k8s.io', 'images', 'import', '--platform', 'linux/amd64', tar], {
      timeoutMs: 120_000,
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { pid, socket: grpc, stateDir, logFile, stop };
}

function tail(file: string, n = 20): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}
