// bench:cni scenarios through the real invoker: containerd 1.6's CRI RunPodSandbox (which execs loopback, then the
// conflist bridge + host-local + portmap via libcni) with our plugins vs the reference plugins, the same conflist
// shape, one private containerd per scenario inside a per-run netns that plays the node. A hostNetwork sandbox
// (no CNI at all) is the floor: what containerd itself costs. Stop+Remove (two DELs) are a second group.
// Run alone: BENCH_ONLY=CRI npm run bench:cni
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CriClient } from '../cluster/cri/client.ts';
import { startContainerd, type ContainerdInstance } from '../cluster/runtime/containerd.ts';
import { prepareCniBinDir, type PluginSource } from '../cluster/runtime/cnibin.ts';
import type { BenchContext, Scenario } from './cni.ts';

interface Env {
  ctd?: ContainerdInstance;
  cri?: CriClient;
  netns: string;
}

function conflist(bridge: string, dataDir: string, subnet: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'benchcri',
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', dataDir, ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  });
}

function makeEnv(ctx: BenchContext, tag: string, source: PluginSource, subnet: string): { env: Env; setup(): Promise<void>; teardown(): Promise<void> } {
  const env: Env = { netns: `${ctx.prefix}c${tag}` };
  const dir = join(ctx.tmp, `cri-${tag}`);
  return {
    env,
    async setup() {
      execFileSync('ip', ['netns', 'add', env.netns]);
      execFileSync('ip', ['-n', env.netns, 'link', 'set', 'lo', 'up']);
      const bin = prepareCniBinDir(join(dir, 'bin'), source);
      const conf = join(dir, 'conf');
      mkdirSync(conf, { recursive: true });
      writeFileSync(join(conf, '10-bench.conflist'), conflist(`${ctx.prefix}b${tag}`, join(dir, 'ipam'), subnet));
      env.ctd = await startContainerd({ name: `${ctx.prefix}${tag}`, stateDir: join(dir, 'containerd'), netnsName: env.netns, cniBinDir: bin, cniConfDir: conf });
      env.cri = new CriClient(env.ctd.socket);
    },
    async teardown() {
      env.cri?.close();
      await env.ctd?.stop();
      try {
        execFileSync('ip', ['netns', 'delete', env.netns]);
      } catch {
        /* already gone */
      }
    },
  };
}

const meta = (i: number): { name: string; namespace: string; uid: string } => ({ name: `bench-${i}`, namespace: 'bench', uid: `bench-uid-${i}` });

export function scenarios(ctx: BenchContext): Scenario[] {
  const out: Scenario[] = [];
  const impls: { impl: string; source: PluginSource; tag: string; subnet: string }[] = [
    { impl: 'ours', source: 'ours', tag: 'o', subnet: '10.123.0.0/20' },
    { impl: 'reference', source: 'reference', tag: 'r', subnet: '10.123.16.0/20' },
  ];
  for (const x of impls) {
    const e = makeEnv(ctx, x.tag, x.source, x.subnet);
    out.push({
      group: 'CRI RunPodSandbox (containerd 1.6, loopback + bridge/host-local + portmap)',
      impl: x.impl,
      setup: e.setup,
      teardown: e.teardown,
      starts: 4,
      async run(i) {
        const cri = e.env.cri!;
        const t0 = performance.now();
        const id = await cri.runPodSandbox({ metadata: meta(i), hostname: `bench-${i}` });
        const ms = performance.now() - t0;
        await cri.stopPodSandbox(id);
        await cri.removePodSandbox(id);
        return ms;
      },
    });
    const e2 = makeEnv(ctx, `${x.tag}d`, x.source, x.subnet);
    out.push({
      group: 'CRI StopPodSandbox + RemovePodSandbox (two DELs)',
      impl: x.impl,
      setup: e2.setup,
      teardown: e2.teardown,
      starts: 6,
      async run(i) {
        const cri = e2.env.cri!;
        const id = await cri.runPodSandbox({ metadata: meta(i), hostname: `bench-${i}` });
        const t0 = performance.now();
        await cri.stopPodSandbox(id);
        await cri.removePodSandbox(id);
        return performance.now() - t0;
      },
    });
  }
  const f = makeEnv(ctx, 'f', 'reference', '10.123.32.0/20');
  out.push({
    group: 'CRI RunPodSandbox (containerd 1.6, loopback + bridge/host-local + portmap)',
    impl: 'floor (hostNetwork, no CNI)',
    setup: f.setup,
    teardown: f.teardown,
    async run(i) {
      const cri = f.env.cri!;
      const t0 = performance.now();
      const id = await cri.runPodSandbox({ metadata: meta(i), hostNetwork: true });
      const ms = performance.now() - t0;
      await cri.stopPodSandbox(id);
      await cri.removePodSandbox(id);
      return ms;
    },
  });
  return out;
}
