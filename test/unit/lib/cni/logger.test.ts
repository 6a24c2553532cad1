import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../../lib/log/logger.ts';

const dir = mkdtempSync(join(tmpdir(), 'flatnet-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('lazy pino logger', () => {
  it('writes JSON records at or above the level to FLATNET_LOG_FILE, with child bindings', async () => {
    const file = join(dir, 'a.log');
    const log = createLogger({ FLATNET_LOG_LEVEL: 'info', FLATNET_LOG_FILE: file }, { plugin: 'host-local' });
    log.debug({ a: 1 }, 'dropped');
    log.info({ b: 2 }, 'kept');
    log.child({ containerId: 'c1' }).error(new Error('boom'), 'failed');
    await log.flush();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['kept', 'failed']);
    expect(lines[0]).toMatchObject({ level: 30, plugin: 'host-local', b: 2 });
    expect(lines[1]).toMatchObject({ level: 50, plugin: 'host-local', containerId: 'c1', err: { message: 'boom' } });
  });
  it('loads nothing and writes nothing when no record reaches the level', async () => {
    const file = join(dir, 'b.log');
    const log = createLogger({ FLATNET_LOG_FILE: file });
    log.info({}, 'below the default warn level');
    await log.flush();
    expect(() => readFileSync(file)).toThrow();
  });
});
