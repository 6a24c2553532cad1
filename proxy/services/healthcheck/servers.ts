// HTTP servers: the daemon's /healthz + /livez (default :10256), /metrics + /proxyMode (default 127.0.0.1:10249), and one
// server per healthCheckNodePort of externalTrafficPolicy=Local services, answering like kube-proxy:
// 200 with local endpoints, 503 without, body {"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":b}.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { ProxyHealth } from './proxy-health.ts';

export interface LogLike {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onErr = (e: Error): void => reject(e);
    server.once('error', onErr);
    server.listen(port, host, () => {
      server.off('error', onErr);
      resolve();
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

/** /healthz and /livez */
export async function startHealthzServer(host: string, port: number, health: ProxyHealth): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/livez') {
      const [code, body] = health.respond(path);
      res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
      res.end(body);
      return;
    }
    res.writeHead(404).end();
  });
  await listen(server, host, port);
  return server;
}

/** /metrics, and /proxyMode (the mode as plain text, which tools and e2e tests read from kube-proxy's metrics port) */
export async function startMetricsServer(host: string, port: number, render: () => string, health?: ProxyHealth, proxyMode?: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(render());
    } else if (path === '/proxyMode' && proxyMode) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' }).end(proxyMode);
    } else if (path === '/healthz' && health) {
      const [code, body] = health.respond('/healthz');
      res.writeHead(code, { 'Content-Type': 'application/json' }).end(body);
    } else res.writeHead(404).end();
  });
  await listen(server, host, port);
  return server;
}

export interface ServiceHealthInfo {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/** Per-service health-check node port servers, reconciled from the plans after each sync. */
export class ServiceHealthServers {
  private readonly servers = new Map<number, Server>();
  private readonly info = new Map<number, ServiceHealthInfo>();
  private readonly host: string;
  private readonly proxyHealthy: () => boolean;
  private readonly log: LogLike | undefined;

  constructor(host: string, proxyHealthy: () => boolean, log?: LogLike) {
    this.host = host;
    this.proxyHealthy = proxyHealthy;
    this.log = log;
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  /** Open servers for new ports, close removed ones, update counts. Errors binding a port are logged, not thrown. */
  async sync(wanted: ReadonlyMap<number, ServiceHealthInfo>): Promise<void> {
    for (const [port, info] of wanted) this.info.set(port, info);
    for (const port of [...this.servers.keys()]) {
      if (!wanted.has(port)) {
        const s = this.servers.get(port)!;
        this.servers.delete(port);
        this.info.delete(port);
        await close(s);
      }
    }
    for (const port of wanted.keys()) {
      if (this.servers.has(port)) continue;
      const server = createServer((_req, res) => this.answer(port, res));
      try {
        await listen(server, this.host, port);
        this.servers.set(port, server);
      } catch (e) {
        this.log?.warn({ port, err: String(e) }, 'cannot open health check node port');
      }
    }
  }

  private answer(port: number, res: ServerResponse): void {
    const info = this.info.get(port);
    if (!info) {
      res.writeHead(404).end();
      return;
    }
    const healthy = this.proxyHealthy();
    const body = JSON.stringify({
      service: { namespace: info.namespace, name: info.name },
      localEndpoints: info.localEndpoints,
      serviceProxyHealthy: healthy,
    });
    const code = info.localEndpoints > 0 && healthy ? 200 : 503;
    res.writeHead(code, {
      'Content-Type': 'application/json',
      'X-Content-Type-Options': 'nosniff',
      'X-Load-Balancing-Endpoint-Weight': String(info.localEndpoints),
    });
    res.end(body);
  }

  async stop(): Promise<void> {
    for (const s of this.servers.values()) await close(s);
    this.servers.clear();
  }
}
