// Builds iptables-restore programs as text.
//
// A program is a list of tables; each table lists the chains it declares and then its commands in order. Feed the
// text to `iptables-restore --noflush` (see iptables.ts): the whole program is applied as one transaction.
//
// Semantics to keep in mind (iptables-restore --noflush):
//   - declaring a chain (`:NAME - [0:0]`) creates it, or FLUSHES it when it already exists;
//     never declare a chain whose rules you do not own entirely;
//   - a chain that exists already can be referenced (-A / -D / -j) without being declared;
//   - `-D` of a rule that does not exist, or `-X` of a chain still referenced, fails the whole program.

export type IptablesTable = 'filter' | 'nat' | 'mangle' | 'raw' | 'security';

const BUILTIN = new Set([
  'INPUT',
  'OUTPUT',
  'FORWARD',
  'PREROUTING',
  'POSTROUTING',
]);

/** Quote one argument the way iptables-restore tokenizes it (double quotes, backslash escapes). */
export function quoteArg(arg: string): string {
  if (arg.includes('\n') || arg.includes('\r')) throw new Error(`iptables argument contains a newline: ${JSON.stringify(arg)}`);
  if (arg !== '' && /^[A-Za-z0-9_@%+=:,./!-]+$/.test(arg)) return arg;
  return '"' + arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

/** Render an argument vector as one restore line. */
export function renderArgs(args: readonly string[]): string {
  return args.map(quoteArg).join(' ');
}

interface TableProgram {
  chains: string[];
  lines: string[];
}

/** An iptables-restore program under construction. Methods chain; render() returns the text. */
export class RestoreProgram {
  private readonly tables = new Map<IptablesTable, TableProgram>();

  private table(t: IptablesTable): TableProgram {
    let p = this.tables.get(t);
    if (!p) {
      p = { chains: [], lines: [] };
      this.tables.set(t, p);
    }
    return p;
  }

  /** Declare a chain: creates it, or flushes it if it exists. Built-in chains are declared with policy ACCEPT. */
  declareChain(table: IptablesTable, chain: string): this {
    checkChainName(chain);
    const p = this.table(table);
    if (!p.chains.includes(chain)) p.chains.push(chain);
    return this;
  }

  /** -A chain args */
  append(table: IptablesTable, chain: string, args: readonly string[]): this {
    return this.cmd(table, ['-A', chain, ...args]);
  }

  /** -I chain [position] args (position is 1-based; omitted = 1) */
  insert(table: IptablesTable, chain: string, args: readonly string[], position?: number): this {
    return this.cmd(table, ['-I', chain, ...(position ? [String(position)] : []), ...args]);
  }

  /** -D chain args (the rule must exist, or the whole program fails) */
  deleteRule(table: IptablesTable, chain: string, args: readonly string[]): this {
    return this.cmd(table, ['-D', chain, ...args]);
  }

  /** -F chain */
  flush(table: IptablesTable, chain: string): this {
    return this.cmd(table, ['-F', chain]);
  }

  /** -X chain (must be empty and unreferenced once the preceding commands ran) */
  deleteChain(table: IptablesTable, chain: string): this {
    return this.cmd(table, ['-X', chain]);
  }

  private cmd(table: IptablesTable, argv: string[]): this {
    checkChainName(argv[1]!);
    this.table(table).lines.push(renderArgs(argv));
    return this;
  }

  isEmpty(): boolean {
    for (const p of this.tables.values()) if (p.chains.length || p.lines.length) return false;
    return true;
  }

  /** The program text, one `*table ... COMMIT` block per table used, in first-use order. */
  render(): string {
    const out: string[] = [];
    for (const [name, p] of this.tables) {
      if (!p.chains.length && !p.lines.length) continue;
      out.push(`*${name}`);
      for (const c of p.chains) out.push(`:${c} ${BUILTIN.has(c) ? 'ACCEPT' : '-'} [0:0]`);
      out.push(...p.lines);
      out.push('COMMIT');
    }
    return out.length ? out.join('\n') + '\n' : '';
  }
}

/** Chain names: 1..28 chars (XT_EXTENSION_MAXNAMELEN - 1), no whitespace, not starting with '-'. */
export function checkChainName(name: string): void {
  if (!/^[^\s-][^\s]{0,27}$/.test(name)) throw new Error(`invalid iptables chain name: ${JSON.stringify(name)}`);
}
