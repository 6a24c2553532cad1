// node deploy/kind/e2e-summary.mjs --report REPORT.json --out SUMMARY.md [--title T] [--meta "key: value"]...
//   [--explain deploy/kind/e2e-explanations.tsv]
// Turns ginkgo's JSON report of an e2e.test run into the committed Markdown summary: counts, duration, every spec
// that ran with its result, and every failure with its reason (the first lines of the failure message, its source
// location, and the explanation from the explanations file when a pattern there matches the spec name).
import { readFileSync, writeFileSync } from 'node:fs';

function parseArgs(argv) {
  const o = { meta: [], title: 'e2e results' };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[i + 1] ?? '';
    if (k === 'meta') o.meta.push(v);
    else o[k] = v;
  }
  if (!o.report || !o.out) throw new Error('usage: e2e-summary.mjs --report REPORT.json --out SUMMARY.md');
  return o;
}

// explanations file: one `regex<TAB>text` per line, `#` comments
function readExplanations(file) {
  if (!file) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => {
      const [re, ...text] = l.split('\t');
      return { re: new RegExp(re), text: text.join(' ').trim() };
    });
}

const specName = (s) => [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText].filter(Boolean).join(' ');
const seconds = (ns) => (ns ? ns / 1e9 : 0);
const fmtDuration = (s) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`);
const cell = (t) => t.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');

function reason(failure) {
  if (!failure) return '';
  const lines = (failure.Message ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
  let msg = lines.slice(0, 3).join(' ');
  if (msg.length > 400) msg = `${msg.slice(0, 400)}...`;
  const loc = failure.Location?.FileName
    ? ` (${failure.Location.FileName.replace(/^.*k8s\.io\/kubernetes@[^/]+\//, '')}:${failure.Location.LineNumber})`
    : '';
  return msg + loc;
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const suites = JSON.parse(readFileSync(o.report, 'utf8'));
  const explanations = readExplanations(o.explain);
  const explain = (name) => explanations.find((e) => e.re.test(name))?.text ?? '';

  const specs = [];
  let runTime = 0;
  let willRun = 0;
  let start = '';
  const suiteFailures = [];
  for (const suite of suites) {
    runTime += seconds(suite.RunTime);
    willRun += suite.PreRunStats?.SpecsThatWillRun ?? 0;
    start ||= suite.StartTime;
    for (const s of suite.SpecReports ?? []) {
      if (s.LeafNodeType !== 'It') {
        // suite-level nodes (BeforeSuite etc.) only matter when they fail
        if (s.State !== 'passed' && s.State !== 'skipped') suiteFailures.push(s);
        continue;
      }
      // specs the focus filtered out are reported as skipped without a single attempt
      if (s.State === 'skipped' && !s.NumAttempts) continue;
      specs.push(s);
    }
  }
  specs.sort((a, b) => specName(a).localeCompare(specName(b)));
  const by = (st) => specs.filter((s) => st.includes(s.State));
  const passed = by(['passed']);
  const failed = by(['failed', 'panicked', 'timedout', 'interrupted', 'aborted']);
  const skipped = by(['skipped']);
  const flaked = passed.filter((s) => (s.NumAttempts ?? 1) > 1);

  const out = [];
  out.push(`# ${o.title}`, '');
  for (const m of o.meta) out.push(`- ${m}`);
  out.push(`- started: ${start}`);
  out.push(`- e2e run (ginkgo): ${fmtDuration(runTime)}`);
  out.push('');
  out.push('| selected | passed | failed | skipped at run time | flaked |', '|---|---|---|---|---|');
  out.push(`| ${willRun} | ${passed.length} | ${failed.length} | ${skipped.length} | ${flaked.length} |`, '');

  if (suiteFailures.length) {
    out.push('## Suite failures', '');
    for (const s of suiteFailures) out.push(`- ${s.LeafNodeType} ${s.State}: ${cell(reason(s.Failure))}`);
    out.push('');
  }
  out.push('## Failures', '');
  if (!failed.length) out.push('None.');
  else {
    out.push('| spec | reason | explanation |', '|---|---|---|');
    for (const s of failed) out.push(`| ${cell(specName(s))} | ${cell(reason(s.Failure))} | ${cell(explain(specName(s)))} |`);
  }
  out.push('');
  if (skipped.length) {
    out.push('## Skipped at run time', '', '| spec | reason |', '|---|---|');
    for (const s of skipped) out.push(`| ${cell(specName(s))} | ${cell(reason(s.Failure))} |`);
    out.push('');
  }
  out.push('## Every spec', '', '| result | seconds | spec |', '|---|---|---|');
  for (const s of specs) {
    const st = (s.NumAttempts ?? 1) > 1 && s.State === 'passed' ? `passed (attempt ${s.NumAttempts})` : s.State;
    out.push(`| ${st} | ${seconds(s.RunTime).toFixed(1)} | ${cell(specName(s))} |`);
  }
  out.push('');
  writeFileSync(o.out, out.join('\n'));
  console.log(`${o.out}: ${passed.length} passed, ${failed.length} failed, ${skipped.length} skipped, ${fmtDuration(runTime)}`);
  return failed.length + suiteFailures.length;
}

process.exitCode = main() ? 1 : 0;
