import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecDelegator, findInPath } from '../../../../lib/cni/delegate.ts';
import { CniError, type NetConf, type PluginHandlers } from '../../../../lib/cni/types.ts';
import { silentLogger } from '../../../../lib/log/logger.ts';

let dir: string;
let dirA: string;
let dirB: string;

const conf: NetConf = { cniVersion: '0.4.0', name: 'net', type: 'bridge', ipam: { type: 'fake-ipam' } };

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'flatnet-delegate-'));
  dirA = join(dir, 'a');
  dirB = join(dir, 'b');
  // a fake IPAM that records its env and stdin and answers in the 0.4.0 shape
  const script = (tag: string): string => `#!/bin/sh
env | grep '^CNI_' | sort > "${dir}/env-${tag}"
cat > "${dir}/stdin-${tag}"
case "$CNI_COMMAND" in
  ADD) echo '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.5/24","gateway":"10.0.0.1"}]}' ;;
  DEL) exit 0 ;;
  CHECK) echo '{"cniVersion":"0.4.0","code":3,"msg":"no such container","details":"c1"}'; exit 1 ;;
  *) echo 'garbage'; exit 2 ;;
esac
`;
  for (const [d, tag] of [
    [dirA, 'a'],
    [dirB, 'b'],
  ] as const) {
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'fake-ipam'), script(tag));
    chmodSync(join(d, 'fake-ipam'), 0o755);
  }
  writeFileSync(join(dirA, 'not-exec'), '#!/bin/sh\n');
});


afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const env = (): Record<string, string> => ({
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c1',
  CNI_NETNS: '/var/run/netns/x',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p',
  CNI_PATH: `${dirA}:${dirB}`,
  PATH: process.env.PATH ?? '/usr/bin:/bin',
});

describe('findInPath', () => {
  it('takes the first match and skips non-executables', () => {
    expect(findInPath('fake-ipam', [dirB, dirA])).toBe(join(dirB, 'fake-ipam'));
    expect(() => findInPath('not-exec', [dirA])).toThrow(CniError);
    expect(() => findInPath('../a/fake-ipam', [dirB])).toThrow(/invalid plugin type/);
    expect(() => findInPath('nope', [dirA, dirB])).toThrow(/failed to find plugin "nope"/);
  });
});

describe('ExecDelegator', () => {
  it('ADD: same env with CNI_COMMAND replaced, conf on stdin, result upgraded to 1.x', async () => {
    const d = new ExecDelegator({ env: { ...env(), CNI_COMMAND: 'CHECK' }, log: silentLogger });
    const r = await d.exec('fake-ipam', 'ADD', conf);
    expect(r?.ips).toEqual([{ address: '10.0.0.5/24', gateway: '10.0.0.1' }]);
    const seen = readFileSync(join(dir, 'env-a'), 'utf8');
    expect(seen).toContain('CNI_COMMAND=ADD\n');
    expect(seen).toContain('CNI_CONTAINERID=c1\n');
    expect(seen).toContain('CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p\n');
    expect(JSON.parse(readFileSync(join(dir, 'stdin-a'), 'utf8'))).toEqual(conf);
  });
  it('DEL returns undefined', async () => {
    const d = new ExecDelegator({ env: env(), log: silentLogger });
    expect(await d.exec('fake-ipam', 'DEL', conf)).toBeUndefined();
    expect(readFileSync(join(dir, 'env-a'), 'utf8')).toContain('CNI_COMMAND=DEL\n');
  });
  it("propagates the delegate's error code, msg and details", async () => {
    const d = new ExecDelegator({ env: env(), log: silentLogger });
    const e = await d.exec('fake-ipam', 'CHECK', conf).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CniError);
    expect(e).toMatchObject({ code: 3, message: 'no such container', details: 'c1' });
  });
  it('a delegate that prints no error JSON is an I/O error', async () => {
    const d = new ExecDelegator({ env: env(), log: silentLogger });
    const e = (await d.exec('fake-ipam', 'GC', conf).catch((x: unknown) => x)) as CniError;
    expect(e.code).toBe(5);
    expect(e.message).toContain('exited 2');
  });
  it('runs registered handlers in-process when CNI_PATH resolves to this executable', async () => {
    // pretend this process's executable is a link target in CNI_PATH
    const self = join(dirA, 'fake-ipam');
    const linkDir = join(dir, 'links');
    mkdirSync(linkDir, { recursive: true });
    symlinkSync(self, join(linkDir, 'host-local'));
    let calls = 0;
    const handlers: PluginHandlers = {
      add: async (ctx) => {
        calls++;
        expect(ctx.env.command).toBe('ADD');
        expect(ctx.env.args.K8S_POD_NAME).toBe('p');
        return { cniVersion: ctx.conf.cniVersion, ips: [{ address: '10.9.9.9/24', gateway: '10.9.9.1' }] };
      },
      del: async () => {
        calls++;
      },
      check: async () => {
        throw new CniError(3, 'gone');
      },
    };
    const d = new ExecDelegator({
      env: { ...env(), CNI_PATH: linkDir },
      log: silentLogger,
      execPath: self,
      inProcess: { 'host-local': async () => handlers },
    });
    const r = await d.exec('host-local', 'ADD', { ...conf, type: 'bridge' });
    expect(r?.ips).toEqual([{ address: '10.9.9.9/24', gateway: '10.9.9.1' }]);
    await d.exec('host-local', 'DEL', conf);
    expect(calls).toBe(2);
    await expect(d.exec('host-local', 'CHECK', conf)).rejects.toMatchObject({ code: 3, message: 'gone' });
    // with another execPath, the binary really runs (the fake script, which answers 10.0.0.5)
    const other = new ExecDelegator({ env: { ...env(), CNI_PATH: linkDir }, log: silentLogger, execPath: '/bin/sh', inProcess: { 'host-local': async () => handlers } });
    expect((await other.exec('host-local', 'ADD', conf))?.ips?.[0]?.address).toBe('10.0.0.5/24');
  });
});
