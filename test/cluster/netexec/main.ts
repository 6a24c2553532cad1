// Entry point: node test/cluster/netexec/main.ts netexec --http-port=P [--udp-port=Q|-1] [--sctp-port=R]
//   [--stream-port=S] [--stream-interval-ms=100] [--udp-listen-addresses=A,B] [--http-override=PATH]
//   [--delay-shutdown=SECONDS] [--hostname=NAME]
// The hostname served is --hostname, else $POD_NAME, else the OS hostname.
import { DEFAULTS, defaultHostname, parseNetexecArgs, startNetexec, type Netexec } from './server.ts';

const args = process.argv.slice(2);
if (args[0] !== 'netexec') {
  process.stderr.write(`usage: main.ts netexec --http-port=P [--udp-port=Q] [--sctp-port=R] [--stream-port=S]\n`);
  process.exit(2);
}

let server: Netexec | undefined;
const log = (msg: string): void => {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
};
const exit = (code: number): void => {
  const done = (): never => process.exit(code);
  setTimeout(done, 2000).unref();
  if (server) server.close().then(done, done);
  else done();
};

try {
  const parsed = parseNetexecArgs(args);
  server = await startNetexec({
    ...DEFAULTS,
    hostname: defaultHostname(),
    ...parsed,
    onExit: exit,
    log,
  });
  process.on('SIGTERM', () => server?.terminate());
  process.on('SIGINT', () => exit(0));
} catch (e) {
  log(`netexec: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
