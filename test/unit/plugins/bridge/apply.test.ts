// bridge apply with a scripted fake Runner and Delegator: command order, rollback on failure, DEL without a netns.
import { describe, expect, it } from 'vitest';
import { CniError, type CniResult, type Delegator, type InvocationContext, type NetConf } from '../../../../lib/cni/types.ts';
import { CommandError, type RunOptions, type RunResult, type Runner } from '../../../../lib/exec/runner.ts';
import { bridgeAdd, bridgeDel, type BridgeDeps } from '../../../../plugins/bridge/apply.ts';

const NETNS = '/proc/self/ns/net';

class FakeRunner implements Runner {
  readonly calls: { argv: string[]; netns?: string; input?: string }[] = [];
  private bridgeExists = false;
  failOn?: (argv: string[], opts: RunOptions) => RunResult | undefined;
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const a = [...argv];
    this.calls.push({ argv: a, netns: opts.netns, input: opts.input });
    const forced = this.failOn?.(a, opts);
    if (forced) {
      if (forced.code !== 0 && !opts.allowFail) throw new CommandError(a, forced.code, forced.stderr);
      return forced;
    }
    const links = (): string => {
      const l = [{ ifindex: 1, ifname: 'lo', mtu: 65536, flags: ['UP'], addr_info: [] }];
      if (this.bridgeExists) l.push({ ifindex: 2, ifname: 'br0', mtu: 1500, flags: ['UP'], addr_info: [], ...{ address: '02:00:00:00:00:0b', linkinfo: { info_kind: 'bridge' } } });
      return JSON.stringify(l);
    };
    if (a.join(' ') === 'ip -j -d addr show') return { code: 0, stdout: links(), stderr: '' };
    if (a[0] === 'sh' && a[2]?.startsWith('ip -j -d addr show')) return { code: 0, stdout: links() + '\n@@flatnet@@\n', stderr: '' };
    if (a[0] === 'ip' && a[1] === 'link' && a[2] === 'add' && a[3] === 'br0') this.bridgeExists = true;
    if (a.join(' ') === 'ip -j link show master br0') return { code: 0, stdout: '[]', stderr: '' };
    if (a[0]?.endsWith('tables-save')) return { code: 0, stdout: '*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n', stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  }
  lines(): string[] {
    return this.calls.map((c) => (c.netns ? `[ns] ` : '') + c.argv.join(' ').split('\n')[0]!.slice(0, 60));
  }
  /** the script of the n-th `sh -c` call */
  script(n: number): string {
    return this.calls.filter((c) => c.argv[0] === 'sh')[n]!.argv[2]!;
  }
}

function ctx(conf: Partial<NetConf>, netns = NETNS): { ctx: InvocationContext; ipam: string[] } {
  const ipam: string[] = [];
  const delegator: Delegator = {
    async exec(type, command): Promise<CniResult | undefined> {
      ipam.push(`${type} ${command}`);
      return command === 'ADD' ? { cniVersion: '1.0.0', ips: [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }] } : undefined;
    },
  };
  const full: NetConf = { cniVersion: '1.0.0', name: 'net', type: 'bridge', bridge: 'br0', isGateway: true, ipMasq: true, ipam: { type: 'host-local' }, ...conf };
  const log = { debug() {}, info() {}, warn() {}, error() {} };
  return {
    ipam,
    ctx: {
      env: { command: 'ADD', containerId: 'c1', netns, ifname: 'eth0', args: {}, path: [] },
      conf: full,
      stdin: JSON.stringify(full),
      log,
      delegator,
      validAttachments: [],
    },
  };
}

const deps = (runner: Runner, sysctls: string[] = []): BridgeDeps => ({
  runner,
  hostPid: 4242,
  randomBytes: () => Uint8Array.from([2, 0, 0, 0, 0, 1]),
  writeSysctl: (k, v) => {
    sysctls.push(`${k}=${v}`);
  },
});

describe('bridgeAdd', () => {
  it('runs IPAM, creates the bridge, configures the container then the host, then masquerade', async () => {
    const r = new FakeRunner();
    const sysctls: string[] = [];
    const { ctx: c, ipam } = ctx({});
    const res = await bridgeAdd(c, deps(r, sysctls));
    expect(ipam).toEqual(['host-local ADD']);
    // two process trees for the attachment (+ creating the bridge, once): read+container, then the host program
    expect(r.lines()).toEqual([
      'sh -c ip -j -d addr show || exit 90',
      'ip link add br0 address 02:00:00:00:00:01 type bridge',
      'ip -j -d addr show',
      // no ipMasqBackend configured: the reference's default (iptables unless only nftables is usable) is probed
      'iptables -t filter -S INPUT',
      "sh -c 'ip' '-batch' '-' <<'__FLATNET_EOF_0__' || exit 100",
    ]);
    expect(r.script(0)).toContain(`exec nsenter --net='${NETNS}' sh -c`);
    expect(r.script(0)).toContain('netns 4242');
    expect(r.calls[0]!.input).toContain('address add 10.1.0.5/24 dev eth0');
    expect(r.script(1)).toContain('address replace 10.1.0.1/24 dev br0');
    expect(r.script(1)).toContain("'iptables-restore' '--noflush' '-w' <<'__FLATNET_EOF_1__' || exit 101");
    expect(sysctls).toContain('net/ipv4/ip_forward=1');
    expect(res.ips).toEqual([{ address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 2 }]);
  });

  it('rolls everything back when the host program fails: container link, bridge it created, IPAM', async () => {
    const r = new FakeRunner();
    // a single host step (no masquerade) runs without a shell
    r.failOn = (a) => (a.join(' ') === 'ip -batch -' ? { code: 2, stdout: '', stderr: 'RTNETLINK answers: boom' } : undefined);
    const { ctx: c, ipam } = ctx({ ipMasq: false });
    const err = await bridgeAdd(c, deps(r)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(104);
    expect((err as CniError).message).toMatch(/bridge br0 port and addresses.*boom/);
    expect(ipam).toEqual(['host-local ADD', 'host-local DEL']);
    const l = r.lines();
    // reverse order: the veth first, so the bridge is portless when it is checked
    expect(l.slice(4)).toEqual(['[ns] ip link del eth0', 'ip -j link show master br0', 'ip link del br0']);
  });

  it('a failing masquerade step is named, and whatever it may have left is looked up and removed', async () => {
    const r = new FakeRunner();
    r.failOn = (a) => (a[0] === 'sh' && a[2]?.startsWith(`'ip' '-batch'`) ? { code: 101, stdout: '', stderr: 'iptables-restore: line 3 failed' } : undefined);
    const { ctx: c } = ctx({});
    await expect(bridgeAdd(c, deps(r))).rejects.toThrow(/IP masquerade \(iptables\).*line 3 failed/);
    const l = r.lines();
    expect(l).toContain('iptables-save -t nat');
    expect(l).not.toContain('ip6tables-save -t nat'); // IPv4-only attachment
  });

  it('CNI_IFNAME exists (exit 17): error 101, the existing link is left alone, IPAM released', async () => {
    const r = new FakeRunner();
    r.failOn = (a) => (a[0] === 'sh' && a[2]?.startsWith('ip -j -d addr show') ? { code: 17, stdout: '', stderr: 'container veth name provided (eth0) already exists' } : undefined);
    const { ctx: c, ipam } = ctx({});
    const err = await bridgeAdd(c, deps(r)).catch((e: unknown) => e);
    expect((err as CniError).code).toBe(101);
    expect(ipam).toEqual(['host-local ADD', 'host-local DEL']);
    expect(r.lines().some((x) => x.includes('link del eth0'))).toBe(false);
  });

  it('rejects a CNI_NETNS that is not a netns before calling IPAM', async () => {
    const r = new FakeRunner();
    const { ctx: c, ipam } = ctx({}, '/etc/hostname');
    const err = await bridgeAdd(c, deps(r)).catch((e: unknown) => e);
    expect((err as CniError).code).toBe(4);
    expect(ipam).toEqual([]);
    expect(r.calls).toEqual([]);
  });
});

describe('bridgeDel', () => {
  it('without a netns: no link deletion, masquerade of both backends looked up by hash, IPAM DEL', async () => {
    const r = new FakeRunner();
    const { ctx: c, ipam } = ctx({}, '');
    await bridgeDel({ ...c, env: { ...c.env, command: 'DEL' } }, deps(r));
    expect(ipam).toEqual(['host-local DEL']);
    expect(r.lines().sort()).toEqual(['ip6tables-save -t nat', 'iptables-save -t nat', 'nft -j -a list chain inet cni_plugins_masquerade masq_checks']);
  });

  it('deletes the link before freeing the address, and keeps the address when the link cannot be deleted', async () => {
    const r = new FakeRunner();
    const order: string[] = [];
    r.failOn = (a) => {
      if (a.join(' ') === 'ip link del eth0') order.push('link del');
      return undefined;
    };
    const { ctx: c, ipam } = ctx({ ipMasq: false }, NETNS);
    const delegator = c.delegator;
    const del = { ...c, env: { ...c.env, command: 'DEL' as const }, delegator: { exec: (t: string, v: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC', conf: NetConf) => (order.push(`ipam ${v}`), delegator.exec(t, v, conf)) } };
    await bridgeDel(del, deps(r));
    expect(order).toEqual(['link del', 'ipam DEL']);

    const r2 = new FakeRunner();
    r2.failOn = (a) => (a.join(' ') === 'ip link del eth0' ? { code: 2, stdout: '', stderr: 'RTNETLINK answers: Operation not permitted' } : undefined);
    ipam.length = 0;
    const err = await bridgeDel({ ...c, env: { ...c.env, command: 'DEL' } }, deps(r2)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect(ipam).toEqual([]);
  });
});
