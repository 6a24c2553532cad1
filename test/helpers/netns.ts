import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** A named network namespace for a test; always call remove() in teardown. */
export interface TestNetns {
  name: string;
  /** /var/run/netns/<name>, usable as CNI_NETNS */
  path: string;
  /** run a command inside; returns stdout */
  exec(argv: string[], input?: string): string;
  remove(): void;
}

export function createNetns(name: string): TestNetns {
  execFileSync('ip', ['netns', 'add', name]);
  const path = `/var/run/netns/${name}`;
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    path,
    exec(argv, input) {
      return execFileSync('ip', ['netns', 'exec', name, ...argv], { input, encoding: 'utf8' });
    },
    remove() {
      if (existsSync(path)) {
        try {
          execFileSync('ip', ['netns', 'delete', name]);
        } catch {
          /* already gone */
        }
      }
    },
  };
}

/** Delete every netns whose name starts with prefix (teardown safety net). */
export function removeNetnsWithPrefix(prefix: string): void {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const n = line.split(' ')[0];
    if (n && n.startsWith(prefix)) {
      try {
        execFileSync('ip', ['netns', 'delete', n]);
      } catch {
        /* ignore */
      }
    }
  }
}

/** Delete every host link whose name starts with prefix. */
export function removeLinksWithPrefix(prefix: string): void {
  const out = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const m = /^\d+: ([^:@]+)/.exec(line);
    if (m && m[1]!.startsWith(prefix)) {
      try {
        execFileSync('ip', ['link', 'delete', m[1]!]);
      } catch {
        /* ignore */
      }
    }
  }
}

/** SIGKILL every child that is still running, by its PID (teardown). */
export function killChildren(children: readonly { pid?: number | undefined; exitCode: number | null }[]): void {
  for (const c of children) {
    if (c.pid === undefined || c.exitCode !== null) continue;
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
