// Parses `iptables-save` / `ip6tables-save` output into tables, chains and rules.

export interface SavedRule {
  table: string;
  chain: string;
  /** the rule's arguments after `-A CHAIN`, unquoted; feed them back to RestoreProgram.deleteRule() to remove it */
  args: string[];
}

export interface SavedTable {
  name: string;
  /** chain name -> policy ('-' for user chains) */
  chains: Map<string, string>;
  /** in order of appearance */
  rules: SavedRule[];
}

export type SavedRuleset = Map<string, SavedTable>;

/** Split one line into arguments: whitespace-separated, double or single quotes group, backslash escapes a char. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inToken = true;
    } else if (quote) {
      if (c === quote) quote = null;
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inToken = true;
    } else if (c === ' ' || c === '\t') {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (quote) throw new Error(`unterminated quote in iptables line: ${line}`);
  if (inToken) out.push(cur);
  return out;
}

export function parseSave(text: string): SavedRuleset {
  const tables: SavedRuleset = new Map();
  let cur: SavedTable | undefined;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (!line || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1);
      cur = tables.get(name) ?? { name, chains: new Map(), rules: [] };
      tables.set(name, cur);
    } else if (line === 'COMMIT') {
      cur = undefined;
    } else if (!cur) {
      throw new Error(`iptables-save line ${n + 1} outside a table: ${line}`);
    } else if (line.startsWith(':')) {
      const [chain, policy] = line.slice(1).split(/\s+/);
      if (chain) cur.chains.set(chain, policy ?? '-');
    } else if (line.startsWith('-A ')) {
      const toks = tokenize(line);
      const chain = toks[1];
      if (!chain) throw new Error(`iptables-save line ${n + 1}: no chain: ${line}`);
      cur.rules.push({ table: cur.name, chain, args: toks.slice(2) });
    } else {
      throw new Error(`iptables-save line ${n + 1} not understood: ${line}`);
    }
  }
  return tables;
}

/** Rules of one chain, in order. */
export function chainRules(rs: SavedRuleset, table: string, chain: string): SavedRule[] {
  return (rs.get(table)?.rules ?? []).filter((r) => r.chain === chain);
}

export function hasChain(rs: SavedRuleset, table: string, chain: string): boolean {
  return rs.get(table)?.chains.has(chain) ?? false;
}

/** The value following the first occurrence of `flag` in args (e.g. '-j', '--comment'). */
export function argValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** The rule's jump target (-j or -g). */
export function jumpTarget(r: SavedRule): string | undefined {
  return argValue(r.args, '-j') ?? argValue(r.args, '-g');
}

/** Count of rules (lines starting with '-') across all tables: what the legacy-vs-nft detection compares. */
export function countRules(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('-')) n++;
  return n;
}
