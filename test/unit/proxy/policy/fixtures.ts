// Builders for NetworkPolicy, Pod and Namespace JSON as the API returns them, for the policy tests.

export interface PodSpecLite {
  ns: string;
  name: string;
  ip: string | string[];
  labels?: Record<string, string>;
  node?: string;
  hostNetwork?: boolean;
  ports?: { name: string; containerPort: number; protocol?: string }[];
  phase?: string;
}

export function podObj(p: PodSpecLite): Record<string, unknown> {
  const ips = Array.isArray(p.ip) ? p.ip : [p.ip];
  return {
    metadata: { namespace: p.ns, name: p.name, labels: p.labels ?? {} },
    spec: { nodeName: p.node ?? 'n1', ...(p.hostNetwork ? { hostNetwork: true } : {}), containers: [{ name: 'c', ports: p.ports ?? [] }] },
    status: { phase: p.phase ?? 'Running', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  };
}

export function nsObj(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return { metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}

export function policyObj(ns: string, name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: ns, name }, spec };
}
