// host-local IPAM: handlers for the CNI skeleton (run standalone by plugins/main.ts or in-process by a delegator).
import { readFileSync } from 'node:fs';
import { checkKnownArgs } from '../../lib/cni/env.ts';
import { CniError, ErrorCode, type CniResult, type Dns, type InvocationContext, type PluginHandlers } from '../../lib/cni/types.ts';
import { formatIP } from '../../lib/net/ip.ts';
import { allocate } from './allocator.ts';
import { loadConfig, rangeSetContains, type HostLocalConfig } from './config.ts';
import { DiskStore } from './disk-store.ts';
import { parseResolvConf } from './dns.ts';

/** CNI_ARGS keys host-local understands (others need IgnoreUnknown=1, as in the reference). */
const KNOWN_ARGS = ['IP'] as const;

function config(ctx: InvocationContext): HostLocalConfig {
  checkKnownArgs(ctx.env.args, KNOWN_ARGS);
  return loadConfig(ctx.conf, ctx.env.args);
}

function readDns(path: string | undefined): Dns | undefined {
  if (!path) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CniError(ErrorCode.IoFailure, `cannot read resolvConf ${path}: ${(e as Error).message}`, 'resolvConf');
  }
  return parseResolvConf(text);
}

function withStore<T>(cfg: HostLocalConfig, create: boolean, fn: (s: DiskStore) => T): T | undefined {
  const store = DiskStore.open(cfg.dataDir, cfg.name, create);
  if (!store) return undefined;
  try {
    return fn(store);
  } finally {
    store.close();
  }
}

export const handlers: PluginHandlers = {
  async add(ctx) {
    const cfg = config(ctx);
    const dns = readDns(cfg.resolvConf);
    let lock: string | undefined;
    const ips = withStore(cfg, true, (s) => {
      lock = s.lockMechanism;
      // a failed ADD releases what it took but leaves the round-robin cursors where they moved, as the reference
      // does: the next ADD then hands out the same addresses on both
      return allocate(s, cfg.ranges, ctx.env.containerId, ctx.env.ifname, cfg.requestedIPs);
    })!;
    ctx.log.debug({ network: cfg.name, containerId: ctx.env.containerId, ips: ips.map((i) => i.address), lock }, 'allocated');
    const result: CniResult = { cniVersion: ctx.conf.cniVersion, ips };
    if (cfg.routes.length > 0) result.routes = [...cfg.routes];
    if (dns) result.dns = dns;
    return result;
  },

  async del(ctx) {
    const cfg = config(ctx);
    const freed = withStore(cfg, false, (s) => s.releaseByID(ctx.env.containerId, ctx.env.ifname)) ?? [];
    ctx.log.debug({ network: cfg.name, containerId: ctx.env.containerId, freed: freed.map(formatIP) }, 'released');
  },

  async check(ctx) {
    const cfg = config(ctx);
    const held = withStore(cfg, false, (s) => s.getByID(ctx.env.containerId, ctx.env.ifname)) ?? [];
    cfg.ranges.forEach((set, i) => {
      if (!held.some((ip) => rangeSetContains(set, ip))) {
        throw new CniError(
          ErrorCode.UnknownContainer,
          `host-local: failed to find an address in range set ${i} for container ${ctx.env.containerId} (${ctx.env.ifname})`,
        );
      }
    });
  },

  async gc(ctx) {
    const cfg = loadConfig(ctx.conf, {});
    const valid = new Set(ctx.validAttachments.map((a) => `${a.containerID}\n${a.ifname}`));
    const validIds = new Set(ctx.validAttachments.map((a) => a.containerID));
    const freed: string[] = [];
    withStore(cfg, false, (s) => {
      for (const a of s.list()) {
        const keep = a.ifname === '' ? validIds.has(a.containerID) : valid.has(`${a.containerID}\n${a.ifname}`);
        if (keep) continue;
        try {
          s.release(a.ip);
          freed.push(a.file);
        } catch (e) {
          // keep going on errors, as GC must
          ctx.log.warn({ err: e, file: a.file }, 'gc: cannot free');
        }
      }
    });
    if (freed.length > 0) ctx.log.info({ network: cfg.name, freed }, 'gc freed addresses');
  },

  async status(ctx) {
    loadConfig(ctx.conf, {});
  },
};
