// Applies bridge plans: every kernel change goes through the injected Runner; each acquired resource registers
// its undo, and a failed ADD runs the undos in reverse (including IPAM DEL) before rethrowing.
import { CniError, ErrorCode, type CniResult, type InvocationContext, type NetConf } from '../../lib/cni/types.ts';
import { CommandError, type Runner } from '../../lib/exec/runner.ts';
import { checkKnownArgs } from '../../lib/cni/env.ts';
import { isValidIfname } from '../../lib/link/batch.ts';
import { isNoSuchDevice, parseLinks, parseRoutes, type LinkInfo } from '../../lib/link/parse.ts';
import { netnsState, runIpBatch, runShInNetns, SH_STEP_EXIT_BASE, shq, shSequence, type ShStep } from '../../lib/netns/netns.ts';
import { parseBridgeConfig, validateForAdd, type BridgeConfig } from './config.ts';
import {
  instanceHash,
  iptablesChain,
  iptablesGcChains,
  nftGcRules,
  nftRulesOf,
  parseIptablesSaveNat,
  parseNftRules,
  renderIptablesAdd,
  renderIptablesRemoveChains,
  renderNftAdd,
  renderNftDelete,
  NFT_CHAIN,
  NFT_TABLE,
} from './ipmasq.ts';
import { BridgeErrorCode, bridgeCreateArgs, EXIT_IFNAME_EXISTS, planAdd, planContainer, randomMac, type AddPlan } from './plan.ts';
import { renderSpoofSetup, renderSpoofTeardown, spoofId } from './spoofcheck.ts';
import { familyOf, normalizeCidr, normalizeIP } from '../../lib/net/ip.ts';
import { resolveBackend, type NetfilterBackend } from '../../lib/netfilter/backend.ts';

const SEP = '@@flatnet@@';
/** exit status of the first ADD program when listing the host's links fails */
const EXIT_HOST_READ = 90;

/** CNI_ARGS keys the bridge understands (others need IgnoreUnknown=1, as with libcni's LoadArgs) */
const KNOWN_ARGS = ['MAC'] as const;

export interface BridgeDeps {
  runner: Runner;
  /** a PID in the host netns: the plugin's own */
  hostPid: number;
  randomBytes: () => Uint8Array;
  writeSysctl: (key: string, value: string, optional: boolean) => void;
}

function kernelError(what: string, e: unknown): CniError {
  const msg = e instanceof CommandError ? e.stderr.trim() || e.message : String(e);
  return new CniError(BridgeErrorCode.KernelProgram, `${what}: ${msg}`, '', { cause: e });
}

function requireNetns(path: string): void {
  if (!path) throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_NETNS is required');
  const st = netnsState(path);
  if (st === 'missing') throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${path} does not exist`);
  if (st !== 'netns') throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${path} is not a network namespace`);
}

function requireIfname(ifname: string): void {
  if (!isValidIfname(ifname)) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_IFNAME ${JSON.stringify(ifname)} is not a valid interface name`);
}

async function readHostLinks(runner: Runner): Promise<LinkInfo[]> {
  const r = await runner.run(['ip', '-j', '-d', 'addr', 'show']);
  return parseLinks(r.stdout);
}

async function nftRun(runner: Runner, program: string): Promise<void> {
  await runner.run(['nft', '-f', '-'], { input: program });
}

// ---------------------------------------------------------------- masquerade

/** The masquerade programs of one attachment, as steps of the host program. */
function masqSteps(cfg: BridgeConfig, backend: NetfilterBackend, containerID: string, ifname: string, ips: string[]): { label: string; step: ShStep }[] {
  const a = { network: cfg.name, ifname, containerID };
  if (backend === 'nftables') return [{ label: 'IP masquerade (nftables)', step: { argv: ['nft', '-f', '-'], input: renderNftAdd(a, ips) } }];
  const progs = renderIptablesAdd(a, ips);
  const out: { label: string; step: ShStep }[] = [];
  if (progs[4]) out.push({ label: 'IP masquerade (iptables)', step: { argv: ['iptables-restore', '--noflush', '-w'], input: progs[4] } });
  if (progs[6]) out.push({ label: 'IP masquerade (ip6tables)', step: { argv: ['ip6tables-restore', '--noflush', '-w'], input: progs[6] } });
  return out;
}

type Family = 4 | 6;

async function iptablesRemove(
  runner: Runner,
  select: (saved: ReturnType<typeof parseIptablesSaveNat>) => Set<string>,
  families: readonly Family[] = [4, 6],
): Promise<void> {
  await Promise.all(
    families.map((f) => (f === 4 ? 'iptables' : 'ip6tables')).map(async (bin) => {
      const saved = await runner.run([`${bin}-save`, '-t', 'nat'], { allowFail: true });
      if (saved.code !== 0) return;
      const parsed = parseIptablesSaveNat(saved.stdout);
      const prog = renderIptablesRemoveChains(parsed, select(parsed));
      if (prog) await runner.run([`${bin}-restore`, '--noflush', '-w'], { input: prog });
    }),
  );
}

async function nftMasqRules(runner: Runner): Promise<ReturnType<typeof parseNftRules>> {
  const r = await runner.run(['nft', '-j', '-a', 'list', 'chain', 'inet', NFT_TABLE, NFT_CHAIN], { allowFail: true });
  if (r.code !== 0) return []; // table or chain absent
  return parseNftRules(r.stdout);
}

/** A tool that is not installed has nothing of ours to remove. */
const unlessMissing = (e: unknown): void => {
  if (e instanceof CommandError && e.exitCode === -1 && (e.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return;
  throw e;
};

/**
 * Removes the attachment's masquerade rules of both backends, as the reference does: the attachment may have been
 * made by another version or configuration. families = the address families the attachment used, when known
 * (prevResult); both otherwise.
 */
async function masqTeardown(runner: Runner, cfg: BridgeConfig, containerID: string, ifname: string, families?: readonly Family[]): Promise<void> {
  const chain = iptablesChain(cfg.name, ifname, containerID);
  await Promise.all([
    iptablesRemove(runner, () => new Set([chain]), families).catch(unlessMissing),
    (async () => {
      const prog = renderNftDelete(nftRulesOf(await nftMasqRules(runner), instanceHash(cfg.name, ifname, containerID)));
      if (prog) await nftRun(runner, prog);
    })().catch(unlessMissing),
  ]);
}

async function spoofTeardown(runner: Runner, containerID: string, ifname: string): Promise<void> {
  const r = await runner.run(['nft', '-j', '-a', 'list', 'table', 'bridge', 'nat'], { allowFail: true });
  if (r.code !== 0) return;
  const prog = renderSpoofTeardown(spoofId(containerID, ifname), r.stdout);
  if (prog) await nftRun(runner, prog);
}

// ---------------------------------------------------------------- ADD

export async function bridgeAdd(ctx: InvocationContext, deps: BridgeDeps): Promise<CniResult> {
  const { env } = ctx;
  checkKnownArgs(env.args, KNOWN_ARGS);
  const cfg = parseBridgeConfig(ctx.conf, env.args);
  validateForAdd(cfg);
  requireIfname(env.ifname);
  requireNetns(env.netns);
  const { runner } = deps;
  const undo: (() => Promise<void>)[] = [];
  let success = false;
  try {
    let ipam: CniResult | undefined;
    if (cfg.ipam) {
      ipam = await ctx.delegator.exec(cfg.ipam.type, 'ADD', ctx.conf);
      undo.push(async () => {
        await ctx.delegator.exec(cfg.ipam!.type, 'DEL', ctx.conf);
      });
      if (!ipam) throw new CniError(BridgeErrorCode.IpamNoIps, 'IPAM plugin returned no result');
    }
    const base = { cfg, containerId: env.containerId, ifname: env.ifname, netns: env.netns, ipam, hostPid: deps.hostPid, randomBytes: deps.randomBytes };
    const cp = planContainer(base);

    // one process tree: read the host's links, then set up the container side (veth pair with its peer landing in
    // the host netns, sysctls, addresses, routes). The read happens before the veth exists.
    const first = [
      `ip -j -d addr show || exit ${EXIT_HOST_READ}`,
      `echo ${SEP}`,
      `exec nsenter --net=${shq(env.netns)} sh -c ${shq(cp.containerProgram)}`,
      '',
    ].join('\n');
    const cr = await runner.run(['sh', '-c', first], { input: cp.containerBatch, allowFail: true });
    if (cr.code === EXIT_HOST_READ) throw kernelError('failed to list host links', new CommandError(['ip'], cr.code, cr.stderr));
    if (cr.code === EXIT_IFNAME_EXISTS) {
      throw new CniError(BridgeErrorCode.IfnameExists, `container veth name provided (${env.ifname}) already exists`);
    }
    const containerUndoAt = undo.length;
    undo.push(async () => {
      await runner.run(['ip', 'link', 'del', env.ifname], { netns: env.netns, allowFail: true });
    });
    if (cr.code !== 0) throw kernelError(`failed to set up ${env.ifname} in ${env.netns}`, new CommandError(['sh'], cr.code, cr.stderr));
    let hostLinks = parseLinks(cr.stdout.split(SEP + '\n')[0] ?? '');

    let bridgeCreated = false;
    if (!hostLinks.some((l) => l.ifname === cfg.bridge)) {
      // created on its own (not in the batch) so that concurrent first ADDs tolerate each other (EEXIST)
      const r = await runner.run(['ip', ...bridgeCreateArgs(cfg, randomMac(deps.randomBytes()))], { allowFail: true });
      if (r.code === 0) {
        bridgeCreated = true;
        // undone after the veth is gone (undo runs in reverse): insert below the container's undo
        undo.splice(containerUndoAt, 0, async () => {
          // only when no other attachment joined it meanwhile
          const ports = await runner.run(['ip', '-j', 'link', 'show', 'master', cfg.bridge], { allowFail: true });
          if (ports.code === 0 && parseLinks(ports.stdout).length === 0) await runner.run(['ip', 'link', 'del', cfg.bridge], { allowFail: true });
        });
      } else if (!/File exists/.test(r.stderr)) {
        throw kernelError(`failed to create bridge ${cfg.bridge}`, new CommandError(['ip', 'link', 'add'], r.code, r.stderr));
      }
      hostLinks = await readHostLinks(runner);
    }
    const plan: AddPlan = planAdd({ ...base, hostLinks }, cp);
    ctx.log.debug({ plan }, 'bridge ADD plan');

    // host side: bridge port, gateway addresses, VLANs, spoof check and masquerade in one program
    if (plan.vlanGatewayCreated) {
      const v = plan.vlanGatewayCreated;
      undo.push(async () => {
        await runner.run(['ip', 'link', 'del', v], { allowFail: true });
      });
    }
    if (!bridgeCreated) {
      undo.push(async () => {
        const b = [
          ...plan.addedAddrs.map((a) => `address del ${a.cidr} dev ${a.target}`),
          ...plan.removedAddrs.map((a) => `address add ${a.cidr} dev ${a.target}`),
        ];
        if (b.length) await runIpBatch(runner, b.join('\n') + '\n', { allowFail: true });
      });
    }
    for (const s of plan.hostSysctls) {
      try {
        deps.writeSysctl(s.key, s.value, s.optional);
      } catch (e) {
        throw new CniError(ErrorCode.IoFailure, `failed to set sysctl ${s.key}=${s.value}: ${String(e)}`);
      }
    }
    const steps: { label: string; step: ShStep }[] = [{ label: `bridge ${cfg.bridge} port and addresses`, step: { argv: ['ip', '-batch', '-'], input: plan.hostBatch } }];
    if (plan.bridgeBatch) steps.push({ label: 'bridge VLANs', step: { argv: ['bridge', '-batch', '-'], input: plan.bridgeBatch } });
    if (cfg.macSpoofCheck || cfg.ipSpoofCheck) {
      undo.push(() => spoofTeardown(runner, env.containerId, env.ifname));
      const checks = { mac: cfg.macSpoofCheck, ...(cfg.ipSpoofCheck ? { ips: (plan.result.ips ?? []).map((i) => i.address.split('/')[0]!) } : {}) };
      steps.push({ label: 'spoof check', step: { argv: ['nft', '-f', '-'], input: renderSpoofSetup(spoofId(env.containerId, env.ifname), plan.hostVeth, plan.containerMac, checks) } });
    }
    if (plan.masqIps.length) {
      const fams = [...new Set(plan.masqIps.map((ip): Family => familyOf(ip) ?? 4))];
      undo.push(() => masqTeardown(runner, cfg, env.containerId, env.ifname, fams));
      steps.push(...masqSteps(cfg, await resolveBackend(runner, cfg.ipMasqBackend), env.containerId, env.ifname, plan.masqIps));
    }
    // a single step runs as is; several run in one sh
    const only = steps.length === 1 ? steps[0]!.step : undefined;
    const hr = only
      ? await runner.run(only.argv, { input: only.input, allowFail: true })
      : await runner.run(['sh', '-c', shSequence(steps.map((x) => x.step))], { allowFail: true });
    if (hr.code !== 0) {
      const failed = only ? steps[0] : steps[hr.code - SH_STEP_EXIT_BASE];
      throw kernelError(`failed to set up ${failed?.label ?? 'the host side'}`, new CommandError(['sh'], hr.code, hr.stderr));
    }
    success = true;
    return plan.result;
  } finally {
    if (!success) {
      for (const u of undo.reverse()) {
        try {
          await u();
        } catch (e) {
          ctx.log.warn({ err: String(e) }, 'bridge ADD undo step failed');
        }
      }
    }
  }
}

// ---------------------------------------------------------------- DEL

export async function bridgeDel(ctx: InvocationContext, deps: BridgeDeps): Promise<void> {
  const { env } = ctx;
  const cfg = parseBridgeConfig(ctx.conf, env.args);
  const { runner } = deps;
  // The link goes first, as in the reference: while it exists its address is in use, so the address is freed only
  // after the link is gone, and kept (DEL fails, the runtime retries) when the link cannot be deleted.
  if (env.netns && netnsState(env.netns) === 'netns' && isValidIfname(env.ifname)) {
    const r = await runner.run(['ip', 'link', 'del', env.ifname], { netns: env.netns, allowFail: true });
    if (r.code !== 0 && !isNoSuchDevice(r.stderr)) throw kernelError(`failed to delete ${env.ifname}`, new CommandError(['ip'], r.code, r.stderr));
  }
  // the rest is independent and runs concurrently
  const steps: Promise<void>[] = [];
  if (cfg.ipam) steps.push(ctx.delegator.exec(cfg.ipam.type, 'DEL', ctx.conf).then(() => undefined));
  if (cfg.ipMasq) {
    // libcni passes the cached result on DEL: its IPs tell which families need looking at
    const prevIps = ctx.conf.prevResult?.ips ?? [];
    const fams = prevIps.length ? [...new Set(prevIps.map((i): Family => familyOf(i.address) ?? 4))] : undefined;
    steps.push(masqTeardown(runner, cfg, env.containerId, env.ifname, fams).catch((e: unknown) => Promise.reject(kernelError('failed to remove IP masquerade', e))));
  }
  if (cfg.macSpoofCheck) {
    steps.push(spoofTeardown(runner, env.containerId, env.ifname).catch((e: unknown) => Promise.reject(kernelError('failed to remove mac spoof check', e))));
  }
  const errors = (await Promise.allSettled(steps)).filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
  if (errors.length) throw errors[0];
}

// ---------------------------------------------------------------- CHECK

const mismatch = (msg: string): CniError => new CniError(BridgeErrorCode.CheckMismatch, msg);

export async function bridgeCheck(ctx: InvocationContext, deps: BridgeDeps): Promise<void> {
  const { env, conf } = ctx;
  checkKnownArgs(env.args, KNOWN_ARGS);
  const cfg = parseBridgeConfig(conf, env.args);
  requireIfname(env.ifname);
  requireNetns(env.netns);
  const { runner } = deps;
  if (cfg.ipam) await ctx.delegator.exec(cfg.ipam.type, 'CHECK', conf);
  const prev = conf.prevResult;
  if (!prev) throw new CniError(ErrorCode.InvalidConfig, 'Required prevResult missing');

  const ifs = prev.interfaces ?? [];
  const brIf = ifs.find((i) => i.name === cfg.bridge);
  const contIdx = ifs.findIndex((i) => i.name === env.ifname && i.sandbox === env.netns);
  const contIf = ifs[contIdx];
  if (!brIf) throw mismatch(`CNI created bridge ${cfg.bridge} in host namespace was not found in prevResult`);
  if (!contIf) throw mismatch(`Sandbox in prevResult doesn't match configured netns: ${env.netns}`);

  const [host, cont] = await Promise.all([
    runner.run(['ip', '-j', '-d', 'link', 'show']),
    runShInNetns(
      runner,
      env.netns,
      `ip -j -d addr show; echo ${SEP}; ip -j -4 route show table all; echo ${SEP}; ip -j -6 route show table all`,
    ),
  ]);
  const hostLinks = parseLinks(host.stdout);
  const [cAddr = '', c4 = '', c6 = ''] = cont.stdout.split(SEP + '\n');
  const contLinks = parseLinks(cAddr);
  const routes = [...parseRoutes(c4, 'inet'), ...parseRoutes(c6, 'inet6')];

  const br = hostLinks.find((l) => l.ifname === cfg.bridge);
  if (!br) throw mismatch(`CNI created bridge ${cfg.bridge} in host namespace was not found`);
  if (br.kind !== 'bridge') throw mismatch(`Interface ${cfg.bridge} does not have link type of bridge`);
  if (brIf.mac && brIf.mac !== br.address) throw mismatch(`Bridge interface ${cfg.bridge} Mac doesn't match: ${brIf.mac}`);
  const promisc = br.flags.includes('PROMISC');
  if (promisc !== cfg.promiscMode) {
    throw mismatch(`Bridge interface ${cfg.bridge} configured Promisc Mode ${cfg.promiscMode} doesn't match current state: ${promisc}`);
  }
  const c = contLinks.find((l) => l.ifname === env.ifname);
  if (!c) throw mismatch(`CNI created interface in container ${env.ifname} not found`);
  if (c.kind !== 'veth') throw mismatch(`Error: Container interface ${env.ifname} not of type veth`);
  if (contIf.mac && contIf.mac !== c.address) throw mismatch(`Interface ${env.ifname} Mac ${contIf.mac} doesn't match container Mac: ${c.address}`);
  const veth = hostLinks.find(
    (l) =>
      l.kind === 'veth' &&
      ifs.some((i) => i.name === l.ifname && !i.sandbox) &&
      l.ifindex === c.linkIndex &&
      l.linkIndex === c.ifindex &&
      l.master === cfg.bridge,
  );
  if (!veth) throw mismatch(`CNI veth created for bridge ${cfg.bridge} was not found`);
  const vethIf = ifs.find((i) => i.name === veth.ifname);
  if (vethIf?.mac && vethIf.mac !== veth.address) throw mismatch(`Interface ${veth.ifname} Mac doesn't match: ${vethIf.mac} not found`);

  const have = new Set(c.addrs.map((a) => `${normalizeIP(a.local) ?? a.local}/${a.prefixlen}`));
  for (const ip of prev.ips ?? []) {
    if (ip.interface !== undefined && ifs[ip.interface]?.name !== env.ifname) continue;
    if (!have.has(normalizeCidr(ip.address) ?? ip.address)) throw mismatch(`ip ${ip.address} not found on ${env.ifname}`);
  }
  for (const r of prev.routes ?? []) {
    const dst = normalizeCidr(r.dst) ?? r.dst;
    const found = routes.some(
      (x) => (normalizeCidr(x.dst) ?? x.dst) === dst && (r.gw === undefined || (x.gateway !== undefined && normalizeIP(x.gateway) === normalizeIP(r.gw))),
    );
    if (!found) throw mismatch(`Route to ${r.dst}${r.gw ? ` via ${r.gw}` : ''} not found in ${env.netns}`);
  }
}

// ---------------------------------------------------------------- GC / STATUS

export async function bridgeGc(ctx: InvocationContext, deps: BridgeDeps): Promise<void> {
  const cfg = parseBridgeConfig(ctx.conf, ctx.env.args);
  const { runner } = deps;
  const keep = new Set(ctx.validAttachments.map((a) => instanceHash(cfg.name, a.ifname, a.containerID)));
  const errors: unknown[] = [];
  // masquerade rules of any backend: a network may have switched backends
  try {
    await iptablesRemove(runner, (saved) => iptablesGcChains(saved, cfg.name, keep));
  } catch (e) {
    errors.push(kernelError('GC of iptables masquerade rules failed', e));
  }
  try {
    const prog = renderNftDelete(nftGcRules(await nftMasqRules(runner), cfg.name, keep));
    if (prog) await nftRun(runner, prog);
  } catch (e) {
    errors.push(kernelError('GC of nftables masquerade rules failed', e));
  }
  if (cfg.ipam) {
    try {
      await ctx.delegator.exec(cfg.ipam.type, 'GC', ctx.conf);
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length) throw errors[0];
}

export async function bridgeStatus(ctx: InvocationContext): Promise<void> {
  const cfg = parseBridgeConfig(ctx.conf as NetConf, ctx.env.args);
  if (cfg.ipam) await ctx.delegator.exec(cfg.ipam.type, 'STATUS', ctx.conf);
}

