// Builds a CNI bin dir for a containerd instance: links to flatnet's SEA plugins (dist/bin) or to the reference
// plugins (/usr/lib/cni), optionally behind a logging wrapper that records every invocation (verb, ifname, netns,
// CNI_ARGS) so tests can prove what the runtime called and in which order.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const OUR_BIN_DIR = join(REPO_ROOT, 'dist', 'bin');
export const REFERENCE_BIN_DIR = '/usr/lib/cni';
export const CRI_PLUGINS = ['loopback', 'bridge', 'host-local', 'portmap'] as const;

export type PluginSource = 'ours' | 'reference';

/** True when dist/bin holds a working plugin of that name (answers VERSION with 1.0.0 among its versions). */
export function ourPluginWorks(name: string): boolean {
  const bin = join(OUR_BIN_DIR, name);
  if (!existsSync(bin)) return false;
  try {
    const out = execFileSync(bin, [], {
      env: { CNI_COMMAND: 'VERSION', PATH: process.env['PATH'] ?? '' },
      input: '{"cniVersion":"1.0.0"}',
      encoding: 'utf8',
      timeout: 10_000,
    });
    const v = JSON.parse(out) as { supportedVersions?: string[] };
    return Array.isArray(v.supportedVersions) && v.supportedVersions.includes('1.0.0');
  } catch {
    return false;
  }
}

/** Which plugins to test: FLATNET_CRI_CNI=ours|reference, else ours when all of them work, else reference. */
export function choosePluginSource(plugins: readonly string[] = CRI_PLUGINS): PluginSource {
  const env = process.env['FLATNET_CRI_CNI'];
  if (env === 'ours' || env === 'reference') return env;
  return plugins.every(ourPluginWorks) ? 'ours' : 'reference';
}

export interface CniCall {
  command: string;
  plugin: string;
  ifname: string;
  netns: string;
  containerId: string;
  args: string;
  path: string;
}

/**
 * Fill `dir` with one entry per plugin. With `logFile`, each entry is a /bin/sh wrapper that appends one
 * tab-separated line per call and then execs the real binary (stdin and stdout pass through untouched).
 */
export function prepareCniBinDir(
  dir: string,
  source: PluginSource,
  opts: { plugins?: readonly string[]; logFile?: string; stdinDir?: string } = {},
): string {
  mkdirSync(dir, { recursive: true });
  const from = source === 'ours' ? OUR_BIN_DIR : REFERENCE_BIN_DIR;
  for (const p of opts.plugins ?? CRI_PLUGINS) {
    const target = join(from, p);
    if (!existsSync(target)) throw new Error(`CNI plugin ${target} missing`);
    const entry = join(dir, p);
    rmSync(entry, { force: true });
    if (opts.logFile || opts.stdinDir) {
      const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
      let script = '#!/bin/sh\n';
      if (opts.logFile) {
        script += `printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$CNI_COMMAND" ${q(p)} "$CNI_IFNAME" "$CNI_NETNS" "$CNI_CONTAINERID" "$CNI_ARGS" "$CNI_PATH" >> ${q(opts.logFile)}\n`;
      }
      if (opts.stdinDir) {
        mkdirSync(opts.stdinDir, { recursive: true });
        // keep the network config the runtime sent: <dir>/<ns-time>-<plugin>-<verb>-<containerid>.json
        script += `tee ${q(opts.stdinDir)}/"$(date +%s%N)-${p}-$CNI_COMMAND-$CNI_CONTAINERID.json" | ${q(target)} "$@"\n`;
      } else {
        script += `exec ${q(target)} "$@"\n`;
      }
      writeFileSync(entry, script);
      chmodSync(entry, 0o755);
    } else {
      symlinkSync(target, entry);
    }
  }
  return dir;
}

export function readCniCalls(logFile: string): CniCall[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [command = '', plugin = '', ifname = '', netns = '', containerId = '', args = '', path = ''] = l.split('\t');
      return { command, plugin, ifname, netns, containerId, args, path };
    });
}

/** The configs the runtime sent (stdinDir of prepareCniBinDir), oldest first, optionally filtered. */
export function readCniStdins(dir: string, filter: { plugin?: string; command?: string; containerId?: string } = {}): Record<string, unknown>[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .filter((f) => {
      const m = /^\d+-(.+)-([A-Z]+)-(.*)\.json$/.exec(f);
      if (!m) return false;
      return (!filter.plugin || m[1] === filter.plugin) && (!filter.command || m[2] === filter.command) && (!filter.containerId || m[3] === filter.containerId);
    })
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>);
}

/** Parse CNI_ARGS (K=V;K=V) into a map. */
export function parseCniArgs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of args.split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}
