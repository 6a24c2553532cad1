// The policy controller: NetworkPolicies, Pods and Namespaces -> model -> desired state for this node -> one nft
// transaction -> conntrack re-check. Each sync recomputes the state from the current objects (not from events) and
// writes the difference to what the last successful sync left in the kernel; the first sync after start, and any sync
// after a failure, replaces the whole table in one transaction, so the rules of a previous run stay in force until
// then and a restart opens no gap.

import type { Runner } from '../../lib/exec/runner.ts';
import { KubeClient } from '../../lib/kube/client.ts';
import type { KubeConfig } from '../../lib/kube/config.ts';
import { ListWatcher, objectKey, type KubeObject, type WatchLog } from '../../lib/kube/watch.ts';
import { Nft } from '../../lib/nft/nft.ts';
import { NftSession } from '../../lib/nft/session.ts';
import { readSysctl, sysctlKeyPath, writeSysctl } from '../../lib/sysctl/sysctl.ts';
import { runConntrackCleanup } from '../services/conntrack/stale.ts';
import { BoundedFrequencyRunner, realClock, type Clock } from '../services/runner/bounded.ts';
import { computeState, type PolicyState } from './compute.ts';
import { parseConntrack, planFlowDeletions } from './conntrack.ts';
import { parseNamespace, parsePod, parsePolicy, type NamespaceInfo, type PodInfo, type Policy } from './model.ts';
import { DEFAULT_TABLE, deleteProgram, diffProgram, fullProgram, render, type Rendered } from './render.ts';

export interface PolicyHandlers {
  policy(obj: unknown, deleted: boolean): void;
  pod(obj: unknown, deleted: boolean): void;
  namespace(obj: unknown, deleted: boolean): void;
}

export interface PolicySource {
  /** resolves when the initial lists of all three kinds are in */
  start(h: PolicyHandlers): Promise<void>;
  stop(): Promise<void>;
}

export interface PolicyLog extends WatchLog {
  error(obj: unknown, msg?: string): void;
}

export interface PolicyControllerOptions {
  nodeName: string;
  runner: Runner;
  log: PolicyLog;
  source: PolicySource;
  /** nftables table name (inet family); default flatnet-policy */
  table?: string;
  /** run nft, conntrack, sysctl and ip in this network namespace (tests) */
  netns?: string;
  /** least time between two syncs (default 0: a change is programmed as soon as the previous sync ends) */
  minSyncPeriodMs?: number;
  /** apply incremental changes through a long-lived `nft -i` (default true; full syncs always use `nft -f`) */
  nftSession?: boolean;
  /** a full resync at least this often (default 10 min) */
  fullSyncPeriodMs?: number;
  clock?: Clock;
}

const BRIDGE_SYSCTLS = ['net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-ip6tables'];
const BRIDGE_WARNING = 'bridge-nf-call-ip(6)tables is off and cannot be set: pods on the same bridge are not isolated from each other';

export class PolicyController {
  readonly table: string;
  private readonly o: PolicyControllerOptions;
  private readonly nft: Nft;
  private readonly session: NftSession | undefined;
  private readonly clock: Clock;
  private readonly runner: BoundedFrequencyRunner;
  private readonly policies = new Map<string, Policy>();
  private readonly pods = new Map<string, PodInfo>();
  /** JSON of each pod's model, to drop status-only updates */
  private readonly podJSON = new Map<string, string>();
  private readonly namespaces = new Map<string, NamespaceInfo>();
  private synced = false;
  private programmed: Rendered | undefined;
  private lastFull = -Infinity;
  private firstAttempt: (() => void) | undefined;
  /** the state programmed by the last successful sync */
  state: PolicyState | undefined;
  syncCount = 0;
  /** flows deleted by conntrack re-checks so far */
  flowsDeleted = 0;
  lastSyncError: unknown = undefined;
  /** object changes seen so far, and how many of them the last successful sync had taken in */
  changesSeen = 0;
  changesProgrammed = 0;
  /** where the last successful sync spent its time (ms) */
  lastSyncTimings = { compute: 0, render: 0, apply: 0, recheck: 0 };
  /** how the last sync reached the kernel: a full program or a long diff through `nft -f`, a diff through the session */
  lastApplyVia: 'nft -f' | 'session' | undefined;
  /** changes whose rules are committed to the kernel (set before the conntrack re-check that follows) */
  changesApplied = 0;

  constructor(o: PolicyControllerOptions) {
    this.o = o;
    this.table = o.table ?? DEFAULT_TABLE;
    this.nft = new Nft({ runner: o.runner, ...(o.netns ? { netns: o.netns } : {}) });
    if (o.nftSession !== false) this.session = new NftSession(o.netns ? { netns: o.netns } : {});
    this.clock = o.clock ?? realClock;
    this.runner = new BoundedFrequencyRunner(() => this.syncOnce(), {
      minIntervalMs: o.minSyncPeriodMs ?? 0,
      maxIntervalMs: 60_000,
      retryIntervalMs: 1000,
      burst: 2,
      clock: this.clock,
      onError: (err) => o.log.error({ err: String(err) }, 'policy sync failed; will retry with a full sync'),
    });
  }

  private queue(): void {
    this.changesSeen++;
    if (this.synced) this.runner.run();
  }

  onPolicy(obj: unknown, deleted: boolean): void {
    const key = objectKey(obj as KubeObject);
    if (deleted) this.policies.delete(key);
    else this.policies.set(key, parsePolicy(obj));
    this.queue();
  }

  onPod(obj: unknown, deleted: boolean): void {
    const key = objectKey(obj as KubeObject);
    const info = deleted ? undefined : parsePod(obj);
    if (!info) {
      if (!this.pods.delete(key)) return;
      this.podJSON.delete(key);
    } else {
      const j = JSON.stringify(info);
      if (this.podJSON.get(key) === j) return;
      this.podJSON.set(key, j);
      this.pods.set(key, info);
    }
    this.queue();
  }

  onNamespace(obj: unknown, deleted: boolean): void {
    const ns = parseNamespace(obj);
    const before = this.namespaces.get(ns.name);
    if (deleted) this.namespaces.delete(ns.name);
    else {
      if (before && JSON.stringify(before.labels) === JSON.stringify(ns.labels)) return;
      this.namespaces.set(ns.name, ns);
    }
    this.queue();
  }

  /** Watches, waits for the initial lists, then programs the first full sync (resolves after that attempt). */
  async start(): Promise<void> {
    await this.ensureBridgeSysctls();
    await this.o.source.start({
      policy: (o, d) => this.onPolicy(o, d),
      pod: (o, d) => this.onPod(o, d),
      namespace: (o, d) => this.onNamespace(o, d),
    });
    this.o.log.info({ policies: this.policies.size, pods: this.pods.size, namespaces: this.namespaces.size }, 'initial policy lists received');
    this.synced = true;
    const first = new Promise<void>((r) => (this.firstAttempt = r));
    this.runner.start();
    this.runner.run();
    await first;
  }

  async stop(): Promise<void> {
    this.runner.stop();
    await this.runner.idle();
    await this.session?.close();
    await this.o.source.stop();
  }

  /** Resolves once no sync is running or pending. */
  async idle(): Promise<void> {
    await this.runner.idle();
  }

  /** every change seen so far is in the kernel */
  get settled(): boolean {
    return this.syncCount > 0 && this.changesProgrammed === this.changesSeen;
  }

  /** Request a sync (tests). */
  requestSync(): void {
    this.runner.run();
  }

  /**
   * Bridged pod-to-pod traffic on the node's bridge reaches the inet forward hook only with br_netfilter's
   * bridge-nf-call-ip(6)tables on (per network namespace since Linux 5.3); without it same-node pods would bypass
   * policy entirely.
   */
  private async ensureBridgeSysctls(): Promise<void> {
    if (this.o.netns) {
      const r = await this.o.runner.run(['sysctl', '-q', '-w', ...BRIDGE_SYSCTLS.map((k) => `${k}=1`)], { allowFail: true, netns: this.o.netns });
      if (r.code !== 0) this.o.log.error({ err: r.stderr.trim() }, BRIDGE_WARNING);
      return;
    }
    // /proc/sys is read-only in an unprivileged container: the usual value (1, the per-netns default) is only read
    for (const k of BRIDGE_SYSCTLS) {
      const path = sysctlKeyPath(k);
      let v = '';
      try {
        v = readSysctl(path);
      } catch {
        /* br_netfilter absent: no bridge traffic reaches any IP hook, nor is it filtered by one */
      }
      if (v !== '1' && !writeSysctl(path, '1', true)) this.o.log.error({ sysctl: k, value: v || 'absent' }, BRIDGE_WARNING);
    }
  }

  private async syncOnce(): Promise<void> {
    const seen = this.changesSeen;
    try {
      const t0 = performance.now();
      const state = computeState({ policies: this.policies.values(), pods: this.pods.values(), namespaces: this.namespaces }, this.o.nodeName);
      const t1 = performance.now();
      const next = render(state);
      const now = this.clock.now();
      const full = !this.programmed || now - this.lastFull >= (this.o.fullSyncPeriodMs ?? 600_000);
      let restricts = true;
      let text: string;
      if (full) {
        text = fullProgram(this.table, next).render();
        if (this.programmed) restricts = diffProgram(this.table, this.programmed, next).restricts;
      } else {
        const d = diffProgram(this.table, this.programmed!, next);
        text = d.tx.render();
        restricts = d.restricts;
      }
      const t2 = performance.now();
      try {
        if (!full && this.session?.fits(text)) {
          await this.session.apply(text);
          this.lastApplyVia = 'session';
        } else {
          await this.nft.apply(text);
          this.lastApplyVia = 'nft -f';
        }
      } catch (e) {
        this.programmed = undefined;
        throw e;
      }
      this.changesApplied = seen;
      const t3 = performance.now();
      if (full) {
        this.lastFull = now;
        await this.ensureBridgeSysctls();
      }
      this.programmed = next;
      this.state = state;
      this.syncCount++;
      this.lastSyncError = undefined;
      if (restricts) await this.recheckFlows(state);
      this.changesProgrammed = seen;
      this.lastSyncTimings = { compute: t1 - t0, render: t2 - t1, apply: t3 - t2, recheck: performance.now() - t3 };
      this.o.log.debug({ full, restricts, via: this.lastApplyVia, pods: state.pods.size, rules: state.rules.size }, 'policy synced');
    } catch (e) {
      this.lastSyncError = e;
      throw e;
    } finally {
      this.firstAttempt?.();
      this.firstAttempt = undefined;
    }
  }

  private async recheckFlows(state: PolicyState): Promise<void> {
    const nodeIPs = await this.localAddresses();
    const entries = [];
    for (const f of ['ipv4', 'ipv6']) {
      const r = await this.o.runner.run(['conntrack', '-L', '-f', f], { allowFail: true, netns: this.o.netns });
      if (r.code === 0) entries.push(...parseConntrack(r.stdout));
    }
    const cmds = planFlowDeletions(state, entries, nodeIPs);
    if (!cmds.length) return;
    this.flowsDeleted += await runConntrackCleanup(this.o.runner, cmds, this.o.netns);
    this.o.log.info({ flows: cmds.length }, 'deleted flows that policy no longer allows');
  }

  private async localAddresses(): Promise<Set<string>> {
    const r = await this.o.runner.run(['ip', '-j', 'addr', 'show'], { allowFail: true, netns: this.o.netns });
    const out = new Set<string>();
    try {
      for (const l of JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[]) for (const a of l.addr_info ?? []) if (a.local) out.add(a.local);
    } catch {
      /* no addresses known: flows from the node are re-checked like any other */
    }
    return out;
  }

  /** Removes the table (the feature turned off, or `--cleanup`). */
  static async cleanup(runner: Runner, table = DEFAULT_TABLE, netns?: string): Promise<void> {
    await new Nft({ runner, ...(netns ? { netns } : {}) }).apply(deleteProgram(table));
  }
}

/** NetworkPolicies (networking.k8s.io/v1), Pods and Namespaces from the API, as plain JSON objects. */
export class KubePolicySource implements PolicySource {
  private readonly client: KubeClient;
  private readonly log: WatchLog | undefined;
  private watchers: ListWatcher<KubeObject>[] = [];

  constructor(config: KubeConfig, log?: WatchLog) {
    this.client = new KubeClient(config);
    this.log = log;
  }

  async start(h: PolicyHandlers): Promise<void> {
    const watch = (name: string, path: string, onEvent: (o: unknown, deleted: boolean) => void): ListWatcher<KubeObject> =>
      new ListWatcher<KubeObject>({ client: this.client, path, name, onEvent, ...(this.log ? { log: this.log } : {}) });
    this.watchers = [
      watch('networkpolicies', '/apis/networking.k8s.io/v1/networkpolicies', (o, d) => h.policy(o, d)),
      watch('pods', '/api/v1/pods', (o, d) => h.pod(o, d)),
      watch('namespaces', '/api/v1/namespaces', (o, d) => h.namespace(o, d)),
    ];
    for (const w of this.watchers) w.start();
    await Promise.all(this.watchers.map((w) => w.synced));
  }

  async stop(): Promise<void> {
    await Promise.all(this.watchers.map((w) => w.stop()));
    this.client.close();
  }
}

/**
 * Objects held in memory (tests, benchmarks, embedding): set() and remove() reach the running controller as watch
 * events; a controller that starts later (a restart) gets the current objects as its initial list.
 */
export class MemoryPolicySource implements PolicySource {
  private h: PolicyHandlers | undefined;
  private readonly objects = new Map<string, { kind: keyof PolicyHandlers; obj: unknown }>();

  private key(kind: keyof PolicyHandlers, obj: unknown): string {
    return `${kind} ${objectKey(obj as KubeObject)}`;
  }

  /** add or update an object of `kind` */
  set(kind: keyof PolicyHandlers, obj: unknown): void {
    this.objects.set(this.key(kind, obj), { kind, obj });
    this.h?.[kind](obj, false);
  }

  remove(kind: keyof PolicyHandlers, obj: unknown): void {
    this.objects.delete(this.key(kind, obj));
    this.h?.[kind](obj, true);
  }

  start(h: PolicyHandlers): Promise<void> {
    this.h = h;
    for (const { kind, obj } of this.objects.values()) h[kind](obj, false);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.h = undefined;
    return Promise.resolve();
  }
}
