import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CniError,
  type CniCommand,
  type CniResult,
  type Delegator,
  type InvocationContext,
  type NetConf,
} from '../../../../lib/cni/types.ts';
import { handlers } from '../../../../plugins/vxlan/main.ts';
import { delegateConf, parsePluginConfig, savedConfName } from '../../../../plugins/vxlan/plan.ts';
import { renderSubnetEnv } from '../../../../lib/overlay/subnet-file.ts';

const env = { networks: ['10.244.0.0/16'], subnets: ['10.244.1.0/24'], mtu: 1450, ipMasq: true };
const base: NetConf = { cniVersion: '1.0.0', name: 'flatnet', type: 'vxlan' };

describe('vxlan plugin planning', () => {
  it('delegates to bridge + host-local with the node podCIDR, overlay MTU and a cluster route', () => {
    const cfg = parsePluginConfig(base);
    expect(cfg.subnetFile).toBe('/run/flatnet/subnet.env');
    expect(delegateConf({ ...base, runtimeConfig: { portMappings: [] } }, cfg, env)).toEqual({
      cniVersion: '1.0.0',
      name: 'flatnet',
      type: 'bridge',
      bridge: 'cni0',
      mtu: 1450,
      hairpinMode: true,
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: false,
      macspoofchk: true,
      ipspoofchk: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
      runtimeConfig: { portMappings: [] },
    });
  });

  it('lets the delegate and ipam sections override defaults; masquerades in the bridge when the controller does not', () => {
    const cfg = parsePluginConfig({ ...base, delegate: { bridge: 'br9', hairpinMode: false, macspoofchk: false, ipspoofchk: false }, ipam: { dataDir: '/x' } as unknown as NetConf['ipam'] });
    const d = delegateConf(base, cfg, { ...env, ipMasq: false, subnets: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    expect(d).toMatchObject({ bridge: 'br9', hairpinMode: false, ipMasq: true, macspoofchk: false, ipspoofchk: false });
    expect(d.ipam).toMatchObject({ dataDir: '/x', ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]] });
  });

  it.each([
    [{ subnetFile: 'relative' }, /absolute path/],
    [{ delegate: [] }, /delegate/],
    [{ delegate: { type: 'vxlan' } }, /another plugin/],
    [{ delegate: { ipam: {} } }, /not allowed/],
  ])('rejects %j with code 7', (extra, re) => {
    let err: unknown;
    try {
      parsePluginConfig({ ...base, ...extra });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(7);
    expect((err as CniError).message).toMatch(re);
  });

  it('validates IDs used in file names', () => {
    expect(savedConfName('abc123', 'eth0')).toBe('abc123-eth0.json');
    expect(() => savedConfName('../etc', 'eth0')).toThrow(CniError);
    expect(() => savedConfName('abc', 'a/b')).toThrow(CniError);
  });
});

class RecordingDelegator implements Delegator {
  calls: { type: string; command: string; conf: NetConf }[] = [];
  failAdd = false;
  async exec(type: string, command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC', conf: NetConf): Promise<CniResult | undefined> {
    this.calls.push({ type, command, conf });
    if (command === 'ADD') {
      if (this.failAdd) throw new CniError(5, 'boom');
      return { cniVersion: conf.cniVersion, ips: [{ address: '10.244.1.2/24', gateway: '10.244.1.1' }] };
    }
    return undefined;
  }
}

describe('vxlan plugin handlers (recording delegator, temp dirs)', () => {
  let dir: string;
  let d: RecordingDelegator;
  const ctx = (command: CniCommand, extra: Partial<NetConf> = {}, containerId = 'c1'): InvocationContext => ({
    env: { command, containerId, netns: '/var/run/netns/x', ifname: 'eth0', args: {}, path: [] },
    conf: { ...base, subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'data'), ...extra },
    stdin: '',
    log: { debug() {}, info() {}, warn() {}, error() {} },
    delegator: d,
    validAttachments: [],
  });
  const writeEnv = (e = env): void => writeFileSync(join(dir, 'subnet.env'), renderSubnetEnv(e));

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ft-vxlan-'));
    d = new RecordingDelegator();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('ADD fails with code 11 while the subnet file is missing, and STATUS with 50', async () => {
    await expect(handlers.add(ctx('ADD'))).rejects.toMatchObject({ code: 11 });
    await expect(handlers.status!(ctx('STATUS'))).rejects.toMatchObject({ code: 50 });
    expect(d.calls).toEqual([]);
    writeEnv();
    await expect(handlers.status!(ctx('STATUS'))).resolves.toBeUndefined();
  });

  it('ADD saves the delegated config; DEL uses it even after the subnet file changed or vanished', async () => {
    writeEnv();
    const res = await handlers.add(ctx('ADD'));
    expect(res.ips?.[0]?.address).toBe('10.244.1.2/24');
    const saved = JSON.parse(readFileSync(join(dir, 'data', 'c1-eth0.json'), 'utf8')) as { conf: NetConf };
    expect(saved.conf.ipam).toMatchObject({ ranges: [[{ subnet: '10.244.1.0/24' }]] });
    writeEnv({ ...env, subnets: ['10.244.9.0/24'], mtu: 1400 });
    rmSync(join(dir, 'subnet.env'));
    await handlers.del(ctx('DEL'));
    const delCall = d.calls.find((c) => c.command === 'DEL')!;
    expect(delCall.conf.ipam).toMatchObject({ ranges: [[{ subnet: '10.244.1.0/24' }]] });
    expect(delCall.conf.mtu).toBe(1450);
    expect(readdirSync(join(dir, 'data'))).toEqual([]);
    // repeated DEL with nothing saved and no subnet file: success, nothing delegated
    await handlers.del(ctx('DEL'));
    expect(d.calls.filter((c) => c.command === 'DEL')).toHaveLength(1);
  });

  it('a failed delegate ADD is undone (delegate DEL) and leaves no saved file', async () => {
    writeEnv();
    d.failAdd = true;
    await expect(handlers.add(ctx('ADD'))).rejects.toMatchObject({ code: 5 });
    expect(d.calls.map((c) => c.command)).toEqual(['ADD', 'DEL']);
    expect(readdirSync(join(dir, 'data'))).toEqual([]);
  });

  it('GC drops saved configs of attachments that are gone and passes the valid list on', async () => {
    writeEnv();
    await handlers.add(ctx('ADD', {}, 'keep'));
    await handlers.add(ctx('ADD', {}, 'gone'));
    const c = ctx('GC');
    c.validAttachments = [{ containerID: 'keep', ifname: 'eth0' }];
    await handlers.gc!(c);
    expect(readdirSync(join(dir, 'data'))).toEqual(['keep-eth0.json']);
    const gcCall = d.calls.find((x) => x.command === 'GC')!;
    expect(gcCall.conf['cni.dev/valid-attachments']).toEqual([{ containerID: 'keep', ifname: 'eth0' }]);
  });

  it('CHECK delegates the saved config with prevResult and fails for unknown attachments', async () => {
    writeEnv();
    await handlers.add(ctx('ADD'));
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.244.1.2/24' }] };
    await handlers.check(ctx('CHECK', { prevResult: prev }));
    expect(d.calls.at(-1)).toMatchObject({ command: 'CHECK', conf: { prevResult: prev, type: 'bridge' } });
    await expect(handlers.check(ctx('CHECK', {}, 'other'))).rejects.toMatchObject({ code: 3 });
  });
});
