// portmap: a chained CNI plugin forwarding host ports to the container (the `portMappings` capability).
// ADD returns prevResult unchanged; DEL needs no prevResult (rules are found by the container's hash);
// CHECK verifies the rules; GC removes this network's rules of containers not in cni.dev/valid-attachments.

import { CniError, ErrorCode, type CniResult, type InvocationContext, type PluginHandlers } from '../../lib/cni/types.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { CommandError, type Runner } from '../../lib/exec/runner.ts';
import type { IptablesMode } from '../../lib/iptables/index.ts';
import { IptablesBackend, NftBackend, type Env } from './apply.ts';
import { resolveBackend } from '../../lib/netfilter/backend.ts';
import { configuredBackend, containerIPs, parseConfig, type Backend } from './config.ts';

/** Generic internal failure, as the reference plugins report it. */
const INTERNAL = 999;

export interface PortmapDeps {
  runner?: Runner;
  /** act inside this network namespace instead of the plugin's own (tests) */
  netns?: string;
  /** skip legacy-vs-nft detection */
  iptablesMode?: IptablesMode;
}

function backend(kind: Backend, env: Env, deps: PortmapDeps): IptablesBackend | NftBackend {
  return kind === 'nftables' ? new NftBackend(env) : new IptablesBackend(env, deps.iptablesMode);
}

function wrap(verb: string, e: unknown): CniError {
  if (e instanceof CniError) return e;
  const details = e instanceof CommandError ? `${e.argv.join(' ')}: ${e.stderr.trim()}` : String(e);
  return new CniError(INTERNAL, `portmap ${verb} failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`, details, {
    cause: e,
  });
}

export function createHandlers(deps: PortmapDeps = {}): PluginHandlers {
  const runner = deps.runner ?? new ExecRunner();
  const env = (ctx: InvocationContext): Env => ({ runner, netns: deps.netns, log: ctx.log });
  // the backend when the config names none: probed (a child process or two) only when there is something to map
  const backendOf = (ctx: InvocationContext): Promise<Backend> => {
    const pm = (ctx.conf.runtimeConfig as Record<string, unknown> | undefined)?.portMappings;
    const configured = configuredBackend(ctx.conf);
    if (configured || !Array.isArray(pm) || pm.length === 0) return Promise.resolve(configured ?? 'iptables');
    return resolveBackend(runner, undefined, deps.netns);
  };

  return {
    async add(ctx): Promise<CniResult> {
      const prev = ctx.conf.prevResult;
      if (!prev) throw new CniError(ErrorCode.InvalidConfig, 'portmap: must be called as a chained plugin (no prevResult)');
      const cfg = parseConfig(ctx.conf, await backendOf(ctx));
      if (!cfg.mappings.length) return prev;
      const ips = containerIPs(prev, ctx.env.ifname);
      if (!ips.v4 && !ips.v6) {
        ctx.log.warn({ ips: prev.ips }, 'portmap: prevResult has no container address; no ports mapped');
        return prev;
      }
      const b = backend(cfg.backend, env(ctx), deps);
      try {
        await b.add(cfg, ctx.env.containerId, ips);
      } catch (e) {
        // leave nothing behind
        await b.del(cfg.name, ctx.env.containerId).catch((e2: unknown) => ctx.log.warn({ err: String(e2) }, 'portmap: cleanup after failed ADD failed'));
        throw wrap('ADD', e);
      }
      return prev;
    },

    async del(ctx): Promise<void> {
      // DEL must succeed with a broken or partial config as far as possible: only name and backend matter here
      const kind = ctx.conf.backend === 'nftables' || ctx.conf.backend === 'iptables' ? ctx.conf.backend : await backendOf(ctx).catch(() => 'iptables' as const);
      try {
        await backend(kind, env(ctx), deps).del(ctx.conf.name, ctx.env.containerId);
      } catch (e) {
        throw wrap('DEL', e);
      }
    },

    async check(ctx): Promise<void> {
      const prev = ctx.conf.prevResult;
      if (!prev) throw new CniError(ErrorCode.InvalidConfig, 'portmap: CHECK needs prevResult');
      const cfg = parseConfig(ctx.conf, await backendOf(ctx));
      if (!cfg.mappings.length) return;
      const ips = containerIPs(prev, ctx.env.ifname);
      let missing: string[];
      try {
        missing = await backend(cfg.backend, env(ctx), deps).check(cfg, ctx.env.containerId, ips);
      } catch (e) {
        throw wrap('CHECK', e);
      }
      if (missing.length) throw new CniError(INTERNAL, `portmap: ${missing.length} expected rule(s) missing`, missing.join('\n'));
    },

    async gc(ctx): Promise<void> {
      const kind = ctx.conf.backend === 'nftables' ? 'nftables' : 'iptables';
      try {
        const removed = await backend(kind, env(ctx), deps).gc(
          ctx.conf.name,
          ctx.validAttachments.map((a) => a.containerID),
        );
        if (removed.length) ctx.log.info({ removed }, 'portmap: GC removed stale rules');
      } catch (e) {
        throw wrap('GC', e);
      }
    },
  };
}

export const handlers: PluginHandlers = createHandlers();
