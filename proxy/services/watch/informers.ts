// Informers on Services, EndpointSlices (discovery.k8s.io/v1) and Nodes over lib/kube: list in pages, then watch
// from the list's resourceVersion, relist on 410 Gone, and retry with backoff after any other error or disconnect
// (lib/kube/watch.ts). Handlers get the API's plain JSON objects. start() resolves once Services and EndpointSlices
// have both completed their initial list.

import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { KubeClient } from '../../../lib/kube/client.ts';
import { loadKubeConfig as loadConfig, type KubeConfig } from '../../../lib/kube/config.ts';
import { ListWatcher, type KubeObject } from '../../../lib/kube/watch.ts';
import { SERVICE_NAME_LABEL } from '../model/convert.ts';

export type { KubeConfig } from '../../../lib/kube/config.ts';

export interface WatchHandlers {
  service(obj: V1Service, deleted: boolean): void;
  slice(obj: V1EndpointSlice, deleted: boolean): void;
  node(obj: V1Node, deleted: boolean): void;
}

export interface WatchSource {
  /** resolves when the initial Service and EndpointSlice lists are in */
  start(h: WatchHandlers): Promise<void>;
  stop(): Promise<void>;
}

export interface LogLike {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  debug(obj: unknown, msg?: string): void;
}

/** kubeconfig file (may be ''), master URL override (may be ''): see lib/kube/config.ts loadKubeConfig. */
export function loadKubeConfig(kubeconfig: string, master: string): KubeConfig {
  return loadConfig(kubeconfig, master);
}

/** What a relist needs to delete a slice the daemon knows: its name and the Service it belongs to. */
function sliceStub(o: V1EndpointSlice): V1EndpointSlice {
  const svc = o.metadata?.labels?.[SERVICE_NAME_LABEL];
  return {
    metadata: { namespace: o.metadata?.namespace, name: o.metadata?.name, ...(svc ? { labels: { [SERVICE_NAME_LABEL]: svc } } : {}) },
  } as V1EndpointSlice;
}

/** The real API source. */
export class KubeWatchSource implements WatchSource {
  private readonly client: KubeClient;
  private readonly log: LogLike | undefined;
  private watchers: ListWatcher<KubeObject>[] = [];

  constructor(config: KubeConfig, log?: LogLike) {
    this.client = new KubeClient(config);
    this.log = log;
  }

  async start(h: WatchHandlers): Promise<void> {
    const watch = <T extends KubeObject>(name: string, path: string, onEvent: (o: T, deleted: boolean) => void, stub?: (o: T) => T): ListWatcher<T> =>
      new ListWatcher<T>({ client: this.client, path, name, onEvent, log: this.log, ...(stub ? { stub } : {}) });
    const svc = watch<V1Service & KubeObject>('services', '/api/v1/services', (o, d) => h.service(o, d));
    const eps = watch<V1EndpointSlice & KubeObject>('endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', (o, d) => h.slice(o, d), sliceStub);
    const nodes = watch<V1Node & KubeObject>('nodes', '/api/v1/nodes', (o, d) => h.node(o, d));
    this.watchers = [svc, eps, nodes] as ListWatcher<KubeObject>[];
    for (const w of this.watchers) w.start();
    await Promise.all([svc.synced, eps.synced]);
  }

  async stop(): Promise<void> {
    await Promise.all(this.watchers.map((w) => w.stop()));
    this.client.close();
  }
}
