// Side by side with the upstream reference plugins v1.9.1 (built from the Go module proxy by
// test/helpers/build-reference-plugins.sh; Debian's /usr/lib/cni 1.1.1 predates these features), one test per point
// where flatnet's behaviour was made to follow the reference:
//   - portmap: nftables-syntax conditionsV4/V6 with the nftables backend guard the jump into the hostport chains;
//   - bridge ipMasq and portmap without a configured backend pick nftables when iptables is not usable;
//   - duplicate hostPorts are accepted (the first mapping wins);
//   - bridge DEL keeps the address when the link cannot be deleted, and frees it once it can;
//   - bridge DEL removes the attachment's masquerade rules whichever backend made them.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CniResult, NetConf } from '../../lib/cni/types.ts';
import { createNetns, type TestNetns } from '../helpers/netns.ts';
import { CLIENT, NET, NODE_A, Scenario, portmapConf, type Container } from '../helpers/portmap-fixture.ts';

const OURS = resolve(import.meta.dirname, '../../dist/bin');
const REPO = resolve(import.meta.dirname, '../..');

/** The reference plugins' directory, built (once, cached) when Go and the module proxy are reachable. */
function referenceDir(): string | undefined {
  const r = spawnSync('bash', [join(REPO, 'test/helpers/build-reference-plugins.sh')], { encoding: 'utf8' });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  return dir && existsSync(join(dir, 'portmap')) ? dir : undefined;
}
const REF = referenceDir();

type Side = 'ref' | 'ours';
const dirOf = (side: Side): string => (side === 'ref' ? REF! : OURS);

/** A PATH with everything the node has except iptables and ip6tables (every variant): "iptables is not usable". */
function pathWithoutIptables(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fnopt-'));
  for (const d of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d)) {
      if (/^ip6?tables/.test(f) || existsSync(join(dir, f))) continue;
      symlinkSync(join(d, f), join(dir, f));
    }
  }
  return dir;
}

describe.skipIf(!REF)('side by side with the reference plugins v1.9.1: behaviour made to match', () => {
  const s = new Scenario();
  let noIptables = '';
  const run = (side: Side, plugin: string, command: 'ADD' | 'DEL' | 'CHECK', c: { id: string; ns?: { path: string } }, conf: unknown, env: Record<string, string> = {}) =>
    s.execPlugin(join(dirOf(side), plugin), command, c.id, c.ns?.path ?? '', conf, { CNI_PATH: dirOf(side), ...env });
  const tryRun = (...a: Parameters<typeof run>): { ok: boolean; out: string } => {
    try {
      return { ok: true, out: run(...a) };
    } catch (e) {
      return { ok: false, out: String((e as Error).message) };
    }
  };

  beforeAll(() => {
    s.setup();
    noIptables = pathWithoutIptables();
  });
  afterAll(() => {
    s.teardown();
    if (noIptables) rmSync(noIptables, { recursive: true, force: true });
  });

  describe('portmap', () => {
    let r1: Container, f1: Container;
    beforeAll(async () => {
      r1 = s.addContainer('pr1');
      f1 = s.addContainer('pf1');
      for (const c of [r1, f1]) await s.serve(c, 'tcp', 80, c === r1 ? 'r1' : 'f1');
      await s.serve(r1, 'tcp', 81, 'r1b');
      await s.serve(f1, 'tcp', 81, 'f1b');
    });
    const sides: [Side, () => Container, number][] = [
      ['ref', () => r1, 8080],
      ['ours', () => f1, 9080],
    ];

    it('nftables-syntax conditionsV4: a client the conditions exclude is not forwarded, one they include is', async () => {
      for (const [cond, reached] of [
        [['ip saddr', '192.168.77.99'], false],
        [['ip saddr', CLIENT], true],
      ] as const) {
        for (const [side, c, port] of sides) {
          const conf = portmapConf(c().prevResult, [{ hostPort: port, containerPort: 80, protocol: 'tcp' }], { backend: 'nftables', conditionsV4: cond });
          run(side, 'portmap', 'ADD', c(), conf);
        }
        for (const [side, c, port] of sides) {
          const got = s.request(s.client, 'tcp', NODE_A, port, 2);
          expect(got, `${side} with conditionsV4 ${cond.join(' ')}`).toEqual(reached ? { label: side === 'ref' ? 'r1' : 'f1', peer: CLIENT } : undefined);
          run(side, 'portmap', 'DEL', c(), portmapConf(undefined, [{ hostPort: port, containerPort: 80, protocol: 'tcp' }], { backend: 'nftables' }));
        }
      }
    });

    it('nftables-syntax conditions with the iptables backend (explicit, or the default) fail on both', () => {
      for (const [side, c, port] of sides) {
        for (const extra of [{ backend: 'iptables', conditionsV4: ['ip saddr', CLIENT] }, { conditionsV4: ['ip saddr', CLIENT] }]) {
          const r = tryRun(side, 'portmap', 'ADD', c(), portmapConf(c().prevResult, [{ hostPort: port, containerPort: 80, protocol: 'tcp' }], extra));
          expect(r.ok, `${side} ${JSON.stringify(extra)}`).toBe(false);
          expect(r.out).toMatch(/iptables backend was requested but configuration contains nftables-specific options/);
        }
      }
    });

    it('no backend configured and no iptables: both use nftables, and the port is forwarded', () => {
      for (const [side, c, port] of sides) {
        const maps = [{ hostPort: port, containerPort: 80, protocol: 'tcp' }];
        const before = s.natRules(4);
        run(side, 'portmap', 'ADD', c(), portmapConf(c().prevResult, maps), { PATH: noIptables });
        expect(s.natRules(4), `${side}: no iptables rules`).toBe(before);
        expect(s.nftRuleset()).toMatch(/dnat (ip )?to 10\.77\.0\.\d+:80/);
        expect(s.request(s.client, 'tcp', NODE_A, port, 2)).toEqual({ label: side === 'ref' ? 'r1' : 'f1', peer: CLIENT });
        run(side, 'portmap', 'DEL', c(), portmapConf(undefined, maps), { PATH: noIptables });
        expect(s.request(s.client, 'tcp', NODE_A, port, 1)).toBeUndefined();
      }
    });

    it('duplicate hostPorts are accepted; the first mapping is the one traffic takes', () => {
      for (const [side, c, port] of sides) {
        const maps = [
          { hostPort: port, containerPort: 80, protocol: 'tcp' },
          { hostPort: port, containerPort: 81, protocol: 'tcp' },
        ];
        const r = tryRun(side, 'portmap', 'ADD', c(), portmapConf(c().prevResult, maps));
        expect(r.ok, `${side}: ${r.out}`).toBe(true);
        expect(s.request(s.client, 'tcp', NODE_A, port, 2)).toEqual({ label: side === 'ref' ? 'r1' : 'f1', peer: CLIENT });
        run(side, 'portmap', 'DEL', c(), portmapConf(undefined, maps));
      }
    });
  });

  describe('bridge DEL', () => {
    const bridgeConf = (side: Side, dataDir: string, extra: Record<string, unknown> = {}): NetConf => ({
      cniVersion: '1.0.0',
      name: `${NET}${side}`,
      type: 'bridge',
      bridge: `${s.p}x${side === 'ref' ? 'r' : 'o'}`,
      isGateway: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: side === 'ref' ? '10.78.0.0/24' : '10.79.0.0/24' }]], dataDir },
      ...extra,
    });
    const stored = (dataDir: string, side: Side): string[] =>
      existsSync(join(dataDir, `${NET}${side}`)) ? readdirSync(join(dataDir, `${NET}${side}`)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
    const masqRules = (): string[] => s.nftRuleset().split('\n').filter((l) => /masquerade/.test(l) && /10\.7[89]\.0\./.test(l));

    it('keeps the address while the link cannot be deleted, frees it once it can', () => {
      for (const side of ['ref', 'ours'] as const) {
        const dataDir = mkdtempSync(join(tmpdir(), `${s.p}bd-`));
        const ns: TestNetns = createNetns(`${s.p}-bd${side}`);
        try {
          const c = { id: `${s.p}-bd-${side}`, ns };
          const conf = bridgeConf(side, dataDir);
          const res = JSON.parse(run(side, 'bridge', 'ADD', c, conf)) as CniResult;
          expect(stored(dataDir, side)).toEqual([res.ips![0]!.address.split('/')[0]]);
          // make "eth0" a loopback device, which the kernel refuses to delete (EOPNOTSUPP)
          const inNs = (...a: string[]) => execFileSync('ip', ['-n', ns.name, ...a]);
          inNs('link', 'set', 'eth0', 'name', 'eth9');
          inNs('link', 'set', 'lo', 'name', 'eth0');
          const failed = tryRun(side, 'bridge', 'DEL', c, { ...conf, prevResult: res });
          expect(failed.ok, `${side}: DEL must fail while eth0 cannot be deleted`).toBe(false);
          expect(stored(dataDir, side), `${side}: the address stays reserved`).toHaveLength(1);
          inNs('link', 'set', 'eth0', 'name', 'lo');
          inNs('link', 'set', 'eth9', 'name', 'eth0');
          run(side, 'bridge', 'DEL', c, { ...conf, prevResult: res });
          expect(stored(dataDir, side), `${side}: freed after the link is gone`).toEqual([]);
        } finally {
          ns.remove();
          rmSync(dataDir, { recursive: true, force: true });
        }
      }
    });

    it('removes masquerade rules made by the nftables backend when the config now says iptables', () => {
      for (const side of ['ref', 'ours'] as const) {
        const dataDir = mkdtempSync(join(tmpdir(), `${s.p}bm-`));
        const ns = createNetns(`${s.p}-bm${side}`);
        try {
          const c = { id: `${s.p}-bm-${side}`, ns };
          const res = JSON.parse(run(side, 'bridge', 'ADD', c, bridgeConf(side, dataDir, { ipMasq: true, ipMasqBackend: 'nftables' }))) as CniResult;
          expect(masqRules().length, `${side}: nftables masquerade after ADD`).toBeGreaterThan(0);
          run(side, 'bridge', 'DEL', c, { ...bridgeConf(side, dataDir, { ipMasq: true, ipMasqBackend: 'iptables' }), prevResult: res });
          expect(masqRules(), `${side}: nothing left after DEL`).toEqual([]);
        } finally {
          ns.remove();
          rmSync(dataDir, { recursive: true, force: true });
        }
      }
    });

    it('ipMasq without a backend and without iptables: both masquerade through nftables', () => {
      for (const side of ['ref', 'ours'] as const) {
        const dataDir = mkdtempSync(join(tmpdir(), `${s.p}bn-`));
        const ns = createNetns(`${s.p}-bn${side}`);
        try {
          const c = { id: `${s.p}-bn-${side}`, ns };
          const conf = bridgeConf(side, dataDir, { ipMasq: true });
          const before = s.natRules(4);
          const res = JSON.parse(run(side, 'bridge', 'ADD', c, conf, { PATH: noIptables })) as CniResult;
          expect(s.natRules(4), `${side}: no iptables rules`).toBe(before);
          expect(masqRules().length, `${side}: nftables masquerade`).toBeGreaterThan(0);
          run(side, 'bridge', 'DEL', c, { ...conf, prevResult: res }, { PATH: noIptables });
          expect(masqRules()).toEqual([]);
        } finally {
          ns.remove();
          rmSync(dataDir, { recursive: true, force: true });
        }
      }
    });
  });
});
