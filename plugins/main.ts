// flatnet's multi-call entry point: one binary, dispatched on the name it was invoked as
// (dist/bin/{bridge,host-local,loopback,portmap,vxlan} link to dist/bin/flatnet).
//   bridge ...                     invoked through a link (as libcni does)
//   flatnet <plugin>               explicit form
//   node plugins/main.ts <plugin>  development form
// Start-up cost matters (every pod start execs this several times): only the skeleton is imported eagerly;
// the plugin's own code is loaded with a dynamic import once its name is known.
import { readSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { runPlugin } from '../lib/cni/skel.ts';
import type { PluginHandlers } from '../lib/cni/types.ts';

const loaders: Record<string, () => Promise<PluginHandlers>> = {
  'host-local': async () => (await import('../ipam/host-local/main.ts')).handlers,
  bridge: async () => (await import('./bridge/main.ts')).handlers,
  loopback: async () => (await import('./loopback/main.ts')).handlers,
  portmap: async () => (await import('./portmap/main.ts')).handlers,
  vxlan: async () => (await import('./vxlan/main.ts')).handlers,
};

/** Plugins a delegator may run inside this process when CNI_PATH resolves to this very binary. */
const inProcess = { 'host-local': loaders['host-local']! };

function pluginName(argv0: string, argv: readonly string[]): { name: string | undefined; rest: string[] } {
  const names = [basename(argv0), basename(argv[1] ?? '')];
  for (const n of names) if (n in loaders) return { name: n, rest: argv.slice(2) };
  const explicit = argv[2];
  if (explicit && explicit in loaders) return { name: explicit, rest: argv.slice(3) };
  return { name: undefined, rest: argv.slice(2) };
}

function readStdin(): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(65536);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
        continue;
      }
      if (code === 'EOF') break;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function write(s: string): void {
  const b = Buffer.from(s);
  let off = 0;
  while (off < b.length) off += writeSync(1, b, off);
}

async function main(): Promise<number> {
  const { name } = pluginName(process.argv0, process.argv);
  if (!name) {
    process.stderr.write(`flatnet: invoke as one of ${Object.keys(loaders).join(', ')} (or: flatnet <plugin>)\n`);
    write(JSON.stringify({ cniVersion: '1.1.0', code: 4, msg: 'unknown plugin name; invoke flatnet through a plugin link' }));
    return 1;
  }
  const load = loaders[name]!;
  // the handlers are loaded only for verbs that need them (VERSION is answered by the skeleton)
  let handlers: PluginHandlers | undefined;
  const lazy: PluginHandlers = {
    add: async (ctx) => (handlers ??= await load()).add(ctx),
    del: async (ctx) => (handlers ??= await load()).del(ctx),
    check: async (ctx) => (handlers ??= await load()).check(ctx),
    status: async (ctx) => (handlers ??= await load()).status?.(ctx),
    gc: async (ctx) => (handlers ??= await load()).gc?.(ctx),
  };
  return runPlugin(lazy, { env: process.env, readStdin, write, name, inProcess });
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`flatnet: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    write(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: String(e) }));
    process.exit(1);
  },
);
