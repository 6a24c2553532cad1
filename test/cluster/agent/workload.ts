// A container's workload as a plain process in the sandbox's network namespace (there are no images here).
// nsenter --net=<sandbox netns>, then a private mount + UTS namespace so the pod sees its own resolv.conf and
// hostname; every exec keeps the PID, so the PID we hold is the workload's. Each process carries
// FLATNET_AGENT_STATE=<state dir> in its environment and a pid file, so a restarted agent can find its orphans.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const MARKER_ENV = 'FLATNET_AGENT_STATE';

export interface WorkloadSpec {
  argv: string[];
  /** sandbox netns path; undefined = the agent's own netns (hostNetwork) */
  netnsPath?: string;
  /** bind-mounted over /etc/resolv.conf when set */
  resolvConfPath?: string;
  hostname?: string;
  env: Record<string, string>;
  logFile: string;
  pidFile: string;
  stateDir: string;
}

export interface RunningWorkload {
  pid: number;
  startedAt: string;
  /** resolves with the exit code (128+signal when killed) */
  exited: Promise<number>;
  exitCode?: number;
}

const WRAP = 'if [ -n "$1" ]; then mount --bind "$1" /etc/resolv.conf; fi; if [ -n "$2" ]; then hostname "$2"; fi; shift 2; exec "$@"';

export function workloadArgv(w: Pick<WorkloadSpec, 'argv' | 'netnsPath' | 'resolvConfPath' | 'hostname'>): string[] {
  const isolate = w.resolvConfPath || w.hostname;
  const inner = isolate
    ? ['unshare', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', WRAP, 'sh', w.resolvConfPath ?? '', w.hostname ?? '', ...w.argv]
    : w.argv;
  return w.netnsPath ? ['nsenter', `--net=${w.netnsPath}`, '--', ...inner] : inner;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

export function startWorkload(w: WorkloadSpec): RunningWorkload {
  mkdirSync(dirname(w.logFile), { recursive: true });
  mkdirSync(dirname(w.pidFile), { recursive: true });
  const fd = openSync(w.logFile, 'a');
  const argv = workloadArgv(w);
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', fd, fd],
    env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', ...w.env, [MARKER_ENV]: w.stateDir },
  });
  closeSync(fd);
  if (!child.pid) throw new Error(`cannot start ${argv.join(' ')}`);
  const rw: RunningWorkload = {
    pid: child.pid,
    startedAt: new Date().toISOString(),
    exited: new Promise<number>((resolve) => {
      child.on('exit', (code, sig) => {
        const c = code ?? 128 + (SIGNALS[sig ?? ''] ?? 0);
        rw.exitCode = c;
        rmSync(w.pidFile, { force: true });
        resolve(c);
      });
      child.on('error', () => {
        rw.exitCode = 127;
        resolve(127);
      });
    }),
  };
  writeFileSync(w.pidFile, String(child.pid));
  return rw;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
export async function stopWorkload(w: RunningWorkload, graceMs: number): Promise<number> {
  if (w.exitCode !== undefined) return w.exitCode;
  try {
    process.kill(w.pid, graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  } catch {
    /* gone */
  }
  const killer = graceMs > 0
    ? setTimeout(() => {
        try {
          process.kill(w.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, graceMs)
    : undefined;
  const code = await w.exited;
  if (killer) clearTimeout(killer);
  return code;
}

/** Kill processes left by an earlier agent with the same state dir (pid files + environment marker check). */
export async function killOrphans(stateDir: string): Promise<number[]> {
  const root = join(stateDir, 'pods');
  if (!existsSync(root)) return [];
  const killed: number[] = [];
  const walk = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.pid') ? [join(d, e.name)] : []));
  for (const f of walk(root)) {
    const pid = Number(readFileSync(f, 'utf8').trim());
    rmSync(f, { force: true });
    if (!pid) continue;
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      if (!env.includes(`${MARKER_ENV}=${stateDir}`)) continue;
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      /* gone */
    }
  }
  for (let i = 0; i < 50 && killed.some((p) => existsSync(`/proc/${p}`)); i++) await sleep(50);
  return killed;
}
