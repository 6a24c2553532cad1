// Pure planning for the overlay: Node list + local facts -> desired state; desired vs observed kernel -> programs.
import { createHash } from 'node:crypto';
import { canonicalIP, canonicalNetwork, cidrContainsText, familyOf, formatIP, hostCidr, mustParseCidr, networkOf, type Family } from '../../lib/net/ip.ts';
import type { SubnetEnv } from '../../lib/overlay/subnet-file.ts';
import { ANNOTATIONS, type OverlayConfig } from './config.ts';
import type { OverlayNode } from './node.ts';

export const BACKEND_TYPE = 'vxlan';

/** The underlay interface carrying the node's IP. */
export interface Underlay {
  dev: string;
  ip: string;
  prefix: number;
  mtu: number;
}

export interface DeviceSpec {
  name: string;
  vni: number;
  port: number;
  local: string;
  mac: string;
  mtu: number;
}

export interface Neighbour {
  ip: string;
  mac: string;
}

export interface FdbEntry {
  mac: string;
  dst: string;
}

export interface RouteSpec {
  dst: string;
  via: string;
  dev: string;
  onlink: boolean;
}

export interface MasqPlan {
  table: string;
  /** per family: the local pod CIDRs whose traffic is masqueraded ... */
  sources: { 4: string[]; 6: string[] };
  /** ... unless it goes to one of these */
  exempt: { 4: string[]; 6: string[] };
}

/** VXLAN packets to `port` are dropped unless they come from one of `peers` (per family). */
export interface SourceFilter {
  port: number;
  peers: { 4: string[]; 6: string[] };
}

export interface DesiredState {
  device: DeviceSpec;
  /** CIDR text, /32 or /128 */
  addresses: string[];
  neighbours: Neighbour[];
  fdb: FdbEntry[];
  routes: RouteSpec[];
  subnetEnv?: SubnetEnv;
  masquerade?: MasqPlan;
  sourceFilter?: SourceFilter;
  /** what this node publishes on its Node object */
  annotations: Record<string, string>;
  /** peers skipped and why (for logs) */
  skipped: { node: string; reason: string }[];
}

/** A stable, locally administered unicast MAC for this node's VTEP, so a recreated device keeps its identity. */
export function vtepMac(nodeName: string, vni: number): string {
  const h = createHash('sha256').update(`${nodeName}/${vni}`).digest();
  const b = [...h.subarray(0, 6)];
  b[0] = (b[0]! & 0xfe) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The node's VTEP address: its IPv4 InternalIP (or IPv6 when preferred or the only one). */
export function underlayIp(node: OverlayNode, preferIPv6: boolean): string | undefined {
  const v4 = node.internalIPs.find((ip) => familyOf(ip) === 4);
  const v6 = node.internalIPs.find((ip) => familyOf(ip) === 6);
  return preferIPv6 ? (v6 ?? v4) : (v4 ?? v6);
}

/** Overlay MTU: configured, else underlay MTU minus VXLAN overhead (50 over IPv4, 70 over IPv6). */
export function overlayMtu(cfg: OverlayConfig, underlay: Underlay): number {
  if (cfg.mtu !== undefined) return cfg.mtu;
  return underlay.mtu - (familyOf(underlay.ip) === 6 ? 70 : 50);
}

function sameSubnet(underlay: Underlay, ip: string): boolean {
  return cidrContainsText(`${underlay.ip}/${underlay.prefix}`, ip);
}

const byFamily = (list: string[], f: Family): string[] => list.filter((c) => familyOf(c) === f);
const uniqSorted = (l: string[]): string[] => [...new Set(l)].sort();

/**
 * Desired state for `self` given every known node. `self.podCIDRs` may be empty (not yet allocated): the device is
 * still planned (so the VTEP can be published) but nothing depends on a subnet.
 */
export function planOverlay(cfg: OverlayConfig, self: OverlayNode, nodes: OverlayNode[], underlay: Underlay): DesiredState {
  const mac = vtepMac(self.name, cfg.vni);
  const local = canonicalIP(underlay.ip);
  const mtu = overlayMtu(cfg, underlay);
  const device: DeviceSpec = { name: cfg.deviceName, vni: cfg.vni, port: cfg.port, local, mac, mtu };
  const addresses = self.podCIDRs.map((c) => hostCidr(formatIP(networkOf(mustParseCidr(c)))));
  const underlayFamily = familyOf(local)!;

  const neighbours: Neighbour[] = [];
  const fdb: FdbEntry[] = [];
  const routes: RouteSpec[] = [];
  const skipped: { node: string; reason: string }[] = [];
  for (const n of [...nodes].sort((a, b) => a.name.localeCompare(b.name))) {
    if (n.name === self.name) continue;
    const a = n.annotations;
    const why =
      peerProblem(cfg, n, underlayFamily) ??
      (canonicalIP(a[ANNOTATIONS.publicIp]!) === local ? 'public IP is this node\'s own address' : undefined);
    if (why) {
      skipped.push({ node: n.name, reason: why });
      continue;
    }
    const peerMac = a[ANNOTATIONS.vtepMac]!.toLowerCase();
    const peerIp = canonicalIP(a[ANNOTATIONS.publicIp]!);
    let needsFdb = false;
    for (const c of n.podCIDRs) {
      const dst = canonicalNetwork(c);
      if (cfg.directRouting && familyOf(c) === underlayFamily && sameSubnet(underlay, peerIp)) {
        routes.push({ dst, via: peerIp, dev: underlay.dev, onlink: false });
        continue;
      }
      const gw = formatIP(networkOf(mustParseCidr(c)));
      neighbours.push({ ip: gw, mac: peerMac });
      routes.push({ dst, via: gw, dev: cfg.deviceName, onlink: true });
      needsFdb = true;
    }
    if (needsFdb) fdb.push({ mac: peerMac, dst: peerIp });
  }

  const annotations: Record<string, string> = {
    [ANNOTATIONS.backendType]: BACKEND_TYPE,
    [ANNOTATIONS.vtepMac]: mac,
    [ANNOTATIONS.publicIp]: local,
    [ANNOTATIONS.vni]: String(cfg.vni),
  };

  const clusterCIDRs = cfg.clusterCIDRs.length
    ? cfg.clusterCIDRs
    : uniqSorted(nodes.flatMap((n) => n.podCIDRs));
  const desired: DesiredState = { device, addresses, neighbours, fdb, routes, annotations, skipped };
  if (cfg.peerSourceFilter) {
    // every address a peer may encapsulate from: its published VTEP address and its InternalIPs
    const peerIps = uniqSorted(
      nodes.filter((n) => n.name !== self.name).flatMap((n) => [n.annotations[ANNOTATIONS.publicIp] ?? '', ...n.internalIPs].filter((ip) => familyOf(ip)).map((ip) => canonicalIP(ip))),
    );
    desired.sourceFilter = { port: cfg.port, peers: { 4: byFamily(peerIps, 4), 6: byFamily(peerIps, 6) } };
  }
  if (self.podCIDRs.length) {
    desired.subnetEnv = { networks: clusterCIDRs, subnets: self.podCIDRs, mtu, ipMasq: cfg.masquerade };
    if (cfg.masquerade) {
      // Only this node's own addresses keep the pod source. A remote node would answer a pod through the overlay
      // while the request came over the underlay, and strict reverse-path filtering (kind's nodes set
      // rp_filter=1) drops such a request; masqueraded, it is answered the way it came, as with flannel.
      const nodeIps = self.internalIPs.map(hostCidr);
      const exempt = uniqSorted([...clusterCIDRs, ...cfg.nonMasqueradeCIDRs, ...nodeIps]);
      desired.masquerade = {
        table: cfg.masqueradeTable,
        sources: { 4: byFamily(self.podCIDRs, 4), 6: byFamily(self.podCIDRs, 6) },
        exempt: { 4: byFamily(exempt, 4), 6: byFamily(exempt, 6) },
      };
    }
  }
  return desired;
}

function peerProblem(cfg: OverlayConfig, n: OverlayNode, underlayFamily: Family): string | undefined {
  const a = n.annotations;
  if (a[ANNOTATIONS.backendType] !== BACKEND_TYPE) return 'no vxlan backend annotation';
  if (a[ANNOTATIONS.vni] !== undefined && a[ANNOTATIONS.vni] !== String(cfg.vni)) return `VNI ${a[ANNOTATIONS.vni]} differs`;
  const mac = a[ANNOTATIONS.vtepMac]?.toLowerCase();
  if (!mac || !MAC_RE.test(mac)) return 'missing or invalid VTEP MAC';
  const ip = a[ANNOTATIONS.publicIp];
  if (!ip || !familyOf(ip)) return 'missing or invalid public IP';
  if (familyOf(ip) !== underlayFamily) return 'public IP family differs from ours';
  if (!n.podCIDRs.length) return 'no podCIDR';
  return undefined;
}

/** Annotations to patch onto our Node, or undefined when it already carries them. */
export function annotationPatch(self: OverlayNode, desired: Record<string, string>): Record<string, string> | undefined {
  const diff = Object.entries(desired).filter(([k, v]) => self.annotations[k] !== v);
  return diff.length ? Object.fromEntries(diff) : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Observed kernel state and the diff

export interface ObservedDevice {
  kind: string;
  mac: string;
  mtu: number;
  up: boolean;
  vni?: number;
  port?: number;
  local?: string;
  learning?: boolean;
}

export interface ObservedRoute {
  dst: string;
  via?: string;
  dev?: string;
  onlink: boolean;
}

export interface ObservedState {
  device?: ObservedDevice;
  /** global addresses on the device (CIDR text) */
  addresses: string[];
  /** neighbours on the device; permanent = state PERMANENT */
  neighbours: (Neighbour & { permanent: boolean })[];
  fdb: FdbEntry[];
  /** routes carrying the controller's protocol number (both families) */
  routes: ObservedRoute[];
}

export interface Program {
  /** the device is deleted and created afresh */
  recreate: boolean;
  /** lines for `ip -batch -` (device, addresses, stale route removal, neighbours; family inferred from addresses) */
  ip: string[];
  /** lines for `bridge -batch -` (FDB), applied after `ip` */
  bridge: string[];
  /** route replaces for `ip -batch -`, applied last so a route only appears once its neighbour and FDB entry exist */
  routes: string[];
}

export function deviceMatches(d: ObservedDevice | undefined, want: DeviceSpec): boolean {
  return (
    !!d &&
    d.kind === 'vxlan' &&
    d.vni === want.vni &&
    d.port === want.port &&
    d.learning === false &&
    d.local !== undefined &&
    canonicalIP(d.local) === want.local &&
    d.mac.toLowerCase() === want.mac
  );
}

/** The ip/bridge batch lines that take the kernel from `obs` to `want`. Empty lines mean nothing to do. */
export function diffProgram(want: DesiredState, obs: ObservedState, routeProtocol: number): Program {
  const dev = want.device;
  const ip: string[] = [];
  const bridge: string[] = [];
  const recreate = !deviceMatches(obs.device, dev);
  // after (re)creation, everything that lived on the device is gone
  const o: ObservedState = recreate
    ? { device: undefined, addresses: [], neighbours: [], fdb: [], routes: obs.routes.filter((r) => r.dev !== dev.name) }
    : obs;
  if (recreate) {
    if (obs.device) ip.push(`link del dev ${dev.name}`);
    ip.push(
      `link add ${dev.name} address ${dev.mac} type vxlan id ${dev.vni} dstport ${dev.port} local ${dev.local} nolearning`,
    );
  }
  if (recreate || !o.device || o.device.mtu !== dev.mtu || !o.device.up) {
    ip.push(`link set dev ${dev.name} mtu ${dev.mtu} up`);
  }
  // addresses
  const wantAddrs = new Set(want.addresses.map(canonCidr));
  const haveAddrs = new Set(o.addresses.map(canonCidr));
  for (const a of [...haveAddrs].sort()) if (!wantAddrs.has(a)) ip.push(`addr del ${a} dev ${dev.name}`);
  for (const a of [...wantAddrs].sort()) {
    if (!haveAddrs.has(a)) ip.push(`addr replace ${a} dev ${dev.name}${a.includes(':') ? ' nodad' : ''}`);
  }
  // routes (ours carry routeProtocol)
  const wantRoutes = new Map(want.routes.map((r) => [canonCidr(r.dst), r]));
  const haveRoutes = new Map(o.routes.map((r) => [canonCidr(r.dst), r]));
  for (const dst of haveRoutes.keys()) {
    if (!wantRoutes.has(dst)) ip.push(`route del ${dst} proto ${routeProtocol}`);
  }
  // neighbours (we own the PERMANENT ones on our device)
  const wantNeigh = new Map(want.neighbours.map((n) => [canonicalIP(n.ip), n.mac.toLowerCase()]));
  const haveNeigh = new Map(o.neighbours.map((n) => [canonicalIP(n.ip), n]));
  for (const [ipc, n] of haveNeigh) {
    if (n.permanent && !wantNeigh.has(ipc)) ip.push(`neigh del ${ipc} dev ${dev.name}`);
  }
  for (const [nip, mac] of [...wantNeigh].sort()) {
    const have = haveNeigh.get(nip);
    if (!have || !have.permanent || have.mac.toLowerCase() !== mac) {
      ip.push(`neigh replace ${nip} lladdr ${mac} dev ${dev.name} nud permanent`);
    }
  }
  const routeLines: string[] = [];
  for (const [dst, r] of [...wantRoutes].sort(([a], [b]) => a.localeCompare(b))) {
    const have = haveRoutes.get(dst);
    const same =
      have && have.via !== undefined && canonicalIP(have.via) === r.via && have.dev === r.dev && have.onlink === r.onlink;
    if (!same) {
      routeLines.push(`route replace ${dst} via ${r.via} dev ${r.dev}${r.onlink ? ' onlink' : ''} proto ${routeProtocol}`);
    }
  }
  // FDB
  const key = (f: FdbEntry): string => `${f.mac.toLowerCase()} ${canonicalIP(f.dst)}`;
  const wantFdb = new Set(want.fdb.map(key));
  const haveFdb = new Set(o.fdb.map(key));
  for (const k of [...haveFdb].sort()) {
    if (!wantFdb.has(k)) {
      const [mac, dst] = k.split(' ');
      bridge.push(`fdb del ${mac} dev ${dev.name} dst ${dst} self`);
    }
  }
  for (const k of [...wantFdb].sort()) {
    if (!haveFdb.has(k)) {
      const [mac, dst] = k.split(' ');
      bridge.push(`fdb append ${mac} dev ${dev.name} dst ${dst} self permanent`);
    }
  }
  return { recreate, ip, bridge, routes: routeLines };
}

function canonCidr(c: string): string {
  if (!c.includes('/')) return hostCidr(c);
  const [a, p] = c.split('/');
  return `${canonicalIP(a!)}/${p}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Masquerade (nftables, one private table)

/**
 * An `nft -f` program that atomically replaces the overlay's table: the masquerade rules (when planned) and the
 * VXLAN source filter (when planned). Undefined when there is nothing to hold.
 */
export function renderOverlayTable(table: string, m: MasqPlan | undefined, f: SourceFilter | undefined): string | undefined {
  if (!m && !f) return undefined;
  const lines: string[] = [`add table inet ${table}`, `delete table inet ${table}`, `table inet ${table} {`];
  const set = (name: string, type: string, elems: string[], interval = true): void => {
    lines.push(`  set ${name} {`, `    type ${type}`, ...(interval ? ['    flags interval', '    auto-merge'] : []));
    if (elems.length) lines.push(`    elements = { ${elems.join(', ')} }`);
    lines.push('  }');
  };
  if (f) {
    set('vxlan_peers4', 'ipv4_addr', f.peers[4], false);
    set('vxlan_peers6', 'ipv6_addr', f.peers[6], false);
    lines.push(
      '  chain vxlan_input {',
      '    type filter hook input priority filter - 10; policy accept;',
      `    meta nfproto ipv4 udp dport ${f.port} ip saddr != @vxlan_peers4 counter drop`,
      `    meta nfproto ipv6 udp dport ${f.port} ip6 saddr != @vxlan_peers6 counter drop`,
      '  }',
    );
  }
  if (m) masqueradeLines(m, lines, set);
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** The masquerade-only table (no source filter). */
export function renderMasquerade(m: MasqPlan): string {
  return renderOverlayTable(m.table, m, undefined)!;
}

function masqueradeLines(m: MasqPlan, lines: string[], set: (name: string, type: string, elems: string[]) => void): void {
  set('nomasq4', 'ipv4_addr', m.exempt[4]);
  set('nomasq6', 'ipv6_addr', m.exempt[6]);
  lines.push('  chain postrouting {', '    type nat hook postrouting priority srcnat + 10; policy accept;');
  if (m.sources[4].length) {
    lines.push(
      `    ip saddr { ${m.sources[4].join(', ')} } ip daddr != @nomasq4 ip daddr != 224.0.0.0/4 counter masquerade fully-random`,
    );
  }
  if (m.sources[6].length) {
    lines.push(
      `    ip6 saddr { ${m.sources[6].join(', ')} } ip6 daddr != @nomasq6 ip6 daddr != ff00::/8 counter masquerade fully-random`,
    );
  }
  lines.push('  }');
}

export function renderMasqueradeCleanup(table: string): string {
  return `add table inet ${table}\ndelete table inet ${table}\n`;
}
