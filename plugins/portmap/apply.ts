// Applies portmap plans to the kernel: iptables (iptables-restore --noflush) or nftables (nft -f), each atomic per
// family/transaction. All side effects go through the injected Runner, optionally inside a netns.

import type { Logger } from '../../lib/log/logger.ts';
import type { RunOptions, RunResult, Runner } from '../../lib/exec/runner.ts';
import {
  Iptables,
  RestoreProgram,
  chainRules,
  detectMode,
  hasChain,
  jumpTarget,
  argValue,
  type IptablesMode,
  type SavedRuleset,
} from '../../lib/iptables/index.ts';
import { Nft, NftTransaction, type NftTableListing } from '../../lib/nft/index.ts';
import type { ContainerAddr, ContainerIPs, PortMapConfig } from './config.ts';
import { withFileLock } from '../../lib/lock/flock.ts';
import type { Family } from '../../lib/net/ip.ts';
import {
  LOCALNET_GUARD_CHAIN,
  LOCALNET_GUARD_RULE,
  NFT_GUARD_CHAIN,
  NFT_LOCALNET_GUARD,
  MASQ_CHAIN,
  MASQ_ENTRY_COMMENT,
  NFT_HOSTIP_CHAIN,
  NFT_HOSTPORTS_CHAIN,
  NFT_MASQ_CHAIN,
  NFT_TABLE,
  SETMARK_CHAIN,
  TOP_DNAT_CHAIN,
  dnatChainName,
  mappingsFor,
  nftTag,
  parseDnatComment,
  parseNftTag,
  planIptables,
  planNft,
  planNftJumps,
} from './plan.ts';

/** Serializes portmap's read-modify-write of the shared iptables chains across concurrent plugin processes. */
export const DEFAULT_LOCK_PATH = '/run/flatnet-portmap.lock';

export interface Env {
  runner: Runner;
  /** the host network namespace to act in (tests); undefined = the plugin's own */
  netns?: string;
  log: Logger;
  /** host-wide lock file serializing iptables read-modify-write; '' disables locking */
  lockPath?: string;
}

/** A failure the caller could not have prevented (kernel state changed under us, a tool failed). */
export class ApplyError extends Error {
  override readonly name = 'ApplyError';
}

function run(env: Env, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return env.runner.run(argv, { ...opts, netns: env.netns });
}

/** route_localnet=1 on the interface that routes to the container, so 127.0.0.1 -> hostPort can be DNATed out. */
export async function enableRouteLocalnet(env: Env, containerIP: string): Promise<void> {
  const r = await run(env, ['ip', '-j', 'route', 'get', containerIP], { allowFail: true });
  if (r.code !== 0) {
    env.log.warn({ containerIP, stderr: r.stderr.trim() }, 'portmap: no route to the container; localhost hostPorts will not work');
    return;
  }
  const dev = (JSON.parse(r.stdout) as { dev?: string }[])[0]?.dev;
  if (!dev || dev === 'lo') return;
  await run(env, ['sysctl', '-q', '-w', `net.ipv4.conf.${dev}.route_localnet=1`]);
}

/** Drop UDP conntrack entries for the new hostPorts, so earlier flows (e.g. to the host itself) do not shadow the DNAT. */
export async function flushUdpConntrack(env: Env, cfg: PortMapConfig, family: Family): Promise<void> {
  for (const m of mappingsFor(cfg, family)) {
    if (m.protocol !== 'udp') continue;
    await run(env, ['conntrack', '-D', '-f', family === 4 ? 'ipv4' : 'ipv6', '-p', 'udp', '--orig-port-dst', String(m.hostPort)], {
      allowFail: true,
    }).catch(() => undefined);
  }
}

async function retryOnce<T>(env: Env, what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    env.log.warn({ err: String(e) }, `portmap: ${what} failed, re-reading state and retrying once`);
    return await f();
  }
}

// ---------------------------------------------------------------- iptables

export class IptablesBackend {
  private readonly env: Env;
  private mode: IptablesMode | undefined;

  constructor(env: Env, mode?: IptablesMode) {
    this.env = env;
    this.mode = mode;
  }

  private async ipt(family: Family): Promise<Iptables> {
    this.mode ??= await detectMode(this.env.runner, this.env.netns);
    return new Iptables({ runner: this.env.runner, family, mode: this.mode, netns: this.env.netns });
  }

  private locked<T>(f: () => Promise<T>): Promise<T> {
    const path = this.env.lockPath ?? DEFAULT_LOCK_PATH;
    return path ? withFileLock(path, 60, f) : f();
  }

  add(cfg: PortMapConfig, containerId: string, ips: ContainerIPs): Promise<void> {
    return this.locked(() => this.addLocked(cfg, containerId, ips));
  }

  private async addLocked(cfg: PortMapConfig, containerId: string, ips: ContainerIPs): Promise<void> {
    for (const c of [ips.v4, ips.v6]) {
      if (!c || !cfg.mappings.length) continue; // every family with an address gets a chain, as in the reference
      if (cfg.snat && c.family === 4) await enableRouteLocalnet(this.env, c.ip);
      const ipt = await this.ipt(c.family);
      await retryOnce(this.env, `iptables v${c.family} ADD`, () => this.addFamily(ipt, cfg, containerId, c));
      await flushUdpConntrack(this.env, cfg, c.family);
    }
  }

  private async addFamily(ipt: Iptables, cfg: PortMapConfig, containerId: string, c: ContainerAddr): Promise<void> {
    const plan = planIptables(cfg, containerId, c);
    let rs = await ipt.save(); // all tables: nat, and filter for the localnet guard
    if (!hasChain(rs, 'nat', TOP_DNAT_CHAIN)) {
      // -N, never a restore declaration: that would flush other containers' entries if it appeared meanwhile
      await ipt.ensureChain('nat', TOP_DNAT_CHAIN);
      rs = await ipt.save();
    }
    const p = new RestoreProgram();
    if (plan.setMarkRule) p.declareChain('nat', SETMARK_CHAIN).append('nat', SETMARK_CHAIN, plan.setMarkRule);
    if (plan.masqRule) p.declareChain('nat', MASQ_CHAIN).append('nat', MASQ_CHAIN, plan.masqRule);
    const jumpsTo = (chain: string, target: string) => chainRules(rs, 'nat', chain).some((r) => jumpTarget(r) === target);
    for (const builtin of ['PREROUTING', 'OUTPUT']) {
      if (!jumpsTo(builtin, TOP_DNAT_CHAIN)) p.append('nat', builtin, ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', TOP_DNAT_CHAIN]);
    }
    if (plan.masqRule && !jumpsTo('POSTROUTING', MASQ_CHAIN))
      p.insert('nat', 'POSTROUTING', ['-m', 'comment', '--comment', MASQ_ENTRY_COMMENT, '-j', MASQ_CHAIN], 1);
    // replace whatever this container had before (a repeated ADD)
    for (const r of chainRules(rs, 'nat', TOP_DNAT_CHAIN)) if (jumpTarget(r) === plan.dnatChain) p.deleteRule('nat', TOP_DNAT_CHAIN, r.args);
    p.declareChain('nat', plan.dnatChain);
    for (const r of plan.dnatRules) p.append('nat', plan.dnatChain, r);
    for (const r of plan.entryRules) p.append('nat', TOP_DNAT_CHAIN, r);
    if (cfg.snat && c.family === 4) {
      // filter/INPUT -> CNI-HOSTPORT-LOCALNET (static content, refilled each time); see LOCALNET_GUARD_CHAIN
      p.declareChain('filter', LOCALNET_GUARD_CHAIN).append('filter', LOCALNET_GUARD_CHAIN, LOCALNET_GUARD_RULE);
      if (!chainRules(rs, 'filter', 'INPUT').some((r) => jumpTarget(r) === LOCALNET_GUARD_CHAIN))
        p.insert('filter', 'INPUT', ['-j', LOCALNET_GUARD_CHAIN], 1);
    }
    await ipt.restore(p);
  }

  /** Remove one container's chain and entry rules from both families; a no-op when they are gone. */
  del(network: string, containerId: string): Promise<void> {
    return this.locked(() => this.delLocked(network, containerId));
  }

  private async delLocked(network: string, containerId: string): Promise<void> {
    const chain = dnatChainName(network, containerId);
    for (const family of [4, 6] as const) {
      const ipt = await this.ipt(family);
      let rs: SavedRuleset | undefined;
      try {
        rs = await ipt.save('nat');
      } catch (e) {
        this.env.log.warn({ family, err: String(e) }, 'portmap: cannot read iptables; nothing to delete there');
        continue;
      }
      await retryOnce(this.env, `iptables v${family} DEL`, async () => {
        const cur = rs ?? (await ipt.save('nat')); // a retry re-reads
        rs = undefined;
        await ipt.restore(removeChains(cur, new Set([chain])));
      });
    }
  }

  /** Every expected rule exists (checked with iptables -C, so iptables does the canonicalization). */
  async check(cfg: PortMapConfig, containerId: string, ips: ContainerIPs): Promise<string[]> {
    const missing: string[] = [];
    for (const c of [ips.v4, ips.v6]) {
      if (!c || !cfg.mappings.length) continue;
      const ipt = await this.ipt(c.family);
      const plan = planIptables(cfg, containerId, c);
      const want: [string, string[]][] = [
        ...plan.entryRules.map((r): [string, string[]] => [TOP_DNAT_CHAIN, r]),
        ...plan.dnatRules.map((r): [string, string[]] => [plan.dnatChain, r]),
      ];
      for (const [chain, args] of want) {
        if (!(await ipt.exists('nat', chain, args))) missing.push(`v${c.family} ${chain} ${args.join(' ')}`);
      }
    }
    return missing;
  }

  /** Remove the chains of this network's containers that are not in validIds. */
  gc(network: string, validIds: readonly string[]): Promise<string[]> {
    return this.locked(() => this.gcLocked(network, validIds));
  }

  private async gcLocked(network: string, validIds: readonly string[]): Promise<string[]> {
    const valid = new Set(validIds.map((id) => dnatChainName(network, id)));
    const removed: string[] = [];
    for (const family of [4, 6] as const) {
      const ipt = await this.ipt(family);
      let rs: SavedRuleset;
      try {
        rs = await ipt.save('nat');
      } catch (e) {
        this.env.log.warn({ family, err: String(e) }, 'portmap: cannot read iptables for GC');
        continue;
      }
      const stale = new Set<string>();
      for (const r of chainRules(rs, 'nat', TOP_DNAT_CHAIN)) {
        const owner = parseDnatComment(argValue(r.args, '--comment'));
        const target = jumpTarget(r);
        if (owner?.network === network && target && target === dnatChainName(network, owner.containerId) && !valid.has(target)) stale.add(target);
      }
      if (!stale.size) continue;
      await ipt.restore(removeChains(rs, stale));
      removed.push(...[...stale].map((s) => `v${family} ${s}`));
    }
    return removed;
  }
}

/** A program deleting the entry rules that jump to `chains` and the chains themselves (those that exist). */
function removeChains(rs: SavedRuleset, chains: Set<string>): RestoreProgram {
  const p = new RestoreProgram();
  for (const r of chainRules(rs, 'nat', TOP_DNAT_CHAIN)) {
    const t = jumpTarget(r);
    if (t && chains.has(t)) p.deleteRule('nat', TOP_DNAT_CHAIN, r.args);
  }
  for (const chain of chains) {
    if (hasChain(rs, 'nat', chain)) p.flush('nat', chain).deleteChain('nat', chain);
  }
  return p;
}

// ---------------------------------------------------------------- nftables

const FAMILY = 'inet' as const;

export class NftBackend {
  private readonly env: Env;
  private readonly nft: Nft;

  constructor(env: Env) {
    this.env = env;
    this.nft = new Nft({ runner: env.runner, netns: env.netns });
  }

  private scaffold(tx: NftTransaction, cfg: PortMapConfig): void {
    const snat = cfg.snat;
    tx.addTable(FAMILY, NFT_TABLE, 'flatnet portmap (hostPort)');
    tx.addChain(FAMILY, NFT_TABLE, NFT_HOSTIP_CHAIN).addChain(FAMILY, NFT_TABLE, NFT_HOSTPORTS_CHAIN);
    for (const [chain, hook] of [
      ['prerouting', 'prerouting'],
      ['output', 'output'],
    ] as const) {
      tx.addChain(FAMILY, NFT_TABLE, chain, { type: 'nat', hook, priority: -100, policy: 'accept' }); // dstnat (nft 1.0.6 rejects the name in output)
      // the base chains hold only the jumps: flushing and re-adding them is idempotent and race-free
      tx.flushChain(FAMILY, NFT_TABLE, chain);
      for (const rule of planNftJumps(cfg)) tx.addRule(FAMILY, NFT_TABLE, chain, rule);
    }
    if (snat) {
      tx.addChain(FAMILY, NFT_TABLE, NFT_MASQ_CHAIN, { type: 'nat', hook: 'postrouting', priority: 'srcnat', policy: 'accept' });
      // see LOCALNET_GUARD_CHAIN: route_localnet must not open the node's loopback services to pods
      tx.addChain(FAMILY, NFT_TABLE, NFT_GUARD_CHAIN, { type: 'filter', hook: 'input', priority: 0, policy: 'accept' });
      tx.flushChain(FAMILY, NFT_TABLE, NFT_GUARD_CHAIN);
      tx.addRule(FAMILY, NFT_TABLE, NFT_GUARD_CHAIN, NFT_LOCALNET_GUARD);
    }
  }

  private deleteOwned(tx: NftTransaction, l: NftTableListing | undefined, owned: (tag: { net: string; key: string }) => boolean): number {
    let n = 0;
    for (const r of l?.rules ?? []) {
      const tag = parseNftTag(r.comment);
      if (tag && owned(tag)) {
        tx.deleteRule(FAMILY, NFT_TABLE, r.chain, r.handle);
        n++;
      }
    }
    return n;
  }

  async add(cfg: PortMapConfig, containerId: string, ips: ContainerIPs): Promise<void> {
    const cs = [ips.v4, ips.v6].filter((c): c is ContainerAddr => !!c && mappingsFor(cfg, c.family).length > 0);
    if (!cs.length) return;
    if (cfg.snat && ips.v4 && cs.includes(ips.v4)) await enableRouteLocalnet(this.env, ips.v4.ip);
    const tag = nftTag(cfg.name, containerId);
    await retryOnce(this.env, 'nft ADD', async () => {
      const l = await this.nft.listTable(FAMILY, NFT_TABLE);
      const tx = new NftTransaction();
      this.scaffold(tx, cfg);
      this.deleteOwned(tx, l, (t) => t.key === tag.key && t.net === tag.net);
      for (const c of cs) for (const r of planNft(cfg, c)) tx.addRule(FAMILY, NFT_TABLE, r.chain, r.body, tag.comment);
      await this.nft.apply(tx);
    });
    for (const c of cs) await flushUdpConntrack(this.env, cfg, c.family);
  }

  async del(network: string, containerId: string): Promise<void> {
    const tag = nftTag(network, containerId);
    await retryOnce(this.env, 'nft DEL', async () => {
      const l = await this.nft.listTable(FAMILY, NFT_TABLE);
      const tx = new NftTransaction();
      if (this.deleteOwned(tx, l, (t) => t.key === tag.key && t.net === tag.net)) await this.nft.apply(tx);
    });
  }

  async check(cfg: PortMapConfig, containerId: string, ips: ContainerIPs): Promise<string[]> {
    const tag = nftTag(cfg.name, containerId);
    const l = await this.nft.listTable(FAMILY, NFT_TABLE);
    if (!l) return [`nft table ${FAMILY} ${NFT_TABLE} missing`];
    const want = new Map<string, number>();
    for (const c of [ips.v4, ips.v6]) if (c) for (const r of planNft(cfg, c)) want.set(r.chain, (want.get(r.chain) ?? 0) + 1);
    const have = new Map<string, number>();
    for (const r of l.rules) {
      const t = parseNftTag(r.comment);
      if (t && t.key === tag.key && t.net === tag.net) have.set(r.chain, (have.get(r.chain) ?? 0) + 1);
    }
    const missing: string[] = [];
    for (const chain of ['prerouting', 'output']) {
      if (l.rules.filter((r) => r.chain === chain).length < 2) missing.push(`nft chain ${chain}: jump rules missing`);
    }
    for (const [chain, n] of want) if ((have.get(chain) ?? 0) !== n) missing.push(`nft chain ${chain}: want ${n} rules, have ${have.get(chain) ?? 0}`);
    return missing;
  }

  async gc(network: string, validIds: readonly string[]): Promise<string[]> {
    const net = nftTag(network, '').net;
    const valid = new Set(validIds.map((id) => nftTag(network, id).key));
    const removed: string[] = [];
    await retryOnce(this.env, 'nft GC', async () => {
      removed.length = 0;
      const l = await this.nft.listTable(FAMILY, NFT_TABLE);
      const tx = new NftTransaction();
      this.deleteOwned(tx, l, (t) => {
        const stale = t.net === net && !valid.has(t.key);
        if (stale) removed.push(t.key);
        return stale;
      });
      await this.nft.apply(tx);
    });
    return removed;
  }
}
