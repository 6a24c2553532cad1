// Minimal REST writes to the apiserver with the agent's kubeconfig credentials (status patches, deletes, Lease),
// so the exact wire format (merge patches, MicroTime) is ours rather than the generated client's.
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';

export class ApiError extends Error {
  readonly status: number;
  readonly body: string;
  constructor(method: string, path: string, status: number, body: string) {
    super(`${method} ${path}: HTTP ${status}: ${body.slice(0, 500)}`);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
  get notFound(): boolean {
    return this.status === 404;
  }
  get conflict(): boolean {
    return this.status === 409;
  }
}

export class Api {
  private readonly kc: KubeConfig;
  private readonly server: URL;
  constructor(kc: KubeConfig) {
    this.kc = kc;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    this.server = new URL(cluster.server);
  }

  async call<T = unknown>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const url = new URL(path, this.server);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const opts: import('node:https').RequestOptions = {
      method,
      // explicit Content-Length: Node sends DELETE bodies unframed otherwise, and the apiserver ignores them
      headers: {
        accept: 'application/json',
        'user-agent': 'flatnet-agent',
        ...(payload ? { 'content-type': contentType, 'content-length': String(Buffer.byteLength(payload)) } : {}),
      },
      timeout: 15_000,
    };
    await this.kc.applyToHTTPSOptions(opts);
    const send = url.protocol === 'https:' ? request : httpRequest;
    return new Promise<T>((resolve, reject) => {
      const req = send(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const code = res.statusCode ?? 500;
          if (code >= 300) reject(new ApiError(method, path, code, text));
          else resolve((text ? JSON.parse(text) : undefined) as T);
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}

/** RFC 3339 with microseconds, as metav1.MicroTime expects. */
export function microTime(d = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export function rfc3339(d = new Date()): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z');
}
