// The offline pause image: a tiny static C program in a one-layer OCI image, built once and cached outside the repo.
// No registry is reachable here, so containerd's sandbox_image is this locally imported image.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PAUSE_VERSION = '3.10';
export const PAUSE_IMAGE = `registry.k8s.io/pause:${PAUSE_VERSION}`;
export const CACHE_DIR = process.env['FLATNET_CACHE'] ?? '/var/cache/flatnet';

function pauseSource(version: string): string {
  return `
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) { printf("pause (flatnet) ${version}\\n"); return 0; }
  if (getpid() != 1) fprintf(stderr, "pause: warning: not pid 1\\n");
  struct sigaction t = {0}, c = {0};
  t.sa_handler = on_term;
  c.sa_handler = on_chld;
  c.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGINT, &t, NULL);
  sigaction(SIGTERM, &t, NULL);
  sigaction(SIGCHLD, &c, NULL);
  for (;;) pause();
  return 1;
}
`;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * Path of the cached image tar of registry.k8s.io/pause:<version>; builds it (gcc -static, tar, hand-written OCI
 * index/manifest/config) if missing. The kind node image asks for the version its kubeadm expects.
 */
export function ensurePauseImageTar(cacheDir = CACHE_DIR, version = PAUSE_VERSION): string {
  const out = join(cacheDir, `pause-${version}.tar`);
  if (existsSync(out)) return out;
  mkdirSync(cacheDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'flatnet-pause-'));
  try {
    writeFileSync(join(work, 'pause.c'), pauseSource(version));
    const rootfs = join(work, 'rootfs');
    mkdirSync(rootfs);
    execFileSync('gcc', ['-static', '-Os', '-s', '-o', join(rootfs, 'pause'), join(work, 'pause.c')], { stdio: 'pipe' });
    chmodSync(join(rootfs, 'pause'), 0o755);
    const layerPath = join(work, 'layer.tar');
    execFileSync('tar', [
      '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-cf', layerPath, 'pause',
    ]);
    const layer = readFileSync(layerPath);
    const layerDigest = sha256(layer);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Entrypoint: ['/pause'], WorkingDir: '/' },
        rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
        history: [{ created_by: 'flatnet test/cluster/runtime/pause.ts' }],
      }),
    );
    const configDigest = sha256(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
      }),
    );
    const manifestDigest = sha256(manifest);
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestDigest}`,
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': `registry.k8s.io/pause:${version}`, 'org.opencontainers.image.ref.name': version },
        },
      ],
    };
    const img = join(work, 'image');
    const blobs = join(img, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, layerDigest), layer);
    writeFileSync(join(blobs, configDigest), config);
    writeFileSync(join(blobs, manifestDigest), manifest);
    writeFileSync(join(img, 'index.json'), JSON.stringify(index));
    writeFileSync(join(img, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const tmpTar = `${out}.${process.pid}.tmp`;
    execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', img, '-cf', tmpTar, '.']);
    renameSync(tmpTar, out);
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// `node test/cluster/runtime/pause.ts [VERSION]` prints the tar's path (deploy/kind/images.sh imports it into kind nodes)
if (process.argv[1] && import.meta.filename === realpathSync(process.argv[1])) {
  console.log(ensurePauseImageTar(CACHE_DIR, process.argv[2] ?? PAUSE_VERSION));
}
