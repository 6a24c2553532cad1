// The `vxlan` CNI meta-plugin: reads the node's subnet file (written by the overlay controller) and delegates to
// bridge + host-local with the node's podCIDR and the overlay MTU, like flannel's CNI plugin. The delegated config
// is kept per attachment so DEL, CHECK and GC use exactly what ADD used, even after the subnet file changed.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CniError,
  ErrorCode,
  type CniResult,
  type InvocationContext,
  type NetConf,
  type PluginHandlers,
} from '../../lib/cni/types.ts';
import { delegateConf, parsePluginConfig, parseSaved, savedConfName, type SavedAttachment, type VxlanPluginConfig } from './plan.ts';
import { parseSubnetEnv, type SubnetEnv } from '../../lib/overlay/subnet-file.ts';

/** The subnet file, or undefined when it does not exist yet. Malformed content is an I/O error. */
async function readSubnetFile(path: string): Promise<SubnetEnv | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CniError(ErrorCode.IoFailure, `vxlan: cannot read subnet file ${path}: ${(e as Error).message}`);
  }
  try {
    return parseSubnetEnv(text);
  } catch (e) {
    throw new CniError(ErrorCode.IoFailure, `vxlan: ${path}: ${(e as Error).message}`);
  }
}

async function requireSubnetFile(cfg: VxlanPluginConfig): Promise<SubnetEnv> {
  const env = await readSubnetFile(cfg.subnetFile);
  if (!env) {
    throw new CniError(
      ErrorCode.TryAgainLater,
      `vxlan: subnet file ${cfg.subnetFile} does not exist yet (the overlay controller has not started on this node); try again later`,
    );
  }
  return env;
}

async function loadSaved(cfg: VxlanPluginConfig, file: string): Promise<SavedAttachment | undefined> {
  const text = await readFile(join(cfg.dataDir, file), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseSaved(text);
}

async function save(cfg: VxlanPluginConfig, file: string, a: SavedAttachment): Promise<void> {
  await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
  const path = join(cfg.dataDir, file);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(a), { mode: 0o600 });
  await rename(tmp, path);
}

async function add(ctx: InvocationContext): Promise<CniResult> {
  const cfg = parsePluginConfig(ctx.conf);
  const file = savedConfName(ctx.env.containerId, ctx.env.ifname);
  const env = await requireSubnetFile(cfg);
  const conf = delegateConf(ctx.conf, cfg, env);
  // saved before the delegate runs: a DEL after a crash in the middle still knows what to undo
  await save(cfg, file, { containerID: ctx.env.containerId, ifname: ctx.env.ifname, conf });
  let ok = false;
  try {
    const res = await ctx.delegator.exec(String(conf.type), 'ADD', conf);
    if (!res) throw new CniError(ErrorCode.IoFailure, `vxlan: delegate ${String(conf.type)} returned no result`);
    ok = true;
    return res;
  } finally {
    if (!ok) {
      await ctx.delegator.exec(String(conf.type), 'DEL', conf).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'vxlan: undo DEL failed'));
      await rm(join(cfg.dataDir, file), { force: true });
    }
  }
}

async function del(ctx: InvocationContext): Promise<void> {
  const cfg = parsePluginConfig(ctx.conf);
  const file = savedConfName(ctx.env.containerId, ctx.env.ifname);
  const saved = await loadSaved(cfg, file);
  let conf: NetConf | undefined = saved?.conf;
  if (!conf) {
    // nothing saved: ADD never ran, DEL already ran, or the data dir was lost; release IPAM from the subnet file if we can
    const env = await readSubnetFile(cfg.subnetFile).catch(() => undefined);
    if (!env || !env.subnets.length) return;
    conf = delegateConf(ctx.conf, cfg, env);
  }
  // the runtime's current view wins for runtime-provided keys
  conf = { ...conf, cniVersion: ctx.conf.cniVersion, ...(ctx.conf.runtimeConfig ? { runtimeConfig: ctx.conf.runtimeConfig } : {}) };
  await ctx.delegator.exec(String(conf.type), 'DEL', conf);
  await rm(join(cfg.dataDir, file), { force: true });
}

async function check(ctx: InvocationContext): Promise<void> {
  const cfg = parsePluginConfig(ctx.conf);
  const saved = await loadSaved(cfg, savedConfName(ctx.env.containerId, ctx.env.ifname));
  if (!saved) {
    throw new CniError(ErrorCode.UnknownContainer, `vxlan: no saved configuration for ${ctx.env.containerId}/${ctx.env.ifname}`);
  }
  const conf: NetConf = { ...saved.conf, cniVersion: ctx.conf.cniVersion };
  if (ctx.conf.prevResult) conf.prevResult = ctx.conf.prevResult;
  await ctx.delegator.exec(String(conf.type), 'CHECK', conf);
}

async function status(ctx: InvocationContext): Promise<void> {
  const cfg = parsePluginConfig(ctx.conf);
  const env = await readSubnetFile(cfg.subnetFile).catch(() => undefined);
  if (!env) {
    throw new CniError(ErrorCode.PluginNotAvailable, `vxlan: subnet file ${cfg.subnetFile} is missing or unreadable: the overlay is not ready`);
  }
  await ctx.delegator.exec(String(cfg.delegate.type ?? 'bridge'), 'STATUS', delegateConf(ctx.conf, cfg, env));
}

async function gc(ctx: InvocationContext): Promise<void> {
  const cfg = parsePluginConfig(ctx.conf);
  const valid = new Set(ctx.validAttachments.map((a) => `${a.containerID}\n${a.ifname}`));
  const files = await readdir(cfg.dataDir).catch(() => [] as string[]);
  let template: NetConf | undefined;
  for (const f of files.filter((x) => x.endsWith('.json'))) {
    const s = await loadSaved(cfg, f);
    if (!s) continue;
    template ??= s.conf;
    if (!valid.has(`${s.containerID}\n${s.ifname}`)) {
      await rm(join(cfg.dataDir, f), { force: true }).catch(() => undefined);
    }
  }
  // the delegate (and its IPAM) frees whatever is not listed
  const env = await readSubnetFile(cfg.subnetFile).catch(() => undefined);
  const conf = env?.subnets.length ? delegateConf(ctx.conf, cfg, env) : template;
  if (!conf) return;
  await ctx.delegator.exec(String(conf.type), 'GC', {
    ...conf,
    cniVersion: ctx.conf.cniVersion,
    'cni.dev/valid-attachments': ctx.validAttachments,
  });
}

export const handlers: PluginHandlers = { add, del, check, status, gc };
