import { describe, expect, it } from 'vitest';
import { externalEndpoints, healthCheckLocalEndpoints, planServicePort, planServices, topologyMode } from '../../../../proxy/services/model/plan.ts';
import type { Endpoint, NodeInfo, ServicePort } from '../../../../proxy/services/model/types.ts';
import { servicePort } from '../../../helpers/proxy-fixtures.ts';

const node: NodeInfo = { name: 'n1', ips: ['192.168.0.1'], zone: 'za', podCIDRs: ['10.244.1.0/24'] };

function svc(over: Partial<ServicePort> = {}): ServicePort {
  return servicePort({ key: 'ns/s:http/TCP/v4', namespace: 'ns', name: 's', portName: 'http', ...over });
}

function ep(ip: string, nodeName: string, over: Partial<Endpoint> = {}): Endpoint {
  return { ip, port: 8080, ready: true, serving: true, terminating: false, nodeName, isLocal: false, ...over };
}

const ips = (eps: readonly Endpoint[]): string[] => eps.map((e) => e.ip);
const terminating = { ready: false, serving: true, terminating: true };

describe('planServicePort', () => {
  it('uses ready endpoints for cluster traffic', () => {
    const p = planServicePort(svc(), [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2', { ready: false, serving: false })], node);
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.0.1']);
    expect(p.localEndpoints).toEqual([]);
    expect(p.hasEndpointsElsewhere).toBe(false);
    expect(p.hasAnyEndpoints).toBe(true);
    expect(p.clusterEndpoints[0]!.isLocal).toBe(true);
  });

  it('falls back to serving-terminating endpoints only when no endpoint is ready', () => {
    const eps = [ep('10.0.0.1', 'n1', terminating), ep('10.0.0.2', 'n2', { ready: false, serving: false, terminating: true })];
    expect(ips(planServicePort(svc(), eps, node).clusterEndpoints)).toEqual(['10.0.0.1']);
    const withReady = [...eps, ep('10.0.0.3', 'n3')];
    expect(ips(planServicePort(svc(), withReady, node).clusterEndpoints)).toEqual(['10.0.0.3']);
  });

  it('reports no endpoints at all', () => {
    const p = planServicePort(svc(), [ep('10.0.0.2', 'n2', { ready: false, serving: false })], node);
    expect(p.clusterEndpoints).toEqual([]);
    expect(p.hasEndpointsElsewhere).toBe(false);
    expect(p.hasAnyEndpoints).toBe(false);
  });

  it('internalTrafficPolicy Local uses only local endpoints, and drops when they are elsewhere', () => {
    const s = svc({ internalTrafficPolicyLocal: true });
    const p = planServicePort(s, [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2')], node);
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.0.1']);
    const q = planServicePort(s, [ep('10.0.0.2', 'n2')], node);
    expect(q.clusterEndpoints).toEqual([]);
    expect(q.hasEndpointsElsewhere).toBe(true);
    expect(q.hasAnyEndpoints).toBe(true);
  });

  it('internalTrafficPolicy Local falls back to local serving-terminating endpoints', () => {
    const s = svc({ internalTrafficPolicyLocal: true });
    const p = planServicePort(s, [ep('10.0.0.1', 'n1', terminating), ep('10.0.0.2', 'n2')], node);
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.0.1']);
  });

  it('externalTrafficPolicy Local fills localEndpoints and keeps cluster-wide ones for the short-circuit', () => {
    const s = svc({ nodePort: 30080, externalTrafficPolicyLocal: true, healthCheckNodePort: 32000 });
    const p = planServicePort(s, [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2')], node);
    expect(ips(p.localEndpoints)).toEqual(['10.0.0.1']);
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(ips(p.clusterWideEndpoints!)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(ips(externalEndpoints(p))).toEqual(['10.0.0.1']);
  });

  it('health check count: local ready endpoints only; local terminating ones serve but report 0 (kube-proxy)', () => {
    const s = svc({ nodePort: 30080, externalTrafficPolicyLocal: true, healthCheckNodePort: 32000 });
    const ready = planServicePort(s, [ep('10.0.0.1', 'n1'), ep('10.0.0.3', 'n1'), ep('10.0.0.2', 'n2')], node);
    expect(healthCheckLocalEndpoints(ready)).toBe(2);
    const draining = planServicePort(s, [ep('10.0.0.1', 'n1', terminating), ep('10.0.0.2', 'n2')], node);
    expect(ips(draining.localEndpoints)).toEqual(['10.0.0.1']);
    expect(healthCheckLocalEndpoints(draining)).toBe(0);
  });

  it('externalTrafficPolicy Local is ignored for services not reachable from outside', () => {
    const p = planServicePort(svc({ externalTrafficPolicyLocal: true }), [ep('10.0.0.2', 'n2')], node);
    expect(p.localEndpoints).toEqual([]);
  });

  it('ITP Local + ETP Cluster: external traffic still goes everywhere', () => {
    const s = svc({ nodePort: 30080, internalTrafficPolicyLocal: true });
    const p = planServicePort(s, [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2')], node);
    expect(ips(p.clusterEndpoints)).toEqual(['10.0.0.1']);
    expect(ips(externalEndpoints(p))).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('zone hints: used when every ready endpoint has hints and one names our zone', () => {
    const eps = [ep('10.0.0.1', 'n2', { zoneHints: ['za'] }), ep('10.0.0.2', 'n3', { zoneHints: ['zb'] })];
    expect(ips(planServicePort(svc(), eps, node).clusterEndpoints)).toEqual(['10.0.0.1']);
    // one endpoint without hints -> hints ignored
    const mixed = [...eps, ep('10.0.0.3', 'n4')];
    expect(ips(planServicePort(svc(), mixed, node).clusterEndpoints)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    // no hint for our zone -> ignored
    const other = [ep('10.0.0.2', 'n3', { zoneHints: ['zb'] })];
    expect(ips(planServicePort(svc(), other, node).clusterEndpoints)).toEqual(['10.0.0.2']);
    // node without zone -> ignored
    expect(ips(planServicePort(svc(), eps, { ...node, zone: undefined }).clusterEndpoints)).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('node hints win over zone hints', () => {
    const eps = [
      ep('10.0.0.1', 'n1', { zoneHints: ['za'], nodeHints: ['n1'] }),
      ep('10.0.0.2', 'n2', { zoneHints: ['za'], nodeHints: ['n2'] }),
    ];
    expect(ips(planServicePort(svc(), eps, node).clusterEndpoints)).toEqual(['10.0.0.1']);
    expect(topologyMode(eps, 'n1', 'za')).toBe('node');
    expect(topologyMode(eps, 'n9', 'za')).toBe('zone');
    expect(topologyMode(eps, 'n9', 'zz')).toBe('');
  });

  it('not-ready endpoints are ignored when deciding topology', () => {
    const eps = [ep('10.0.0.1', 'n2', { zoneHints: ['za'] }), ep('10.0.0.9', 'n3', { ready: false, serving: false })];
    expect(ips(planServicePort(svc(), eps, node).clusterEndpoints)).toEqual(['10.0.0.1']);
  });
});

describe('planServices', () => {
  it('plans per family and keys by ServicePort key', () => {
    const s4 = svc();
    const s6 = svc({ key: 'ns/s:http/TCP/v6', family: 6, clusterIP: 'fd00::10' });
    const services = new Map([
      [s4.key, s4],
      [s6.key, s6],
    ]);
    const eps = new Map([[s4.key, [ep('10.0.0.1', 'n1')]]]);
    const p4 = planServices(services, eps, node, 4);
    expect([...p4.keys()]).toEqual([s4.key]);
    expect(ips(p4.get(s4.key)!.clusterEndpoints)).toEqual(['10.0.0.1']);
    const all = planServices(services, eps, node);
    expect(all.get(s6.key)!.hasAnyEndpoints).toBe(false);
  });
});
