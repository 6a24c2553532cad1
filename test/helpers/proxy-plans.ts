// Shared fixtures for the nftables/ipvs backend tests: small builders for ServicePorts, endpoints and plans.
import type { Endpoint, NodeInfo, ProxyConfigView, ServicePlan, ServicePort, SyncInput } from '../../proxy/services/model/types.ts';
import { proxyConfig, servicePort } from './proxy-fixtures.ts';

export function svc(name: string, over: Partial<ServicePort> = {}): ServicePort {
  return servicePort({ portName: 'p', name, ...over });
}

export function ep(ip: string, port = 8080, over: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, isLocal: false, ...over };
}

/** A plan as the planner would produce it when every endpoint is usable. */
export function plan(s: ServicePort, eps: Endpoint[], over: Partial<ServicePlan> = {}): ServicePlan {
  const local = eps.filter((e) => e.isLocal);
  return {
    svc: s,
    clusterEndpoints: s.internalTrafficPolicyLocal ? local : eps,
    localEndpoints: s.externalTrafficPolicyLocal ? local : [],
    hasEndpointsElsewhere: s.internalTrafficPolicyLocal && local.length === 0 && eps.length > 0,
    clusterWideEndpoints: eps,
    hasAnyEndpoints: eps.length > 0,
    ...over,
  };
}

export const node: NodeInfo = { name: 'node-a', ips: ['192.168.10.2'], podCIDRs: ['10.244.1.0/24'] };

export const config: ProxyConfigView = proxyConfig();

export function syncInput(plans: ServicePlan[], over: Partial<SyncInput> = {}): SyncInput {
  return {
    full: true,
    changed: new Set(),
    plans: new Map(plans.map((p) => [p.svc.key, p])),
    node,
    config,
    family: 4,
    ...over,
  };
}
