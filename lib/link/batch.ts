// Builders for `ip -batch -` and `bridge -batch -` programs. Pure: each call returns text; nothing runs here.
// ip's batch tokenizer splits on whitespace (quotes allowed), so every token we emit is validated to be safe.

const SAFE_TOKEN = /^[A-Za-z0-9_.:/@%+-]+$/;

/** Throws when a token could break a batch line (whitespace, quotes, comments, empty). */
export function token(v: string | number): string {
  const s = String(v);
  if (!SAFE_TOKEN.test(s)) throw new Error(`unsafe token for ip batch: ${JSON.stringify(s)}`);
  return s;
}

/** True when `name` is a valid Linux interface name (IFNAMSIZ 16 incl. NUL, no '/', ':' or whitespace). */
export function isValidIfname(name: string): boolean {
  return (
    name.length > 0 &&
    name.length <= 15 &&
    name !== '.' &&
    name !== '..' &&
    !/[\s/:]/.test(name) &&
    SAFE_TOKEN.test(name)
  );
}

/** An ordered list of `ip` batch lines; `text()` renders the program for `ip -batch -`. */
export class IpBatch {
  private readonly lines: string[] = [];

  /** Append a raw command made of tokens (each validated). */
  cmd(...parts: (string | number)[]): this {
    this.lines.push(parts.map(token).join(' '));
    return this;
  }

  get length(): number {
    return this.lines.length;
  }

  text(): string {
    return this.lines.length ? this.lines.join('\n') + '\n' : '';
  }
}

export interface VethSpec {
  name: string;
  peer: string;
  mac?: string;
  peerMac?: string;
  mtu?: number;
  /** move the peer into this netns (a PID or a name under /var/run/netns) */
  peerNetns?: string | number;
}

/** `link add NAME [address] [mtu] type veth peer name PEER [address] [mtu] [netns]` */
export function vethAddArgs(v: VethSpec): string[] {
  const out = ['link', 'add', v.name];
  if (v.mac) out.push('address', v.mac);
  if (v.mtu) out.push('mtu', String(v.mtu));
  out.push('type', 'veth', 'peer', 'name', v.peer);
  if (v.peerMac) out.push('address', v.peerMac);
  if (v.mtu) out.push('mtu', String(v.mtu));
  if (v.peerNetns !== undefined) out.push('netns', String(v.peerNetns));
  return out.map(token);
}

export interface BridgeSpec {
  name: string;
  mac?: string;
  mtu?: number;
  vlanFiltering?: boolean;
}

export function bridgeAddArgs(b: BridgeSpec): string[] {
  const out = ['link', 'add', b.name];
  if (b.mac) out.push('address', b.mac);
  if (b.mtu) out.push('mtu', String(b.mtu));
  out.push('type', 'bridge');
  if (b.vlanFiltering) out.push('vlan_filtering', '1');
  return out.map(token);
}

export interface RouteSpec {
  dst: string;
  via?: string;
  dev: string;
  mtu?: number;
  advmss?: number;
  metric?: number;
  table?: number;
  scope?: number;
  /** ECMP-tolerant add (`route append`) instead of `route add` */
  append?: boolean;
}

export function routeAddArgs(r: RouteSpec): string[] {
  const out = ['route', r.append ? 'append' : 'add', r.dst];
  if (r.via) out.push('via', r.via);
  out.push('dev', r.dev);
  if (r.mtu) out.push('mtu', String(r.mtu));
  if (r.advmss) out.push('advmss', String(r.advmss));
  if (r.metric !== undefined) out.push('metric', String(r.metric));
  if (r.table !== undefined) out.push('table', String(r.table));
  if (r.scope !== undefined) out.push('scope', String(r.scope));
  return out.map(token);
}
