// Long-running processes of the local cluster: started detached (they outlive the CLI), logs to files, recorded with
// their start time so that a later `down` kills exactly them and never a process that reused the PID.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import type { ProcRecord } from '../state.ts';

export interface StartOptions {
  role: string;
  node?: string;
  log: string;
  /** run inside this netns: a name under /var/run/netns or an absolute path (nsenter execs, so the PID is the program's) */
  netns?: string;
  env?: Record<string, string>;
  cwd?: string;
}

export function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parens: fields start after the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19]; // field 22 overall
  } catch {
    return undefined;
  }
}

export function isAlive(rec: Pick<ProcRecord, 'pid' | 'startTime'>): boolean {
  const st = procStartTime(rec.pid);
  if (st === undefined || st !== rec.startTime) return false;
  try {
    const status = readFileSync(`/proc/${rec.pid}/status`, 'utf8');
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

export function startDetached(argv: readonly string[], opts: StartOptions): ProcRecord {
  mkdirSync(dirname(opts.log), { recursive: true });
  const fd = openSync(opts.log, 'a');
  const nsPath = opts.netns?.startsWith('/') ? opts.netns : `/var/run/netns/${opts.netns}`;
  const full = opts.netns ? ['nsenter', `--net=${nsPath}`, '--', ...argv] : [...argv];
  const child = spawn(full[0]!, full.slice(1), {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
  });
  closeSync(fd);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${argv[0]}`);
  const startTime = procStartTime(pid) ?? '';
  return { role: opts.role, node: opts.node, pid, startTime, argv: full, log: opts.log };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, wait up to graceMs, then SIGKILL; resolves when the process is gone. */
export async function stopProcess(rec: Pick<ProcRecord, 'pid' | 'startTime'>, graceMs = 5000): Promise<void> {
  if (!isAlive(rec)) return;
  try {
    process.kill(rec.pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(rec)) return;
    await sleep(100);
  }
  try {
    process.kill(rec.pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 50 && isAlive(rec); i++) await sleep(100);
}

/** PIDs of processes whose command line mentions `needle` (e.g. the cluster's state directory). */
export function pidsWithCmdline(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(needle)) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** PIDs of processes whose network namespace is one of the given nsfs inodes. */
export function pidsInNetns(inodes: ReadonlySet<number>): number[] {
  const out: number[] = [];
  if (inodes.size === 0) return out;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    try {
      const m = /net:\[(\d+)\]/.exec(readlinkSync(`/proc/${d}/ns/net`));
      if (m && inodes.has(Number(m[1]))) out.push(pid);
    } catch {
      /* gone or kernel thread */
    }
  }
  return out;
}

/** Kill a set of PIDs found by a scan (SIGTERM then SIGKILL). */
export async function killPids(pids: readonly number[], graceMs = 3000): Promise<void> {
  const recs = pids.map((pid) => ({ pid, startTime: procStartTime(pid) ?? '' })).filter((r) => r.startTime !== '');
  await Promise.all(recs.map((r) => stopProcess(r, graceMs)));
}

/** A TCP port on 127.0.0.1 that is free right now. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function tailFile(path: string, lines = 20): string {
  if (!existsSync(path)) return '';
  return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
}
