// Change tracking, separate from rule writing (kube-proxy's ServiceChangeTracker + EndpointSliceCache).
// Informer events update the "current" view; take() compares current with what was last handed to a backend and
// returns exactly the ServicePort keys whose service or endpoints differ. No-op updates and flip-flops vanish.

import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { compareEndpoints, endpointsFromSlice, servicePortsFromService, sliceServiceName } from './convert.ts';
import type { Endpoint, ServicePort } from './types.ts';

export interface Changes {
  /** ServicePort keys whose ServicePort or endpoints changed since the last take() */
  changed: Set<string>;
  /** how many service objects / endpoint slices had pending changes (for metrics) */
  servicesPending: number;
  endpointsPending: number;
  /** endpoints.kubernetes.io/last-change-trigger-time of the slices that changed (ms since epoch) */
  triggerTimes: number[];
}

export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

function svcName(obj: { metadata?: { namespace?: string; name?: string } }): string {
  return `${obj.metadata?.namespace ?? 'default'}/${obj.metadata?.name ?? ''}`;
}

function sameJSON(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class ChangeTracker {
  private readonly nodeName: string;
  private readonly proxyName: string;
  /** service ns/name -> its ServicePorts (current) */
  private readonly services = new Map<string, ServicePort[]>();
  /** service ns/name -> slice name -> endpoints by key (current) */
  private readonly slices = new Map<string, Map<string, Map<string, Endpoint[]>>>();
  /** last state handed out by take() */
  private readonly appliedPorts = new Map<string, ServicePort>();
  private readonly appliedEndpoints = new Map<string, Endpoint[]>();
  /** service ns/name -> keys present in appliedPorts/appliedEndpoints */
  private readonly appliedKeys = new Map<string, Set<string>>();
  /** service ns/names touched since the last take() */
  private readonly dirtyServices = new Set<string>();
  private readonly dirtyEndpoints = new Set<string>();
  private triggerTimes: number[] = [];

  constructor(nodeName: string, proxyName = '') {
    this.nodeName = nodeName;
    this.proxyName = proxyName;
  }

  /** true when a call to take() would (probably) return changes */
  get pending(): boolean {
    return this.dirtyServices.size > 0 || this.dirtyEndpoints.size > 0;
  }

  get pendingCounts(): { services: number; endpoints: number } {
    return { services: this.dirtyServices.size, endpoints: this.dirtyEndpoints.size };
  }

  /** Add or update a Service. Returns false when nothing the proxy cares about changed. */
  onService(svc: V1Service): boolean {
    const name = svcName(svc);
    const ports = servicePortsFromService(svc, this.proxyName);
    const prev = this.services.get(name) ?? [];
    if (sameJSON(prev, ports)) return false;
    if (ports.length === 0) this.services.delete(name);
    else this.services.set(name, ports);
    this.dirtyServices.add(name);
    return true;
  }

  onServiceDelete(svc: V1Service): boolean {
    const name = svcName(svc);
    if (!this.services.has(name)) return false;
    this.services.delete(name);
    this.dirtyServices.add(name);
    return true;
  }

  /** Add or update an EndpointSlice. Returns false on a no-op. */
  onSlice(slice: V1EndpointSlice): boolean {
    const name = sliceServiceName(slice);
    if (!name) return false;
    const eps = endpointsFromSlice(slice, this.nodeName);
    let bySlice = this.slices.get(name);
    const sliceName = slice.metadata?.name ?? '';
    const prev = bySlice?.get(sliceName);
    if (prev && sameJSON([...prev], [...eps])) return false;
    if (!bySlice) {
      bySlice = new Map();
      this.slices.set(name, bySlice);
    }
    bySlice.set(sliceName, eps);
    this.dirtyEndpoints.add(name);
    const tt = Date.parse(slice.metadata?.annotations?.[TRIGGER_TIME_ANNOTATION] ?? '');
    if (Number.isFinite(tt)) this.triggerTimes.push(tt);
    return true;
  }

  onSliceDelete(slice: V1EndpointSlice): boolean {
    const name = sliceServiceName(slice);
    if (!name) return false;
    const bySlice = this.slices.get(name);
    if (!bySlice?.delete(slice.metadata?.name ?? '')) return false;
    if (bySlice.size === 0) this.slices.delete(name);
    this.dirtyEndpoints.add(name);
    return true;
  }

  /** Merged, deduplicated (by ip:port) and sorted endpoints of one service, by ServicePort key. */
  private mergedEndpoints(name: string): Map<string, Endpoint[]> {
    const out = new Map<string, Endpoint[]>();
    for (const eps of this.slices.get(name)?.values() ?? []) {
      for (const [key, list] of eps) {
        let acc = out.get(key);
        if (!acc) out.set(key, (acc = []));
        for (const ep of list) {
          // the first slice wins for a duplicate ip:port, but a ready copy beats a not-ready one
          const i = acc.findIndex((e) => e.ip === ep.ip && e.port === ep.port);
          if (i < 0) acc.push(ep);
          else if (!acc[i]!.ready && ep.ready) acc[i] = ep;
        }
      }
    }
    for (const list of out.values()) list.sort(compareEndpoints);
    return out;
  }


  /** Consume pending changes: the keys that differ from the last take(). */
  take(): Changes {
    const servicesPending = this.dirtyServices.size;
    const endpointsPending = this.dirtyEndpoints.size;
    const names = new Set([...this.dirtyServices, ...this.dirtyEndpoints]);
    this.dirtyServices.clear();
    this.dirtyEndpoints.clear();
    const changed = new Set<string>();
    for (const name of names) {
      const ports = new Map((this.services.get(name) ?? []).map((p) => [p.key, p]));
      const merged = this.mergedEndpoints(name);
      const keys = new Set<string>([...ports.keys(), ...merged.keys(), ...(this.appliedKeys.get(name) ?? [])]);
      const kept = new Set<string>();
      for (const key of keys) {
        const port = ports.get(key);
        const eps = merged.get(key) ?? [];
        const oldPort = this.appliedPorts.get(key);
        const oldEps = this.appliedEndpoints.get(key) ?? [];
        const portChanged = !sameJSON(oldPort, port);
        const epsChanged = !sameJSON(oldEps, eps);
        if (port) this.appliedPorts.set(key, port);
        else this.appliedPorts.delete(key);
        if (eps.length) this.appliedEndpoints.set(key, eps);
        else this.appliedEndpoints.delete(key);
        if (port || eps.length) kept.add(key);
        // endpoints of a port the service does not (yet) have are tracked but change nothing visible
        if (portChanged || (epsChanged && (port || oldPort))) changed.add(key);
      }
      if (kept.size) this.appliedKeys.set(name, kept);
      else this.appliedKeys.delete(name);
    }
    const triggerTimes = this.triggerTimes;
    this.triggerTimes = [];
    return { changed, servicesPending, endpointsPending, triggerTimes };
  }

  /** Every ServicePort as of the last take(). */
  servicePorts(): ReadonlyMap<string, ServicePort> {
    return this.appliedPorts;
  }

  /** Endpoints by ServicePort key as of the last take(). */
  endpoints(): ReadonlyMap<string, readonly Endpoint[]> {
    return this.appliedEndpoints;
  }

  get node(): string {
    return this.nodeName;
  }
}
