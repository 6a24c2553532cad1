// The `routes` pod network (kindnet-style, the fallback until the overlay runs): in every node namespace, a route to
// each other node's podCIDR via that node's underlay address.
import type { Runner } from '../../../lib/exec/runner.ts';

export interface RouteNode {
  name: string;
  netns: string;
  ip: string;
  podCIDR?: string;
}

/** ip -batch text for one node (pure). */
export function podRoutesBatch(self: RouteNode, all: readonly RouteNode[]): string {
  return all
    .filter((n) => n.name !== self.name && n.podCIDR)
    .map((n) => `route replace ${n.podCIDR} via ${n.ip} dev eth0`)
    .map((l) => l + '\n')
    .join('');
}

export async function applyPodRoutes(runner: Runner, all: readonly RouteNode[]): Promise<void> {
  for (const n of all) {
    const batch = podRoutesBatch(n, all);
    if (batch) await runner.run(['ip', '-n', n.netns, '-batch', '-'], { input: batch });
  }
}

/**
 * kindnet-style egress masquerade for the `routes` pod network (the overlay controller does its own): pod traffic that
 * leaves the pod network through the node's underlay interface takes the node's address. Without it, the host (the
 * apiserver's side) would answer pod addresses through its own default route, out to a real network.
 */
export function masqueradeProgram(clusterCIDR: string, uplink = 'eth0'): string {
  return [
    'table ip flatnet-cluster',
    'delete table ip flatnet-cluster',
    'table ip flatnet-cluster {',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat + 10; policy accept;',
    `    ip saddr ${clusterCIDR} ip daddr != ${clusterCIDR} oifname "${uplink}" masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function applyMasquerade(runner: Runner, nodes: readonly RouteNode[], clusterCIDR: string): Promise<void> {
  for (const n of nodes) await runner.run(['nft', '-f', '-'], { input: masqueradeProgram(clusterCIDR), netns: `/var/run/netns/${n.netns}` });
}
