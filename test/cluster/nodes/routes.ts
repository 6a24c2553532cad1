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
