// NetworkPolicy (networking.k8s.io/v1), Pod and Namespace objects as plain JSON -> a small immutable model. Pure.
// Anything the apiserver's validation would reject is tolerated the safe way: an unparseable selector selects
// nothing, an unparseable ipBlock allows nothing, an unknown protocol allows nothing.

import { normalizeIP } from '../../lib/net/ip.ts';

export type Proto = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Proto[] = ['TCP', 'UDP', 'SCTP'];

export interface Requirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  readonly values: readonly string[];
}

/** A parsed label selector; `invalid` selects nothing. An empty selector selects everything. */
export interface Selector {
  readonly requirements: readonly Requirement[];
  readonly invalid?: boolean;
}

export interface ContainerPort {
  readonly name: string;
  readonly port: number;
  readonly protocol: Proto;
}

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly nodeName: string;
  readonly hostNetwork: boolean;
  /** canonical addresses from status.podIPs (status.podIP when absent) */
  readonly ips: readonly string[];
  /** named container ports (unnamed ones cannot be referenced) */
  readonly ports: readonly ContainerPort[];
}

export interface NamespaceInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface PolicyPort {
  readonly protocol: Proto;
  /** undefined: every port of the protocol */
  readonly port?: number | string;
  readonly endPort?: number;
}

export interface IPBlock {
  readonly cidr: string;
  readonly except: readonly string[];
}

export type Peer =
  | { readonly kind: 'pods'; readonly podSelector?: Selector; readonly namespaceSelector?: Selector }
  | { readonly kind: 'ipBlock'; readonly block: IPBlock }
  | { readonly kind: 'none' };

export interface PolicyRule {
  /** undefined: every peer (the rule's from/to is empty or absent) */
  readonly peers?: readonly Peer[];
  /** empty: every port and protocol */
  readonly ports: readonly PolicyPort[];
}

export interface Policy {
  readonly namespace: string;
  readonly name: string;
  readonly podSelector: Selector;
  /** undefined when the policy does not isolate ingress */
  readonly ingress?: readonly PolicyRule[];
  readonly egress?: readonly PolicyRule[];
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

function labelsOf(meta: Obj): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(meta.labels))) if (typeof v === 'string') out[k] = v;
  return out;
}

export function parseSelector(v: unknown): Selector {
  if (v === null || v === undefined) return { requirements: [] };
  const o = obj(v);
  const reqs: Requirement[] = [];
  for (const [key, value] of Object.entries(obj(o.matchLabels))) {
    if (typeof value !== 'string') return { requirements: [], invalid: true };
    reqs.push({ key, operator: 'In', values: [value] });
  }
  for (const e of arr(o.matchExpressions)) {
    const x = obj(e);
    const op = str(x.operator);
    const values = arr(x.values).filter((s): s is string => typeof s === 'string');
    if (!str(x.key)) return { requirements: [], invalid: true };
    if (op === 'In' || op === 'NotIn') {
      if (!values.length) return { requirements: [], invalid: true };
    } else if (op !== 'Exists' && op !== 'DoesNotExist') return { requirements: [], invalid: true };
    reqs.push({ key: str(x.key), operator: op, values });
  }
  return { requirements: reqs };
}

export function selectorMatches(s: Selector, labels: Readonly<Record<string, string>>): boolean {
  if (s.invalid) return false;
  for (const r of s.requirements) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = labels[r.key];
    switch (r.operator) {
      case 'In':
        if (!has || !r.values.includes(v!)) return false;
        break;
      case 'NotIn':
        if (has && r.values.includes(v!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

function parseProto(v: unknown): Proto | undefined {
  if (v === undefined || v === null || v === '') return 'TCP';
  return (PROTOCOLS as readonly unknown[]).includes(v) ? (v as Proto) : undefined;
}

/** A Pod that can take part in policy: it has an address and has not terminated. undefined otherwise. */
export function parsePod(v: unknown): PodInfo | undefined {
  const o = obj(v);
  const meta = obj(o.metadata);
  const spec = obj(o.spec);
  const status = obj(o.status);
  const phase = str(status.phase);
  if (phase === 'Succeeded' || phase === 'Failed') return undefined;
  const raw = arr(status.podIPs).map((x) => str(obj(x).ip));
  if (!raw.length && str(status.podIP)) raw.push(str(status.podIP));
  const ips = [...new Set(raw.map((s) => normalizeIP(s)).filter((s): s is string => !!s))];
  const ports: ContainerPort[] = [];
  for (const c of [...arr(spec.containers), ...arr(spec.initContainers)]) {
    for (const p of arr(obj(c).ports)) {
      const po = obj(p);
      const proto = parseProto(po.protocol);
      const port = Number(po.containerPort);
      if (str(po.name) && proto && Number.isInteger(port) && port > 0 && port < 65536) ports.push({ name: str(po.name), port, protocol: proto });
    }
  }
  return {
    namespace: str(meta.namespace),
    name: str(meta.name),
    labels: labelsOf(meta),
    nodeName: str(spec.nodeName),
    hostNetwork: spec.hostNetwork === true,
    ips,
    ports,
  };
}

export function parseNamespace(v: unknown): NamespaceInfo {
  const meta = obj(obj(v).metadata);
  const name = str(meta.name);
  // the apiserver sets this label on every namespace (1.21+); set it for objects written before that
  return { name, labels: { 'kubernetes.io/metadata.name': name, ...labelsOf(meta) } };
}

function parsePorts(v: unknown): PolicyPort[] | undefined {
  const out: PolicyPort[] = [];
  for (const p of arr(v)) {
    const po = obj(p);
    const protocol = parseProto(po.protocol);
    // an unknown protocol matches no packet; keep the rule but without this entry
    if (!protocol) continue;
    const port = po.port;
    if (port === undefined || port === null) {
      out.push({ protocol });
      continue;
    }
    if (typeof port === 'string' && !/^\d+$/.test(port)) {
      out.push({ protocol, port });
      continue;
    }
    const n = Number(port);
    if (!Number.isInteger(n) || n < 1 || n > 65535) continue;
    const end = po.endPort === undefined || po.endPort === null ? undefined : Number(po.endPort);
    if (end !== undefined && (!Number.isInteger(end) || end < n || end > 65535)) continue;
    out.push(end !== undefined ? { protocol, port: n, endPort: end } : { protocol, port: n });
  }
  // a rule whose every port entry was unusable allows nothing (not everything)
  if (arr(v).length && !out.length) return undefined;
  return out;
}

function parsePeer(v: unknown): Peer {
  const o = obj(v);
  if (o.ipBlock !== undefined) {
    const b = obj(o.ipBlock);
    return { kind: 'ipBlock', block: { cidr: str(b.cidr), except: arr(b.except).map(str) } };
  }
  if (o.podSelector === undefined && o.namespaceSelector === undefined) return { kind: 'none' };
  return {
    kind: 'pods',
    ...(o.podSelector !== undefined ? { podSelector: parseSelector(o.podSelector) } : {}),
    ...(o.namespaceSelector !== undefined ? { namespaceSelector: parseSelector(o.namespaceSelector) } : {}),
  };
}

function parseRules(v: unknown, peerKey: 'from' | 'to'): PolicyRule[] {
  const out: PolicyRule[] = [];
  for (const r of arr(v)) {
    const ro = obj(r);
    const ports = parsePorts(ro.ports);
    if (!ports) continue;
    const peersRaw = arr(ro[peerKey]);
    out.push(peersRaw.length ? { peers: peersRaw.map(parsePeer), ports } : { ports });
  }
  return out;
}

export function parsePolicy(v: unknown): Policy {
  const o = obj(v);
  const meta = obj(o.metadata);
  const spec = obj(o.spec);
  const types = arr(spec.policyTypes).map(str);
  // policyTypes absent: Ingress always, Egress when the policy has egress rules
  const ingressOn = types.length ? types.includes('Ingress') : true;
  const egressOn = types.length ? types.includes('Egress') : arr(spec.egress).length > 0;
  return {
    namespace: str(meta.namespace),
    name: str(meta.name),
    podSelector: parseSelector(spec.podSelector ?? {}),
    ...(ingressOn ? { ingress: parseRules(spec.ingress, 'from') } : {}),
    ...(egressOn ? { egress: parseRules(spec.egress, 'to') } : {}),
  };
}
