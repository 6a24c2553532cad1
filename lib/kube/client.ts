// A small Kubernetes API client: node:https (node:http for http:// servers) over one keep-alive Agent, JSON bodies
// parsed into plain objects (no classes, no Date conversion). get() and patch() buffer the response; stream() hands
// back the live response for watches (watch.ts parses it incrementally).

import { readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { KubeConfig } from './config.ts';

/** A non-2xx answer: the HTTP status (or a watch ERROR event's code) and the Status message. */
export class KubeApiError extends Error {
  readonly status: number;
  /** Status.reason (NotFound, Expired, Gone, ...) when the body was a Status */
  readonly reason: string | undefined;

  constructor(status: number, message: string, reason?: string) {
    super(message);
    this.name = 'KubeApiError';
    this.status = status;
    this.reason = reason;
  }
}

export interface KubeClientOptions {
  /** deadline of get()/patch() including the body (default 60 s) */
  timeoutMs?: number;
  /** how long a token read from tokenFile is used before the file is read again (default 60 s) */
  tokenRefreshMs?: number;
  /** connections per host the keep-alive agent opens (default Infinity) */
  maxSockets?: number;
}

const MAX_ERROR_BODY = 64 * 1024;

export class KubeClient {
  readonly config: KubeConfig;
  private readonly base: string;
  private readonly secure: boolean;
  private readonly agent: http.Agent;
  private readonly timeoutMs: number;
  private readonly tokenRefreshMs: number;
  private fileToken: string | undefined;
  private fileTokenAt = 0;

  constructor(config: KubeConfig, opts: KubeClientOptions = {}) {
    this.config = config;
    let url: URL;
    try {
      url = new URL(config.server);
    } catch {
      throw new Error(`${config.source}: server "${config.server}" is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`${config.source}: server "${config.server}" is not http(s)`);
    this.secure = url.protocol === 'https:';
    this.base = `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.tokenRefreshMs = opts.tokenRefreshMs ?? 60_000;
    // TLS settings live on the Agent: they are merged into every connection it opens
    this.agent = this.secure
      ? new https.Agent({
          keepAlive: true,
          ...(opts.maxSockets ? { maxSockets: opts.maxSockets } : {}),
          ca: config.ca,
          cert: config.cert,
          key: config.key,
          rejectUnauthorized: !config.insecureSkipTLSVerify,
          ...(config.tlsServerName ? { servername: config.tlsServerName } : {}),
        })
      : new http.Agent({ keepAlive: true, ...(opts.maxSockets ? { maxSockets: opts.maxSockets } : {}) });
  }

  /** GET a path (with query) and parse the JSON body. */
  async get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.json<T>('GET', path, undefined, undefined, signal);
  }

  /** PATCH with the given content type (application/merge-patch+json by default); returns the patched object. */
  async patch<T>(path: string, body: unknown, contentType = 'application/merge-patch+json', signal?: AbortSignal): Promise<T> {
    return this.json<T>('PATCH', path, JSON.stringify(body), contentType, signal);
  }

  /** POST an object to a collection path; returns the created object. */
  async create<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.json<T>('POST', path, JSON.stringify(body), 'application/json', signal);
  }

  /** PUT an object to its path (no resourceVersion in the body: last write wins); returns the stored object. */
  async replace<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.json<T>('PUT', path, JSON.stringify(body), 'application/json', signal);
  }

  /**
   * GET a long-lived response (a watch). Resolves once a 2xx status arrives; the caller reads and ends it (abort the
   * signal to cut it). There is no deadline here: the caller owns the connection's lifetime.
   */
  async stream(path: string, signal: AbortSignal): Promise<IncomingMessage> {
    return this.request('GET', path, undefined, undefined, signal);
  }

  /** Closes idle keep-alive connections (in-flight requests are ended by their abort signals). */
  close(): void {
    this.agent.destroy();
  }

  private async json<T>(method: string, path: string, body: string | undefined, contentType: string | undefined, signal?: AbortSignal): Promise<T> {
    const deadline = AbortSignal.timeout(this.timeoutMs);
    const all = signal ? AbortSignal.any([signal, deadline]) : deadline;
    try {
      const res = await this.request(method, path, body, contentType, all);
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new Error(`${method} ${path}: response is not JSON: ${text.slice(0, 200)}`);
      }
    } catch (e) {
      if (deadline.aborted && !signal?.aborted) throw new Error(`${method} ${path}: no complete answer within ${this.timeoutMs} ms`, { cause: e });
      throw e;
    }
  }

  private token(): string | undefined {
    if (this.config.token) return this.config.token;
    const file = this.config.tokenFile;
    if (!file) return undefined;
    const now = Date.now();
    if (this.fileToken === undefined || now - this.fileTokenAt >= this.tokenRefreshMs) {
      try {
        this.fileToken = readFileSync(file, 'utf8').trim();
        this.fileTokenAt = now;
      } catch (e) {
        // a rotation in progress: keep the previous token; without one the request cannot be authenticated
        if (this.fileToken === undefined) throw new Error(`cannot read token file ${file}: ${(e as Error).message}`, { cause: e });
      }
    }
    return this.fileToken;
  }

  private request(method: string, path: string, body: string | undefined, contentType: string | undefined, signal: AbortSignal): Promise<IncomingMessage> {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'flatnet' };
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) {
      headers['content-type'] = contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    const mod = this.secure ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(`${this.base}${path}`, { method, headers, agent: this.agent, signal }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          resolve(res);
          return;
        }
        readError(res).then(
          (text) => reject(apiError(method, path, status, text)),
          () => reject(new KubeApiError(status, `${method} ${path}: HTTP ${status}`)),
        );
      });
      req.on('error', (e) => reject(signal.aborted ? new Error(`${method} ${path}: aborted`, { cause: e }) : new Error(`${method} ${path}: ${e.message}`, { cause: e })));
      req.end(body);
    });
  }
}

async function readError(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res) {
    if (size < MAX_ERROR_BODY) chunks.push(c as Buffer);
    size += (c as Buffer).length;
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A KubeApiError from an error body: the Status message when it is a Status, else the text. */
export function apiError(method: string, path: string, status: number, text: string): KubeApiError {
  let message = text.trim().slice(0, 500);
  let reason: string | undefined;
  try {
    const s = JSON.parse(text) as { kind?: string; message?: string; reason?: string };
    if (s && typeof s === 'object') {
      if (typeof s.message === 'string' && s.message) message = s.message;
      if (typeof s.reason === 'string' && s.reason) reason = s.reason;
    }
  } catch {
    /* not JSON: keep the text */
  }
  return new KubeApiError(status, `${method} ${path}: HTTP ${status}${message ? `: ${message}` : ''}`, reason);
}
