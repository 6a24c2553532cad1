// loopback: bring `lo` up in CNI_NETNS (and down on DEL), answering like the reference plugin.
import { CniError, ErrorCode, type CniResult, type InvocationContext, type PluginHandlers } from '../../lib/cni/types.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { parseLinks } from '../../lib/link/parse.ts';
import { netnsState } from '../../lib/netns/netns.ts';

function requireNetns(path: string): void {
  const st = netnsState(path);
  if (!path || st === 'missing') throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${JSON.stringify(path)} does not exist`);
  if (st !== 'netns') throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${path} is not a network namespace`);
}

const isLoopbackAddr = (a: string): boolean => a.startsWith('127.') || a === '::1';

/** Pure: the result for `lo` from `ip -j addr show dev lo`. */
export function loopbackResult(cniVersion: string, netns: string, addrJson: string): CniResult {
  const lo = parseLinks(addrJson).find((l) => l.ifname === 'lo');
  if (!lo) throw new CniError(ErrorCode.IoFailure, 'loopback interface not found');
  const v4 = lo.addrs.filter((a) => a.family === 'inet');
  const v6 = lo.addrs.filter((a) => a.family === 'inet6');
  for (const a of [...v4, ...v6]) {
    if (!isLoopbackAddr(a.local)) throw new CniError(ErrorCode.IoFailure, `loopback interface found with non-loopback address "${a.local}"`);
  }
  const res: CniResult = { cniVersion, interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: netns }] };
  const ips = [v4[0], v6[0]].filter((a) => a !== undefined).map((a) => ({ interface: 0, address: `${a.local}/${a.prefixlen}` }));
  if (ips.length) res.ips = ips;
  return res;
}

export async function loopbackAdd(ctx: InvocationContext, runner: Runner): Promise<CniResult> {
  requireNetns(ctx.env.netns);
  const r = await runner.run(['ip', '-j', '-batch', '-'], { netns: ctx.env.netns, input: 'link set lo up\naddress show dev lo\n', allowFail: true });
  if (r.code !== 0) throw new CniError(ErrorCode.IoFailure, `failed to set lo up in ${ctx.env.netns}: ${r.stderr.trim()}`);
  const res = loopbackResult(ctx.conf.cniVersion, ctx.env.netns, r.stdout);
  // chained after another plugin: pass prevResult on unchanged, as the reference does
  return ctx.conf.prevResult ? { ...ctx.conf.prevResult, cniVersion: ctx.conf.cniVersion } : res;
}

export async function loopbackDel(ctx: InvocationContext, runner: Runner): Promise<void> {
  if (!ctx.env.netns || netnsState(ctx.env.netns) !== 'netns') return;
  const r = await runner.run(['ip', 'link', 'set', 'lo', 'down'], { netns: ctx.env.netns, allowFail: true });
  if (r.code !== 0) throw new CniError(ErrorCode.IoFailure, `failed to set lo down in ${ctx.env.netns}: ${r.stderr.trim()}`);
}

export async function loopbackCheck(ctx: InvocationContext, runner: Runner): Promise<void> {
  requireNetns(ctx.env.netns);
  const r = await runner.run(['ip', '-j', 'link', 'show', 'dev', 'lo'], { netns: ctx.env.netns });
  const lo = parseLinks(r.stdout)[0];
  if (!lo || !lo.flags.includes('UP')) throw new CniError(ErrorCode.IoFailure, 'loopback interface is down');
}

const runner = (): Runner => new ExecRunner();

export const handlers: PluginHandlers = {
  add: (ctx) => loopbackAdd(ctx, runner()),
  del: (ctx) => loopbackDel(ctx, runner()),
  check: (ctx) => loopbackCheck(ctx, runner()),
};
