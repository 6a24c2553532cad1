// A thin kubectl wrapper: the real binary from the control-plane build, one kubeconfig, a Runner underneath.
import type { RunResult, Runner } from '../../../lib/exec/runner.ts';

export class Kubectl {
  readonly bin: string;
  readonly kubeconfig: string;
  private readonly runner: Runner;

  constructor(bin: string, kubeconfig: string, runner: Runner) {
    this.bin = bin;
    this.kubeconfig = kubeconfig;
    this.runner = runner;
  }

  /** Runs kubectl; throws CommandError on a non-zero exit unless allowFail. */
  run(args: readonly string[], opts: { input?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return this.runner.run([this.bin, `--kubeconfig=${this.kubeconfig}`, ...args], {
      input: opts.input,
      allowFail: opts.allowFail,
      timeoutMs: opts.timeoutMs ?? 60_000,
    });
  }

  async json<T>(args: readonly string[]): Promise<T> {
    const r = await this.run([...args, '-o', 'json']);
    return JSON.parse(r.stdout) as T;
  }

  async apply(yaml: string): Promise<string> {
    return (await this.run(['apply', '-f', '-'], { input: yaml })).stdout;
  }
}
