// The proxy's desired-state model, shared by every backend (iptables, nftables, ipvs).
// The watch layer turns API objects into these; a pure planner (model/plan.ts) applies topology and traffic
// policies; backends only render and apply what the planner decided.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IpFamily = 4 | 6;

/** One port of one Service in one IP family. key = `${namespace}/${name}:${portName}/${protocol}/v${family}` */
export interface ServicePort {
  key: string;
  namespace: string;
  name: string;
  portName: string;
  protocol: Protocol;
  family: IpFamily;
  clusterIP: string;
  port: number;
  /** 0 when not a NodePort/LoadBalancer (or allocateLoadBalancerNodePorts false) */
  nodePort: number;
  externalIPs: string[];
  loadBalancerIPs: { ip: string; ipMode: 'VIP' | 'Proxy' }[];
  loadBalancerSourceRanges: string[];
  /** undefined when sessionAffinity is None */
  affinityTimeoutSeconds?: number;
  externalTrafficPolicyLocal: boolean;
  internalTrafficPolicyLocal: boolean;
  /** 0 when none */
  healthCheckNodePort: number;
  trafficDistribution?: string;
}

export interface Endpoint {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName?: string;
  zone?: string;
  /** hints.forZones */
  zoneHints?: string[];
  /** hints.forNodes */
  nodeHints?: string[];
  /** nodeName equals this node */
  isLocal: boolean;
}

export interface NodeInfo {
  name: string;
  /** node addresses used for NodePorts when nodePortAddresses is empty/'primary' */
  ips: string[];
  zone?: string;
  podCIDRs: string[];
}

/** What the planner decided for one ServicePort; backends render exactly this. */
export interface ServicePlan {
  svc: ServicePort;
  /** endpoints for traffic subject to internalTrafficPolicy (ClusterIP), after topology and terminating fallback */
  clusterEndpoints: Endpoint[];
  /** endpoints for external traffic (NodePort, LB, externalIPs) when externalTrafficPolicy=Local; [] otherwise */
  localEndpoints: Endpoint[];
  /** true when the service has endpoints somewhere but none usable here for internal traffic: drop, not reject */
  hasEndpointsElsewhere: boolean;
  /**
   * Optional (set by model/plan.ts): cluster-wide endpoints (ready + topology, else serving-terminating),
   * whatever internalTrafficPolicy says. External traffic under externalTrafficPolicy=Cluster goes here, and so does
   * pod- or node-originated traffic to NodePorts/LB IPs/externalIPs under externalTrafficPolicy=Local
   * (kube-proxy's short-circuit). When absent, use clusterEndpoints.
   */
  clusterWideEndpoints?: Endpoint[];
  /** Optional (set by plan.ts): any ready or serving-terminating endpoint exists anywhere. No endpoints = reject. */
  hasAnyEndpoints?: boolean;
}

export interface ProxyConfigView {
  /** e.g. ['10.244.0.0/16']; used by detectLocalMode ClusterCIDR */
  clusterCIDRs: string[];
  detectLocalMode: 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';
  /** for BridgeInterface / InterfaceNamePrefix */
  detectLocalInterface?: string;
  masqueradeAll: boolean;
  /** bit number, default 14 */
  masqueradeBit: number;
  /** [] or ['primary'] = node IPs; otherwise CIDRs */
  nodePortAddresses: string[];
}

export interface SyncInput {
  /** full sync: rewrite everything; otherwise only `changed` service keys (added, updated or deleted) */
  full: boolean;
  changed: ReadonlySet<string>;
  plans: ReadonlyMap<string, ServicePlan>;
  node: NodeInfo;
  config: ProxyConfigView;
  family: IpFamily;
}

export interface ProxyBackend {
  readonly mode: 'iptables' | 'nftables' | 'ipvs';
  sync(input: SyncInput): Promise<void>;
  /** remove everything this backend ever created */
  cleanup(): Promise<void>;
}
