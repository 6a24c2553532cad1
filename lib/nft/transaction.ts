// Builds `nft -f` transactions as text. The whole text is one netlink batch: it applies entirely or not at all.
//
// Rule bodies are nft expression text written by the caller (e.g. `ip daddr 10.0.0.1 tcp dport 80 dnat ip to ...`);
// names are validated, comments quoted, and element lists chunked (one `add element` with ~20k elements fails with
// ENOBUFS; ~1000 per command loads fine).

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';

export interface BaseChainSpec {
  type: 'filter' | 'nat' | 'route';
  hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress' | 'egress';
  /** a number or a standard name: raw, mangle, dstnat, filter, security, srcnat (optionally with +/- offset) */
  priority: number | string;
  policy?: 'accept' | 'drop';
  /** netdev ingress/egress only */
  device?: string;
}

export interface SetSpec {
  /** e.g. 'ipv4_addr', 'ipv4_addr . inet_proto . inet_service' */
  type: string;
  /** maps only: the value type, e.g. 'verdict' or 'ipv4_addr . inet_service' */
  map?: string;
  flags?: readonly ('constant' | 'interval' | 'timeout' | 'dynamic')[];
  comment?: string;
}

/** Default number of elements per `add element` / `delete element` command. */
export const ELEMENT_CHUNK = 1000;

/** Identifiers (tables, chains, sets): a letter or underscore, then letters, digits, _ . - / ; at most 256 bytes. */
export function checkName(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_./-]{0,255}$/.test(name)) throw new Error(`invalid nft name: ${JSON.stringify(name)}`);
  return name;
}

/** Quote a string for nft (comments): nft strings cannot hold '"' or newlines; at most 128 bytes in comments. */
export function quoteString(s: string): string {
  if (/["\n\r\\]/.test(s)) throw new Error(`nft string may not contain quotes, backslashes or newlines: ${JSON.stringify(s)}`);
  if (Buffer.byteLength(s) > 128) throw new Error(`nft comment longer than 128 bytes: ${JSON.stringify(s)}`);
  return `"${s}"`;
}

function checkFamily(f: NftFamily): NftFamily {
  if (!['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'].includes(f)) throw new Error(`invalid nft family: ${f}`);
  return f;
}

function checkBody(body: string): string {
  if (/[\n\r;]/.test(body)) throw new Error(`nft rule body may not contain newlines or ';': ${JSON.stringify(body)}`);
  if (!body.trim()) throw new Error('empty nft rule body');
  return body.trim();
}

/** An nft transaction under construction. Methods chain; render() returns the `nft -f` text. */
export class NftTransaction {
  private readonly lines: string[] = [];
  private readonly chunk: number;

  constructor(opts: { elementChunk?: number } = {}) {
    this.chunk = opts.elementChunk ?? ELEMENT_CHUNK;
  }

  private t(family: NftFamily, table: string): string {
    return `${checkFamily(family)} ${checkName(table)}`;
  }

  /** `add table` (no error when it exists) */
  addTable(family: NftFamily, table: string, comment?: string): this {
    this.lines.push(`add table ${this.t(family, table)}${comment ? ` { comment ${quoteString(comment)} ; }` : ''}`);
    return this;
  }

  deleteTable(family: NftFamily, table: string): this {
    this.lines.push(`delete table ${this.t(family, table)}`);
    return this;
  }

  flushTable(family: NftFamily, table: string): this {
    this.lines.push(`flush table ${this.t(family, table)}`);
    return this;
  }

  /** `add chain` (no error when it exists with the same spec); a base chain when `base` is given */
  addChain(family: NftFamily, table: string, chain: string, base?: BaseChainSpec, comment?: string): this {
    const parts: string[] = [];
    if (base) {
      const dev = base.device ? ` device ${quoteString(base.device)}` : '';
      if (!/^-?\d+$|^[a-z]+([+-]\d+)?$/.test(String(base.priority))) throw new Error(`invalid nft priority: ${base.priority}`);
      parts.push(`type ${base.type} hook ${base.hook}${dev} priority ${base.priority} ;`);
      if (base.policy) parts.push(`policy ${base.policy} ;`);
    }
    if (comment) parts.push(`comment ${quoteString(comment)} ;`);
    this.lines.push(`add chain ${this.t(family, table)} ${checkName(chain)}${parts.length ? ` { ${parts.join(' ')} }` : ''}`);
    return this;
  }

  flushChain(family: NftFamily, table: string, chain: string): this {
    this.lines.push(`flush chain ${this.t(family, table)} ${checkName(chain)}`);
    return this;
  }

  deleteChain(family: NftFamily, table: string, chain: string): this {
    this.lines.push(`delete chain ${this.t(family, table)} ${checkName(chain)}`);
    return this;
  }

  /** `add rule` (appends); `comment` tags the rule so it can be found again (e.g. by its owner) */
  addRule(family: NftFamily, table: string, chain: string, body: string, comment?: string): this {
    this.lines.push(
      `add rule ${this.t(family, table)} ${checkName(chain)} ${checkBody(body)}${comment ? ` comment ${quoteString(comment)}` : ''}`,
    );
    return this;
  }

  /** `insert rule` (prepends) */
  insertRule(family: NftFamily, table: string, chain: string, body: string, comment?: string): this {
    this.lines.push(
      `insert rule ${this.t(family, table)} ${checkName(chain)} ${checkBody(body)}${comment ? ` comment ${quoteString(comment)}` : ''}`,
    );
    return this;
  }

  /** delete one rule by its handle (from a listing) */
  deleteRule(family: NftFamily, table: string, chain: string, handle: number): this {
    if (!Number.isInteger(handle) || handle <= 0) throw new Error(`invalid nft rule handle: ${handle}`);
    this.lines.push(`delete rule ${this.t(family, table)} ${checkName(chain)} handle ${handle}`);
    return this;
  }

  /** `add set` or, with spec.map, `add map` */
  addSet(family: NftFamily, table: string, name: string, spec: SetSpec): this {
    if (!/^[a-z0-9_ .:]+$/.test(spec.type) || (spec.map && !/^[a-z0-9_ .:]+$/.test(spec.map)))
      throw new Error(`invalid nft set type: ${spec.type}${spec.map ? ' : ' + spec.map : ''}`);
    const parts = [`type ${spec.type}${spec.map ? ` : ${spec.map}` : ''} ;`];
    if (spec.flags?.length) parts.push(`flags ${spec.flags.join(',')} ;`);
    if (spec.comment) parts.push(`comment ${quoteString(spec.comment)} ;`);
    this.lines.push(`add ${spec.map ? 'map' : 'set'} ${this.t(family, table)} ${checkName(name)} { ${parts.join(' ')} }`);
    return this;
  }

  flushSet(family: NftFamily, table: string, name: string, isMap = false): this {
    this.lines.push(`flush ${isMap ? 'map' : 'set'} ${this.t(family, table)} ${checkName(name)}`);
    return this;
  }

  deleteSet(family: NftFamily, table: string, name: string, isMap = false): this {
    this.lines.push(`delete ${isMap ? 'map' : 'set'} ${this.t(family, table)} ${checkName(name)}`);
    return this;
  }

  /** `add element`, chunked; each element is nft text such as `10.0.0.1 . tcp . 80 : 10.1.0.5 . 8080` */
  addElements(family: NftFamily, table: string, set: string, elements: readonly string[]): this {
    return this.elements('add', family, table, set, elements);
  }

  deleteElements(family: NftFamily, table: string, set: string, elements: readonly string[]): this {
    return this.elements('delete', family, table, set, elements);
  }

  private elements(verb: string, family: NftFamily, table: string, set: string, elements: readonly string[]): this {
    const head = `${verb} element ${this.t(family, table)} ${checkName(set)}`;
    for (const e of elements) checkBody(e.replace(/,/g, ' '));
    for (let i = 0; i < elements.length; i += this.chunk) {
      this.lines.push(`${head} { ${elements.slice(i, i + this.chunk).join(', ')} }`);
    }
    return this;
  }

  /** raw nft command text, for what the builder does not cover (validated only for newlines) */
  raw(command: string): this {
    if (/[\n\r]/.test(command)) throw new Error('raw nft command may not contain newlines');
    this.lines.push(command);
    return this;
  }

  get size(): number {
    return this.lines.length;
  }

  isEmpty(): boolean {
    return this.lines.length === 0;
  }

  render(): string {
    return this.lines.length ? this.lines.join('\n') + '\n' : '';
  }
}
