// Reading the kernel (iproute2 JSON output, parsed by pure functions) and applying programs through a Runner.
import type { Runner } from '../../lib/exec/runner.ts';
import { canonicalIP } from '../../lib/net/ip.ts';
import type { FdbEntry, ObservedDevice, ObservedRoute, ObservedState, Underlay } from './plan.ts';

interface JsonAddr {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}
interface JsonLink {
  ifname?: string;
  mtu?: number;
  flags?: string[];
  address?: string;
  addr_info?: JsonAddr[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

function parseJson<T>(text: string, what: string): T[] {
  const t = text.trim();
  if (!t) return [];
  try {
    const v = JSON.parse(t) as unknown;
    return Array.isArray(v) ? (v as T[]) : [];
  } catch (e) {
    throw new Error(`cannot parse ${what} JSON: ${(e as Error).message}`, { cause: e });
  }
}

/** `ip -d -j link show dev X` */
export function parseDevice(text: string): ObservedDevice | undefined {
  const l = parseJson<JsonLink>(text, 'link')[0];
  if (!l) return undefined;
  const d = l.linkinfo?.info_data ?? {};
  return {
    kind: l.linkinfo?.info_kind ?? '',
    mac: (l.address ?? '').toLowerCase(),
    mtu: l.mtu ?? 0,
    up: (l.flags ?? []).includes('UP'),
    ...(typeof d.id === 'number' ? { vni: d.id } : {}),
    ...(typeof d.port === 'number' ? { port: d.port } : {}),
    ...(typeof d.local === 'string' ? { local: d.local } : typeof d.local6 === 'string' ? { local: d.local6 } : {}),
    ...(typeof d.learning === 'boolean' ? { learning: d.learning } : {}),
  };
}

/** Global addresses of `dev` from `ip -j addr show`. */
export function parseDeviceAddresses(text: string, dev: string): string[] {
  const l = parseJson<JsonLink>(text, 'addr').find((x) => x.ifname === dev);
  return (l?.addr_info ?? [])
    .filter((a) => a.scope !== 'link' && a.scope !== 'host' && a.local)
    .map((a) => `${canonicalIP(a.local!)}/${a.prefixlen}`);
}

/** The interface holding `ip` (from `ip -j addr show`). */
export function findUnderlay(text: string, ip: string): Underlay | undefined {
  const want = canonicalIP(ip);
  for (const l of parseJson<JsonLink>(text, 'addr')) {
    for (const a of l.addr_info ?? []) {
      if (a.local && canonicalIP(a.local) === want && l.ifname) {
        return { dev: l.ifname, ip: want, prefix: a.prefixlen ?? (want.includes(':') ? 128 : 32), mtu: l.mtu ?? 1500 };
      }
    }
  }
  return undefined;
}

/** `ip -j neigh show dev X` */
export function parseNeighbours(text: string): ObservedState['neighbours'] {
  return parseJson<{ dst?: string; lladdr?: string; state?: string[] }>(text, 'neigh')
    .filter((n) => n.dst)
    .map((n) => ({ ip: n.dst!, mac: (n.lladdr ?? '').toLowerCase(), permanent: (n.state ?? []).includes('PERMANENT') }));
}

/** `bridge -j fdb show dev X`: entries with a remote dst only */
export function parseFdb(text: string): FdbEntry[] {
  return parseJson<{ mac?: string; dst?: string }>(text, 'fdb')
    .filter((f) => f.mac && f.dst)
    .map((f) => ({ mac: f.mac!.toLowerCase(), dst: f.dst! }));
}

/** `ip -j route show proto N` */
export function parseRoutes(text: string): ObservedRoute[] {
  return parseJson<{ dst?: string; gateway?: string; dev?: string; flags?: string[] }>(text, 'route')
    .filter((r) => r.dst && r.dst !== 'default')
    .map((r) => ({
      dst: r.dst!.includes('/') ? r.dst! : `${r.dst}/${r.dst!.includes(':') ? 128 : 32}`,
      ...(r.gateway ? { via: r.gateway } : {}),
      ...(r.dev ? { dev: r.dev } : {}),
      onlink: (r.flags ?? []).includes('onlink'),
    }));
}

export interface KernelSnapshot {
  observed: ObservedState;
  /** raw `ip -j addr show` (for locating the underlay) */
  addrJson: string;
}

/**
 * One `ip -batch` for links, addresses, neighbours and our routes, the FDB in parallel: 2 processes per resync.
 * (Falls back to one command per object if the batch output does not have the expected shape.)
 */
export async function readKernel(runner: Runner, dev: string, routeProtocol: number): Promise<KernelSnapshot> {
  const input = `link show\naddr show\nneigh show\nroute show table all proto ${routeProtocol}\n`;
  const [batch, fdbOut] = await Promise.all([
    runner.run(['ip', '-d', '-j', '-batch', '-'], { input, allowFail: true }),
    runner.run(['bridge', '-j', 'fdb', 'show', 'dev', dev], { allowFail: true }),
  ]);
  const lines = batch.stdout.split('\n').filter((l) => l.trim() !== '');
  if (batch.code !== 0 || lines.length !== 4) return readKernelSlow(runner, dev, routeProtocol);
  const [linkJson, addrJson, neighJson, routeJson] = lines as [string, string, string, string];
  const link = parseJson<JsonLink>(linkJson, 'link').find((l) => l.ifname === dev);
  const device = link ? parseDevice(JSON.stringify([link])) : undefined;
  const neighbours = device
    ? parseNeighbours(JSON.stringify(parseJson<{ dev?: string }>(neighJson, 'neigh').filter((n) => n.dev === dev)))
    : [];
  const routes = parseRoutes(
    JSON.stringify(parseJson<{ table?: string }>(routeJson, 'route').filter((r) => r.table === undefined || r.table === 'main')),
  );
  return {
    observed: {
      device,
      addresses: device ? parseDeviceAddresses(addrJson, dev) : [],
      neighbours,
      fdb: device && fdbOut.code === 0 ? parseFdb(fdbOut.stdout) : [],
      routes,
    },
    addrJson,
  };
}

async function readKernelSlow(runner: Runner, dev: string, routeProtocol: number): Promise<KernelSnapshot> {
  const link = await runner.run(['ip', '-d', '-j', 'link', 'show', 'dev', dev], { allowFail: true });
  const device = link.code === 0 ? parseDevice(link.stdout) : undefined;
  const addr = await runner.run(['ip', '-j', 'addr', 'show']);
  let neighbours: ObservedState['neighbours'] = [];
  let fdb: FdbEntry[] = [];
  if (device) {
    neighbours = parseNeighbours((await runner.run(['ip', '-j', 'neigh', 'show', 'dev', dev], { allowFail: true })).stdout);
    fdb = parseFdb((await runner.run(['bridge', '-j', 'fdb', 'show', 'dev', dev], { allowFail: true })).stdout);
  }
  const routes: ObservedRoute[] = [];
  for (const fam of ['-4', '-6']) {
    const r = await runner.run(['ip', fam, '-j', 'route', 'show', 'table', 'main', 'proto', String(routeProtocol)]);
    routes.push(...parseRoutes(r.stdout));
  }
  return {
    observed: { device, addresses: device ? parseDeviceAddresses(addr.stdout, dev) : [], neighbours, fdb, routes },
    addrJson: addr.stdout,
  };
}
