// Entry point the node daemon (proxy/main.ts) uses to host the overlay controller.
import type { Logger } from '../../lib/log/logger.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { parseOverlayConfig, type OverlayConfig } from './config.ts';
import { OverlayController } from './controller.ts';
import type { NodeSource } from './node.ts';

export { parseOverlayConfig, type OverlayConfig, ANNOTATIONS } from './config.ts';
export { OverlayController } from './controller.ts';
export { MemoryNodeSource, type NodeSource, type OverlayNode } from './node.ts';

/** FLATNET_OVERLAY_SUBNET_FILE (may hold {node}) stands in for subnetFile when the config does not set it. */
function resolveConfig(config: Record<string, unknown>, nodeName: string): OverlayConfig {
  const raw = { ...config };
  if (raw.subnetFile === undefined && process.env.FLATNET_OVERLAY_SUBNET_FILE) raw.subnetFile = process.env.FLATNET_OVERLAY_SUBNET_FILE;
  return parseOverlayConfig(raw, nodeName);
}

export interface StartOverlayOptions {
  kubeconfig: string;
  nodeName: string;
  log: Logger;
  /** the overlay section of the daemon's config; see config.ts for the keys (vni, port, clusterCIDRs, subnetFile, ...) */
  config: Record<string, unknown>;
  /** for tests: a NodeSource instead of the API watch, a Runner instead of real processes */
  source?: NodeSource;
  runner?: Runner;
}

/**
 * Starts the controller: watches Nodes, publishes this node's VTEP, programs the device, peers and masquerade, and
 * writes the subnet file. Throws on an invalid config. stop() leaves kernel state in place unless cleanupOnStop.
 */
export async function startOverlay(opts: StartOverlayOptions): Promise<{ stop(): Promise<void> }> {
  const config = resolveConfig(opts.config, opts.nodeName);
  let source = opts.source;
  if (!source) {
    const { KubeNodeSource } = await import('./kube.ts');
    source = new KubeNodeSource(opts.kubeconfig, opts.log);
  }
  const controller = new OverlayController({
    config,
    nodeName: opts.nodeName,
    source,
    runner: opts.runner ?? new ExecRunner(),
    log: opts.log,
  });
  await controller.start();
  opts.log.info({ device: config.deviceName, vni: config.vni, port: config.port }, 'overlay: controller started');
  return { stop: () => controller.stop() };
}

/**
 * Removes everything the overlay controller owns on this node (device, its routes, the masquerade table, the subnet
 * file), for the daemon's --cleanup. Safe to run when nothing is there.
 */
export async function cleanupOverlay(opts: { nodeName: string; log: Logger; config: Record<string, unknown>; runner?: Runner }): Promise<void> {
  const config = resolveConfig(opts.config, opts.nodeName);
  const { MemoryNodeSource } = await import('./node.ts');
  const controller = new OverlayController({
    config,
    nodeName: opts.nodeName,
    source: new MemoryNodeSource(),
    runner: opts.runner ?? new ExecRunner(),
    log: opts.log,
  });
  await controller.cleanup();
  opts.log.info({ device: config.deviceName, table: config.masqueradeTable }, 'overlay: cleaned up');
}
