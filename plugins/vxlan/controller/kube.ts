// NodeSource backed by the Kubernetes API: list+watch Nodes with an informer, merge-patch our annotations.
import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type Informer,
  type ObjectCache,
  type V1Node,
} from '@kubernetes/client-node';
import type { Logger } from '../../../lib/cni/types.ts';
import { toOverlayNode, type NodeSource, type OverlayNode } from './node.ts';

export class KubeNodeSource implements NodeSource {
  private readonly api: CoreV1Api;
  private readonly informer: Informer<V1Node> & ObjectCache<V1Node>;
  private readonly log: Logger;
  private stopped = false;
  private restart: NodeJS.Timeout | undefined;

  constructor(kubeconfig: string, log: Logger) {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    this.api = kc.makeApiClient(CoreV1Api);
    this.informer = makeInformer(kc, '/api/v1/nodes', () => this.api.listNode());
    this.log = log;
  }

  /**
   * Resolves after the initial list, or after the first failed attempt (the controller then simply sees no nodes
   * yet): the watch keeps retrying every 2 s in the background and reports through onChange once it is up.
   */
  async start(onChange: () => void): Promise<void> {
    const changed = (): void => onChange();
    this.informer.on('add', changed);
    this.informer.on('update', changed);
    this.informer.on('delete', changed);
    this.informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.log.warn({ err: String(err) }, 'overlay: node watch failed, restarting');
      this.retry(changed, 1000);
    });
    try {
      await this.informer.start();
    } catch (e) {
      this.log.warn({ err: String(e) }, 'overlay: cannot list Nodes yet, retrying');
      this.retry(changed, 2000);
    }
  }

  private retry(changed: () => void, delayMs: number): void {
    if (this.stopped || this.restart) return;
    this.restart = setTimeout(() => {
      this.restart = undefined;
      if (this.stopped) return;
      this.informer.start().then(changed, (e: unknown) => {
        this.log.warn({ err: String(e) }, 'overlay: node watch restart failed, retrying');
        this.retry(changed, 2000);
      });
    }, delayMs);
  }

  list(): OverlayNode[] {
    return this.informer
      .list()
      .map((n) => toOverlayNode(n))
      .filter((n): n is OverlayNode => n !== undefined);
  }

  async annotate(name: string, annotations: Record<string, string>): Promise<void> {
    await this.api.patchNode(
      { name, body: { metadata: { annotations } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restart) clearTimeout(this.restart);
    await this.informer.stop();
  }
}
