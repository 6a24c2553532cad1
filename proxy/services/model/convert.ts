// Pure conversion of API objects (Service, EndpointSlice, Node) into the proxy model.

import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { familyOf } from '../../../lib/net/ip.ts';
import type { Endpoint, IpFamily, NodeInfo, Protocol, ServicePort } from './types.ts';

export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const DEFAULT_AFFINITY_TIMEOUT = 10800;

/** `${namespace}/${name}:${portName}/${protocol}/v${family}` */
export function servicePortKey(ns: string, name: string, portName: string, protocol: Protocol, family: IpFamily): string {
  return `${ns}/${name}:${portName}/${protocol}/v${family}`;
}

function protocolOf(p: string | undefined): Protocol | undefined {
  const v = (p ?? 'TCP').toUpperCase();
  return v === 'TCP' || v === 'UDP' || v === 'SCTP' ? v : undefined;
}

/**
 * Should this proxy handle the service? Headless ones (no cluster IP, or labelled service.kubernetes.io/headless, as
 * kube-proxy's informers select them away), ExternalName and foreign service-proxy-name are skipped.
 */
export function shouldProxy(svc: V1Service, proxyName = ''): boolean {
  if (svc.metadata?.labels?.[HEADLESS_LABEL] !== undefined) return false;
  const label = svc.metadata?.labels?.[SERVICE_PROXY_NAME_LABEL];
  if (proxyName === '' ? label !== undefined : label !== proxyName) return false;
  const spec = svc.spec;
  if (!spec) return false;
  if (spec.type === 'ExternalName') return false;
  const ips = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
  if (ips.length === 0 || ips[0] === 'None' || ips[0] === '') return false;
  return true;
}

/** Service -> its ServicePorts (one per port per family), [] when the proxy skips it. */
export function servicePortsFromService(svc: V1Service, proxyName = ''): ServicePort[] {
  if (!shouldProxy(svc, proxyName)) return [];
  const spec = svc.spec!;
  const ns = svc.metadata?.namespace ?? 'default';
  const name = svc.metadata?.name ?? '';
  const clusterIPs = (spec.clusterIPs?.length ? spec.clusterIPs : [spec.clusterIP!]).filter((ip) => ip && ip !== 'None');
  const externalAccess = spec.type === 'NodePort' || spec.type === 'LoadBalancer';
  const lbIngress = spec.type === 'LoadBalancer' ? (svc.status?.loadBalancer?.ingress ?? []) : [];
  const affinity =
    spec.sessionAffinity === 'ClientIP'
      ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT)
      : undefined;
  const out: ServicePort[] = [];
  const seenFamily = new Set<IpFamily>();
  for (const clusterIP of clusterIPs) {
    const family = familyOf(clusterIP);
    if (!family || seenFamily.has(family)) continue;
    seenFamily.add(family);
    for (const p of spec.ports ?? []) {
      const protocol = protocolOf(p.protocol);
      if (!protocol) continue;
      const portName = p.name ?? '';
      const sp: ServicePort = {
        key: servicePortKey(ns, name, portName, protocol, family),
        namespace: ns,
        name,
        portName,
        protocol,
        family,
        clusterIP,
        port: p.port,
        nodePort: externalAccess ? (p.nodePort ?? 0) : 0,
        externalIPs: (spec.externalIPs ?? []).filter((ip) => familyOf(ip) === family).sort(),
        loadBalancerIPs: lbIngress
          .filter((i): i is { ip: string; ipMode?: string } => !!i.ip && familyOf(i.ip) === family)
          .map((i) => ({ ip: i.ip, ipMode: i.ipMode === 'Proxy' ? ('Proxy' as const) : ('VIP' as const) }))
          .sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0)),
        loadBalancerSourceRanges: (spec.loadBalancerSourceRanges ?? [])
          .map((r) => r.trim())
          .filter((r) => r !== '' && familyOf(r) === family)
          .sort(),
        externalTrafficPolicyLocal: externalAccess && spec.externalTrafficPolicy === 'Local',
        internalTrafficPolicyLocal: spec.internalTrafficPolicy === 'Local',
        healthCheckNodePort: externalAccess && spec.externalTrafficPolicy === 'Local' ? (spec.healthCheckNodePort ?? 0) : 0,
      };
      if (affinity !== undefined) sp.affinityTimeoutSeconds = affinity;
      if (spec.trafficDistribution) sp.trafficDistribution = spec.trafficDistribution;
      out.push(sp);
    }
  }
  return out;
}

/** Namespace/name of the Service an EndpointSlice belongs to, or undefined. */
export function sliceServiceName(slice: V1EndpointSlice): string | undefined {
  const svc = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (!svc) return undefined;
  return `${slice.metadata?.namespace ?? 'default'}/${svc}`;
}

/** EndpointSlice -> endpoints keyed by ServicePort key (unsorted, may contain duplicates across slices). */
export function endpointsFromSlice(slice: V1EndpointSlice, nodeName: string): Map<string, Endpoint[]> {
  const out = new Map<string, Endpoint[]>();
  const svcName = sliceServiceName(slice);
  if (!svcName) return out;
  const family: IpFamily | undefined = slice.addressType === 'IPv4' ? 4 : slice.addressType === 'IPv6' ? 6 : undefined;
  if (!family) return out;
  const [ns, name] = svcName.split('/') as [string, string];
  for (const port of slice.ports ?? []) {
    const protocol = protocolOf(port.protocol);
    if (!protocol || port.port === undefined || port.port === null) continue;
    const key = servicePortKey(ns, name, port.name ?? '', protocol, family);
    const eps: Endpoint[] = [];
    for (const e of slice.endpoints ?? []) {
      const ip = e.addresses?.[0];
      if (!ip) continue;
      const ready = e.conditions?.ready ?? true;
      const ep: Endpoint = {
        ip,
        port: port.port,
        ready,
        serving: e.conditions?.serving ?? ready,
        terminating: e.conditions?.terminating ?? false,
        isLocal: e.nodeName !== undefined && e.nodeName === nodeName,
      };
      if (e.nodeName) ep.nodeName = e.nodeName;
      if (e.zone) ep.zone = e.zone;
      const zh = e.hints?.forZones?.map((z) => z.name).filter((z) => !!z);
      if (zh?.length) ep.zoneHints = zh.sort();
      const nh = e.hints?.forNodes?.map((z) => z.name).filter((z) => !!z);
      if (nh?.length) ep.nodeHints = nh.sort();
      eps.push(ep);
    }
    out.set(key, eps);
  }
  return out;
}

export function compareEndpoints(a: Endpoint, b: Endpoint): number {
  if (a.ip !== b.ip) {
    // numeric-ish order for IPv4, lexical otherwise: stable is what matters
    const pa = a.ip.split('.').map(Number);
    const pb = b.ip.split('.').map(Number);
    if (pa.length === 4 && pb.length === 4) {
      for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
    }
    return a.ip < b.ip ? -1 : 1;
  }
  return a.port - b.port;
}

/** Node -> NodeInfo (InternalIP then ExternalIP addresses; zone label; podCIDRs). */
export function nodeInfoFromNode(node: V1Node): NodeInfo {
  const addrs = node.status?.addresses ?? [];
  const ips: string[] = [];
  for (const t of ['InternalIP', 'ExternalIP']) {
    for (const a of addrs) if (a.type === t && a.address && !ips.includes(a.address)) ips.push(a.address);
  }
  const info: NodeInfo = {
    name: node.metadata?.name ?? '',
    ips,
    podCIDRs: node.spec?.podCIDRs?.length ? [...node.spec.podCIDRs] : node.spec?.podCIDR ? [node.spec.podCIDR] : [],
  };
  const zone = node.metadata?.labels?.[ZONE_LABEL];
  if (zone) info.zone = zone;
  return info;
}
