import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { withFileLock } from '../../../../lib/lock/flock.ts';

describe('withFileLock', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fpm-lock-'));
  const path = join(dir, 'lock');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('serializes critical sections, also after one of them threw', async () => {
    const log: string[] = [];
    const section = (name: string, fail = false) =>
      withFileLock(path, 30, async () => {
        log.push(`${name}+`);
        await sleep(150);
        log.push(`${name}-`);
        if (fail) throw new Error(`${name} failed`);
        return name;
      });
    const results = await Promise.allSettled([section('a', true), section('b'), section('c')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    // never two sections inside at once
    for (let i = 0; i < log.length; i += 2) expect(log[i]!.slice(0, -1)).toBe(log[i + 1]!.slice(0, -1));
    expect(log).toHaveLength(6);
  });

  it('gives up after the timeout while another holder keeps it', async () => {
    let release!: () => void;
    const held = withFileLock(path, 30, () => new Promise<void>((r) => (release = r)));
    await sleep(300);
    await expect(withFileLock(path, 1, async () => 'never')).rejects.toThrow(/timed out after 1s waiting for the lock/);
    release();
    await held;
    expect(await withFileLock(path, 5, async () => 'ok')).toBe('ok');
  });
});
