// A host-wide mutex for portmap's read-modify-write of shared iptables chains (check-then-append on PREROUTING,
// OUTPUT, POSTROUTING is otherwise racy between concurrent plugin processes).
//
// It holds flock(1) in a helper child whose stdin we keep open: closing stdin (or our death, which closes it too)
// ends the helper and releases the lock, so a crashed plugin never leaves the lock held.

import { spawn } from 'node:child_process';

export const DEFAULT_LOCK_PATH = '/run/flatnet-portmap.lock';

export async function withHostLock<T>(path: string, timeoutS: number, f: () => Promise<T>): Promise<T> {
  const child = spawn('flock', ['-x', '-w', String(timeoutS), path, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.on('error', () => {});
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('error', (e) => reject(new Error(`cannot run flock for ${path}: ${e.message}`)));
    child.once('exit', (code) => reject(new Error(`could not take the lock ${path} within ${timeoutS}s (flock exit ${code}) ${stderr.trim()}`)));
  });
  try {
    return await f();
  } finally {
    child.stdin.end();
  }
}
