// The built SEA binary's process contract (dist/bin/*): dispatch on the invoked name, VERSION, error JSON on
// stdout, logs never on stdout, NODE_OPTIONS ignored; and a conflist written for the reference plugins run
// unchanged through the real libcni invoker (cnitool) with CNI_PATH=dist/bin, side by side with /usr/lib/cni.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

const REPO = resolve(import.meta.dirname, '../..');
const BIN = join(REPO, 'dist/bin');
const NAMES = ['bridge', 'host-local', 'loopback', 'portmap', 'vxlan'] as const;
const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

let tmp: string;
const prefix = runPrefix();

beforeAll(() => {
  if (!existsSync(join(BIN, 'flatnet'))) spawnSync('npm', ['run', 'build', '--', '--quiet'], { cwd: REPO, stdio: 'inherit' });
  tmp = mkdtempSync(join(tmpdir(), 'flatnet-skel-'));
}, 300_000);

afterAll(() => {
  removeNetnsWithPrefix(prefix);
  rmSync(tmp, { recursive: true, force: true });
});

function run(bin: string, env: Record<string, string>, input = '', args: string[] = []): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(bin, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, input, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('multi-call binary', () => {
  it.each(NAMES)('%s answers VERSION with exactly one JSON object on stdout', (name) => {
    const r = run(join(BIN, name), { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.3.1"}');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ cniVersion: '0.3.1', supportedVersions: SUPPORTED });
    expect(r.stderr).toBe('');
  });

  it('flatnet <plugin> is the explicit form; a bare flatnet fails cleanly', () => {
    const ok = run(join(BIN, 'flatnet'), { CNI_COMMAND: 'VERSION' }, '', ['host-local']);
    expect(JSON.parse(ok.stdout).supportedVersions).toEqual(SUPPORTED);
    const bad = run(join(BIN, 'flatnet'), { CNI_COMMAND: 'VERSION' });
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout).code).toBe(4);
  });

  it('ignores NODE_OPTIONS from the runtime environment (NODE_EXTRA_CA_CERTS pointing nowhere is harmless too)', () => {
    const r = run(
      join(BIN, 'host-local'),
      { CNI_COMMAND: 'VERSION', NODE_OPTIONS: '--require /nonexistent/evil.js --max-old-space-size=1', NODE_EXTRA_CA_CERTS: '/nonexistent.pem' },
      '{}',
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).supportedVersions).toEqual(SUPPORTED);
  });

  it.each(NAMES)('%s: errors are spec JSON on stdout with a non-zero exit', (name) => {
    const missing = run(join(BIN, name), {}, '{}');
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ code: 4, msg: expect.stringContaining('CNI_COMMAND') });
    const badJson = run(join(BIN, name), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' }, '{nope');
    expect(JSON.parse(badJson.stdout)).toMatchObject({ cniVersion: '1.1.0', code: 6 });
    const badVersion = run(join(BIN, name), { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0' }, JSON.stringify({ cniVersion: '0.1.0', name: 'n', type: name }));
    expect(JSON.parse(badVersion.stdout)).toMatchObject({ code: 1 });
  });

  it('logs go to stderr or FLATNET_LOG_FILE, never stdout', () => {
    const dd = join(tmp, 'logs');
    mkdirSync(dd, { recursive: true });
    const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'lognet', type: 'x', ipam: { type: 'host-local', dataDir: dd, subnet: '10.60.0.0/24' } });
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/x', CNI_IFNAME: 'eth0', FLATNET_LOG_LEVEL: 'debug' };
    const toStderr = run(join(BIN, 'host-local'), env, conf);
    expect(toStderr.code).toBe(0);
    expect(JSON.parse(toStderr.stdout).ips[0].address).toBe('10.60.0.2/24');
    const line = JSON.parse(toStderr.stderr.trim().split('\n')[0]!);
    expect(line).toMatchObject({ level: 20, plugin: 'host-local', msg: 'allocated' });

    const logFile = join(tmp, 'flatnet.log');
    const toFile = run(join(BIN, 'host-local'), { ...env, CNI_CONTAINERID: 'c2', FLATNET_LOG_FILE: logFile }, conf);
    expect(JSON.parse(toFile.stdout).ips[0].address).toBe('10.60.0.3/24');
    expect(toFile.stderr).toBe('');
    expect(readFileSync(logFile, 'utf8')).toContain('"msg":"allocated"');
    // errors are logged by default (level warn) to stderr, while stdout carries only the error JSON
    const err = run(join(BIN, 'host-local'), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c2', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' }, conf);
    expect(JSON.parse(err.stdout).code).toBe(101);
    expect(JSON.parse(err.stderr.trim()).level).toBe(50);
  });
});

// ---- a reference conflist through cnitool (libcni), ours vs the reference plugins ----

const CNITOOL = '/var/cache/flatnet/cnitool-v1.3.0/cnitool';

interface Side {
  host: TestNetns;
  ctr: TestNetns;
  confDir: string;
  dataDir: string;
}

function makeSide(tag: string, bridge: string): Side {
  const host = createNetns(`${prefix}h${tag}`);
  const ctr = createNetns(`${prefix}c${tag}`);
  const confDir = join(tmp, `conf-${tag}`);
  const dataDir = join(tmp, `data-${tag}`);
  mkdirSync(confDir, { recursive: true });
  // written for the reference plugins; nothing flatnet-specific
  const conflist = {
    cniVersion: '1.0.0',
    name: `${prefix}net`,
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  writeFileSync(join(confDir, '10-net.conflist'), JSON.stringify(conflist, null, 2));
  return { host, ctr, confDir, dataDir };
}

function cnitool(side: Side, binDir: string, verb: string, extraEnv: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=${side.host.path}`, '--', CNITOOL, verb, `${prefix}net`, side.ctr.path], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_PATH: binDir, NETCONFPATH: side.confDir, ...extraEnv },
    encoding: 'utf8',
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ctrState(side: Side): { addrs: string[]; routes: string[] } {
  const addrs = (JSON.parse(side.ctr.exec(['ip', '-j', '-4', 'addr', 'show', 'eth0'])) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>)
    .flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`))
    .sort();
  const routes = side.ctr
    .exec(['ip', '-4', 'route', 'show'])
    .trim()
    .split('\n')
    .map((l) => l.replace(/\s+proto \S+/, '').trim())
    .sort();
  return { addrs, routes };
}

describe.skipIf(!existsSync(CNITOOL))('a reference conflist through cnitool with CNI_PATH=dist/bin', () => {
  it('ADD/CHECK/DEL give the same container state as the reference plugins; host-local runs in-process', () => {
    const ref = makeSide('r', `${prefix}br`);
    const ours = makeSide('o', `${prefix}br`);
    const logFile = join(tmp, 'cnitool.log');

    const addRef = cnitool(ref, '/usr/lib/cni', 'add');
    expect(addRef.code, addRef.stderr).toBe(0);
    const addOurs = cnitool(ours, BIN, 'add', { FLATNET_LOG_LEVEL: 'debug', FLATNET_LOG_FILE: logFile });
    expect(addOurs.code, addOurs.stdout + addOurs.stderr).toBe(0);

    const rRes = JSON.parse(addRef.stdout) as { ips: Array<{ address: string; gateway: string }> };
    const oRes = JSON.parse(addOurs.stdout) as { ips: Array<{ address: string; gateway: string }> };
    expect(oRes.ips.map((i) => [i.address, i.gateway])).toEqual(rRes.ips.map((i) => [i.address, i.gateway]));
    expect(ctrState(ours)).toEqual(ctrState(ref));
    expect(ctrState(ours).addrs).toEqual(['10.88.0.2/24']);

    // traffic: the host side (bridge gateway) reaches the container, in our own namespaces only
    ours.host.exec(['ping', '-c', '1', '-W', '2', '10.88.0.2']);

    // bridge delegated to host-local without exec'ing a second process
    expect(readFileSync(logFile, 'utf8')).toContain('delegating in-process');

    expect(cnitool(ours, BIN, 'check').code).toBe(0);
    expect(cnitool(ref, '/usr/lib/cni', 'check').code).toBe(0);

    const delOurs = cnitool(ours, BIN, 'del');
    expect(delOurs.code, delOurs.stdout + delOurs.stderr).toBe(0);
    expect(cnitool(ref, '/usr/lib/cni', 'del').code).toBe(0);
    const files = (d: string): string[] => readdirSync(join(d, `${prefix}net`)).filter((f) => /^\d/.test(f));
    expect(files(ours.dataDir)).toEqual([]);
    expect(files(ref.dataDir)).toEqual([]);
    expect(execFileSync('ip', ['-n', ours.ctr.name, '-o', 'link', 'show'], { encoding: 'utf8' })).not.toContain('eth0');
  });
});
