// One builder for the proxy model's ServicePort, shared by the unit, netns and tracer tests of every backend.
import type { ProxyConfigView, ServicePort } from '../../proxy/services/model/types.ts';

/** The proxy configuration most tests use: cluster CIDR 10.244.0.0/16 detects pod traffic, mark bit 14. */
export function proxyConfig(over: Partial<ProxyConfigView> = {}): ProxyConfigView {
  return { clusterCIDRs: ['10.244.0.0/16'], detectLocalMode: 'ClusterCIDR', masqueradeAll: false, masqueradeBit: 14, nodePortAddresses: [], ...over };
}

/**
 * A ServicePort with kube-proxy's defaults (ClusterIP TCP 80, no node port, no external addresses, Cluster traffic
 * policies). The key is derived from namespace, name, port name, protocol and family unless `over.key` is given.
 */
export function servicePort(over: Partial<ServicePort> & { name: string }): ServicePort {
  const s = {
    namespace: 'default',
    portName: '',
    protocol: 'TCP' as const,
    family: 4 as const,
    clusterIP: '10.96.0.10',
    port: 80,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    externalTrafficPolicyLocal: false,
    internalTrafficPolicyLocal: false,
    healthCheckNodePort: 0,
    ...over,
  };
  return { key: `${s.namespace}/${s.name}:${s.portName}/${s.protocol}/v${s.family}`, ...s };
}
