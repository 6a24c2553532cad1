import { describe, expect, it } from 'vitest';
import { runPlugin, type PluginIO } from '../../../../lib/cni/skel.ts';
import { CniError, SUPPORTED_VERSIONS, type CniResult, type InvocationContext, type PluginHandlers } from '../../../../lib/cni/types.ts';
import { silentLogger } from '../../../../lib/log/logger.ts';

const RESULT: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:00:00:02', mtu: 1450, sandbox: '/var/run/netns/x', socketPath: '/s', pciID: '0000:00:01.0' }],
  ips: [
    { address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 },
    { address: 'fd00::2/64', gateway: 'fd00::1', interface: 0 },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 }],
  dns: { nameservers: ['10.96.0.10'] },
};

interface Recorded {
  verb?: string;
  ctx?: InvocationContext;
}

function recorder(over: Partial<PluginHandlers> = {}): { handlers: PluginHandlers; rec: Recorded } {
  const rec: Recorded = {};
  const handlers: PluginHandlers = {
    add: async (ctx) => {
      rec.verb = 'add';
      rec.ctx = ctx;
      return structuredClone(RESULT);
    },
    del: async (ctx) => {
      rec.verb = 'del';
      rec.ctx = ctx;
    },
    check: async (ctx) => {
      rec.verb = 'check';
      rec.ctx = ctx;
    },
    status: async (ctx) => {
      rec.verb = 'status';
      rec.ctx = ctx;
    },
    gc: async (ctx) => {
      rec.verb = 'gc';
      rec.ctx = ctx;
    },
    ...over,
  };
  return { handlers, rec };
}

const BASE_ENV = { CNI_CONTAINERID: 'abc123', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };

async function run(
  handlers: PluginHandlers,
  env: Record<string, string | undefined>,
  stdin: string | object,
): Promise<{ code: number; out: string; json: Record<string, unknown> | undefined }> {
  let out = '';
  const io: PluginIO = {
    env,
    readStdin: () => (typeof stdin === 'string' ? stdin : JSON.stringify(stdin)),
    write: (s) => {
      out += s;
    },
    log: silentLogger,
    delegator: { exec: async () => undefined },
  };
  const code = await runPlugin(handlers, io);
  let json: Record<string, unknown> | undefined;
  try {
    json = out ? (JSON.parse(out) as Record<string, unknown>) : undefined;
  } catch {
    json = undefined;
  }
  return { code, out, json };
}

const conf = (v: string, extra: object = {}): object => ({ cniVersion: v, name: 'net1', type: 'test', ...extra });

describe('VERSION', () => {
  it('answers with the supported versions, echoing the asked version', async () => {
    const { handlers, rec } = recorder();
    const r = await run(handlers, { CNI_COMMAND: 'VERSION' }, { cniVersion: '0.4.0' });
    expect(r.code).toBe(0);
    expect(r.json).toEqual({ cniVersion: '0.4.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    expect(rec.verb).toBeUndefined();
  });
  it('works without stdin and with an unknown asked version', async () => {
    const { handlers } = recorder();
    expect((await run(handlers, { CNI_COMMAND: 'VERSION' }, '')).json).toEqual({ cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    expect((await run(handlers, { CNI_COMMAND: 'VERSION' }, { cniVersion: '9.9.9' })).json?.cniVersion).toBe('1.1.0');
  });
});

describe('ADD result conversion per version', () => {
  it.each(['0.3.0', '0.3.1', '0.4.0'])('%s: per-ip version, interface kept, 1.1-only fields dropped', async (v) => {
    const { handlers } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf(v));
    expect(r.code).toBe(0);
    expect(r.json).toEqual({
      cniVersion: v,
      interfaces: [{ name: 'eth0', mac: '0a:58:0a:00:00:02', sandbox: '/var/run/netns/x' }],
      ips: [
        { version: '4', address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 },
        { version: '6', address: 'fd00::2/64', gateway: 'fd00::1', interface: 0 },
      ],
      routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }],
      dns: { nameservers: ['10.96.0.10'] },
    });
  });
  it('1.0.0: no per-ip version, 1.1-only fields dropped', async () => {
    const { handlers } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf('1.0.0'));
    expect(r.json?.cniVersion).toBe('1.0.0');
    expect(r.json?.interfaces).toEqual([{ name: 'eth0', mac: '0a:58:0a:00:00:02', sandbox: '/var/run/netns/x' }]);
    expect(r.json?.ips).toEqual(RESULT.ips);
    expect(r.json?.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.0.0.1' }]);
  });
  it('1.1.0: everything kept', async () => {
    const { handlers } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf('1.1.0'));
    expect(r.json).toEqual(RESULT);
  });
});

describe('prevResult is upgraded to 1.x for the handlers', () => {
  it.each(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])('%s', async (v) => {
    const { handlers, rec } = recorder();
    const prev = {
      cniVersion: v,
      interfaces: [{ name: 'eth0' }],
      ips: [{ version: '4', address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }],
    };
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf(v, { prevResult: prev }));
    expect(r.code).toBe(0);
    expect(rec.ctx?.conf.prevResult?.ips).toEqual([{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }]);
    expect(rec.ctx?.conf.prevResult?.interfaces).toEqual([{ name: 'eth0' }]);
  });
  it('rejects a pre-0.3 prevResult', async () => {
    const { handlers } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf('0.4.0', { prevResult: { ip4: { ip: '10.0.0.2/24' } } }));
    expect(r.code).toBe(1);
    expect(r.json?.code).toBe(1);
  });
});

describe('verbs dispatch with the right context', () => {
  it('ADD passes env, CNI_ARGS, args and runtimeConfig', async () => {
    const { handlers, rec } = recorder();
    const extra = { args: { cni: { ips: ['10.0.0.9'] } }, runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 8080 }] } };
    const r = await run(
      handlers,
      { ...BASE_ENV, CNI_COMMAND: 'ADD', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.0.0.9', CNI_PATH: '/a:/b' },
      conf('1.0.0', extra),
    );
    expect(r.code).toBe(0);
    expect(rec.verb).toBe('add');
    expect(rec.ctx?.env).toEqual({
      command: 'ADD',
      containerId: 'abc123',
      netns: '/var/run/netns/x',
      ifname: 'eth0',
      args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web-0', IP: '10.0.0.9' },
      path: ['/a', '/b'],
    });
    expect(rec.ctx?.conf.args).toEqual(extra.args);
    expect(rec.ctx?.conf.runtimeConfig).toEqual(extra.runtimeConfig);
    expect(rec.ctx?.validAttachments).toEqual([]);
  });
  it('DEL works without CNI_NETNS and prints nothing', async () => {
    const { handlers, rec } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_NETNS: undefined, CNI_COMMAND: 'DEL' }, conf('0.3.1'));
    expect(r).toMatchObject({ code: 0, out: '' });
    expect(rec.verb).toBe('del');
    expect(rec.ctx?.env.netns).toBe('');
  });
  it.each(['0.4.0', '1.0.0', '1.1.0'])('CHECK at %s', async (v) => {
    const { handlers, rec } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'CHECK' }, conf(v, { prevResult: { cniVersion: v, ips: [] } }));
    expect(r).toMatchObject({ code: 0, out: '' });
    expect(rec.verb).toBe('check');
  });
  it.each(['0.3.0', '0.3.1'])('CHECK at %s is incompatible (code 1)', async (v) => {
    const { handlers, rec } = recorder();
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'CHECK' }, conf(v));
    expect(r.code).toBe(1);
    expect(r.json?.code).toBe(1);
    expect(rec.verb).toBeUndefined();
  });
  it('STATUS needs only CNI_COMMAND; 1.1.0 only', async () => {
    const { handlers, rec } = recorder();
    expect(await run(handlers, { CNI_COMMAND: 'STATUS' }, conf('1.1.0'))).toMatchObject({ code: 0, out: '' });
    expect(rec.verb).toBe('status');
    expect((await run(handlers, { CNI_COMMAND: 'STATUS' }, conf('1.0.0'))).json?.code).toBe(1);
  });
  it('STATUS errors 50/51 are propagated', async () => {
    const { handlers } = recorder({
      status: async () => {
        throw new CniError(50, 'not ready: no subnet file');
      },
    });
    const r = await run(handlers, { CNI_COMMAND: 'STATUS' }, conf('1.1.0'));
    expect(r.code).toBe(1);
    expect(r.json).toEqual({ cniVersion: '1.1.0', code: 50, msg: 'not ready: no subnet file' });
  });
  it('STATUS and GC default to success when not implemented', async () => {
    const { handlers } = recorder({ status: undefined, gc: undefined });
    expect((await run(handlers, { CNI_COMMAND: 'STATUS' }, conf('1.1.0'))).code).toBe(0);
    expect((await run(handlers, { CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf('1.1.0'))).code).toBe(0);
  });
  it('GC gets cni.dev/valid-attachments', async () => {
    const { handlers, rec } = recorder();
    const att = [{ containerID: 'a', ifname: 'eth0' }];
    const r = await run(handlers, { CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf('1.1.0', { 'cni.dev/valid-attachments': att, 'cni.dev/attachments': [] }));
    expect(r.code).toBe(0);
    expect(rec.ctx?.validAttachments).toEqual(att);
  });
  it('GC falls back to cni.dev/attachments', async () => {
    const { handlers, rec } = recorder();
    const att = [{ containerID: 'b', ifname: 'net1' }];
    await run(handlers, { CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf('1.1.0', { 'cni.dev/attachments': att }));
    expect(rec.ctx?.validAttachments).toEqual(att);
  });
  it('GC requires CNI_PATH and 1.1.0', async () => {
    const { handlers } = recorder();
    const r = await run(handlers, { CNI_COMMAND: 'GC' }, conf('1.1.0'));
    expect(r.json).toMatchObject({ code: 4, details: 'CNI_PATH' });
    expect((await run(handlers, { CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf('0.4.0'))).json?.code).toBe(1);
  });
});

describe('errors', () => {
  const { handlers } = recorder();
  it.each([
    ['missing CNI_COMMAND', {}, 'CNI_COMMAND'],
    ['unknown CNI_COMMAND', { CNI_COMMAND: 'FROB' }, 'CNI_COMMAND'],
    ['ADD without CNI_CONTAINERID', { ...BASE_ENV, CNI_CONTAINERID: undefined, CNI_COMMAND: 'ADD' }, 'CNI_CONTAINERID'],
    ['ADD without CNI_NETNS', { ...BASE_ENV, CNI_NETNS: undefined, CNI_COMMAND: 'ADD' }, 'CNI_NETNS'],
    ['ADD without CNI_IFNAME', { ...BASE_ENV, CNI_IFNAME: undefined, CNI_COMMAND: 'ADD' }, 'CNI_IFNAME'],
    ['CHECK without CNI_NETNS', { ...BASE_ENV, CNI_NETNS: undefined, CNI_COMMAND: 'CHECK' }, 'CNI_NETNS'],
    ['DEL without CNI_IFNAME', { ...BASE_ENV, CNI_IFNAME: undefined, CNI_COMMAND: 'DEL' }, 'CNI_IFNAME'],
    ['DEL without CNI_CONTAINERID', { ...BASE_ENV, CNI_CONTAINERID: undefined, CNI_COMMAND: 'DEL' }, 'CNI_CONTAINERID'],
    ['bad container id', { ...BASE_ENV, CNI_CONTAINERID: '../x', CNI_COMMAND: 'ADD' }, 'CNI_CONTAINERID'],
    ['too long ifname', { ...BASE_ENV, CNI_IFNAME: 'a234567890123456', CNI_COMMAND: 'ADD' }, 'CNI_IFNAME'],
    ['ifname with slash', { ...BASE_ENV, CNI_IFNAME: 'a/b', CNI_COMMAND: 'ADD' }, 'CNI_IFNAME'],
    ['bad CNI_ARGS pair', { ...BASE_ENV, CNI_ARGS: 'A=1;oops', CNI_COMMAND: 'ADD' }, 'CNI_ARGS'],
  ])('%s -> code 4 naming the variable', async (_n, env, name) => {
    const r = await run(handlers, env, conf('1.0.0'));
    expect(r.code).toBe(1);
    expect(r.json?.code).toBe(4);
    expect(String(r.json?.msg)).toContain(name);
  });

  it.each([
    ['invalid JSON', '{"cniVersion":', 6],
    ['JSON array', '[]', 6],
    ['missing name', { cniVersion: '1.0.0', type: 't' }, 7],
    ['bad name', { cniVersion: '1.0.0', type: 't', name: 'a/b' }, 7],
    ['missing type', { cniVersion: '1.0.0', name: 'n' }, 7],
    ['unknown cniVersion', { cniVersion: '0.2.0', name: 'n', type: 't' }, 1],
    ['missing cniVersion', { name: 'n', type: 't' }, 1],
    ['future cniVersion', { cniVersion: '2.0.0', name: 'n', type: 't' }, 1],
  ])('%s -> code %i', async (_n, stdin, code) => {
    const r = await run(handlers, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, stdin);
    expect(r.code).toBe(1);
    expect(r.json?.code).toBe(code);
    expect(typeof r.json?.msg).toBe('string');
  });

  it('handler CniError: code, msg, details and the config version', async () => {
    const { handlers: h } = recorder({
      add: async () => {
        throw new CniError(11, 'try again later', 'subnet file missing');
      },
    });
    const r = await run(h, { ...BASE_ENV, CNI_COMMAND: 'ADD' }, conf('0.3.1'));
    expect(r.code).toBe(1);
    expect(r.json).toEqual({ cniVersion: '0.3.1', code: 11, msg: 'try again later', details: 'subnet file missing' });
  });

  it('other exceptions become code 999', async () => {
    const { handlers: h } = recorder({
      del: async () => {
        throw new Error('boom');
      },
    });
    const r = await run(h, { ...BASE_ENV, CNI_COMMAND: 'DEL' }, conf('1.0.0'));
    expect(r.json).toEqual({ cniVersion: '1.0.0', code: 999, msg: 'boom' });
  });
});
