// Entry point the node daemon (proxy/main.ts) uses to host the overlay controller.
import type { Logger } from '../../../lib/cni/types.ts';
import { ExecRunner } from '../../../lib/exec/exec.ts';
import type { Runner } from '../../../lib/exec/runner.ts';
import { parseOverlayConfig } from './config.ts';
import { OverlayController } from './controller.ts';
import type { NodeSource } from './node.ts';

export { parseOverlayConfig, type OverlayConfig, ANNOTATIONS } from './config.ts';
export { OverlayController } from './controller.ts';
export { MemoryNodeSource, type NodeSource, type OverlayNode } from './node.ts';

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
  const raw = { ...opts.config };
  // FLATNET_OVERLAY_SUBNET_FILE (may hold {node}) stands in for subnetFile when the config does not set it
  if (raw.subnetFile === undefined && process.env.FLATNET_OVERLAY_SUBNET_FILE) raw.subnetFile = process.env.FLATNET_OVERLAY_SUBNET_FILE;
  const config = parseOverlayConfig(raw, opts.nodeName);
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
