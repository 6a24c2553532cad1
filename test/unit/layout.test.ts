// The layout's arrows, read from the import statements of the product code: lib/ knows no plugin, IPAM or daemon
// code; the CNI binary (plugins/, ipam/) never loads daemon code; the daemon never loads plugin or IPAM code; the
// daemon's parts (services, overlay, policy) do not import each other.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(ROOT, dir))) {
    const p = join(dir, e);
    if (statSync(join(ROOT, p)).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative import (static or dynamic) of a file, as repository paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

const edges = ['lib', 'plugins', 'ipam', 'proxy'].flatMap(sources).flatMap((f) => importsOf(f).map((to) => ({ from: f, to })));
const top = (p: string): string => p.split('/')[0]!;
const part = (p: string): string | undefined => (p.startsWith('proxy/') && p.split('/').length > 2 ? p.split('/')[1] : undefined);

describe('import graph', () => {
  it('reads a plausible number of imports', () => {
    expect(edges.length).toBeGreaterThan(200);
  });

  it('lib/ imports only lib/', () => {
    expect(edges.filter((e) => top(e.from) === 'lib' && top(e.to) !== 'lib')).toEqual([]);
  });

  it('the CNI binary (plugins/, ipam/) never imports the daemon (proxy/)', () => {
    expect(edges.filter((e) => ['plugins', 'ipam'].includes(top(e.from)) && top(e.to) === 'proxy')).toEqual([]);
  });

  it('the daemon (proxy/) never imports plugins/ or ipam/', () => {
    expect(edges.filter((e) => top(e.from) === 'proxy' && ['plugins', 'ipam'].includes(top(e.to)))).toEqual([]);
  });

  it("the daemon's parts sit side by side: services, overlay and policy do not import each other", () => {
    const parts = new Set(['services', 'overlay', 'policy']);
    // generic helpers the policy controller borrows from services; they belong in a shared place (lib/)
    const known = new Set(['proxy/policy/controller.ts -> proxy/services/runner/bounded.ts', 'proxy/policy/controller.ts -> proxy/services/conntrack/stale.ts']);
    const cross = edges.filter((e) => parts.has(part(e.from) ?? '') && parts.has(part(e.to) ?? '') && part(e.from) !== part(e.to));
    expect(cross.map((e) => `${e.from} -> ${e.to}`).filter((x) => !known.has(x))).toEqual([]);
  });
});
