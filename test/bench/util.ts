// Small helpers shared by the benchmark scripts: command-line options, percentiles, rounding.

/** `--name value` from argv, or the default */
export function opt(name: string, def: string, argv: readonly string[] = process.argv.slice(2)): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : def;
}

/** the p-th percentile (nearest rank); NaN for no samples */
export function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

/** one decimal */
export const r1 = (x: number): number => Math.round(x * 10) / 10;
