// The CNI 1.1.0 plugin skeleton: env + stdin -> verb handler -> result or error JSON on stdout.
// Everything the process touches comes in through `io`, so every verb is testable in-process.
import { ExecDelegator } from './delegate.ts';
import { callHandlers, parseEnv, sniffVersion, toCniError } from './dispatch.ts';
import { SUPPORTED_VERSIONS, type CniEnv, type Delegator, type PluginHandlers } from './types.ts';
import { convertResult, isSupportedVersion } from './version.ts';
import { createLogger, type FlushableLogger } from '../log/logger.ts';

export interface PluginIO {
  env: Readonly<Record<string, string | undefined>>;
  /** the config on stdin (read lazily: VERSION and STATUS do not need it to be present) */
  readStdin(): string;
  /** writes to stdout synchronously (fs.writeSync(1, ...) in a real process) */
  write(s: string): void;
  /** plugin name, for logs */
  name?: string;
  log?: FlushableLogger;
  /** defaults to an ExecDelegator over io.env */
  delegator?: Delegator;
  /** passed to the default ExecDelegator */
  inProcess?: ConstructorParameters<typeof ExecDelegator>[0]['inProcess'];
}

const LATEST = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1]!;

function errorJson(version: string | undefined, code: number, msg: string, details: string): string {
  const body: Record<string, unknown> = { cniVersion: version ?? LATEST, code, msg };
  if (details) body.details = details;
  return JSON.stringify(body);
}

/** Runs one plugin invocation; returns the process exit code (0 success, 1 error). */
export async function runPlugin(handlers: PluginHandlers, io: PluginIO): Promise<number> {
  const log = io.log ?? createLogger(io.env, { plugin: io.name });
  let stdin: string | undefined;
  let env: CniEnv | undefined;
  try {
    env = parseEnv(io.env);
    if (env.command === 'VERSION') {
      let asked: string | undefined;
      try {
        stdin = io.readStdin();
        asked = sniffVersion(stdin);
      } catch {
        /* VERSION works without stdin */
      }
      io.write(JSON.stringify({ cniVersion: asked ?? LATEST, supportedVersions: [...SUPPORTED_VERSIONS] }));
      return 0;
    }
    stdin = io.readStdin();
    const delegator = io.delegator ?? new ExecDelegator({ env: io.env, log, inProcess: io.inProcess });
    const result = await callHandlers(handlers, env, stdin, log, delegator);
    if (env.command === 'ADD' && result) {
      // callHandlers validated the version already
      io.write(JSON.stringify(convertResult(result, sniffVersion(stdin) ?? LATEST)));
    }
    return 0;
  } catch (e) {
    const err = toCniError(e);
    const version = stdin !== undefined ? sniffVersion(stdin) : undefined;
    log.error(
      { command: env?.command, containerId: env?.containerId, ifname: env?.ifname, code: err.code, details: err.details },
      err.message,
    );
    io.write(errorJson(isSupportedVersion(version) ? version : undefined, err.code, err.message, err.details));
    return 1;
  } finally {
    await log.flush();
  }
}
