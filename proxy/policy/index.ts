// The NetworkPolicy controller as the node daemon hosts it (proxy/main.ts loads this module on demand).

import type { Runner } from '../../lib/exec/runner.ts';
import { loadKubeConfig } from '../../lib/kube/config.ts';
import { KubePolicySource, PolicyController, type PolicyLog } from './controller.ts';
import { DEFAULT_TABLE } from './render.ts';

export { PolicyController, KubePolicySource } from './controller.ts';

export interface StartPolicyOptions {
  kubeconfig: string;
  master: string;
  nodeName: string;
  runner: Runner;
  log: PolicyLog;
  /** the config file's networkPolicy section */
  config: Record<string, unknown>;
}

const tableOf = (config: Record<string, unknown>): string => (typeof config.table === 'string' && config.table ? config.table : DEFAULT_TABLE);

/**
 * Starts watching and returns at once; the first full sync happens when NetworkPolicies, Pods and Namespaces are all
 * listed (until then the rules of a previous run stay in force).
 */
export function startPolicy(o: StartPolicyOptions): { controller: PolicyController; stop(): Promise<void> } {
  const source = new KubePolicySource(loadKubeConfig(o.kubeconfig, o.master), o.log);
  const controller = new PolicyController({ nodeName: o.nodeName, runner: o.runner, log: o.log, source, table: tableOf(o.config) });
  controller.start().then(
    () => o.log.info({ syncs: controller.syncCount, table: controller.table }, 'network policy controller started'),
    (e: unknown) => o.log.error({ err: String(e) }, 'network policy controller failed to start'),
  );
  return { controller, stop: () => controller.stop() };
}

/** Removes the policy table (`--cleanup`, or the controller turned off). */
export async function cleanupPolicy(runner: Runner, config: Record<string, unknown>): Promise<void> {
  await PolicyController.cleanup(runner, tableOf(config));
}
