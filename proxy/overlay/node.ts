// The slice of a Kubernetes Node the overlay needs, and the sources that provide Nodes.
import { canonicalNetwork, familyOf } from '../../lib/net/ip.ts';

export interface OverlayNode {
  name: string;
  /** InternalIP addresses from status.addresses, in API order */
  internalIPs: string[];
  /** spec.podCIDRs (or spec.podCIDR), canonical text */
  podCIDRs: string[];
  annotations: Record<string, string>;
}

/** A Node-like object, as the API returns it (only the fields used). */
export interface NodeLike {
  metadata?: { name?: string; annotations?: Record<string, string> | undefined };
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  status?: { addresses?: { type: string; address: string }[] };
}

/** Converts a Node-like object; returns undefined for objects without a name. Invalid CIDRs/IPs are dropped. */
export function toOverlayNode(n: NodeLike): OverlayNode | undefined {
  const name = n.metadata?.name;
  if (!name) return undefined;
  const rawCidrs = n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
  const podCIDRs: string[] = [];
  for (const c of rawCidrs) {
    try {
      podCIDRs.push(canonicalNetwork(c));
    } catch {
      /* ignore malformed */
    }
  }
  const internalIPs = (n.status?.addresses ?? [])
    .filter((a) => a.type === 'InternalIP' && familyOf(a.address) !== undefined)
    .map((a) => a.address);
  return { name, internalIPs, podCIDRs, annotations: { ...(n.metadata?.annotations ?? {}) } };
}

/** Where the controller gets Nodes from: the API (kube.ts) or an in-memory list (tests). */
export interface NodeSource {
  /** Begin watching; resolves once the initial list is in. onChange is called after every later change. */
  start(onChange: () => void): Promise<void>;
  /** The current set of nodes. */
  list(): OverlayNode[];
  /** Merge these annotations into the named Node. */
  annotate(name: string, annotations: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

interface MemoryStore {
  nodes: Map<string, OverlayNode>;
  subscribers: Set<() => void>;
}

/**
 * An in-memory NodeSource: nodes are set by the caller; annotate() updates the stored node like the API would.
 * view() gives another source over the same nodes (one per controller, like one watch per daemon).
 */
export class MemoryNodeSource implements NodeSource {
  private readonly store: MemoryStore;
  private onChange: (() => void) | undefined;

  constructor(nodes: NodeLike[] = [], store?: MemoryStore) {
    this.store = store ?? { nodes: new Map(), subscribers: new Set() };
    for (const n of nodes) this.put(n, false);
  }

  view(): MemoryNodeSource {
    return new MemoryNodeSource([], this.store);
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    this.store.subscribers.add(onChange);
  }

  list(): OverlayNode[] {
    return [...this.store.nodes.values()].map((n) => ({ ...n, annotations: { ...n.annotations } }));
  }

  async annotate(name: string, annotations: Record<string, string>): Promise<void> {
    const n = this.store.nodes.get(name);
    if (!n) throw new Error(`node ${name} not found`);
    this.store.nodes.set(name, { ...n, annotations: { ...n.annotations, ...annotations } });
    this.fire();
  }

  async stop(): Promise<void> {
    if (this.onChange) this.store.subscribers.delete(this.onChange);
    this.onChange = undefined;
  }

  /** Add or replace a node (as a watch ADDED/MODIFIED event would). */
  put(n: NodeLike | OverlayNode, notify = true): void {
    const o = 'internalIPs' in n ? { ...n, annotations: { ...n.annotations } } : toOverlayNode(n);
    if (!o) throw new Error('node without a name');
    this.store.nodes.set(o.name, o);
    if (notify) this.fire();
  }

  remove(name: string): void {
    this.store.nodes.delete(name);
    this.fire();
  }

  get(name: string): OverlayNode | undefined {
    const n = this.store.nodes.get(name);
    return n && { ...n, annotations: { ...n.annotations } };
  }

  private fire(): void {
    for (const cb of this.store.subscribers) queueMicrotask(cb);
  }
}
