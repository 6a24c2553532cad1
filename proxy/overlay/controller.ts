// The overlay controller: reconciles the kernel towards the plan computed from the Node list.
// Every reconcile starts from the current kernel state (not from events), so deleted devices, routes or entries are
// recreated on the next periodic resync; Node changes trigger a reconcile right away.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../../lib/log/logger.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { renderSubnetEnv } from '../../lib/overlay/subnet-file.ts';
import type { OverlayConfig } from './config.ts';
import { findUnderlay, readKernel } from './kernel.ts';
import type { NodeSource } from './node.ts';
import {
  annotationPatch,
  diffProgram,
  planOverlay,
  renderMasqueradeCleanup,
  renderOverlayTable,
  underlayIp,
  type DesiredState,
  type Program,
} from './plan.ts';

export interface ControllerDeps {
  config: OverlayConfig;
  nodeName: string;
  source: NodeSource;
  /** runs ip/bridge/nft/ethtool (in the node's netns) */
  runner: Runner;
  log: Logger;
}

export interface ReconcileResult {
  /** false when nothing could be planned yet (our Node, its IP or the underlay is unknown) */
  planned: boolean;
  program?: Program;
  desired?: DesiredState;
}

export class OverlayController {
  private readonly d: ControllerDeps;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private running: Promise<ReconcileResult> | undefined;
  private again = false;
  private stopped = false;
  private lastMasq: string | undefined;
  private offloadDone = false;
  private lastSkipped = '';
  /** number of completed reconciles (for health checks and metrics) */
  reconciles = 0;

  constructor(deps: ControllerDeps) {
    this.d = deps;
  }

  async start(): Promise<void> {
    await this.d.source.start(() => this.kick());
    await this.reconcile().catch((e: unknown) => this.d.log.warn({ err: String(e) }, 'overlay: initial reconcile failed'));
    this.scheduleResync();
  }

  /** The periodic resync runs resyncIntervalMs after the previous one finished (never back to back). */
  private scheduleResync(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const pass = this.running ?? this.reconcile();
      pass
        .catch((e: unknown) => this.d.log.warn({ err: String(e) }, 'overlay: resync failed'))
        .finally(() => this.scheduleResync());
    }, this.d.config.resyncIntervalMs);
    this.timer.unref?.();
  }

  /** Schedule a reconcile soon after a Node change (coalescing bursts of events). */
  kick(delayMs = 20): void {
    if (this.stopped) return;
    if (this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.reconcile().catch((e: unknown) => this.d.log.warn({ err: String(e) }, 'overlay: reconcile failed'));
    }, delayMs);
  }

  /** Run one reconcile; concurrent calls are serialized (a call made while one runs triggers one more pass). */
  async reconcile(): Promise<ReconcileResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        let r = await this.reconcileOnce();
        while (this.again && !this.stopped) {
          this.again = false;
          r = await this.reconcileOnce();
        }
        return r;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async reconcileOnce(): Promise<ReconcileResult> {
    const { config: cfg, runner, log, source, nodeName } = this.d;
    const nodes = source.list();
    const self = nodes.find((n) => n.name === nodeName);
    if (!self) {
      log.debug({ nodeName }, 'overlay: own Node not known yet');
      return { planned: false };
    }
    const ip = underlayIp(self, cfg.preferIPv6Underlay);
    if (!ip) {
      log.warn({ nodeName }, 'overlay: own Node has no InternalIP');
      return { planned: false };
    }
    // the overlay table's existence is checked alongside the kernel read (self-healing without an extra round trip)
    const [snap, masqExists] = await Promise.all([
      readKernel(runner, cfg.deviceName, cfg.routeProtocol),
      (cfg.masquerade || cfg.peerSourceFilter) && this.lastMasq !== undefined
        ? runner.run(['nft', 'list', 'table', 'inet', cfg.masqueradeTable], { allowFail: true }).then((r) => r.code === 0, () => false)
        : Promise.resolve(false),
    ]);
    const underlay = findUnderlay(snap.addrJson, ip);
    if (!underlay) {
      log.warn({ ip }, 'overlay: no local interface holds the Node InternalIP');
      return { planned: false };
    }
    const desired = planOverlay(cfg, self, nodes, underlay);
    const skipped = JSON.stringify(desired.skipped);
    if (skipped !== this.lastSkipped) {
      this.lastSkipped = skipped;
      if (desired.skipped.length) log.info({ skipped: desired.skipped }, 'overlay: peers not (yet) usable');
    }
    const program = diffProgram(desired, snap.observed, cfg.routeProtocol);
    const errors: unknown[] = [];
    const device = async (): Promise<void> => {
      if (program.ip.length || program.bridge.length || program.routes.length) {
        log.info({ ip: program.ip, fdb: program.bridge, routes: program.routes, recreate: program.recreate }, 'overlay: applying');
        const batch = async (argv: string[], lines: string[]): Promise<void> => {
          if (!lines.length) return;
          await runner.run(argv, { input: lines.join('\n') + '\n' }).catch((e: unknown) => errors.push(e));
        };
        await batch(['ip', '-force', '-batch', '-'], program.ip);
        await batch(['bridge', '-force', '-batch', '-'], program.bridge);
        await batch(['ip', '-force', '-batch', '-'], program.routes);
      }
      if (!cfg.txChecksumOffload && (program.recreate || !this.offloadDone)) {
        const r = await runner.run(['ethtool', '-K', cfg.deviceName, 'tx', 'off'], { allowFail: true }).catch((e: unknown) => ({
          code: -1,
          stdout: '',
          stderr: String(e),
        }));
        if (r.code !== 0) log.warn({ stderr: r.stderr.trim() }, 'overlay: could not turn tx checksum offload off');
        else this.offloadDone = true;
      }
    };
    // device/peers, subnet file and masquerade are independent: apply them concurrently
    await Promise.all([
      device(),
      this.syncSubnetFile(desired).catch((e: unknown) => errors.push(e)),
      this.syncMasquerade(desired, masqExists).catch((e: unknown) => errors.push(e)),
    ]);
    const patch = annotationPatch(self, desired.annotations);
    if (patch) {
      log.info({ patch }, 'overlay: publishing VTEP on Node');
      await source.annotate(nodeName, patch).catch((e: unknown) => errors.push(e));
    }
    this.reconciles++;
    if (errors.length) throw errors[0];
    return { planned: true, program, desired };
  }

  private async syncSubnetFile(desired: DesiredState): Promise<void> {
    if (!desired.subnetEnv) return;
    const path = this.d.config.subnetFile;
    const text = renderSubnetEnv(desired.subnetEnv);
    const current = await readFile(path, 'utf8').catch(() => undefined);
    if (current === text) return;
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, path);
    this.d.log.info({ path }, 'overlay: wrote subnet file');
  }

  private async syncMasquerade(desired: DesiredState, exists: boolean): Promise<void> {
    const { runner, config: cfg } = this.d;
    const text = renderOverlayTable(cfg.masqueradeTable, desired.masquerade, desired.sourceFilter);
    if (!text) {
      if (!cfg.masquerade && !cfg.peerSourceFilter && this.lastMasq !== '') {
        await runner.run(['nft', '-f', '-'], { input: renderMasqueradeCleanup(cfg.masqueradeTable) });
        this.lastMasq = '';
      }
      return;
    }
    if (text === this.lastMasq && exists) return;
    await runner.run(['nft', '-f', '-'], { input: text });
    this.lastMasq = text;
    this.d.log.info({ table: cfg.masqueradeTable, peers: desired.sourceFilter?.peers }, 'overlay: table applied (masquerade, VXLAN source filter)');
  }

  /** Stop watching and resyncing. Kernel state stays (so a restarted daemon does not disturb traffic) unless cleanupOnStop. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    await this.running?.catch(() => undefined);
    await this.d.source.stop();
    if (this.d.config.cleanupOnStop) await this.cleanup();
  }

  /** Remove everything the controller owns: device, routes, masquerade table, subnet file. */
  async cleanup(): Promise<void> {
    const { runner, config: cfg } = this.d;
    await runner.run(['ip', 'link', 'del', 'dev', cfg.deviceName], { allowFail: true });
    for (const fam of ['-4', '-6']) {
      await runner.run(['ip', fam, 'route', 'flush', 'table', 'main', 'proto', String(cfg.routeProtocol)], { allowFail: true });
    }
    await runner.run(['nft', '-f', '-'], { input: renderMasqueradeCleanup(cfg.masqueradeTable), allowFail: true });
    await rm(cfg.subnetFile, { force: true });
    this.lastMasq = undefined;
  }
}
