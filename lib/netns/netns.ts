// Network-namespace helpers: recognise a netns handle and run programs inside one.
import { statfsSync, statSync } from 'node:fs';
import type { RunResult, Runner } from '../exec/runner.ts';

/** statfs f_type of nsfs (bind-mounted /var/run/netns/X or /proc/PID/ns/net). */
const NSFS_MAGIC = 0x6e736673;
/** procfs: /proc/PID/ns/net links report proc's magic on some kernels */
const PROC_SUPER_MAGIC = 0x9fa0;

export type NetnsState = 'netns' | 'missing' | 'not-netns';

/** Classify a CNI_NETNS path without entering it. */
export function netnsState(path: string): NetnsState {
  try {
    statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    return 'not-netns';
  }
  try {
    const t = Number(statfsSync(path).type);
    if (t === NSFS_MAGIC) return 'netns';
    if (t === PROC_SUPER_MAGIC && /^\/proc\/(\d+|self|thread-self)\/(task\/\d+\/)?ns\/net$/.test(path)) return 'netns';
  } catch {
    return 'not-netns';
  }
  return 'not-netns';
}

/**
 * Run a POSIX shell program inside `netns` (nsenter --net=PATH sh -c PROGRAM), with `input` on stdin.
 * One process tree per call: callers batch everything they need into one program.
 */
export function runShInNetns(
  runner: Runner,
  netns: string,
  program: string,
  opts: { input?: string; allowFail?: boolean } = {},
): Promise<RunResult> {
  return runner.run(['sh', '-c', program], { netns, input: opts.input, allowFail: opts.allowFail });
}

/** Run `ip -batch -` with `batch` (optionally inside a netns). */
export function runIpBatch(
  runner: Runner,
  batch: string,
  opts: { netns?: string; allowFail?: boolean } = {},
): Promise<RunResult> {
  return runner.run(['ip', '-batch', '-'], { input: batch, netns: opts.netns, allowFail: opts.allowFail });
}

/** Quote a string for a POSIX shell program. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface ShStep {
  argv: readonly string[];
  /** fed to the step on stdin through a quoted here-document */
  input?: string;
}

/** Exit status of a shSequence program whose step `i` failed. */
export const SH_STEP_EXIT_BASE = 100;

/**
 * A POSIX sh program running `steps` in order in one process tree (one spawn instead of one per step);
 * the first failing step `i` ends the program with exit status 100+i (its stderr passes through).
 */
export function shSequence(steps: readonly ShStep[]): string {
  if (steps.length > 150) throw new Error('shSequence: too many steps');
  return steps
    .map((s, i) => {
      const cmd = s.argv.map(shq).join(' ');
      const fail = ` || exit ${SH_STEP_EXIT_BASE + i}`;
      if (s.input === undefined) return cmd + ' </dev/null' + fail;
      const eof = `__FLATNET_EOF_${i}__`;
      const body = s.input.endsWith('\n') ? s.input : s.input + '\n';
      if (body.split('\n').includes(eof)) throw new Error('shSequence: input contains the here-document delimiter');
      return `${cmd} <<'${eof}'${fail}\n${body}${eof}`;
    })
    .join('\n') + '\n';
}
