// An exclusive flock(2) on a file: host-local's store lock (compatible with the reference, which flocks <dir>/lock)
// and portmap's host-wide lock around its shared iptables chains.
//
// Node has no flock binding. Two honest ways to get one, both holding the lock on *our* open file description
// (released when we close the descriptor, or when this process dies):
//   1. native: a tiny N-API addon (flock.c) embedded in the SEA as the asset "flock-<hash>.node"; it is written
//      once to /run/flatnet/native/flock-<hash>.node (root-only directory) and dlopen'ed. Costs well under a millisecond.
//   2. flock(1): util-linux's flock on a file descriptor *inherited from this process*: flock locks belong to the
//      open file description, which the child shares with us, so the lock stays held after flock(1) exits.
//      Costs a process spawn (a few ms). Used outside the SEA, when the addon cannot be loaded, or when
//      FLATNET_LOCK=flock1.
import { closeSync, existsSync, mkdirSync, openSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { CniError, ErrorCode } from '../cni/types.ts';

export interface FileLock {
  unlock(): void;
  /** how the lock was taken */
  readonly mechanism: 'native' | 'flock1';
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
const RUN_DIR = '/run/flatnet/native';

type FlockFn = (fd: number, op: number) => number;
let native: FlockFn | null | undefined;

/** Loads the embedded addon once; null when not available (not a SEA, no asset, not root...). */
function nativeFlock(): FlockFn | null {
  if (native !== undefined) return native;
  native = null;
  try {
    if (process.env.FLATNET_LOCK === 'flock1') return null;
    const sea = process.getBuiltinModule('node:sea') as typeof import('node:sea') | undefined;
    if (!sea?.isSea() || process.getuid?.() !== 0) return null;
    // the build names the asset flock-<content hash>.node, so an existing file of that name is this very addon
    const key = sea.getAssetKeys().find((k) => /^flock-[0-9a-f]+\.node$/.test(k));
    if (!key) return null;
    const file = `${RUN_DIR}/${key}`;
    if (!existsSync(file)) {
      mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, new Uint8Array(sea.getRawAsset(key) as ArrayBuffer), { mode: 0o500 });
      renameSync(tmp, file);
    }
    // only load code from a directory nobody but root can write to
    const safe = (p: string): boolean => {
      const st = statSync(p);
      return st.uid === 0 && (st.mode & 0o022) === 0;
    };
    if (![dirname(RUN_DIR), RUN_DIR, file].every(safe)) return null;
    const m = { exports: {} as { flock?: FlockFn } };
    process.dlopen(m, file);
    if (typeof m.exports.flock === 'function') native = m.exports.flock;
  } catch {
    native = null;
  }
  return native;
}

// the runtime's PATH may be minimal or unset; util-linux installs flock in /usr/bin (or /bin)
let flockPath: string | undefined;
function flockBinary(): string {
  flockPath ??= ['/usr/bin/flock', '/bin/flock'].find((p) => existsSync(p)) ?? 'flock';
  return flockPath;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function lockNative(fn: FlockFn, fd: number, path: string, timeoutSec: number): void {
  const deadline = Date.now() + timeoutSec * 1000;
  let wait = 1;
  for (;;) {
    const r = fn(fd, LOCK_EX | LOCK_NB);
    if (r === 0) return;
    if (r !== EWOULDBLOCK) throw new CniError(ErrorCode.IoFailure, `flock(${path}) failed: errno ${r}`);
    if (Date.now() >= deadline) throw new CniError(ErrorCode.TryAgainLater, `timed out after ${timeoutSec}s waiting for the lock ${path}`);
    Atomics.wait(sleeper, 0, 0, wait);
    wait = Math.min(wait * 2, 20);
  }
}

function lockFlock1(fd: number, path: string, timeoutSec: number): void {
  // no pipes: the cheapest spawn libuv can do
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const r = spawnSync(flockBinary(), ['-x', '-w', String(timeoutSec), '3'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
  if (r.error) throw new CniError(ErrorCode.IoFailure, `cannot run flock(1) to lock ${path}: ${r.error.message}`);
  if (r.status === 1) throw new CniError(ErrorCode.TryAgainLater, `timed out after ${timeoutSec}s waiting for the lock ${path}`);
  if (r.status !== 0) throw new CniError(ErrorCode.IoFailure, `flock(1) failed on ${path} (exit ${String(r.status)})`);
}

/** One non-blocking attempt: true when the lock is now held on `fd`. */
function tryLock(fd: number, path: string): boolean {
  const fn = nativeFlock();
  if (fn) {
    const r = fn(fd, LOCK_EX | LOCK_NB);
    if (r === 0) return true;
    if (r !== EWOULDBLOCK) throw new CniError(ErrorCode.IoFailure, `flock(${path}) failed: errno ${r}`);
    return false;
  }
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const r = spawnSync(flockBinary(), ['-x', '-n', '3'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
  if (r.error) throw new CniError(ErrorCode.IoFailure, `cannot run flock(1) to lock ${path}: ${r.error.message}`);
  if (r.status === 1) return false;
  if (r.status !== 0) throw new CniError(ErrorCode.IoFailure, `flock(1) failed on ${path} (exit ${String(r.status)})`);
  return true;
}

/**
 * Runs `fn` holding an exclusive lock on `path` (created if missing), waiting without blocking the event loop, so
 * callers in one process queue up too; fails with code 11 after timeoutSec.
 */
export async function withFileLock<T>(path: string, timeoutSec: number, fn: () => Promise<T>): Promise<T> {
  const fd = openSync(path, 'a', 0o600);
  try {
    const deadline = Date.now() + timeoutSec * 1000;
    let wait = 2;
    while (!tryLock(fd, path)) {
      if (Date.now() >= deadline) throw new CniError(ErrorCode.TryAgainLater, `timed out after ${timeoutSec}s waiting for the lock ${path}`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 50);
    }
    return await fn();
  } finally {
    // closing the last descriptor of the open file description releases the flock
    closeSync(fd);
  }
}

/** Blocks until an exclusive lock on `path` (created if missing) is held; fails with code 11 after timeoutSec. */
export function lockFile(path: string, timeoutSec = 60): FileLock {
  const fd = openSync(path, 'a', 0o600);
  let ok = false;
  let mechanism: FileLock['mechanism'] = 'flock1';
  try {
    const fn = nativeFlock();
    if (fn) {
      lockNative(fn, fd, path, timeoutSec);
      mechanism = 'native';
    } else lockFlock1(fd, path, timeoutSec);
    ok = true;
  } finally {
    if (!ok) closeSync(fd);
  }
  let held = true;
  return {
    mechanism,
    unlock() {
      if (!held) return;
      held = false;
      // closing the last descriptor of the open file description releases the flock
      closeSync(fd);
    },
  };
}
