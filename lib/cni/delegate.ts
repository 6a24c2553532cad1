// Delegation to another plugin (IPAM or a chained main plugin), as libcni's invoke package does it:
// find `type` in CNI_PATH (first match), run it with the same environment but CNI_COMMAND replaced and the
// config on stdin, parse its result or error. When the binary found is flatnet's own multi-call binary and an
// in-process implementation is registered for `type`, the handlers run in this process instead (no exec).
import { ExecRunner } from '../exec/exec.ts';
import { CommandError, type RunResult } from '../exec/runner.ts';
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { callHandlers, parseEnv, toCniError } from './dispatch.ts';
import { CniError, ErrorCode, type CniResult, type Delegator, type NetConf, type PluginHandlers } from './types.ts';
import type { Logger } from '../log/logger.ts';
import { convertResult, upgradeResult } from './version.ts';

export type DelegateCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC';

export interface DelegatorOptions {
  /** the invoking plugin's environment (CNI_* included) */
  env: Readonly<Record<string, string | undefined>>;
  log: Logger;
  /** plugin types that may run in-process when the binary found in CNI_PATH is this executable */
  inProcess?: Readonly<Record<string, () => Promise<PluginHandlers>>>;
  /** this process's executable (default process.execPath) */
  execPath?: string;
}

/** Finds `type` in the directories of CNI_PATH; returns the first regular executable file. */
export function findInPath(type: string, path: readonly string[]): string {
  if (type === '' || type.includes('/') || type === '.' || type === '..') {
    throw new CniError(ErrorCode.InvalidConfig, `invalid plugin type "${type}"`, 'type');
  }
  if (path.length === 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_PATH is empty; cannot find plugin "${type}"`, 'CNI_PATH');
  }
  for (const dir of path) {
    const p = join(dir, type);
    try {
      if (statSync(p).isFile()) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch {
      /* try the next directory */
    }
  }
  throw new CniError(ErrorCode.InvalidEnvironment, `failed to find plugin "${type}" in path [${path.join(' ')}]`, 'CNI_PATH');
}

function safeRealpath(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}

/** Turns a failed delegate's stdout into the CniError it reported. */
export function delegateError(type: string, o: RunResult): CniError {
  try {
    const e = JSON.parse(o.stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof e.code === 'number' && typeof e.msg === 'string') {
      return new CniError(e.code, e.msg, typeof e.details === 'string' ? e.details : '');
    }
  } catch {
    /* not an error JSON */
  }
  const text = (o.stderr || o.stdout).trim().slice(0, 500);
  return new CniError(ErrorCode.IoFailure, `plugin ${type} exited ${o.code}${text ? `: ${text}` : ''}`);
}

export class ExecDelegator implements Delegator {
  private readonly opts: DelegatorOptions;
  private selfReal: string | undefined | null = null;

  constructor(opts: DelegatorOptions) {
    this.opts = opts;
  }

  private isSelf(bin: string): boolean {
    if (this.selfReal === null) this.selfReal = safeRealpath(this.opts.execPath ?? process.execPath);
    return this.selfReal !== undefined && safeRealpath(bin) === this.selfReal;
  }

  async exec(type: string, command: DelegateCommand, conf: NetConf): Promise<CniResult | undefined> {
    const path = (this.opts.env.CNI_PATH ?? '').split(':').filter((p) => p !== '');
    const bin = findInPath(type, path);
    const input = JSON.stringify(conf);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.opts.env)) if (v !== undefined) env[k] = v;
    env.CNI_COMMAND = command;

    const load = this.opts.inProcess?.[type];
    if (load && this.isSelf(bin)) {
      this.opts.log.debug({ type, command }, 'delegating in-process');
      return this.inProcess(load, env, input, conf);
    }

    this.opts.log.debug({ type, command, bin }, 'delegating');
    let o: RunResult | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        o = await new ExecRunner().run([bin], { env, replaceEnv: true, input, allowFail: true });
        break;
      } catch (e) {
        const errno = e instanceof CommandError ? (e.cause as NodeJS.ErrnoException | undefined)?.code : undefined;
        // libcni retries "text file busy" (a binary being replaced); so do we
        if (errno === 'ETXTBSY' && attempt < 5) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        throw new CniError(ErrorCode.IoFailure, `failed to exec plugin ${bin}: ${String((e as Error).cause ?? (e as Error).message)}`);
      }
    }
    if (o.code !== 0) throw delegateError(type, o);
    if (command !== 'ADD') return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(o.stdout);
    } catch {
      throw new CniError(ErrorCode.DecodeFailure, `plugin ${type} returned an invalid result: ${o.stdout.slice(0, 200)}`);
    }
    return upgradeResult(parsed);
  }

  private async inProcess(
    load: () => Promise<PluginHandlers>,
    env: Record<string, string>,
    input: string,
    conf: NetConf,
  ): Promise<CniResult | undefined> {
    try {
      const handlers = await load();
      const result = await callHandlers(handlers, parseEnv(env), input, this.opts.log, this);
      if (!result) return undefined;
      // the same round trip through the config's version as a real exec would make
      return upgradeResult(convertResult(result, conf.cniVersion));
    } catch (e) {
      throw toCniError(e);
    }
  }
}
