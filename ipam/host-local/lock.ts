// An exclusive flock(2) on a file, compatible with the reference host-local (which flocks <dir>/lock).
//
// Node has no flock binding, so the lock is taken by util-linux's flock(1) on a file descriptor *inherited from
// this process*: flock locks belong to the open file description, which the child shares with us. When flock(1)
// exits the lock stays held by our descriptor until we close it (or this process dies, which closes it too).
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { CniError, ErrorCode } from '../../lib/cni/types.ts';

// the runtime's PATH may be minimal or unset; util-linux installs flock in /usr/bin (or /bin)
let flockPath: string | undefined;
function flockBinary(): string {
  flockPath ??= ['/usr/bin/flock', '/bin/flock'].find((p) => existsSync(p)) ?? 'flock';
  return flockPath;
}

export interface FileLock {
  unlock(): void;
}

/** Blocks until an exclusive lock on `path` (created if missing) is held; fails with code 11 after timeoutSec. */
export function lockFile(path: string, timeoutSec = 60): FileLock {
  const fd = openSync(path, 'a', 0o600);
  let ok = false;
  try {
    // no pipes: the cheapest spawn libuv can do (this runs on every ADD/DEL)
    const r = spawnSync(flockBinary(), ['-x', '-w', String(timeoutSec), '3'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
    if (r.error) throw new CniError(ErrorCode.IoFailure, `cannot run flock(1) to lock ${path}: ${r.error.message}`);
    if (r.status === 1) throw new CniError(ErrorCode.TryAgainLater, `timed out after ${timeoutSec}s waiting for the lock ${path}`);
    if (r.status !== 0) throw new CniError(ErrorCode.IoFailure, `flock(1) failed on ${path} (exit ${String(r.status)})`);
    ok = true;
  } finally {
    if (!ok) closeSync(fd);
  }
  let held = true;
  return {
    unlock() {
      if (!held) return;
      held = false;
      // closing the last descriptor of the open file description releases the flock
      closeSync(fd);
    },
  };
}
