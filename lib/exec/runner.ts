// Side effects on the host go through a Runner, so that plans can be applied for real or recorded in unit tests.

export interface RunOptions {
  /** written to the child's stdin */
  input?: string;
  /** run inside this network namespace (a path such as /var/run/netns/x or /proc/PID/ns/net) via nsenter */
  netns?: string;
  /** do not throw on a non-zero exit; the caller inspects `code` */
  allowFail?: boolean;
  /** added to this process's environment (or, with replaceEnv, the child's whole environment) */
  env?: Record<string, string>;
  replaceEnv?: boolean;
  timeoutMs?: number;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Runner {
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

export class CommandError extends Error {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stderr: string;
  /** exitCode -1: the process could not be started; `cause` is the spawn error (its `code`, e.g. ENOENT, ETXTBSY) */
  constructor(argv: readonly string[], exitCode: number, stderr: string, cause?: unknown) {
    super(`${argv.join(' ')} exited ${exitCode}: ${stderr.trim().slice(0, 2000)}`, cause === undefined ? undefined : { cause });
    this.name = 'CommandError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}
