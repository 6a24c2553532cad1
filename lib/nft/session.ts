// A long-lived `nft -i` for small, frequent transactions. Spawning nft costs a process start and a fresh netlink
// cache load on every call (tens of ms on a busy node); the interactive process keeps its cache and only refreshes it
// when the ruleset generation changed. One input line is one netlink batch: the commands of a transaction are joined
// on one line with ';' and apply entirely or not at all. After each transaction a `describe` line prints one fixed
// line whatever the ruleset holds (a listing would fail, and print nothing to wait for, once the table is gone), which
// tells where the transaction's output ends; an "Error:" before it means the batch was rejected. stderr is merged
// into stdout (`2>&1` in a shell) so that the error and the marker arrive in order.
// nft's line editor keeps every line in its history, in memory, and writes it to $HOME/.nft.history when its input
// ends: HOME names a directory that does not exist, and the process is replaced after `recycleAfterBytes` of input.

import { spawn, type ChildProcess } from 'node:child_process';

export class NftSessionError extends Error {
  override readonly name = 'NftSessionError';
}

export interface NftSessionOptions {
  /** run inside this network namespace (a path, as for Runner) */
  netns?: string;
  /** longest transaction sent through the session (longer ones: use `nft -f`) */
  maxLineBytes?: number;
  /** start a new nft once this much input went to the current one (its history grows by every line; default 4 MiB) */
  recycleAfterBytes?: number;
}

const MARKER_CMD = 'describe meta mark';
/** what MARKER_CMD prints (nft 1.0.x): "meta expression, datatype mark (packet mark) (basetype integer), 32 bits" */
const MARKER_OUT = 'meta expression, datatype mark';

export class NftSession {
  private readonly o: NftSessionOptions;
  private proc: ChildProcess | undefined;
  private buf = '';
  private waiter: ((text: string) => void) | undefined;
  private failed: Error | undefined;
  private sent = 0;

  constructor(o: NftSessionOptions = {}) {
    this.o = o;
  }

  /** Does a transaction of this text fit on one line? */
  fits(text: string): boolean {
    return Buffer.byteLength(text) <= (this.o.maxLineBytes ?? 64 * 1024);
  }

  /** pid of the running nft process (undefined before the first transaction and after close) */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private start(): ChildProcess {
    const cmd = 'exec nft -i 2>&1';
    const argv = this.o.netns ? ['nsenter', `--net=${this.o.netns}`, '--', 'sh', '-c', cmd] : ['sh', '-c', cmd];
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'ignore'], env: { ...process.env, HOME: '/nonexistent' } });
    this.buf = '';
    this.failed = undefined;
    this.sent = 0;
    p.stdout!.on('data', (d: Buffer) => {
      if (this.proc !== p) return;
      this.buf += String(d);
      this.check();
    });
    // a process closed after an error may report its exit after the next one started: ignore it then
    const gone = (why: string): void => {
      if (this.proc !== p) return;
      this.failed = new NftSessionError(`nft -i ${why}`);
      this.proc = undefined;
      this.check();
    };
    p.on('exit', (c, sig) => gone(`exited (${sig ?? c})`));
    p.on('error', (e) => gone(`failed: ${e.message}`));
    p.stdin!.on('error', () => {});
    return p;
  }

  private check(): void {
    if (!this.waiter) return;
    const i = this.buf.indexOf(MARKER_OUT);
    const end = i >= 0 ? this.buf.indexOf('\n', i) : -1;
    if (end >= 0) {
      const text = this.buf.slice(0, i);
      this.buf = this.buf.slice(end + 1);
      const w = this.waiter;
      this.waiter = undefined;
      w(text);
    } else if (this.failed) {
      const w = this.waiter;
      this.waiter = undefined;
      w(`Error: ${this.failed.message}`);
    }
  }

  /** Applies one transaction (the text of `NftTransaction.render()`); throws NftSessionError when nft rejects it. */
  async apply(text: string): Promise<void> {
    const lines = text.split('\n').filter((l) => l.trim());
    if (!lines.length) return;
    const line = lines.join(' ; ');
    if (!this.fits(line)) throw new NftSessionError('transaction too long for one line');
    if (this.waiter) throw new NftSessionError('transactions must not overlap');
    if (!this.proc) this.proc = this.start();
    const out = new Promise<string>((r) => (this.waiter = r));
    const input = `${line}\n${MARKER_CMD}\n`;
    this.proc.stdin!.write(input);
    this.sent += Buffer.byteLength(input);
    const result = await out;
    if (/(^|\n)Error:/.test(result)) {
      // the process's cache may now be unreliable: start afresh next time
      await this.close();
      throw new NftSessionError(result.trim().slice(0, 2000));
    }
    if (this.sent >= (this.o.recycleAfterBytes ?? 4 << 20)) await this.close();
  }

  /** Ends the nft process; resolves once it has exited. */
  async close(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }
}
