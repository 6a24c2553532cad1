import { describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner, type Clock } from '../../../../proxy/services/runner/bounded.ts';

class FakeClock implements Clock {
  t = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** advance time, firing due timers in order, letting async runs settle between them */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      const due = [...this.timers.entries()].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await flush();
    }
    this.t = end;
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function setup(fail: () => boolean = () => false, burst = 1) {
  const clock = new FakeClock();
  const runs: number[] = [];
  const r = new BoundedFrequencyRunner(
    async () => {
      runs.push(clock.now());
      if (fail()) throw new Error('boom');
    },
    { minIntervalMs: 1000, maxIntervalMs: 30000, retryIntervalMs: 2000, clock, burst },
  );
  r.start();
  return { clock, runs, r };
}

describe('BoundedFrequencyRunner', () => {
  it('runs at once on the first request, then at most once per minInterval', async () => {
    const { clock, runs, r } = setup();
    r.run();
    await clock.advance(0);
    expect(runs).toEqual([0]);
    await clock.advance(100);
    r.run();
    r.run();
    r.run();
    await clock.advance(100);
    expect(runs).toEqual([0]);
    await clock.advance(1000);
    expect(runs).toEqual([0, 1000]);
    r.stop();
  });

  it('runs at least once per maxInterval without requests', async () => {
    const { clock, runs, r } = setup();
    await clock.advance(65000);
    expect(runs).toEqual([30000, 60000]);
    r.stop();
  });

  it('a request after a long quiet period runs immediately', async () => {
    const { clock, runs, r } = setup();
    await clock.advance(5000);
    r.run();
    await clock.advance(0);
    expect(runs).toEqual([5000]);
    r.stop();
  });

  it('retries after retryInterval when the run fails', async () => {
    let n = 0;
    const { clock, runs, r } = setup(() => ++n <= 2);
    r.run();
    await clock.advance(0);
    await clock.advance(2000);
    await clock.advance(2000);
    expect(runs).toEqual([0, 2000, 4000]);
    await clock.advance(10000);
    expect(runs).toEqual([0, 2000, 4000]);
    r.stop();
  });

  it('stop() cancels future runs', async () => {
    const { clock, runs, r } = setup();
    r.stop();
    r.run();
    await clock.advance(100000);
    expect(runs).toEqual([]);
  });

  it('with burst 2, a second request within minInterval runs at once, a third waits for the window', async () => {
    const { clock, runs, r } = setup(() => false, 2);
    r.run();
    await clock.advance(0);
    await clock.advance(10);
    r.run();
    await clock.advance(0);
    expect(runs).toEqual([0, 10]);
    await clock.advance(10);
    r.run();
    await clock.advance(500);
    expect(runs).toEqual([0, 10]); // two runs already in this 1 s window
    await clock.advance(600); // t=1120: the window since t=0 has passed
    expect(runs).toEqual([0, 10, 1000]);
    // a sustained stream is still held to about one run per minInterval
    for (let i = 0; i < 30; i++) {
      r.run();
      await clock.advance(100);
    }
    const inWindow = runs.filter((t) => t >= 1200 && t < 4200).length;
    expect(inWindow).toBeLessThanOrEqual(6);
    expect(inWindow).toBeGreaterThanOrEqual(3);
  });
});
