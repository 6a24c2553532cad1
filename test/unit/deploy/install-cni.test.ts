// deploy/install-cni.sh against temporary directories: atomic install while a copy executes, the conflist gated
// on the subnet file, and idempotent re-runs.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '../../../deploy/install-cni.sh');
let dir = '';
let env: Record<string, string> = {};

function run(extra: Record<string, string> = {}): string {
  return execFileSync('/bin/sh', [script], { env: { ...process.env, ...env, ...extra }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'flatnet-install-'));
  for (const d of ['src', 'bin', 'conf', 'run', 'etc']) mkdirSync(join(dir, d));
  // a stand-in for the multi-call binary: a real executable that can be left running
  copyFileSync('/bin/sleep', join(dir, 'src', 'flatnet'));
  chmodSync(join(dir, 'src', 'flatnet'), 0o755);
  writeFileSync(join(dir, 'etc', 'cni-conflist.json'), '{"cniVersion":"1.0.0","name":"flatnet","plugins":[{"type":"vxlan"}]}\n');
  env = {
    SRC_BIN: join(dir, 'src'),
    DEST_BIN: join(dir, 'bin'),
    CONF_SRC: join(dir, 'etc', 'cni-conflist.json'),
    CONF_DEST: join(dir, 'conf', '10-flatnet.conflist'),
    SUBNET_FILE: join(dir, 'run', 'subnet.env'),
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('install-cni.sh', () => {
  it('installs the binary and links every plugin name to it', () => {
    run();
    const bin = join(dir, 'bin');
    expect(readFileSync(join(bin, 'flatnet')).equals(readFileSync('/bin/sleep'))).toBe(true);
    for (const p of ['bridge', 'host-local', 'loopback', 'portmap', 'vxlan']) {
      expect(readlinkSync(join(bin, p))).toBe('flatnet');
    }
    // no temp files left behind
    expect(readdirSync(bin).filter((f) => f.includes('flatnet-tmp'))).toEqual([]);
  });

  it('replaces the binary while a copy of it is executing (no "text file busy")', async () => {
    run();
    const installed = join(dir, 'bin', 'flatnet');
    const child = spawn(installed, ['30'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 100));
      const before = statSync(installed).ino;
      copyFileSync('/bin/true', join(dir, 'src', 'flatnet'));
      run();
      expect(statSync(installed).ino).not.toBe(before);
      expect(readFileSync(installed).equals(readFileSync('/bin/true'))).toBe(true);
      // the running copy is untouched
      expect(child.exitCode).toBeNull();
      expect(execFileSync(join(dir, 'bin', 'vxlan')).length).toBe(0); // now /bin/true via the link
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('writes the conflist only once the subnet file exists', () => {
    const out = execFileSync('/bin/sh', [script], { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toBe('');
    expect(existsSync(env.CONF_DEST!)).toBe(false);
    writeFileSync(env.SUBNET_FILE!, 'FLATNET_SUBNET=10.244.1.0/24\n');
    run();
    expect(readFileSync(env.CONF_DEST!, 'utf8')).toBe(readFileSync(env.CONF_SRC!, 'utf8'));
  });

  it('waits for the subnet file when asked to', async () => {
    const child = spawn('/bin/sh', [script], { env: { ...process.env, ...env, WAIT_SECONDS: '10' }, stdio: 'ignore' });
    const done = new Promise<number | null>((r) => child.on('exit', r));
    await new Promise((r) => setTimeout(r, 1200));
    expect(existsSync(env.CONF_DEST!)).toBe(false);
    writeFileSync(env.SUBNET_FILE!, 'FLATNET_SUBNET=10.244.1.0/24\n');
    expect(await done).toBe(0);
    expect(existsSync(env.CONF_DEST!)).toBe(true);
  });

  it('re-runs change nothing when the content is unchanged', () => {
    writeFileSync(env.SUBNET_FILE!, 'FLATNET_SUBNET=10.244.1.0/24\n');
    run();
    const snap = () =>
      Object.fromEntries(
        [join(dir, 'bin', 'flatnet'), env.CONF_DEST!].map((f) => [f, `${statSync(f).ino}:${statSync(f).mtimeMs}`]),
      );
    const first = snap();
    const links = readdirSync(join(dir, 'bin')).map((f) => `${f}:${statSync(join(dir, 'bin', f)).ino}`);
    const out = run();
    expect(snap()).toEqual(first);
    expect(readdirSync(join(dir, 'bin')).map((f) => `${f}:${statSync(join(dir, 'bin', f)).ino}`)).toEqual(links);
    expect(out).toBe('');
  });

  it('rewrites the conflist when the template changes', () => {
    writeFileSync(env.SUBNET_FILE!, 'x\n');
    run();
    writeFileSync(env.CONF_SRC!, '{"cniVersion":"1.0.0","name":"flatnet","plugins":[{"type":"vxlan","mtu":1400}]}\n');
    run();
    expect(readFileSync(env.CONF_DEST!, 'utf8')).toContain('1400');
  });
});
