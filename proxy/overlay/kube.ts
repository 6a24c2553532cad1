// NodeSource backed by the Kubernetes API (lib/kube): list+watch Nodes, keep the converted OverlayNodes in a Map,
// merge-patch our annotations.
import type { V1Node } from '@kubernetes/client-node';
import type { Logger } from '../../lib/log/logger.ts';
import { KubeClient } from '../../lib/kube/client.ts';
import { loadKubeConfig } from '../../lib/kube/config.ts';
import { ListWatcher, type KubeObject } from '../../lib/kube/watch.ts';
import { toOverlayNode, type NodeLike, type NodeSource, type OverlayNode } from './node.ts';

type NodeObject = V1Node & KubeObject;

export class KubeNodeSource implements NodeSource {
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly nodes = new Map<string, OverlayNode>();
  private watcher: ListWatcher<NodeObject> | undefined;

  /** kubeconfig: a file, or '' for $KUBECONFIG, ~/.kube/config or the in-cluster service account */
  constructor(kubeconfig: string, log: Logger) {
    this.client = new KubeClient(loadKubeConfig(kubeconfig));
    this.log = log;
  }

  /**
   * Resolves after the initial list, or after the first failed attempt (the controller then simply sees no nodes
   * yet): the watch keeps retrying every 1-2 s in the background and reports through onChange once it is up.
   */
  async start(onChange: () => void): Promise<void> {
    let failed: (() => void) | undefined = undefined;
    const firstFailure = new Promise<void>((r) => (failed = r));
    const watcher = new ListWatcher<NodeObject>({
      client: this.client,
      path: '/api/v1/nodes',
      name: 'overlay nodes',
      onEvent: (o, deleted) => {
        const name = o.metadata?.name;
        if (!name) return;
        if (deleted) this.nodes.delete(name);
        else {
          const n = toOverlayNode(o as NodeLike);
          if (n) this.nodes.set(name, n);
        }
        onChange();
      },
      // the watcher logs the failure itself
      onError: () => failed?.(),
      initialBackoffMs: 1000,
      maxBackoffMs: 2000,
      log: { debug: (o, m) => this.log.debug(o, m), info: (o, m) => this.log.info(o, m), warn: (o, m) => this.log.warn(o, `overlay: node ${m ?? ''}`) },
    });
    this.watcher = watcher;
    watcher.start();
    await Promise.race([watcher.synced, firstFailure]);
  }

  list(): OverlayNode[] {
    return [...this.nodes.values()].map((n) => ({ ...n, annotations: { ...n.annotations } }));
  }

  async annotate(name: string, annotations: Record<string, string>): Promise<void> {
    await this.client.patch(`/api/v1/nodes/${encodeURIComponent(name)}`, { metadata: { annotations } }, 'application/merge-patch+json');
  }

  async stop(): Promise<void> {
    await this.watcher?.stop();
    this.client.close();
  }
}
