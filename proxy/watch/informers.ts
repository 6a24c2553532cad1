// Informers on Services, EndpointSlices (discovery.k8s.io/v1) and Nodes: list, then watch from the list's
// resourceVersion (client-node's ListWatch), relist on 410 Gone, and restart with backoff after any other error or
// disconnect. start() resolves once Services and EndpointSlices have both completed their initial list.

import {
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Node,
  type V1Service,
} from '@kubernetes/client-node';

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

export function loadKubeConfig(kubeconfig: string, master: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (master) {
    kc.loadFromClusterAndUser({ name: 'master', server: master, skipTLSVerify: true }, { name: 'anonymous' });
  } else kc.loadFromDefault();
  if (master && kubeconfig) {
    const cluster = kc.getCurrentCluster();
    if (cluster) {
      kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server: master } : c));
    }
  }
  return kc;
}

class RestartingInformer<T extends KubernetesObject> {
  private lw: ListWatch<T> | undefined;
  private stopped = false;
  private delay = 500;
  private timer: NodeJS.Timeout | undefined;
  private readonly name: string;
  private readonly make: () => ListWatch<T>;
  private readonly onEvent: (o: T, deleted: boolean) => void;
  private readonly log: LogLike | undefined;
  private syncedResolve: (() => void) | undefined;
  readonly synced: Promise<void>;

  constructor(name: string, make: () => ListWatch<T>, onEvent: (o: T, deleted: boolean) => void, log?: LogLike) {
    this.name = name;
    this.make = make;
    this.onEvent = onEvent;
    this.log = log;
    this.synced = new Promise((r) => (this.syncedResolve = r));
  }

  start(): void {
    if (this.stopped) return;
    const lw = this.make();
    this.lw = lw;
    lw.on('add', (o) => this.onEvent(o, false));
    lw.on('update', (o) => this.onEvent(o, false));
    lw.on('delete', (o) => this.onEvent(o, true));
    lw.on('error', (err) => {
      if (this.stopped || this.lw !== lw) return;
      this.log?.warn({ informer: this.name, err: String(err), retryMs: this.delay }, 'watch failed; restarting');
      void lw.stop();
      this.timer = setTimeout(() => this.start(), this.delay);
      this.delay = Math.min(this.delay * 2, 30_000);
    });
    lw.start().then(
      () => {
        if (lw.latestResourceVersion()) {
          this.delay = 500;
          this.syncedResolve?.();
          this.syncedResolve = undefined;
        }
      },
      () => {
        /* reported through 'error' */
      },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.lw?.stop();
  }
}

/** The real API source. */
export class KubeWatchSource implements WatchSource {
  private readonly kc: KubeConfig;
  private readonly log: LogLike | undefined;
  private informers: RestartingInformer<KubernetesObject>[] = [];

  constructor(kc: KubeConfig, log?: LogLike) {
    this.kc = kc;
    this.log = log;
  }

  async start(h: WatchHandlers): Promise<void> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const disc = this.kc.makeApiClient(DiscoveryV1Api);
    const watch = new Watch(this.kc);
    const svc = new RestartingInformer<V1Service>(
      'services',
      () => new ListWatch<V1Service>('/api/v1/services', watch, () => core.listServiceForAllNamespaces(), false),
      (o, d) => h.service(o, d),
      this.log,
    );
    const eps = new RestartingInformer<V1EndpointSlice>(
      'endpointslices',
      () => new ListWatch<V1EndpointSlice>('/apis/discovery.k8s.io/v1/endpointslices', watch, () => disc.listEndpointSliceForAllNamespaces(), false),
      (o, d) => h.slice(o, d),
      this.log,
    );
    const nodes = new RestartingInformer<V1Node>(
      'nodes',
      () => new ListWatch<V1Node>('/api/v1/nodes', watch, () => core.listNode(), false),
      (o, d) => h.node(o, d),
      this.log,
    );
    this.informers = [svc, eps, nodes] as unknown as RestartingInformer<KubernetesObject>[];
    for (const i of this.informers) i.start();
    await Promise.all([svc.synced, eps.synced]);
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
  }
}
