// Entry point, agnhost-style subcommands:
//   node test/cluster/netexec/main.ts netexec --http-port=P [--udp-port=Q|-1] [--sctp-port=R] [--stream-port=S]
//     [--stream-interval-ms=100] [--udp-listen-addresses=A,B] [--http-override=PATH] [--delay-shutdown=SECONDS]
//     [--hostname=NAME]
//   node test/cluster/netexec/main.ts serve-hostname [--http=true] [--tcp] [--udp] [--close] [--port 9376]
//   node test/cluster/netexec/main.ts porter [--json-response]        (serves env SERVE_PORT_<port>=<body>)
//   node test/cluster/netexec/main.ts pause                           (sleeps until SIGTERM/SIGINT)
// The hostname served is --hostname, else $NETEXEC_HOSTNAME, else $POD_NAME, else the OS hostname.
import { DEFAULTS, defaultHostname, parseNetexecArgs, startNetexec, type Netexec } from './server.ts';
import { parseServeHostnameArgs, startPorter, startServeHostname, type Closable } from './others.ts';

const [cmd, ...rest] = process.argv.slice(2);
const log = (msg: string): void => {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
};
const fail = (e: unknown): never => {
  log(`${cmd}: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
};

let server: Netexec | Closable | undefined;
const exit = (code: number): void => {
  const done = (): never => process.exit(code);
  setTimeout(done, 2000).unref();
  if (server) server.close().then(done, done);
  else done();
};

try {
  switch (cmd) {
    case 'netexec': {
      const ne = await startNetexec({ ...DEFAULTS, hostname: defaultHostname(), ...parseNetexecArgs(rest), onExit: exit, log });
      server = ne;
      process.on('SIGTERM', () => ne.terminate());
      process.on('SIGINT', () => exit(0));
      break;
    }
    case 'serve-hostname': {
      server = await startServeHostname(parseServeHostnameArgs(rest), defaultHostname(), log);
      // upstream keeps serving after SIGTERM ("awaiting pod deletion"); the agent's SIGKILL ends it
      process.on('SIGTERM', () => log('Shutting down after receiving signal: terminated. Awaiting pod deletion.'));
      process.on('SIGINT', () => exit(0));
      break;
    }
    case 'porter': {
      const unknown = rest.filter((a) => a !== '--json-response');
      if (unknown.length) throw new Error(`unknown arguments ${unknown.join(' ')}`);
      server = await startPorter(process.env, rest.includes('--json-response'), log);
      process.on('SIGTERM', () => exit(0));
      process.on('SIGINT', () => exit(0));
      break;
    }
    case 'pause': {
      setInterval(() => {}, 1 << 30);
      process.on('SIGTERM', () => process.exit(0));
      process.on('SIGINT', () => process.exit(0));
      break;
    }
    default:
      process.stderr.write('usage: main.ts netexec|serve-hostname|porter|pause [flags]\n');
      process.exit(2);
  }
} catch (e) {
  fail(e);
}
