// A bounded-frequency runner (kube-proxy's BoundedFrequencyRunner): coalesces run() requests so that fn runs
// at most once per minInterval, at least once per maxInterval, and again after retryInterval when it fails.
// Runs never overlap: a request that arrives during a run is served right after it (subject to minInterval).
// `burst` (default 1) lets that many runs happen within one minInterval window, like the original runner's burstRuns:
// with 2, a Service and its EndpointSlice arriving a few ms apart are both programmed at once instead of the second
// one waiting out minSyncPeriod; a sustained stream of changes is still held to one run per minInterval.

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface RunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  /** delay before retrying a failed run; default minIntervalMs (at least 1 s) */
  retryIntervalMs?: number;
  clock?: Clock;
  /** called when fn throws */
  onError?: (err: unknown) => void;
  /** runs allowed within one minInterval window (default 1) */
  burst?: number;
}

export class BoundedFrequencyRunner {
  private readonly fn: () => Promise<void>;
  private readonly min: number;
  private readonly max: number;
  private readonly retry: number;
  private readonly clock: Clock;
  private readonly onError: ((err: unknown) => void) | undefined;
  private lastRun = -Infinity;
  private readonly burst: number;
  /** start times of the last `burst` runs */
  private readonly recent: number[] = [];
  private timer: unknown = undefined;
  private timerAt = Infinity;
  private running = false;
  private requested = false;
  private stopped = true;
  private idleWaiters: (() => void)[] = [];

  constructor(fn: () => Promise<void>, opts: RunnerOptions) {
    this.fn = fn;
    this.min = opts.minIntervalMs;
    this.max = opts.maxIntervalMs;
    this.retry = opts.retryIntervalMs ?? Math.max(opts.minIntervalMs, 1000);
    this.clock = opts.clock ?? realClock;
    this.onError = opts.onError;
    this.burst = Math.max(1, Math.floor(opts.burst ?? 1));
  }

  /** The earliest time the next run may start: at most `burst` runs start within any minInterval window. */
  private nextAllowed(): number {
    const now = this.clock.now();
    if (this.recent.length < this.burst) return now;
    return Math.max(now, this.recent[this.recent.length - this.burst]! + this.min);
  }

  /** Start the periodic loop; the first run happens on the first run() request or after maxInterval. */
  start(): void {
    this.stopped = false;
    this.schedule(this.clock.now() + this.max);
  }

  stop(): void {
    this.stopped = true;
    this.cancel();
  }

  /** Request a run as soon as minInterval allows. */
  run(): void {
    if (this.stopped) return;
    if (this.running) {
      this.requested = true;
      return;
    }
    this.schedule(this.nextAllowed());
  }

  /** Resolves when no run is in progress. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private cancel(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private schedule(at: number): void {
    if (this.stopped) return;
    if (this.timer !== undefined && this.timerAt <= at) return;
    this.cancel();
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      void this.tick();
    }, Math.max(0, at - this.clock.now()));
  }

  private async tick(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    this.requested = false;
    this.lastRun = this.clock.now();
    this.recent.push(this.lastRun);
    if (this.recent.length > this.burst) this.recent.shift();
    let failed = false;
    try {
      await this.fn();
    } catch (err) {
      failed = true;
      this.onError?.(err);
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
    if (this.stopped) return;
    this.schedule(this.lastRun + this.max);
    if (failed) this.schedule(this.clock.now() + this.retry);
    if (this.requested) {
      this.requested = false;
      this.schedule(this.nextAllowed());
    }
  }
}
