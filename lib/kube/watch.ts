// ListWatcher: LIST a collection in pages (limit + continue), then WATCH from the list's resourceVersion, parsing
// the newline-delimited JSON events as they arrive (never buffering the stream).
//
//   ADDED / MODIFIED -> onEvent(obj, false)      DELETED -> onEvent(obj, true)      BOOKMARK -> new resourceVersion
//   ERROR 410 (or HTTP 410) -> relist             watch ended by its timeoutSeconds -> watch again from the last RV
//   anything else -> retry after a backoff (500 ms doubling to 30 s, reset after a success)
//
// A relist delivers the listed objects as updates and, for objects known before but no longer listed, deletions.
// For that only a Map key -> stub is kept (by default {metadata: {namespace, name}}), never the full objects.

import type { KubeClient } from './client.ts';
import { KubeApiError } from './client.ts';

export interface KubeObject {
  metadata?: {
    namespace?: string;
    name?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
  };
}

export interface WatchLog {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  debug(obj: unknown, msg?: string): void;
}

export interface ListWatcherOptions<T extends KubeObject> {
  client: KubeClient;
  /** collection path, e.g. /api/v1/services */
  path: string;
  onEvent(obj: T, deleted: boolean): void;
  /** what is remembered per object for relist deletions (default: namespace and name only) */
  stub?: (obj: T) => T;
  /** called on every failed list/watch attempt (before the backoff) */
  onError?: (err: unknown) => void;
  log?: WatchLog;
  /** for log lines (default: the path) */
  name?: string;
  /** LIST page size (default 500) */
  pageSize?: number;
  /** backoff after failures (default 500 ms doubling to 30 s) */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** namespace/name (name alone for cluster-scoped objects) */
export function objectKey(o: KubeObject): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : name;
}

export function defaultStub<T extends KubeObject>(o: T): T {
  const metadata: { namespace?: string; name?: string } = { name: o.metadata?.name ?? '' };
  if (o.metadata?.namespace !== undefined) metadata.namespace = o.metadata.namespace;
  return { metadata } as T;
}

/** The stubs of objects that were known before a relist but are not in the new list. */
export function relistDeletions<S>(before: ReadonlyMap<string, S>, listed: ReadonlyMap<string, S>): S[] {
  const out: S[] = [];
  for (const [k, s] of before) if (!listed.has(k)) out.push(s);
  return out;
}

/** A watch's timeoutSeconds: random in [300, 600) so that many watchers do not all reconnect at once. */
export function watchTimeoutSeconds(random: () => number = Math.random): number {
  return 300 + Math.floor(random() * 300);
}

/**
 * Splits a byte stream into lines at \n. Lines are decoded only once complete, so a chunk boundary inside a
 * multi-byte UTF-8 character is harmless. A trailing \r is dropped.
 */
export class LineSplitter {
  private pending: Buffer[] = [];

  /** Feeds a chunk; returns the lines it completed. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      const buf = this.pending.length ? Buffer.concat([...this.pending, part]) : part;
      this.pending = [];
      lines.push(trimCr(buf.toString('utf8')));
      start = nl + 1;
    }
    if (start < chunk.length) this.pending.push(start === 0 ? chunk : chunk.subarray(start));
    return lines;
  }

  /** The unterminated rest ('' when none), and forget it. */
  end(): string {
    const rest = trimCr(Buffer.concat(this.pending).toString('utf8'));
    this.pending = [];
    return rest;
  }
}

function trimCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

interface ListPage<T> {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

interface WatchEvent<T> {
  type?: string;
  object?: T & { code?: number; message?: string; reason?: string };
}

function isGone(e: unknown): boolean {
  return e instanceof KubeApiError && e.status === 410;
}

export class ListWatcher<T extends KubeObject> {
  readonly synced: Promise<void>;
  private readonly o: ListWatcherOptions<T>;
  private readonly name: string;
  private readonly stub: (obj: T) => T;
  private known = new Map<string, T>();
  private rv = '';
  private backoff: number;
  private stopped = false;
  private running: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private sleepTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private resolveSynced: (() => void) | undefined;

  constructor(opts: ListWatcherOptions<T>) {
    this.o = opts;
    this.name = opts.name ?? opts.path;
    this.stub = opts.stub ?? defaultStub;
    this.backoff = opts.initialBackoffMs ?? 500;
    this.synced = new Promise((r) => (this.resolveSynced = r));
  }

  /** The resourceVersion the next watch starts from ('' before the first list). */
  get resourceVersion(): string {
    return this.rv;
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    if (this.sleepTimer) clearTimeout(this.sleepTimer);
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    let relist = true;
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        if (relist) {
          await this.list(this.abort.signal);
          relist = false;
          this.backoff = this.o.initialBackoffMs ?? 500;
          this.resolveSynced?.();
          this.resolveSynced = undefined;
        }
        if (this.stopped) break;
        if ((await this.watch(this.abort)) === 'expired') {
          this.o.log?.info({ informer: this.name }, 'watch resourceVersion expired; relisting');
          relist = true;
        }
      } catch (e) {
        if (this.stopped) break;
        if (isGone(e) && !relist) {
          // the watch's resourceVersion is too old: list again right away
          this.o.log?.info({ informer: this.name }, 'watch resourceVersion expired; relisting');
          relist = true;
          continue;
        }
        this.o.onError?.(e);
        this.o.log?.warn({ informer: this.name, err: String(e), retryMs: this.backoff }, relist ? 'list failed; retrying' : 'watch failed; retrying');
        await this.sleep(this.backoff);
        this.backoff = Math.min(this.backoff * 2, this.o.maxBackoffMs ?? 30_000);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      this.wake = r;
      this.sleepTimer = setTimeout(r, ms);
    });
  }

  private deliver(obj: T, deleted: boolean): void {
    try {
      this.o.onEvent(obj, deleted);
    } catch (e) {
      this.o.log?.warn({ informer: this.name, object: objectKey(obj), err: String(e) }, 'event handler failed');
    }
  }

  private async list(signal: AbortSignal): Promise<void> {
    const listed = new Map<string, T>();
    const limit = this.o.pageSize ?? 500;
    const sep = this.o.path.includes('?') ? '&' : '?';
    let cont = '';
    let rv = '';
    do {
      const q = `limit=${limit}${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`;
      const page = await this.o.client.get<ListPage<T>>(`${this.o.path}${sep}${q}`, signal);
      if (this.stopped) return;
      for (const obj of page.items ?? []) {
        listed.set(objectKey(obj), this.stub(obj));
        this.deliver(obj, false);
      }
      cont = page.metadata?.continue ?? '';
      rv = page.metadata?.resourceVersion ?? rv;
    } while (cont);
    for (const s of relistDeletions(this.known, listed)) this.deliver(s, true);
    this.known = listed;
    this.rv = rv;
    this.o.log?.debug({ informer: this.name, objects: listed.size, resourceVersion: rv }, 'listed');
  }

  /** One watch request. 'ended': closed by the server (its timeout); 'expired': relist needed. Throws on failures. */
  private async watch(ac: AbortController): Promise<'ended' | 'expired'> {
    const timeout = watchTimeoutSeconds();
    const sep = this.o.path.includes('?') ? '&' : '?';
    const path = `${this.o.path}${sep}watch=1&resourceVersion=${encodeURIComponent(this.rv)}&allowWatchBookmarks=true&timeoutSeconds=${timeout}`;
    // a connection that silently died would otherwise hang forever: the server ends the watch after `timeout`
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, (timeout + 60) * 1000);
    const t0 = Date.now();
    let events = 0;
    let streaming = false;
    try {
      const res = await this.o.client.stream(path, ac.signal);
      streaming = true;
      const lines = new LineSplitter();
      for await (const chunk of res) {
        for (const line of lines.push(chunk as Buffer)) {
          events++;
          if (this.handle(line) === 'expired') return 'expired';
        }
        if (events) this.backoff = this.o.initialBackoffMs ?? 500;
      }
      const rest = lines.end();
      if (rest && this.handle(rest) === 'expired') return 'expired';
      // a watch closed at once without a single event is treated as a failure (backoff), not as a normal end
      if (!events && !rest && Date.now() - t0 < 1000) throw new Error('watch closed immediately');
      this.backoff = this.o.initialBackoffMs ?? 500;
      return 'ended';
    } catch (e) {
      if (timedOut) throw new Error(`watch ${this.o.path}: not ended by the server within ${timeout + 60} s`, { cause: e });
      if (!streaming || e instanceof KubeApiError || this.stopped || String((e as Error).message).startsWith('watch')) throw e;
      // e.g. "aborted" when the apiserver goes away mid-stream
      throw new Error(`watch ${this.o.path}: connection lost: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(deadline);
    }
  }

  private handle(line: string): 'expired' | undefined {
    if (!line.trim()) return undefined;
    let ev: WatchEvent<T>;
    try {
      ev = JSON.parse(line) as WatchEvent<T>;
    } catch {
      throw new Error(`watch: not a JSON event: ${line.slice(0, 200)}`);
    }
    const obj = ev.object;
    if (!obj) throw new Error(`watch: event ${ev.type ?? '?'} without an object`);
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.known.set(objectKey(obj), this.stub(obj));
        this.deliver(obj, false);
        break;
      case 'DELETED':
        this.known.delete(objectKey(obj));
        this.deliver(obj, true);
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR': {
        if (obj.code === 410) return 'expired';
        throw new KubeApiError(obj.code ?? 500, `watch ${this.o.path}: ${obj.message ?? 'ERROR event'}`, obj.reason);
      }
      default:
        throw new Error(`watch: unknown event type ${ev.type}`);
    }
    const rv = obj.metadata?.resourceVersion;
    if (rv) this.rv = rv;
    return undefined;
  }
}
