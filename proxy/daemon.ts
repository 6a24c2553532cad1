// The proxy daemon's core, independent of process and sockets: watch events -> change tracker -> bounded-frequency
// runner -> planner -> backend per family -> conntrack cleanup, health and metrics. proxy/main.ts wires it up.

import type { V1Node } from '@kubernetes/client-node';
import type { Runner } from '../lib/exec/runner.ts';
import { planConntrackCleanup, runConntrackCleanup } from './services/conntrack/stale.ts';
import type { ServiceHealthInfo } from './services/healthcheck/servers.ts';
import { ProxyHealth } from './services/healthcheck/proxy-health.ts';
import { ProxyMetrics } from './services/metrics/metrics.ts';
import { nodeInfoFromNode } from './services/model/convert.ts';
import { healthCheckLocalEndpoints, planServicePort, planServices } from './services/model/plan.ts';
import { ChangeTracker } from './services/model/tracker.ts';
import type { IpFamily, NodeInfo, ProxyBackend, ProxyConfigView, ServicePlan } from './services/model/types.ts';
import { BoundedFrequencyRunner, realClock, type Clock } from './services/runner/bounded.ts';
import type { WatchSource } from './services/watch/informers.ts';

export interface DaemonLog {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

export interface DaemonOptions {
  nodeName: string;
  config: ProxyConfigView;
  backends: ReadonlyMap<IpFamily, ProxyBackend>;
  source: WatchSource;
  /** runs conntrack; omit to skip conntrack cleanup */
  runner?: Runner;
  log: DaemonLog;
  minSyncPeriodMs: number;
  /** syncs allowed within one minSyncPeriod (default 2: a Service and its EndpointSlice need not wait a period) */
  burstSyncs?: number;
  syncPeriodMs: number;
  serviceProxyName?: string;
  /** node addresses to use until (or unless) the Node object is seen */
  fallbackNodeIPs?: string[];
  /** called after each successful sync with the health-check node ports wanted */
  onHealthPorts?: (ports: Map<number, ServiceHealthInfo>) => Promise<void> | void;
  clock?: Clock;
  /** a full sync at least this often (kube-proxy: 1 h) */
  fullSyncPeriodMs?: number;
}

const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

export class ProxyDaemon {
  readonly tracker: ChangeTracker;
  readonly health: ProxyHealth;
  readonly metrics = new ProxyMetrics();
  private readonly opts: DaemonOptions;
  private readonly clock: Clock;
  private readonly runner: BoundedFrequencyRunner;
  private node: NodeInfo;
  private nodeDirty = false;
  private synced = false;
  private needFull = true;
  private lastFull = -Infinity;
  private readonly plans = new Map<IpFamily, Map<string, ServicePlan>>();
  /** number of successful syncs so far */
  syncCount = 0;
  lastSyncError: unknown = undefined;

  constructor(opts: DaemonOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? realClock;
    this.tracker = new ChangeTracker(opts.nodeName, opts.serviceProxyName ?? '');
    this.health = new ProxyHealth(2 * opts.syncPeriodMs, () => this.clock.now());
    this.node = { name: opts.nodeName, ips: opts.fallbackNodeIPs ?? [], podCIDRs: [] };
    this.runner = new BoundedFrequencyRunner(() => this.syncOnce(), {
      minIntervalMs: opts.minSyncPeriodMs,
      maxIntervalMs: opts.syncPeriodMs,
      retryIntervalMs: Math.max(1000, opts.minSyncPeriodMs),
      clock: this.clock,
      burst: opts.burstSyncs ?? 2,
      onError: (err) => opts.log.error({ err: String(err) }, 'sync failed; will retry with a full sync'),
    });
  }

  get families(): IpFamily[] {
    return [...this.opts.backends.keys()];
  }

  /** plans programmed by the last successful sync */
  programmed(family: IpFamily): ReadonlyMap<string, ServicePlan> {
    return this.plans.get(family) ?? new Map();
  }

  private queue(): void {
    for (const f of this.families) this.health.queued(f);
    this.metrics.lastQueued.set(this.clock.now() / 1000);
    const p = this.tracker.pendingCounts;
    this.metrics.serviceChangesPending.set(p.services);
    this.metrics.endpointChangesPending.set(p.endpoints);
    // before the initial lists are in, changes only mark the health state (kube-proxy: queued updates count from
    // the first event, so a proxy that never manages its first sync turns unhealthy after 2 x syncPeriod)
    if (this.synced) this.runner.run();
  }

  private onNode(n: V1Node, deleted: boolean): void {
    if (n.metadata?.name !== this.opts.nodeName) return;
    const eligible = !deleted && !n.metadata?.deletionTimestamp && !(n.spec?.taints ?? []).some((t) => t.key === TO_BE_DELETED_TAINT);
    this.health.setNodeEligible(eligible);
    if (deleted) return;
    const info = nodeInfoFromNode(n);
    if (!info.ips.length) info.ips = this.opts.fallbackNodeIPs ?? [];
    if (JSON.stringify(info) === JSON.stringify(this.node)) return;
    this.opts.log.info({ node: info }, 'node changed; next sync is full');
    this.node = info;
    this.nodeDirty = true;
    this.queue();
  }

  /** Start watching; resolves after the first sync attempt following the initial lists. */
  async start(): Promise<void> {
    const h = {
      service: (o: Parameters<ChangeTracker['onService']>[0], deleted: boolean) => {
        const changed = deleted ? this.tracker.onServiceDelete(o) : this.tracker.onService(o);
        if (changed) {
          this.metrics.serviceChangesTotal.inc();
          this.queue();
        }
      },
      slice: (o: Parameters<ChangeTracker['onSlice']>[0], deleted: boolean) => {
        const changed = deleted ? this.tracker.onSliceDelete(o) : this.tracker.onSlice(o);
        if (changed) {
          this.metrics.endpointChangesTotal.inc();
          this.queue();
        }
      },
      node: (o: V1Node, deleted: boolean) => this.onNode(o, deleted),
    };
    await this.opts.source.start(h);
    this.opts.log.info({}, 'initial Service and EndpointSlice lists received');
    this.synced = true;
    // the first sync runs through the runner too: syncs must never overlap (a slow first sync would otherwise
    // race the runner's periodic tick and run two restores at once)
    const first = new Promise<void>((r) => (this.firstAttempt = r));
    this.runner.start();
    this.runner.run();
    await first;
  }

  private firstAttempt: (() => void) | undefined;

  async stop(): Promise<void> {
    this.runner.stop();
    await this.runner.idle();
    await this.opts.source.stop();
  }

  /** Request a sync now (subject to minSyncPeriod). */
  requestSync(): void {
    this.queue();
  }

  /** Wait for a running sync to finish. */
  idle(): Promise<void> {
    return this.runner.idle();
  }

  /** One sync of every family (call only through the runner, or when it is stopped). Throws on failure. */
  async syncOnce(): Promise<void> {
    if (!this.synced) return;
    try {
      await this.syncAll();
    } finally {
      this.firstAttempt?.();
      this.firstAttempt = undefined;
    }
  }

  private async syncAll(): Promise<void> {
    const start = this.clock.now();
    const ch = this.tracker.take();
    this.metrics.serviceChangesPending.set(0);
    this.metrics.endpointChangesPending.set(0);
    const full = this.needFull || this.nodeDirty || start - this.lastFull >= (this.opts.fullSyncPeriodMs ?? 3_600_000);
    this.nodeDirty = false;
    const services = this.tracker.servicePorts();
    const endpoints = this.tracker.endpoints();
    let failure: unknown;
    const healthPorts = new Map<number, ServiceHealthInfo>();
    let noLocal = 0;
    for (const family of this.families) {
      const backend = this.opts.backends.get(family)!;
      const prev = this.plans.get(family) ?? new Map<string, ServicePlan>();
      let next: Map<string, ServicePlan>;
      const changed = new Set<string>();
      for (const k of ch.changed) if (k.endsWith(`/v${family}`)) changed.add(k);
      if (full) next = planServices(services, endpoints, this.node, family);
      else {
        next = new Map(prev);
        for (const key of changed) {
          const svc = services.get(key);
          if (svc) next.set(key, planServicePort(svc, endpoints.get(key) ?? [], this.node));
          else next.delete(key);
        }
      }
      try {
        await backend.sync({ full, changed, plans: next, node: this.node, config: this.opts.config, family });
      } catch (err) {
        failure ??= err;
        this.needFull = true;
        this.plans.delete(family);
        this.metrics.restoreFailures.inc();
        if (!full) this.metrics.partialRestoreFailures.inc();
        continue;
      }
      this.plans.set(family, next);
      this.health.updated(family);
      // conntrack: never on the very first sync (nothing stale yet), else over the changed keys (all on full)
      if (this.opts.runner && prev.size > 0) {
        const keys = full ? new Set([...prev.keys(), ...next.keys()]) : changed;
        const cmds = planConntrackCleanup(prev, next, keys);
        if (cmds.length) {
          try {
            await runConntrackCleanup(this.opts.runner, cmds);
            this.opts.log.debug({ family, n: cmds.length }, 'stale UDP conntrack entries cleared');
          } catch (err) {
            this.opts.log.warn({ err: String(err) }, 'conntrack cleanup failed');
          }
        }
      }
      for (const plan of next.values()) {
        const s = plan.svc;
        if ((s.internalTrafficPolicyLocal || s.externalTrafficPolicyLocal) && plan.hasEndpointsElsewhere) noLocal++;
        if (s.healthCheckNodePort > 0) {
          const cur = healthPorts.get(s.healthCheckNodePort);
          // one health check port per service: its count is the service's local endpoints (max over its ports)
          const n = Math.max(healthCheckLocalEndpoints(plan), cur?.localEndpoints ?? 0);
          healthPorts.set(s.healthCheckNodePort, { namespace: s.namespace, name: s.name, localEndpoints: n });
        }
      }
    }
    const end = this.clock.now();
    const secs = (end - start) / 1000;
    this.metrics.syncDuration.observe(secs);
    if (failure) {
      this.metrics.syncFailures.inc();
      this.lastSyncError = failure;
      throw failure;
    }
    (full ? this.metrics.syncFullDuration : this.metrics.syncPartialDuration).observe(secs);
    if (full) this.lastFull = start;
    this.needFull = false;
    this.syncCount++;
    this.lastSyncError = undefined;
    this.metrics.lastSync.set(end / 1000);
    this.metrics.noLocalEndpoints.set(noLocal);
    for (const t of ch.triggerTimes) if (t <= end) this.metrics.networkProgramming.observe((end - t) / 1000);
    this.opts.log.debug({ full, changed: ch.changed.size, ms: end - start }, 'sync done');
    if (this.opts.onHealthPorts) await this.opts.onHealthPorts(healthPorts);
  }
}
