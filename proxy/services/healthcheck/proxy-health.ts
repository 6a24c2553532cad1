// kube-proxy's proxier health (pkg/proxy/healthcheck/proxy_health.go), clock injected.
// healthy: every family either has no queued-but-unapplied update, or its oldest one is younger than healthTimeout
// (2 x syncPeriod). /healthz additionally fails while the node is being deleted; /livez does not.

export interface HealthStatus {
  healthy: boolean;
  lastUpdated: number;
  currentTime: number;
  nodeEligible: boolean;
}

export class ProxyHealth {
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private lastUpdated = 0;
  /** oldest queued, not yet applied update time (per family); absent = nothing pending */
  private readonly oldestPending = new Map<number, number>();
  private readonly families = new Set<number>();
  private nodeEligible = true;

  constructor(healthTimeoutMs: number, now: () => number = Date.now) {
    this.timeoutMs = healthTimeoutMs;
    this.now = now;
  }

  /** an update was queued (a change arrived or a sync was requested) */
  queued(family: number): void {
    this.families.add(family);
    if (!this.oldestPending.has(family)) this.oldestPending.set(family, this.now());
  }

  /** rules were applied for this family */
  updated(family: number): void {
    this.families.add(family);
    this.lastUpdated = this.now();
    this.oldestPending.delete(family);
  }

  /** node deleted or tainted for deletion -> /healthz fails (kube-proxy semantics) */
  setNodeEligible(eligible: boolean): void {
    this.nodeEligible = eligible;
  }

  status(): HealthStatus {
    const t = this.now();
    let healthy = true;
    for (const [, since] of this.oldestPending) if (t - since >= this.timeoutMs) healthy = false;
    return { healthy, lastUpdated: this.lastUpdated, currentTime: t, nodeEligible: this.nodeEligible };
  }

  /** [HTTP status, JSON body] for /healthz or /livez */
  respond(path: '/healthz' | '/livez'): [number, string] {
    const s = this.status();
    const ok = path === '/livez' ? s.healthy : s.healthy && s.nodeEligible;
    const body: Record<string, unknown> = {
      lastUpdated: new Date(s.lastUpdated).toISOString(),
      currentTime: new Date(s.currentTime).toISOString(),
    };
    if (path === '/healthz') body.nodeEligible = s.nodeEligible;
    return [ok ? 200 : 503, JSON.stringify(body)];
  }
}
