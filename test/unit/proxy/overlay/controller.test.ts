import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CommandError, type RunOptions, type RunResult, type Runner } from '../../../../lib/exec/runner.ts';
import { ANNOTATIONS, parseOverlayConfig } from '../../../../proxy/overlay/config.ts';
import { OverlayController } from '../../../../proxy/overlay/controller.ts';
import { MemoryNodeSource } from '../../../../proxy/overlay/node.ts';
import { vtepMac } from '../../../../proxy/overlay/plan.ts';

/** Answers the controller's reads with a fixed kernel (no flatnet.1 yet) and records every write. */
class FakeRunner implements Runner {
  writes: { argv: string; input: string }[] = [];
  failIpBatch = false;
  eth0 = '10.0.0.1';
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const cmd = argv.join(' ');
    const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });
    const addrs = JSON.stringify([{ ifname: 'eth0', mtu: 1500, addr_info: [{ family: 'inet', local: this.eth0, prefixlen: 24, scope: 'global' }] }]);
    if (cmd === 'ip -d -j -batch -') {
      // link show, addr show, neigh show, route show: one JSON line each
      return ok([JSON.stringify([{ ifname: 'eth0', mtu: 1500 }]), addrs, '[]', '[]'].join('\n') + '\n');
    }
    if (cmd.startsWith('bridge -j fdb show')) return { code: 1, stdout: '', stderr: 'Cannot find device "flatnet.1"' };
    if (cmd.startsWith('nft list table')) return { code: 1, stdout: '', stderr: 'No such file or directory' };
    this.writes.push({ argv: cmd, input: opts.input ?? '' });
    if (this.failIpBatch && cmd.startsWith('ip -force -batch')) throw new CommandError([...argv], 1, 'RTNETLINK answers: Operation not permitted');
    return ok();
  }
}

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const nodes = [
  { metadata: { name: 'n1' }, spec: { podCIDR: '10.244.1.0/24' }, status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }] } },
  {
    metadata: {
      name: 'n2',
      annotations: {
        [ANNOTATIONS.backendType]: 'vxlan',
        [ANNOTATIONS.vtepMac]: vtepMac('n2', 1),
        [ANNOTATIONS.publicIp]: '10.0.0.2',
      },
    },
    spec: { podCIDR: '10.244.2.0/24' },
    status: { addresses: [{ type: 'InternalIP', address: '10.0.0.2' }] },
  },
];

describe('OverlayController (fake runner, in-memory nodes)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ft-ovl-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const make = (runner: FakeRunner, source = new MemoryNodeSource(nodes)) =>
    new OverlayController({
      config: parseOverlayConfig({ subnetFile: join(dir, 'subnet.env'), clusterCIDRs: ['10.244.0.0/16'] }),
      nodeName: 'n1',
      source,
      runner,
      log: quiet,
    });

  it('creates the device and peers, writes the subnet file, applies masquerade and publishes the VTEP', async () => {
    const runner = new FakeRunner();
    const source = new MemoryNodeSource(nodes);
    const c = make(runner, source);
    const r = await c.reconcile();
    expect(r.planned).toBe(true);
    const ip = runner.writes.filter((w) => w.argv === 'ip -force -batch -').map((w) => w.input);
    expect(ip[0]).toContain(`link add flatnet.1 address ${vtepMac('n1', 1)} type vxlan id 1 dstport 8472 local 10.0.0.1 nolearning`);
    expect(ip[1]).toBe('route replace 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink proto 77\n');
    expect(runner.writes.find((w) => w.argv.startsWith('bridge'))?.input).toBe(
      `fdb append ${vtepMac('n2', 1)} dev flatnet.1 dst 10.0.0.2 self permanent\n`,
    );
    expect(runner.writes.find((w) => w.argv === 'nft -f -')?.input).toContain('table inet flatnet_overlay');
    expect(readFileSync(join(dir, 'subnet.env'), 'utf8')).toContain('FLATNET_SUBNET=10.244.1.0/24');
    expect(source.get('n1')!.annotations[ANNOTATIONS.vtepMac]).toBe(vtepMac('n1', 1));
  });

  it('plans nothing while its own Node or its IP is unknown', async () => {
    const runner = new FakeRunner();
    expect((await make(runner, new MemoryNodeSource([nodes[1]!])).reconcile()).planned).toBe(false);
    runner.eth0 = '10.9.9.9';
    expect((await make(runner).reconcile()).planned).toBe(false);
    expect(runner.writes).toEqual([]);
  });

  it('still writes the subnet file and publishes when the ip batch fails, then reports the error', async () => {
    const runner = new FakeRunner();
    runner.failIpBatch = true;
    const source = new MemoryNodeSource(nodes);
    await expect(make(runner, source).reconcile()).rejects.toBeInstanceOf(CommandError);
    expect(readFileSync(join(dir, 'subnet.env'), 'utf8')).toContain('FLATNET_MTU=1450');
    expect(source.get('n1')!.annotations[ANNOTATIONS.backendType]).toBe('vxlan');
  });
});
