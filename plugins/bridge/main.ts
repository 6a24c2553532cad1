// bridge: the reference bridge plugin's behaviour, planned as pure functions and applied as ip/nft/iptables programs.
import { randomBytes } from 'node:crypto';
import type { PluginHandlers } from '../../lib/cni/types.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { writeSysctl } from '../../lib/sysctl/sysctl.ts';
import { bridgeAdd, bridgeCheck, bridgeDel, bridgeGc, bridgeStatus, type BridgeDeps } from './apply.ts';

function deps(): BridgeDeps {
  return {
    runner: new ExecRunner(),
    hostPid: process.pid,
    randomBytes: () => randomBytes(6),
    writeSysctl: (k, v, optional) => {
      writeSysctl(k, v, optional);
    },
  };
}

export const handlers: PluginHandlers = {
  add: (ctx) => bridgeAdd(ctx, deps()),
  del: (ctx) => bridgeDel(ctx, deps()),
  check: (ctx) => bridgeCheck(ctx, deps()),
  gc: (ctx) => bridgeGc(ctx, deps()),
  status: (ctx) => bridgeStatus(ctx),
};
