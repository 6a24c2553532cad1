// One builder for the proxy model's ServicePort, shared by the unit, netns and tracer tests of every backend.
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { ProxyConfigView, ServicePort } from '../../proxy/services/model/types.ts';
import type { WatchHandlers, WatchSource } from '../../proxy/services/watch/informers.ts';

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

/** A WatchSource the test drives: `h` delivers objects, `release()` ends the initial list. */
export class FakeSource implements WatchSource {
  h: WatchHandlers | undefined;
  release: (() => void) | undefined;
  start(h: WatchHandlers): Promise<void> {
    this.h = h;
    return new Promise((r) => (this.release = r));
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/** A Service object in namespace ns with one TCP port 80 named http. */
export const svcObject = (name: string, ip: string): V1Service => ({
  metadata: { namespace: 'ns', name },
  spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ port: 80, protocol: 'TCP', name: 'http' }] },
});

/** Its EndpointSlice: port 8080, ready endpoints on node n1. */
export const sliceObject = (name: string, ips: string[]): V1EndpointSlice => ({
  metadata: { namespace: 'ns', name: `${name}-x`, labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'n1' })),
});
