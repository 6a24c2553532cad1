// The pure planner: one ServicePort + its endpoints + this node -> a ServicePlan.
// Semantics follow kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go):
//  - cluster traffic uses ready endpoints, filtered by topology hints when every ready endpoint carries hints
//    and at least one hint names this node (node hints) or this node's zone (zone hints); if no ready endpoint
//    exists anywhere, serving+terminating endpoints are used instead;
//  - Local traffic policies use ready local endpoints, else serving+terminating local endpoints;
//  - hasEndpointsElsewhere: the service has usable endpoints somewhere, but internal traffic has none here.

import type { Endpoint, IpFamily, NodeInfo, ServicePlan, ServicePort } from './types.ts';

/** NodePort, LoadBalancer ingress or externalIPs make a service reachable from outside the cluster. */
export function externallyAccessible(svc: ServicePort): boolean {
  return svc.nodePort > 0 || svc.externalIPs.length > 0 || svc.loadBalancerIPs.length > 0;
}

/** kube-proxy's UsesClusterEndpoints */
export function usesClusterEndpoints(svc: ServicePort): boolean {
  return !svc.internalTrafficPolicyLocal || (externallyAccessible(svc) && !svc.externalTrafficPolicyLocal);
}

/** kube-proxy's UsesLocalEndpoints */
export function usesLocalEndpoints(svc: ServicePort): boolean {
  return svc.internalTrafficPolicyLocal || (externallyAccessible(svc) && svc.externalTrafficPolicyLocal);
}

type TopologyMode = '' | 'node' | 'zone';

/** Which hints to honour for this node (kube-proxy topologyModeFromHints). Only ready endpoints are looked at. */
export function topologyMode(endpoints: readonly Endpoint[], nodeName: string, zone: string | undefined): TopologyMode {
  let hasForNode = false;
  let allNodeHints = true;
  let hasForZone = false;
  let allZoneHints = true;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    if (!ep.zoneHints || ep.zoneHints.length === 0) allZoneHints = false;
    else if (zone !== undefined && zone !== '' && ep.zoneHints.includes(zone)) hasForZone = true;
    if (!ep.nodeHints || ep.nodeHints.length === 0) allNodeHints = false;
    else if (ep.nodeHints.includes(nodeName)) hasForNode = true;
  }
  if (allNodeHints && hasForNode) return 'node';
  if (allZoneHints && hasForZone) return 'zone';
  return '';
}

function availableForTopology(ep: Endpoint, mode: TopologyMode, nodeName: string, zone: string | undefined): boolean {
  if (mode === 'node') return (ep.nodeHints ?? []).includes(nodeName);
  if (mode === 'zone') return zone !== undefined && (ep.zoneHints ?? []).includes(zone);
  return true;
}

const servingTerminating = (ep: Endpoint): boolean => ep.serving && ep.terminating;

export interface Categorized {
  /** kube-proxy clusterEndpoints: ready + topology, else serving-terminating; [] when the service does not use them */
  cluster: Endpoint[];
  /** ready local endpoints, else serving-terminating local ones; [] when the service does not use them */
  local: Endpoint[];
  /** any ready or serving-terminating endpoint anywhere */
  hasAny: boolean;
}

/** kube-proxy CategorizeEndpoints. `alwaysCluster` computes cluster endpoints even when policies would skip them. */
export function categorizeEndpoints(
  svc: ServicePort,
  endpoints: readonly Endpoint[],
  node: NodeInfo,
  alwaysCluster = false,
): Categorized {
  let cluster: Endpoint[] = [];
  let local: Endpoint[] = [];
  let hasAny = false;
  if (alwaysCluster || usesClusterEndpoints(svc)) {
    const mode = topologyMode(endpoints, node.name, node.zone);
    cluster = endpoints.filter((ep) => ep.ready && availableForTopology(ep, mode, node.name, node.zone));
    if (cluster.length === 0) cluster = endpoints.filter(servingTerminating);
    if (cluster.length > 0) hasAny = true;
  }
  if (!usesLocalEndpoints(svc)) return { cluster, local, hasAny };
  let localReady = false;
  let localTerm = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      hasAny = true;
      if (ep.isLocal) localReady = true;
    } else if (servingTerminating(ep)) {
      hasAny = true;
      if (ep.isLocal) localTerm = true;
    }
  }
  if (localReady) local = endpoints.filter((ep) => ep.isLocal && ep.ready);
  else if (localTerm) local = endpoints.filter((ep) => ep.isLocal && servingTerminating(ep));
  return { cluster, local, hasAny };
}

function withLocality(endpoints: readonly Endpoint[], nodeName: string): Endpoint[] {
  return endpoints.map((ep) => {
    const isLocal = ep.nodeName !== undefined ? ep.nodeName === nodeName : ep.isLocal;
    return isLocal === ep.isLocal ? ep : { ...ep, isLocal };
  });
}

/**
 * Plan one ServicePort. `endpoints` should already be deduplicated and sorted (the endpoint-slice cache does it);
 * isLocal is recomputed from nodeName when the endpoint names a node.
 */
export function planServicePort(svc: ServicePort, endpoints: readonly Endpoint[], node: NodeInfo): ServicePlan {
  const eps = withLocality(endpoints, node.name);
  const cat = categorizeEndpoints(svc, eps, node, true);
  const internal = svc.internalTrafficPolicyLocal ? cat.local : cat.cluster;
  const external = externallyAccessible(svc);
  return {
    svc,
    clusterEndpoints: internal,
    localEndpoints: external && svc.externalTrafficPolicyLocal ? cat.local : [],
    hasEndpointsElsewhere: cat.hasAny && internal.length === 0,
    clusterWideEndpoints: cat.cluster,
    hasAnyEndpoints: cat.hasAny,
  };
}

/** Plan every ServicePort of one family. endpoints are keyed by ServicePort key. */
export function planServices(
  services: ReadonlyMap<string, ServicePort>,
  endpoints: ReadonlyMap<string, readonly Endpoint[]>,
  node: NodeInfo,
  family?: IpFamily,
): Map<string, ServicePlan> {
  const out = new Map<string, ServicePlan>();
  for (const [key, svc] of services) {
    if (family !== undefined && svc.family !== family) continue;
    out.set(key, planServicePort(svc, endpoints.get(key) ?? [], node));
  }
  return out;
}

/**
 * The count a healthCheckNodePort reports, as kube-proxy: local endpoints that are ready. Local serving-terminating
 * endpoints still take the traffic when nothing else is left, but the node answers 503 so load balancers drain it.
 */
export function healthCheckLocalEndpoints(plan: ServicePlan): number {
  return plan.localEndpoints.filter((ep) => ep.ready).length;
}

/** Endpoints that external traffic (NodePort, LB, externalIPs) from outside the node is sent to. */
export function externalEndpoints(plan: ServicePlan): Endpoint[] {
  if (plan.svc.externalTrafficPolicyLocal) return plan.localEndpoints;
  return plan.clusterWideEndpoints ?? plan.clusterEndpoints;
}
