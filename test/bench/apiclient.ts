// Bulk object creation for benchmarks, on lib/kube's client with many requests in flight. kubectl applies a List one
// object at a time (server-side apply is slower still), which made creating 10k Services and 10k EndpointSlices
// take over ten minutes; this takes about two and a half on the 2-core development machine.

import { KubeApiError, KubeClient } from '../../lib/kube/client.ts';
import { loadKubeConfigFile } from '../../lib/kube/config.ts';

export interface ApiObject {
  apiVersion: string;
  kind: string;
  metadata: { namespace?: string; name: string; [k: string]: unknown };
  [k: string]: unknown;
}

const PLURAL: Record<string, string> = { Service: 'services', EndpointSlice: 'endpointslices', ConfigMap: 'configmaps' };

/** The collection path of an object: /api/v1/namespaces/ns/services, /apis/discovery.k8s.io/v1/namespaces/ns/endpointslices */
export function collectionPath(o: ApiObject): string {
  const plural = PLURAL[o.kind];
  if (!plural) throw new Error(`apiclient: unknown kind ${o.kind}`);
  const group = o.apiVersion === 'v1' ? '/api/v1' : `/apis/${o.apiVersion}`;
  return `${group}/namespaces/${o.metadata.namespace ?? 'default'}/${plural}`;
}

export class ApiClient {
  private readonly kube: KubeClient;

  constructor(kubeconfigPath: string, maxSockets = 32) {
    this.kube = new KubeClient(loadKubeConfigFile(kubeconfigPath), { maxSockets });
  }

  /** retries 429 (max-requests-inflight) and 5xx, which a loaded apiserver answers under bulk load */
  private async retrying(op: () => Promise<unknown>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await op();
        return;
      } catch (e) {
        const st = e instanceof KubeApiError ? e.status : 0;
        if (!(st === 429 || st >= 500) || attempt >= 20) throw e;
        await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
      }
    }
  }

  create(o: ApiObject): Promise<void> {
    return this.retrying(() => this.kube.create(collectionPath(o), o));
  }

  /** Replace an existing object (no resourceVersion: last write wins). */
  replace(o: ApiObject): Promise<void> {
    return this.retrying(() => this.kube.replace(`${collectionPath(o)}/${o.metadata.name}`, o));
  }

  /** Create many objects with `concurrency` requests in flight; onProgress every 1000. */
  async createAll(objs: ApiObject[], concurrency = 32, onProgress?: (done: number) => void): Promise<void> {
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < objs.length) {
        const o = objs[next++]!;
        await this.create(o);
        if (++done % 1000 === 0) onProgress?.(done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, objs.length) }, worker));
  }

  close(): void {
    this.kube.close();
  }
}
