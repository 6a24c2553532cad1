// Stale UDP conntrack entries (kube-proxy's deleteUDPEndpointConnections / clearing on first endpoint).
// UDP has no connection teardown, so a conntrack entry keeps sending a client's packets to an endpoint that is gone,
// or (for a service that had no endpoints) keeps them un-NATed: the classic DNS black hole.
// planConntrackCleanup is pure; runConntrackCleanup executes the `conntrack -D` commands (exit 1 = nothing matched).

import type { Runner } from '../../../lib/exec/runner.ts';
import type { Endpoint, ServicePlan } from '../model/types.ts';

export type ConntrackCommand = string[];

function reachable(plan: ServicePlan): Endpoint[] {
  const all = [...plan.clusterEndpoints, ...plan.localEndpoints, ...(plan.clusterWideEndpoints ?? [])];
  const seen = new Set<string>();
  return all.filter((e) => {
    const k = `${e.ip}:${e.port}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function serviceIPs(plan: ServicePlan): string[] {
  const s = plan.svc;
  return [s.clusterIP, ...s.externalIPs, ...s.loadBalancerIPs.filter((l) => l.ipMode === 'VIP').map((l) => l.ip)];
}

/**
 * Compare the plans that were programmed before and after a sync, for the given changed keys, and return the
 * conntrack deletions to run (only for UDP service ports).
 */
export function planConntrackCleanup(
  prev: ReadonlyMap<string, ServicePlan>,
  next: ReadonlyMap<string, ServicePlan>,
  changed: Iterable<string>,
): ConntrackCommand[] {
  const cmds: ConntrackCommand[] = [];
  const seen = new Set<string>();
  const push = (c: string[]): void => {
    const k = c.join(' ');
    if (!seen.has(k)) {
      seen.add(k);
      cmds.push(c);
    }
  };
  for (const key of changed) {
    const before = prev.get(key);
    const after = next.get(key);
    const svc = (after ?? before)?.svc;
    if (!svc || svc.protocol !== 'UDP') continue;
    const fam = svc.family === 6 ? ['-f', 'ipv6'] : [];
    const oldEps = before ? reachable(before) : [];
    const newEps = after ? reachable(after) : [];
    const newSet = new Set(newEps.map((e) => `${e.ip}:${e.port}`));
    // endpoints that went away: drop entries NATed to them
    for (const ep of oldEps) {
      if (newSet.has(`${ep.ip}:${ep.port}`)) continue;
      for (const ip of before ? serviceIPs(before) : []) {
        push(['conntrack', ...fam, '-D', '-p', 'udp', '--orig-dst', ip, '--dst-nat', ep.ip]);
      }
      if (before && before.svc.nodePort > 0) {
        push(['conntrack', ...fam, '-D', '-p', 'udp', '--orig-port-dst', String(before.svc.nodePort), '--dst-nat', ep.ip]);
      }
    }
    // first endpoint(s) of a service that had none: entries created while it was rejected/unproxied must go
    if (after && oldEps.length === 0 && newEps.length > 0) {
      for (const ip of serviceIPs(after)) {
        push(['conntrack', ...fam, '-D', '-p', 'udp', '--orig-dst', ip, '--orig-port-dst', String(after.svc.port)]);
      }
      if (after.svc.nodePort > 0) push(['conntrack', ...fam, '-D', '-p', 'udp', '--orig-port-dst', String(after.svc.nodePort)]);
    }
  }
  return cmds;
}

/** Run the deletions; `conntrack -D` exits 1 when nothing matched, which is fine. Returns how many ran. */
export async function runConntrackCleanup(runner: Runner, cmds: readonly ConntrackCommand[], netns?: string): Promise<number> {
  let n = 0;
  for (const c of cmds) {
    const r = await runner.run(c, { allowFail: true, netns });
    if (r.code > 1) throw new Error(`${c.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    n++;
  }
  return n;
}
