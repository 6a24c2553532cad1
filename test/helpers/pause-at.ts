// Stops a CNI plugin process at a chosen point of its ADD so a fault test can SIGKILL it there, without any hook in
// the product: a `sh` placed first in the plugin's PATH counts the plugin's own sh children (its container program,
// then its host program) and holds the plugin at the chosen one by not returning, after recording the plugin's PID.
//   after-ipam       before the first sh: addresses reserved, nothing in the kernel yet
//   after-container  after the first sh: container side configured (veth, addresses, routes)
//   after-host       after the second sh: host side configured (bridge port, addresses, masquerade)
import { chmodSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type PausePoint = 'after-ipam' | 'after-container' | 'after-host';

export interface Pause {
  /** environment for the plugin (PATH with the counting sh first) */
  env: Record<string, string>;
  /** resolves with the held plugin's PID once it is held; rejects after timeoutMs */
  held(timeoutMs?: number): Promise<number>;
  /** kills the held wrapper (the plugin is the caller's to kill) and removes the directory */
  cleanup(): void;
}

/** `binary`: the plugin's executable (any link to it); its direct sh children are counted. */
export function pauseAt(point: PausePoint, binary: string): Pause {
  const exe = realpathSync(binary);
  const dir = mkdtempSync(join(tmpdir(), 'fpause-'));
  const [n, when] = point === 'after-ipam' ? [1, 'before'] : point === 'after-container' ? [1, 'after'] : [2, 'after'];
  const hold = `echo "$PPID $$" > ${dir}/held; exec sleep 60`;
  writeFileSync(
    join(dir, 'sh'),
    `#!/bin/sh
if [ "$(readlink /proc/$PPID/exe 2>/dev/null)" != '${exe}' ]; then exec /bin/sh "$@"; fi
n=$(( $(cat ${dir}/count 2>/dev/null || echo 0) + 1 )); echo $n > ${dir}/count
if [ $n = ${n} ] && [ ${when} = before ]; then ${hold}; fi
/bin/sh "$@"; rc=$?
if [ $n = ${n} ] && [ ${when} = after ]; then ${hold}; fi
exit $rc
`,
  );
  chmodSync(join(dir, 'sh'), 0o755);
  const heldFile = join(dir, 'held');
  return {
    env: { PATH: `${dir}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` },
    async held(timeoutMs = 20_000): Promise<number> {
      const t0 = Date.now();
      while (!existsSync(heldFile) || readFileSync(heldFile, 'utf8').trim().split(' ').length < 2) {
        if (Date.now() - t0 > timeoutMs) throw new Error(`the plugin never reached ${point}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return Number(readFileSync(heldFile, 'utf8').split(' ')[0]);
    },
    cleanup(): void {
      if (existsSync(heldFile)) {
        const wrapper = Number(readFileSync(heldFile, 'utf8').trim().split(' ')[1]);
        try {
          if (wrapper > 0) process.kill(wrapper, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
