// Waiting on observed state in tests, the harness and benchmarks: poll until a condition holds.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Falsy = undefined | null | false | 0 | '';

/**
 * Polls `fn` every `stepMs` until it returns a truthy value and resolves with that value. A throw counts as "not
 * yet"; on timeout the error names `what` and the last throw.
 */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 60_000, stepMs = 100): Promise<Exclude<T, Falsy>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as Exclude<T, Falsy>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const why = lastErr === undefined ? '' : `: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(stepMs);
  }
}
