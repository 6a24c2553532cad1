import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { nodeInfoFromNode, servicePortsFromService } from '../../../../proxy/services/model/convert.ts';
import { ChangeTracker } from '../../../../proxy/services/model/tracker.ts';

function service(name: string, over: Partial<NonNullable<V1Service['spec']>> = {}, labels?: Record<string, string>): V1Service {
  return {
    metadata: { namespace: 'ns', name, labels },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10'],
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      ...over,
    },
  };
}

function slice(svc: string, sliceName: string, ips: string[], opts: { ready?: boolean; node?: string } = {}): V1EndpointSlice {
  return {
    metadata: { namespace: 'ns', name: sliceName, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: opts.ready ?? true }, nodeName: opts.node ?? 'n1' })),
  };
}

const KEY = 'ns/a:http/TCP/v4';

describe('servicePortsFromService', () => {
  it('skips headless (no cluster IP or the headless label), ExternalName and foreign proxy names', () => {
    expect(servicePortsFromService(service('a', { clusterIP: 'None', clusterIPs: ['None'] }))).toEqual([]);
    expect(servicePortsFromService(service('a', { type: 'ExternalName', externalName: 'x.example', clusterIP: undefined, clusterIPs: undefined }))).toEqual([]);
    const labelled = service('a', {}, { 'service.kubernetes.io/service-proxy-name': 'other' });
    expect(servicePortsFromService(labelled)).toEqual([]);
    expect(servicePortsFromService(labelled, 'other')).toHaveLength(1);
    expect(servicePortsFromService(service('a'), 'other')).toEqual([]);
    // the label kube-proxy's informers select away, whatever its value
    expect(servicePortsFromService(service('a', {}, { 'service.kubernetes.io/headless': '' }))).toEqual([]);
  });

  it('splits dual-stack services per family and filters addresses by family', () => {
    const ports = servicePortsFromService({
      ...service('a', {
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.10', 'fd00::10'],
        ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 }],
        externalIPs: ['192.0.2.1', '2001:db8::1'],
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
        sessionAffinity: 'ClientIP',
      }),
      status: { loadBalancer: { ingress: [{ ip: '192.0.2.9', ipMode: 'Proxy' }, { ip: '2001:db8::9' }] } },
    });
    expect(ports.map((p) => p.key)).toEqual(['ns/a:http/TCP/v4', 'ns/a:http/TCP/v6']);
    expect(ports[0]!.externalIPs).toEqual(['192.0.2.1']);
    expect(ports[1]!.externalIPs).toEqual(['2001:db8::1']);
    expect(ports[0]!.loadBalancerIPs).toEqual([{ ip: '192.0.2.9', ipMode: 'Proxy' }]);
    expect(ports[1]!.loadBalancerIPs).toEqual([{ ip: '2001:db8::9', ipMode: 'VIP' }]);
    expect(ports[0]!.externalTrafficPolicyLocal).toBe(true);
    expect(ports[0]!.healthCheckNodePort).toBe(32000);
    expect(ports[0]!.affinityTimeoutSeconds).toBe(10800);
  });
});

describe('ChangeTracker', () => {
  it('reports exactly the changed ServicePort keys and drops no-op updates', () => {
    const t = new ChangeTracker('n1');
    expect(t.onService(service('a'))).toBe(true);
    expect(t.onService(service('b'))).toBe(true);
    expect(t.onSlice(slice('a', 'a-1', ['10.0.0.2', '10.0.0.1']))).toBe(true);
    const c1 = t.take();
    expect([...c1.changed].sort()).toEqual(['ns/a:http/TCP/v4', 'ns/b:http/TCP/v4']);
    expect(t.endpoints().get(KEY)!.map((e) => e.ip)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(t.endpoints().get(KEY)![0]!.isLocal).toBe(true);

    // no-op updates
    expect(t.onService(service('a'))).toBe(false);
    expect(t.onSlice(slice('a', 'a-1', ['10.0.0.2', '10.0.0.1']))).toBe(false);
    expect(t.take().changed.size).toBe(0);

    // flip-flop: A -> B -> A yields nothing
    t.onSlice(slice('a', 'a-1', ['10.0.0.3']));
    t.onSlice(slice('a', 'a-1', ['10.0.0.2', '10.0.0.1']));
    expect(t.take().changed.size).toBe(0);

    // endpoint change on a
    t.onSlice(slice('a', 'a-1', ['10.0.0.1']));
    expect([...t.take().changed]).toEqual([KEY]);
  });

  it('merges slices, dedups endpoints and handles deletes', () => {
    const t = new ChangeTracker('n1');
    t.onService(service('a'));
    t.onSlice(slice('a', 'a-1', ['10.0.0.1']));
    t.onSlice(slice('a', 'a-2', ['10.0.0.1', '10.0.0.5'], { node: 'n2' }));
    t.take();
    expect(t.endpoints().get(KEY)!.map((e) => e.ip)).toEqual(['10.0.0.1', '10.0.0.5']);
    t.onSliceDelete(slice('a', 'a-2', []));
    expect([...t.take().changed]).toEqual([KEY]);
    expect(t.endpoints().get(KEY)!.map((e) => e.ip)).toEqual(['10.0.0.1']);
    t.onServiceDelete(service('a'));
    expect([...t.take().changed]).toEqual([KEY]);
    expect(t.servicePorts().has(KEY)).toBe(false);
  });

  it('a service turning into ExternalName is a deletion of its ports', () => {
    const t = new ChangeTracker('n1');
    t.onService(service('a'));
    t.take();
    expect(t.onService(service('a', { type: 'ExternalName', clusterIP: undefined, clusterIPs: undefined }))).toBe(true);
    expect([...t.take().changed]).toEqual([KEY]);
    expect(t.servicePorts().size).toBe(0);
  });

  it('endpoints for a port the service lacks are no change', () => {
    const t = new ChangeTracker('n1');
    t.onSlice(slice('a', 'a-1', ['10.0.0.1']));
    expect(t.take().changed.size).toBe(0);
    t.onService(service('a'));
    expect([...t.take().changed]).toEqual([KEY]);
    expect(t.endpoints().get(KEY)).toHaveLength(1);
  });
});

describe('nodeInfoFromNode', () => {
  it('reads addresses, zone and podCIDRs', () => {
    const n = nodeInfoFromNode({
      metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'za' } },
      spec: { podCIDRs: ['10.244.1.0/24', 'fd10::/64'] },
      status: { addresses: [{ type: 'Hostname', address: 'n1' }, { type: 'ExternalIP', address: '1.2.3.4' }, { type: 'InternalIP', address: '192.168.0.2' }] },
    });
    expect(n).toEqual({ name: 'n1', ips: ['192.168.0.2', '1.2.3.4'], zone: 'za', podCIDRs: ['10.244.1.0/24', 'fd10::/64'] });
  });
});
