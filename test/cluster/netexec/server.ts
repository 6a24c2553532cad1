// flatnet's stand-in for agnhost netexec (k8s.io/kubernetes test/images/agnhost/netexec): the same HTTP endpoints,
// the same UDP commands and the same /dial JSON, written from its documented behaviour. Extras for disruption tests:
// GET /stream (chunked, one counter line every interval) and an optional raw TCP stream port.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';

export interface NetexecOptions {
  httpPort: number;
  /** -1 disables (agnhost's default is 8081) */
  udpPort: number;
  /** -1 disables (default) */
  sctpPort: number;
  /** -1 disables (default): a raw TCP port streaming `<n> <hostname>` lines every streamIntervalMs */
  streamPort: number;
  streamIntervalMs: number;
  /** comma-separated addresses for the UDP servers (default: any) */
  udpListenAddresses: string;
  /** always answer as if the request were GET <httpOverride> */
  httpOverride: string;
  /** seconds to wait after SIGTERM before exiting */
  delayShutdown: number;
  hostname: string;
  /** called for /exit and /shutdown; the entry point exits the process */
  onExit: (code: number) => void;
  log: (msg: string) => void;
}

export const DEFAULTS: Omit<NetexecOptions, 'onExit' | 'log' | 'hostname'> = {
  httpPort: 8080,
  udpPort: 8081,
  sctpPort: -1,
  streamPort: -1,
  streamIntervalMs: 100,
  udpListenAddresses: '',
  httpOverride: '',
  delayShutdown: 0,
};

/** NETEXEC_HOSTNAME (the agent sets the pod's hostname there), else POD_NAME, else the OS hostname. */
export function defaultHostname(env: NodeJS.ProcessEnv = process.env): string {
  return env['NETEXEC_HOSTNAME'] || env['POD_NAME'] || os.hostname();
}

/** Parse agnhost-style flags (`--name=value` or `--name value`) after the `netexec` subcommand. */
export function parseNetexecArgs(argv: readonly string[]): Partial<NetexecOptions> {
  const out: Partial<NetexecOptions> = {};
  const ints: Record<string, 'httpPort' | 'udpPort' | 'sctpPort' | 'streamPort' | 'streamIntervalMs' | 'delayShutdown'> = {
    'http-port': 'httpPort',
    'udp-port': 'udpPort',
    'sctp-port': 'sctpPort',
    'stream-port': 'streamPort',
    'stream-interval-ms': 'streamIntervalMs',
    'delay-shutdown': 'delayShutdown',
  };
  const strs: Record<string, 'udpListenAddresses' | 'httpOverride' | 'hostname'> = {
    'udp-listen-addresses': 'udpListenAddresses',
    'http-override': 'httpOverride',
    hostname: 'hostname',
  };
  const args = [...argv];
  if (args[0] === 'netexec') args.shift();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`netexec: unexpected argument ${a}`);
    const name = m[1]!;
    let value = m[2];
    if (value === undefined) {
      value = args[++i];
      if (value === undefined) throw new Error(`netexec: flag --${name} needs a value`);
    }
    if (name in ints) {
      const n = Number(value);
      if (!Number.isInteger(n)) throw new Error(`netexec: --${name} must be an integer, got ${value}`);
      out[ints[name]!] = n;
    } else if (name in strs) {
      out[strs[name]!] = value;
    } else if (name === 'tls-cert-file' || name === 'tls-private-key-file') {
      throw new Error(`netexec: --${name} (TLS) is not supported by flatnet's netexec`);
    } else {
      throw new Error(`netexec: unknown flag --${name}`);
    }
  }
  return out;
}

/** Go's net.JoinHostPort / RemoteAddr formatting: IPv4-mapped addresses unmapped, IPv6 in brackets. */
export function hostPort(address: string | undefined, port: number | undefined): string {
  let a = address ?? '';
  if (a.startsWith('::ffff:') && net.isIPv4(a.slice(7))) a = a.slice(7);
  return a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}

function goDuration(s: string): number | undefined {
  if (s === '') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  return consumed === s.length && consumed > 0 ? total : s === '0' ? 0 : undefined;
}

export function udpCommand(text: string, hostname: string, client: string, serverPort: number): string | undefined {
  const t = text.trim().toLowerCase();
  if (t === 'hostname') return hostname;
  if (t.startsWith('echo ')) return t.slice(5);
  if (t === 'clientip') return client;
  if (t === 'serverport') return String(serverPort);
  return undefined;
}

function httpGet(url: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`Get "${url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`)));
    req.on('error', (e) => reject(new Error(`Get "${url}": ${e.message}`)));
  });
}

function udpDial(request: string, host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error(`reading from udp connection failed. err:'read udp ${hostPort(host, port)}: i/o timeout'`));
    }, timeoutMs);
    sock.on('message', (msg) => {
      clearTimeout(timer);
      sock.close();
      if (msg.length === 0) reject(new Error(`reading from udp connection failed. err:'<nil>'`));
      else resolve(msg.toString('utf8'));
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      sock.close();
      reject(new Error(`udp connection write failed. err:${e.message}`));
    });
    sock.send(request, port, host);
  });
}

export interface Netexec {
  httpPort: number;
  udpPort: number;
  streamPort: number;
  /** begin the SIGTERM flow: /readyz answers 503, exit after delayShutdown */
  terminate(): void;
  close(): Promise<void>;
}

export async function startNetexec(o: NetexecOptions): Promise<Netexec> {
  let udpReady = false;
  let sctpReady = false;
  let terminating = false;
  const noProbeServer = o.udpPort === -1 && o.sctpPort === -1;
  const ready = (): boolean => udpReady || sctpReady || noProbeServer;

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const u = new URL(o.httpOverride || req.url || '/', 'http://x');
    const q = u.searchParams;
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'Content-Type': type });
      res.end(body);
    };
    o.log(`${req.method} ${u.pathname}${u.search}`);
    switch (u.pathname) {
      case '/':
        return send(200, `NOW: ${new Date().toISOString()}`);
      case '/clientip':
        return send(200, hostPort(req.socket.remoteAddress, req.socket.remotePort));
      case '/serverport':
        return send(200, String(o.httpPort));
      case '/hostname':
      case '/hostName':
        return send(200, o.hostname);
      case '/header': {
        const key = q.get('key');
        if (key) return send(200, String(req.headers[key.toLowerCase()] ?? ''));
        return send(200, JSON.stringify(req.headers));
      }
      case '/echo': {
        const msg = q.get('msg') ?? '';
        const code = q.get('code') ?? '';
        if (code !== '') {
          const n = Number(code);
          if (!Number.isInteger(n)) return send(200, `argument 'code' must be an integer or empty, got "${code}"\n`);
          return send(n, msg);
        }
        return send(200, msg);
      }
      case '/healthz':
        return send(ready() ? 200 : 412, '');
      case '/readyz':
        if (terminating) return send(503, 'shutting down');
        return ready() ? send(200, 'ok') : send(412, '');
      case '/redirect': {
        const code = Number(q.get('code') || 302);
        res.writeHead(code, { Location: q.get('location') ?? '/' });
        res.end();
        return;
      }
      case '/exit':
      case '/shutdown': {
        const code = u.pathname === '/shutdown' ? 0 : Number(q.get('code') || 0);
        if (!Number.isInteger(code)) return send(200, `argument 'code' must be an integer [0-127] or empty, got "${q.get('code')}"\n`);
        const wait = goDuration(q.get('wait') ?? '');
        const timeout = goDuration(q.get('timeout') ?? '');
        if (wait === undefined) return send(200, `argument 'wait' must be a valid golang duration or empty, got "${q.get('wait')}"\n`);
        if (timeout === undefined) return send(200, `argument 'timeout' must be a valid golang duration or empty, got "${q.get('timeout')}"\n`);
        setTimeout(() => {
          if (!timeout) return o.onExit(code);
          httpServer.close(() => o.onExit(code));
          setTimeout(() => o.onExit(code), timeout).unref();
        }, wait);
        // agnhost exits without answering when timeout is 0; we end the response first so clients see EOF cleanly
        res.end();
        return;
      }
      case '/dial':
        return dial(q, send);
      case '/stream': {
        const interval = Number(q.get('interval_ms') || o.streamIntervalMs);
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
        let n = 0;
        const write = (): void => {
          res.write(`${n++} ${o.hostname}\n`);
        };
        write();
        const t = setInterval(write, interval);
        res.on('close', () => clearInterval(t));
        return;
      }
      case '/shell':
      case '/upload':
        return send(501, `${u.pathname} is not implemented by flatnet's netexec`);
      default:
        return send(404, '404 page not found\n');
    }
  };

  const dial = async (q: URLSearchParams, send: (code: number, body: string, type?: string) => void): Promise<void> => {
    const host = q.get('host') ?? '';
    const port = Number(q.get('port') ?? '');
    const request = q.get('request') ?? '';
    const protocol = (q.get('protocol') ?? '').toLowerCase();
    const triesParam = q.get('tries') ?? '';
    const tries = triesParam === '' ? 1 : Number(triesParam);
    if (!Number.isInteger(tries)) return send(400, `tries parameter is invalid. strconv.Atoi: parsing "${triesParam}": invalid syntax\n`);
    if (request === '') return send(400, 'request parameter not specified. <nil>\n');
    if (!['', 'http', 'udp', 'sctp'].includes(protocol)) return send(400, `unsupported protocol. ${protocol}\n`);
    if (!host || !Number.isInteger(port) || port < 0 || port > 65535) return send(400, `host and/or port param are invalid.\n`);
    if (protocol === 'sctp') return send(400, 'unsupported protocol. sctp (not available in flatnet netexec)\n');
    const responses: string[] = [];
    const errors: string[] = [];
    let last = '';
    for (let i = 0; i < tries; i++) {
      try {
        last =
          protocol === 'udp'
            ? await udpDial(request, host, port, 5000)
            : await httpGet(`http://${hostPort(host, port)}/${request}`, 5000);
        responses.push(last);
      } catch (e) {
        last = '';
        errors.push(e instanceof Error ? e.message : String(e));
      }
    }
    // agnhost quirk kept: "responses" appears only when the last try produced a non-empty answer
    const out: Record<string, string[]> = {};
    if (last.length > 0) out['responses'] = responses;
    if (errors.length > 0) out['errors'] = errors;
    return send(200, JSON.stringify(out), 'application/json');
  };

  const httpServer = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(e));
    });
  });
  httpServer.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(o.httpPort, '::', () => resolve());
  });
  const httpPortBound = (httpServer.address() as net.AddressInfo).port;
  o.log(`Started HTTP server on port ${httpPortBound}`);

  const udpSockets: dgram.Socket[] = [];
  let udpPortBound = -1;
  if (o.udpPort !== -1) {
    const addrs = o.udpListenAddresses ? o.udpListenAddresses.split(',').map((s) => s.trim()) : [''];
    for (const addr of addrs) {
      const sock = dgram.createSocket({ type: addr && net.isIPv4(addr) ? 'udp4' : 'udp6', reuseAddr: false });
      sock.on('message', (msg, rinfo) => {
        const client = hostPort(rinfo.address, rinfo.port);
        const reply = udpCommand(msg.toString('utf8'), o.hostname, client, udpPortBound);
        if (reply !== undefined) sock.send(reply, rinfo.port, rinfo.address);
        else if (msg.toString('utf8').trim()) o.log(`Unknown UDP command received from ${client}: ${msg.toString('utf8').trim()}`);
      });
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(o.udpPort, addr || '::', () => resolve());
      });
      udpPortBound = sock.address().port;
      udpSockets.push(sock);
      o.log(`Started UDP server on port ${addr || 'any'} ${udpPortBound}`);
    }
    udpReady = true;
  }

  let sctp: ChildProcess | undefined;
  if (o.sctpPort !== -1) {
    // Node has no SCTP sockets; socat serves it when the kernel has SCTP (many CI kernels do not).
    const script =
      `read -r line; cmd=$(printf '%s' "$line" | tr 'A-Z' 'a-z' | sed 's/^ *//;s/ *$//'); ` +
      `case "$cmd" in hostname) printf '%s' "$NETEXEC_HOSTNAME";; "echo "*) printf '%s' "\${cmd#echo }";; ` +
      `clientip) printf '%s:%s' "$SOCAT_PEERADDR" "$SOCAT_PEERPORT";; serverport) printf '%s' "${o.sctpPort}";; esac`;
    sctp = spawn('socat', [`SCTP-LISTEN:${o.sctpPort},fork,reuseaddr`, `SYSTEM:${script}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NETEXEC_HOSTNAME: o.hostname },
    });
    let failed = false;
    sctp.stderr?.on('data', (b: Buffer) => {
      o.log(`sctp: ${b.toString().trim()}`);
      if (/not supported|Protocol not/i.test(b.toString())) failed = true;
    });
    sctp.on('exit', () => {
      sctpReady = false;
    });
    await new Promise((r) => setTimeout(r, 200));
    if (!failed && sctp.exitCode === null) sctpReady = true;
    else o.log(`SCTP server on ${o.sctpPort} not available (kernel without SCTP?)`);
  }

  const streamConns = new Set<net.Socket>();
  let streamServer: net.Server | undefined;
  let streamPortBound = -1;
  if (o.streamPort !== -1) {
    streamServer = net.createServer((c) => {
      streamConns.add(c);
      let n = 0;
      const write = (): void => {
        c.write(`${n++} ${o.hostname}\n`);
      };
      write();
      const t = setInterval(write, o.streamIntervalMs);
      c.on('error', () => {});
      c.on('close', () => {
        clearInterval(t);
        streamConns.delete(c);
      });
    });
    await new Promise<void>((resolve, reject) => {
      streamServer!.once('error', reject);
      streamServer!.listen(o.streamPort, '::', () => resolve());
    });
    streamPortBound = (streamServer.address() as net.AddressInfo).port;
    o.log(`Started TCP stream server on port ${streamPortBound}`);
  }

  const close = async (): Promise<void> => {
    for (const s of udpSockets) s.close();
    for (const c of streamConns) c.destroy();
    if (sctp && sctp.exitCode === null) sctp.kill('SIGKILL');
    await new Promise<void>((r) => (streamServer ? streamServer.close(() => r()) : r()));
    httpServer.closeAllConnections();
    await new Promise<void>((r) => httpServer.close(() => r()));
  };

  return {
    httpPort: httpPortBound,
    udpPort: udpPortBound,
    streamPort: streamPortBound,
    terminate() {
      if (terminating) return;
      terminating = true;
      o.log('SIGTERM received');
      setTimeout(() => o.onExit(0), o.delayShutdown * 1000);
    },
    close,
  };
}
