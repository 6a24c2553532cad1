// bridge: the reference bridge plugin's behaviour, planned as pure functions and applied as ip/nft/iptables programs.
import { randomBytes } from 'node:crypto';
import type { PluginHandlers } from '../../lib/cni/types.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { writeSysctl } from '../../lib/sysctl/sysctl.ts';
import { bridgeAdd, bridgeCheck, bridgeDel, bridgeGc, bridgeStatus, type BridgeDeps } from './apply.ts';

/** FLATNET_TEST_PAUSE_AT=<step>[:<ms>] makes ADD sleep at that step (fault tests kill the plugin there). */
function pauseHook(): BridgeDeps['pause'] {
  const spec = process.env['FLATNET_TEST_PAUSE_AT'];
  if (!spec) return undefined;
  const [step, ms] = spec.split(':');
  return async (at: string) => {
    if (at !== step) return;
    const file = process.env['FLATNET_TEST_PAUSE_FILE'];
    if (file) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(file, `${process.pid} ${at}\n`);
    }
    await new Promise((r) => setTimeout(r, Number(ms ?? 60_000)));
  };
}

function deps(): BridgeDeps {
  return {
    runner: new ExecRunner(),
    hostPid: process.pid,
    randomBytes: () => randomBytes(6),
    writeSysctl: (k, v, optional) => {
      writeSysctl(k, v, optional);
    },
    pause: pauseHook(),
  };
}

export const handlers: PluginHandlers = {
  add: (ctx) => bridgeAdd(ctx, deps()),
  del: (ctx) => bridgeDel(ctx, deps()),
  check: (ctx) => bridgeCheck(ctx, deps()),
  gc: (ctx) => bridgeGc(ctx, deps()),
  status: (ctx) => bridgeStatus(ctx),
};
