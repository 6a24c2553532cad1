// npm run bench:plot — renders the kept benchmark results (test/bench/results/*.json) as SVG bar charts beside them.
// Dependency-free: grouped horizontal bars, ours vs the reference, one chart per results file.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = join(import.meta.dirname, 'results');

interface Bar {
  label: string;
  series: { name: string; value: number }[];
}

const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

/** The opening of a chart: white canvas, title, and a legend of the series names (`step` px apart). */
function svgHead(width: number, height: number, title: string, names: string[], step: number): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="8" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  names.forEach((n, i) => {
    out.push(`<rect x="${8 + i * step}" y="28" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${22 + i * step}" y="37">${esc(n)}</text>`);
  });
  return out;
}

export function barChart(title: string, unit: string, bars: Bar[]): string {
  const names = [...new Set(bars.flatMap((b) => b.series.map((s) => s.name)))];
  const max = Math.max(1e-9, ...bars.flatMap((b) => b.series.map((s) => s.value)));
  const rowH = 16;
  const labelW = 230;
  const plotW = 420;
  const groupH = names.length * rowH + 10;
  const top = 46;
  const h = top + bars.length * groupH + 20;
  const out = svgHead(labelW + plotW + 120, h, title, names, 150);
  bars.forEach((b, gi) => {
    const y0 = top + gi * groupH;
    out.push(`<text x="8" y="${y0 + groupH / 2}" dominant-baseline="middle">${esc(b.label)}</text>`);
    names.forEach((n, si) => {
      const v = b.series.find((s) => s.name === n)?.value;
      if (v === undefined) return;
      const w = Math.max(1, (v / max) * plotW);
      const y = y0 + si * rowH;
      out.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 3}" fill="${COLORS[si % COLORS.length]}"/>`);
      out.push(`<text x="${labelW + w + 4}" y="${y + rowH / 2}" dominant-baseline="middle">${v.toFixed(v < 10 ? 2 : 0)} ${unit}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function readJson<T>(name: string): T | undefined {
  const p = join(dir, name);
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as T) : undefined;
}

interface CniJson {
  meta: { date: string };
  results: { group: string; impl: string; sequential: { median: number }; cpu?: { median: number } }[];
}
const cni = readJson<CniJson>('cni.json');
if (cni) {
  const groups = [...new Set(cni.results.map((r) => r.group))];
  const bars = groups.map((g) => ({
    label: g,
    series: cni.results
      .filter((r) => r.group === g)
      .map((r) => ({ name: r.impl === 'floor' ? 'ours (bare start)' : r.impl === 'reference' ? 'reference (Go)' : 'ours', value: r.sequential.median })),
  }));
  writeFileSync(join(dir, 'cni.svg'), barChart(`bench:cni, sequential medians (${cni.meta.date.slice(0, 10)})`, 'ms', bars));
}

interface ProxyRow {
  impl: string;
  mode?: string;
  services: number;
  initialSyncMs: number;
  changeLatencyP50Ms: number;
  changeLatencyP99Ms: number;
  rssMB: number;
}
for (const f of ['proxy-nftables.json', 'proxy.json']) {
  const j = readJson<{ rows?: ProxyRow[] }>(f);
  const rows = j?.rows;
  if (!rows?.length) continue;
  const name = (r: ProxyRow) => `${r.impl}${r.mode ? ` (${r.mode})` : ''}`;
  const bars: Bar[] = [];
  for (const n of [...new Set(rows.map((r) => r.services))]) {
    const at = rows.filter((r) => r.services === n);
    bars.push({ label: `${n} svc: initial sync (s)`, series: at.map((r) => ({ name: name(r), value: r.initialSyncMs / 1000 })) });
    bars.push({ label: `${n} svc: change p50 (s)`, series: at.map((r) => ({ name: name(r), value: r.changeLatencyP50Ms / 1000 })) });
    bars.push({ label: `${n} svc: change p99 (s)`, series: at.map((r) => ({ name: name(r), value: r.changeLatencyP99Ms / 1000 })) });
    bars.push({ label: `${n} svc: RSS (100 MB)`, series: at.map((r) => ({ name: name(r), value: r.rssMB / 100 })) });
  }
  writeFileSync(join(dir, f.replace('.json', '.svg')), barChart(f.replace('.json', ''), '', bars));
}

/** Log-log line chart: one panel per metric, x = services, one line per series. */
export function logLogPanels(title: string, xs: number[], panels: { label: string; unit: string; series: { name: string; values: number[] }[] }[]): string {
  const pw = 300;
  const ph = 220;
  const left = 60;
  const top = 60;
  const gap = 40;
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const width = left + panels.length * (pw + gap) + 20;
  const height = top + ph + 60;
  const out = svgHead(width, height, title, names, 190);
  const lx = (x: number): number => Math.log10(x);
  const xmin = lx(Math.min(...xs));
  const xmax = lx(Math.max(...xs));
  panels.forEach((p, pi) => {
    const x0 = left + pi * (pw + gap);
    const vals = p.series.flatMap((s) => s.values).filter((v) => v > 0);
    const ymin = Math.floor(Math.log10(Math.min(...vals)));
    const ymax = Math.ceil(Math.log10(Math.max(...vals)));
    const X = (x: number): number => x0 + ((lx(x) - xmin) / Math.max(1e-9, xmax - xmin)) * pw;
    const Y = (v: number): number => top + ph - ((Math.log10(v) - ymin) / Math.max(1e-9, ymax - ymin)) * ph;
    out.push(`<text x="${x0}" y="${top - 8}" font-weight="bold">${esc(p.label)} (${esc(p.unit)}, log)</text>`);
    out.push(`<rect x="${x0}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    for (let e = ymin; e <= ymax; e++) {
      const y = Y(10 ** e);
      out.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${y}" y2="${y}" stroke="#eee"/>`);
      out.push(`<text x="${x0 - 4}" y="${y + 4}" text-anchor="end">${10 ** e >= 1 ? String(10 ** e) : (10 ** e).toFixed(-e)}</text>`);
    }
    for (const x of xs) out.push(`<text x="${X(x)}" y="${top + ph + 14}" text-anchor="middle">${x}</text>`);
    out.push(`<text x="${x0 + pw / 2}" y="${top + ph + 30}" text-anchor="middle">services</text>`);
    p.series.forEach((s) => {
      const color = COLORS[names.indexOf(s.name) % COLORS.length];
      const pts = xs.map((x, i) => [x, s.values[i]!] as const).filter(([, v]) => v > 0);
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([x, v]) => `${X(x).toFixed(1)},${Y(v).toFixed(1)}`).join(' ')}"/>`);
      for (const [x, v] of pts) out.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(v).toFixed(1)}" r="3" fill="${color}"/>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

interface VsRow {
  impl: string;
  mode: string;
  services: number;
  initialSyncMs: number;
  changeLatencyP99Ms: number;
  peakRssMB: number;
  cpuTotalS: number;
  connRatio: number;
}
const vs = readJson<{ meta: { date: string }; rows: VsRow[] }>('proxy-vs-upstream.json');
if (vs?.rows.length) {
  const xs = [...new Set(vs.rows.map((r) => r.services))].sort((a, b) => a - b);
  const lines = [...new Set(vs.rows.map((r) => `${r.impl} (${r.mode})`))];
  const series = (metric: (r: VsRow) => number): { name: string; values: number[] }[] =>
    lines.map((name) => ({
      name,
      values: xs.map((x) => {
        const r = vs.rows.find((q) => `${q.impl} (${q.mode})` === name && q.services === x);
        return r ? metric(r) : NaN;
      }),
    }));
  writeFileSync(
    join(dir, 'proxy-vs-upstream.svg'),
    logLogPanels(`bench:proxy --vs upstream (${vs.meta.date.slice(0, 10)}): flatnet vs kube-proxy, services x 3 endpoints`, xs, [
      { label: 'initial sync', unit: 'ms', series: series((r) => r.initialSyncMs) },
      { label: 'change -> kernel p99', unit: 'ms', series: series((r) => r.changeLatencyP99Ms) },
      { label: 'peak RSS', unit: 'MB', series: series((r) => r.peakRssMB) },
      { label: 'CPU for the whole phase', unit: 's', series: series((r) => r.cpuTotalS) },
    ]),
  );
}
