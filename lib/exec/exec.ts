import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { CommandError, type RunOptions, type RunResult, type Runner } from './runner.ts';

/**
 * Runs real child processes; every child process flatnet starts goes through here. With `netns`, the command runs
 * under `nsenter --net=<path>`.
 */
export class ExecRunner implements Runner {
  run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const full = opts.netns ? ['nsenter', `--net=${opts.netns}`, '--', ...argv] : [...argv];
    return new Promise((resolve, reject) => {
      // loaded on first use: importing child_process eagerly drags ~35 stream/net modules into every plugin start
      const { spawn } = process.getBuiltinModule('node:child_process');
      const env = opts.replaceEnv ? opts.env : opts.env ? { ...process.env, ...opts.env } : process.env;
      const child: ChildProcessWithoutNullStreams = spawn(full[0]!, full.slice(1), {
        stdio: ['pipe', 'pipe', 'pipe'],
        env,
        timeout: opts.timeoutMs,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => reject(new CommandError(full, -1, String(e), e)));
      child.on('close', (code, signal) => {
        const res = {
          code: code ?? (signal ? 128 : -1),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        };
        if (res.code !== 0 && !opts.allowFail) reject(new CommandError(full, res.code, res.stderr));
        else resolve(res);
      });
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input ?? '');
    });
  }
}
