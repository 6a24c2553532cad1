// IPVS backend: applies the programs of rules.ts through a Runner (ipset restore, ip -batch, ipvsadm-restore,
// iptables-restore --noflush). createBackend refuses to start when the kernel has no IPVS or no dummy interfaces.

import type { Logger } from '../../../../lib/log/logger.ts';
import type { Runner } from '../../../../lib/exec/runner.ts';
import { Iptables, detectMode, type IptablesMode } from '../../../../lib/iptables/index.ts';
import type { IpFamily, ProxyBackend, SyncInput } from '../../model/types.ts';
import {
  DUMMY_IF,
  builtinJumps,
  CHAINS,
  ipsetCleanup,
  parseIpvsadmSave,
  renderFull,
  renderIncremental,
  requiredSysctls,
  signature,
  type IpvsPrograms,
  type IpvsState,
} from './rules.ts';

export class IpvsUnavailableError extends Error {
  readonly code = 'IPVS_UNAVAILABLE';
  constructor(msg: string) {
    super(msg);
    this.name = 'IpvsUnavailableError';
  }
}

export interface IpvsProxierOptions {
  family: IpFamily;
  runner: Runner;
  log: Logger;
  netns?: string;
  iptablesMode?: IptablesMode;
}

/**
 * Checks the kernel: IPVS (/proc/net/ip_vs, else `modprobe ip_vs`) and dummy interfaces (creates flatnet-ipvs0).
 * Throws IpvsUnavailableError with a message meant for the operator.
 */
export async function checkIpvsSupport(runner: Runner, netns?: string): Promise<void> {
  const has = async (): Promise<boolean> => (await runner.run(['test', '-e', '/proc/net/ip_vs'], { netns, allowFail: true })).code === 0;
  if (!(await has())) {
    const m = await runner.run(['modprobe', 'ip_vs'], { netns, allowFail: true });
    if (!(await has()))
      throw new IpvsUnavailableError(
        `proxy mode ipvs: the kernel has no IPVS (/proc/net/ip_vs is missing and \`modprobe ip_vs\` failed${m.stderr.trim() ? `: ${m.stderr.trim()}` : ''}); use --proxy-mode nftables or iptables`,
      );
  }
  for (const bin of ['ipvsadm-restore', 'ipset']) {
    const r = await runner.run(['sh', '-c', `command -v ${bin}`], { netns, allowFail: true });
    if (r.code !== 0) throw new IpvsUnavailableError(`proxy mode ipvs: ${bin} is not installed`);
  }
  const link = await runner.run(['ip', 'link', 'show', DUMMY_IF], { netns, allowFail: true });
  if (link.code !== 0) {
    const add = await runner.run(['ip', 'link', 'add', DUMMY_IF, 'type', 'dummy'], { netns, allowFail: true });
    if (add.code !== 0)
      throw new IpvsUnavailableError(
        `proxy mode ipvs: cannot create the dummy interface ${DUMMY_IF} (${add.stderr.trim() || 'ip link add failed'}); the kernel needs the dummy module`,
      );
    await runner.run(['ip', 'link', 'set', DUMMY_IF, 'up'], { netns });
  }
}

interface AddrInfo {
  addr_info?: { local?: string }[];
}

export class IpvsProxier implements ProxyBackend {
  readonly mode = 'ipvs' as const;
  private readonly o: IpvsProxierOptions;
  private state: IpvsState | undefined;
  private ipt: Iptables | undefined;
  lastPrograms: IpvsPrograms | undefined;

  constructor(o: IpvsProxierOptions) {
    this.o = o;
  }

  private run(argv: string[], input?: string, allowFail = false) {
    return this.o.runner.run(argv, { netns: this.o.netns, input, allowFail });
  }

  private async iptables(): Promise<Iptables> {
    if (!this.ipt) {
      const mode = this.o.iptablesMode ?? (await detectMode(this.o.runner, this.o.netns));
      this.ipt = new Iptables({ runner: this.o.runner, family: this.o.family, mode, netns: this.o.netns });
    }
    return this.ipt;
  }

  private async readKernel(): Promise<Parameters<typeof renderFull>[1]> {
    const save = await this.run(['ipvsadm', '-S', '-n']);
    const link = await this.run(['ip', '-j', 'addr', 'show', 'dev', DUMMY_IF], undefined, true);
    const addrs = new Set<string>();
    if (link.code === 0) for (const l of JSON.parse(link.stdout || '[]') as AddrInfo[]) for (const a of l.addr_info ?? []) if (a.local) addrs.add(a.local);
    return { vss: parseIpvsadmSave(save.stdout), addrs, linkExists: link.code === 0 };
  }

  private async applyPrograms(p: IpvsPrograms): Promise<void> {
    if (p.dummy) await this.run(['ip', '-batch', '-'], p.dummy);
    if (p.ipset) await this.run(['ipset', 'restore'], p.ipset);
    if (p.ipvs) await this.run(['ipvsadm-restore'], p.ipvs);
    if (p.iptables) {
      const ipt = await this.iptables();
      await ipt.restore(p.iptables);
      for (const [table, chain, args] of builtinJumps())
        if (!(await ipt.exists(table as 'nat', chain, args))) await ipt.run(['-t', table, '-I', chain, '1', ...args]);
    }
  }

  async sync(input: SyncInput): Promise<void> {
    if (input.family !== this.o.family) throw new Error(`ipvs backend for IPv${this.o.family} got an IPv${input.family} sync`);
    const full = input.full || !this.state || this.state.sig !== signature(input);
    try {
      if (full) {
        for (const [k, v] of requiredSysctls(this.o.family)) await this.run(['sysctl', '-qw', `${k.replaceAll('/', '.')}=${v}`], undefined, true);
        const r = renderFull(input, await this.readKernel());
        await this.applyPrograms(r.programs);
        this.state = r.state;
        this.lastPrograms = r.programs;
      } else {
        const r = renderIncremental(input, this.state!);
        await this.applyPrograms(r.programs);
        this.lastPrograms = r.programs;
      }
    } catch (err) {
      this.state = undefined; // the next sync re-reads the kernel and diffs from there
      this.o.log.error({ err: String(err), full }, 'ipvs sync failed; the next sync will be full');
      throw err;
    }
  }

  async cleanup(): Promise<void> {
    const k = await this.readKernel();
    const ours = [...k.vss.values()].filter((v) => k.addrs.has(v.addr) || this.state?.vss.has(`${v.proto}|${v.addr}|${v.port}`));
    const flag = { tcp: '-t', udp: '-u', sctp: '--sctp-service' } as const;
    const prog = ours.map((v) => `-D ${flag[v.proto]} ${v.addr.includes(':') ? `[${v.addr}]` : v.addr}:${v.port}`).join('\n');
    if (prog) await this.run(['ipvsadm-restore'], prog + '\n', true);
    await this.run(['ip', 'link', 'del', DUMMY_IF], undefined, true);
    const ipt = await this.iptables();
    for (const [table, chain, args] of builtinJumps()) while (await ipt.exists(table as 'nat', chain, args)) await ipt.run(['-t', table, '-D', chain, ...args]);
    for (const c of Object.values(CHAINS)) {
      const table = c === CHAINS.firewall ? 'filter' : 'nat';
      await ipt.run(['-t', table, '-F', c], true);
      await ipt.run(['-t', table, '-X', c], true);
    }
    await this.run(['ipset', 'restore', '-exist'], ipsetCleanup(this.o.family), true);
    this.state = undefined;
  }
}
