// bench:cni scenarios for the bridge plugin: bridge + host-local ADD and DEL, ours (dist/bin) vs the reference
// (/usr/lib/cni), sequential and PARALLEL (20) in flight. Each implementation gets its own "host" netns (the plugin runs
// there through nsenter, as in the side-by-side suite) with its own bridge and host-local store; every iteration uses
// a fresh container netns (created and removed outside the timed part). Run alone: BENCH_ONLY=bridge npm run bench:cni
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext, ExecResult, Scenario } from './cni.ts';

type Impl = 'ours' | 'reference';

function conf(dataDir: string, bridge: string, subnet: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'benchbridge',
    type: 'bridge',
    bridge,
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: { type: 'host-local', dataDir, ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }] },
  });
}

function env(ctx: BenchContext, impl: Impl, command: string, i: number, netnsPath: string): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: `bench-${impl}-${i}`,
    CNI_NETNS: netnsPath,
    CNI_IFNAME: 'eth0',
    CNI_PATH: impl === 'ours' ? ctx.oursBin : ctx.refBin,
  };
}

function make(ctx: BenchContext, impl: Impl, op: 'ADD' | 'DEL', subnet: string): Scenario {
  const tag = `${impl === 'ours' ? 'o' : 'r'}${op === 'ADD' ? 'a' : 'd'}`;
  const host = `${ctx.prefix}${tag}h`;
  const hostPath = `/var/run/netns/${host}`;
  const dataDir = join(ctx.tmp, `bridge-${tag}`);
  const bridge = `${ctx.prefix}${tag}`;
  const stdin = conf(dataDir, bridge, subnet);
  const bin = join(impl === 'ours' ? ctx.oursBin : ctx.refBin, 'bridge');
  const call = (command: string, i: number, netnsPath: string): Promise<ExecResult> =>
    // nsenter puts the plugin in the host netns; it execs (no fork), so the timing is the plugin's own plus ~1 ms
    ctx.exec('/usr/bin/nsenter', env(ctx, impl, command, i, netnsPath), stdin, { args: [`--net=${hostPath}`, '--', bin] });
  return {
    group: `bridge+host-local ${op}`,
    impl,
    // processes the floor is subtracted for: the reference starts bridge + host-local; ours runs host-local in-process
    starts: impl === 'ours' ? 1 : 2,
    setup() {
      mkdirSync(dataDir, { recursive: true });
      execFileSync('ip', ['netns', 'add', host]);
      execFileSync('ip', ['-n', host, 'link', 'set', 'lo', 'up']);
    },
    async run(i) {
      const ns = `${ctx.prefix}${tag}${i}`;
      const path = `/var/run/netns/${ns}`;
      execFileSync('ip', ['netns', 'add', ns]);
      try {
        const add = await call('ADD', i, path);
        const del = await call('DEL', i, path);
        return op === 'ADD' ? add : del;
      } finally {
        execFileSync('ip', ['netns', 'delete', ns]);
      }
    },
    teardown() {
      try {
        execFileSync('ip', ['netns', 'delete', host]);
      } catch {
        /* already gone */
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function scenarios(ctx: BenchContext): Scenario[] {
  const out: Scenario[] = [];
  let n = 0;
  for (const op of ['ADD', 'DEL'] as const) {
    for (const impl of ['reference', 'ours'] as const) out.push(make(ctx, impl, op, `10.${200 + n++}.0.0/16`));
  }
  return out;
}
