// Two more agnhost subcommands the network e2e tests lean on, same behaviour as upstream:
//   serve-hostname [--http=true] [--tcp] [--udp] [--close] [--port 9376]: the hostname over HTTP (any path), raw TCP
//     (write and close) and/or UDP (any datagram); after SIGTERM it keeps serving (upstream sleeps 60 s).
//   porter [--json-response]: one HTTP server per env SERVE_PORT_<port>=<body> answering <body> on every path.
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';

export interface ServeHostnameOptions {
  http: boolean;
  tcp: boolean;
  udp: boolean;
  close: boolean;
  port: number;
}

export function parseServeHostnameArgs(argv: readonly string[]): ServeHostnameOptions {
  const o: ServeHostnameOptions = { http: true, tcp: false, udp: false, close: false, port: 9376 };
  const args = argv[0] === 'serve-hostname' ? argv.slice(1) : [...argv];
  for (let i = 0; i < args.length; i++) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(args[i]!);
    if (!m) throw new Error(`serve-hostname: unexpected argument ${args[i]}`);
    const [, name, value] = m as unknown as [string, string, string | undefined];
    if (name === 'port') {
      const v = value ?? args[++i];
      const n = Number(v);
      if (!Number.isInteger(n)) throw new Error(`serve-hostname: --port must be an integer, got ${v}`);
      o.port = n;
    } else if (name === 'http' || name === 'tcp' || name === 'udp' || name === 'close') {
      if (value !== undefined && !['true', 'false'].includes(value)) throw new Error(`serve-hostname: --${name}=${value}: expected true|false`);
      o[name] = value === undefined ? true : value === 'true';
    } else {
      throw new Error(`serve-hostname: unknown flag --${name}`);
    }
  }
  if (o.http && (o.tcp || o.udp)) throw new Error("serve-hostname: can't serve TCP/UDP mode and HTTP mode at the same time");
  return o;
}

export interface Closable {
  close(): Promise<void>;
}

export async function startServeHostname(o: ServeHostnameOptions, hostname: string, log: (m: string) => void): Promise<Closable> {
  const closers: (() => Promise<void>)[] = [];
  if (o.tcp) {
    const srv = net.createServer((c) => {
      log(`TCP request from ${c.remoteAddress}:${c.remotePort}`);
      c.on('error', () => {});
      c.end(hostname);
    });
    await new Promise<void>((res, rej) => srv.once('error', rej).listen(o.port, '::', () => res()));
    closers.push(() => new Promise((r) => srv.close(() => r())));
  }
  if (o.udp) {
    const sock = dgram.createSocket('udp6');
    sock.on('message', (_m, r) => {
      log(`UDP request from ${r.address}:${r.port}`);
      sock.send(hostname, r.port, r.address);
    });
    await new Promise<void>((res, rej) => {
      sock.once('error', rej);
      sock.bind(o.port, '::', () => res());
    });
    closers.push(() => new Promise((r) => sock.close(() => r())));
  }
  if (o.http) {
    const srv = http.createServer((req, res) => {
      log(`HTTP request from ${req.socket.remoteAddress}:${req.socket.remotePort}`);
      const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8' };
      if (o.close) headers['Connection'] = 'close';
      res.writeHead(200, headers);
      res.end(hostname);
    });
    await new Promise<void>((res, rej) => srv.once('error', rej).listen(o.port, '::', () => res()));
    closers.push(
      () =>
        new Promise((r) => {
          srv.closeAllConnections();
          srv.close(() => r());
        }),
    );
  }
  log(`Serving on port ${o.port}.`);
  return { close: async () => void (await Promise.all(closers.map((c) => c()))) };
}

export function porterPorts(env: NodeJS.ProcessEnv): { port: number; body: string }[] {
  const out: { port: number; body: string }[] = [];
  for (const [k, v] of Object.entries(env)) {
    const m = /^SERVE_PORT_(\d+)$/.exec(k);
    if (m && v !== undefined) out.push({ port: Number(m[1]), body: v });
  }
  return out.sort((a, b) => a.port - b.port);
}

export async function startPorter(env: NodeJS.ProcessEnv, jsonResponse: boolean, log: (m: string) => void): Promise<Closable> {
  const servers: http.Server[] = [];
  for (const { port, body } of porterPorts(env)) {
    const srv = http.createServer((req, res) => {
      if (jsonResponse) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ Method: req.method, Body: body }));
      } else {
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(body);
      }
    });
    await new Promise<void>((res, rej) => srv.once('error', rej).listen(port, '0.0.0.0', () => res()));
    log(`porter: serving ${JSON.stringify(body)} on port ${port}`);
    servers.push(srv);
  }
  return {
    close: async () => {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((r) => {
              s.closeAllConnections();
              s.close(() => r());
            }),
        ),
      );
    },
  };
}
