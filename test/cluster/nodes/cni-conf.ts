// The CNI network configuration each node's containerd loads. Keep every choice about it in this one function, so the
// overlay can replace the plain bridge + routes setup in one place.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PodNetwork } from '../state.ts';

export interface CniConfInput {
  cluster: string;
  node: string;
  podCIDR: string;
  /** host-local's dataDir: one per node, since every node's plugins run on the same host filesystem */
  ipamDataDir: string;
  mtu: number;
  podNetwork: PodNetwork;
  /** overlay: the node's subnet file, written by the daemon's overlay controller (one per node: shared filesystem) */
  subnetFile: string;
  /** overlay: where the vxlan plugin keeps each attachment's delegate config */
  overlayDataDir: string;
}

export const CONFLIST_NAME = '10-flatnet.conflist';

/** The conflist (as an object). `routes`: bridge + host-local on the node's podCIDR + portmap. */
export function cniConflist(c: CniConfInput): Record<string, unknown> {
  const bridge = {
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    mtu: c.mtu,
    ipam: {
      type: 'host-local',
      dataDir: c.ipamDataDir,
      ranges: [[{ subnet: c.podCIDR }]],
      routes: [{ dst: '0.0.0.0/0' }],
    },
  };
  const portmap = { type: 'portmap', capabilities: { portMappings: true } };
  if (c.podNetwork === 'overlay') {
    // the overlay meta-plugin reads the node's subnet file written by the daemon and delegates to bridge + host-local
    return {
      cniVersion: '1.0.0',
      name: c.cluster,
      plugins: [{ type: 'vxlan', subnetFile: c.subnetFile, dataDir: c.overlayDataDir, ipam: { dataDir: c.ipamDataDir } }, portmap],
    };
  }
  return { cniVersion: '1.0.0', name: c.cluster, plugins: [bridge, portmap] };
}

export function writeCniConf(dir: string, c: CniConfInput): string {
  mkdirSync(dir, { recursive: true });
  mkdirSync(c.ipamDataDir, { recursive: true });
  const path = join(dir, CONFLIST_NAME);
  writeFileSync(`${path}.tmp`, JSON.stringify(cniConflist(c), null, 2) + '\n');
  renameSync(`${path}.tmp`, path);
  return path;
}

export const REQUIRED_PLUGINS = ['bridge', 'host-local', 'loopback', 'portmap'];
export const OPTIONAL_PLUGINS = ['vxlan'];

/**
 * One bin dir for every node: symlinks to flatnet's plugins in dist/bin, falling back to the reference plugins
 * (/usr/lib/cni) for any plugin flatnet has not built yet. Returns where each plugin comes from.
 */
export function linkCniBinDir(target: string, distBin: string, fallback = '/usr/lib/cni'): Record<string, string> {
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  const from: Record<string, string> = {};
  const dist = existsSync(distBin) ? new Set(readdirSync(distBin)) : new Set<string>();
  for (const p of [...REQUIRED_PLUGINS, ...OPTIONAL_PLUGINS]) {
    const src = dist.has(p) ? join(distBin, p) : existsSync(join(fallback, p)) ? join(fallback, p) : undefined;
    if (!src) {
      if (REQUIRED_PLUGINS.includes(p)) throw new Error(`CNI plugin ${p} found neither in ${distBin} nor in ${fallback}`);
      continue;
    }
    symlinkSync(src, join(target, p));
    from[p] = src;
  }
  return from;
}
