// Does the proxy's nftables renderer pay for going through lib/nft's NftTransaction? Renders a full sync of N services
// (3 endpoints each) with proxy/services/backends/nftables/rules.ts, then pushes the same program, command by
// command, through NftTransaction (name and body checks, comment quoting, element chunking) and times both.
//   node test/bench/nft-builder.ts [--services 10000] [--reps 5]     results: test/bench/results/nft-builder.{json,md}
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NftTransaction, type NftFamily } from '../../lib/nft/index.ts';
import { renderFull } from '../../proxy/services/backends/nftables/rules.ts';
import { ep, plan, svc, syncInput } from '../helpers/proxy-plans.ts';
import { opt, pct, r1 } from './util.ts';

const n = Number(opt('services', '10000'));
const reps = Number(opt('reps', '5'));
const ip = (base: number, i: number): string => `10.${base + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const plans = Array.from({ length: n }, (_, i) => plan(svc(`s${i}`, { clusterIP: ip(96, i), port: 80 }), [0, 1, 2].map((k) => ep(ip(200, i * 3 + k)))));
const input = syncInput(plans);

/** Replays an `nft -f` program through the builder: rules and elements through their methods, the rest raw. */
function replay(program: string): string {
  const tx = new NftTransaction();
  for (const line of program.split('\n')) {
    if (!line) continue;
    const rule = /^add rule (\S+) (\S+) (\S+) (.*)$/.exec(line);
    const elem = /^add element (\S+) (\S+) (\S+) \{ (.*) \}$/.exec(line);
    if (rule) tx.addRule(rule[1] as NftFamily, rule[2]!, rule[3]!, rule[4]!);
    else if (elem) tx.addElements(elem[1] as NftFamily, elem[2]!, elem[3]!, elem[4]!.split(', '));
    else tx.raw(line);
  }
  return tx.render();
}

const time = <T>(f: () => T): [number, T] => {
  const t0 = performance.now();
  const v = f();
  return [performance.now() - t0, v];
};
const own: number[] = [];
const viaBuilder: number[] = [];
let program = '';
let built = '';
for (let i = 0; i < reps; i++) {
  const [a, res] = time(() => renderFull(input, { table: 'bench', family: 4 }));
  program = res.program;
  const [b, text] = time(() => replay(program));
  built = text;
  own.push(a);
  viaBuilder.push(b);
}
const lines = program.split('\n').filter(Boolean);
const out = {
  when: new Date().toISOString(),
  load1: r1(loadavg()[0]!),
  services: n,
  programBytes: program.length,
  programLines: lines.length,
  ruleLines: lines.filter((l) => l.startsWith('add rule')).length,
  elementLines: lines.filter((l) => l.startsWith('add element')).length,
  builderLines: built.split('\n').filter(Boolean).length,
  renderMsP50: r1(pct(own, 50)),
  builderReplayMsP50: r1(pct(viaBuilder, 50)),
};
const here = dirname(fileURLToPath(import.meta.url));
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'nft-builder.json'), JSON.stringify(out, null, 1) + '\n');
const md = `# nft text: the proxy's renderer vs lib/nft's NftTransaction (${out.when}, load ${out.load1} on 2 cores)

Full sync of ${n} services x 3 endpoints (IPv4): ${out.programLines} lines (${out.ruleLines} rules, ${out.elementLines} element
commands), ${(out.programBytes / 1e6).toFixed(1)} MB. Medians of ${reps} runs.

| step | ms |
|---|---:|
| proxy renderer (renderFull: planning + text) | ${out.renderMsP50} |
| the same program pushed through NftTransaction (checks + text) | ${out.builderReplayMsP50} |

NftTransaction re-chunks element commands at 1000 elements: ${out.elementLines} -> ${out.builderLines - (out.programLines - out.elementLines)}.
`;
writeFileSync(join(here, 'results', 'nft-builder.md'), md);
console.log(md);
