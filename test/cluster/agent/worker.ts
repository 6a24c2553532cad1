// One worker per pod UID: sandbox through CRI, workload processes, readiness probes, status, graceful deletion.
// Every change funnels into sync(), which runs one at a time per pod and re-runs if something changed meanwhile.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { CriClient } from '../cri/client.ts';
import { type Api, ApiError } from './api.ts';
import { runProbe } from './probe.ts';
import {
  type AgentContext,
  type ContainerRuntimeState,
  type PodRuntimeState,
  type ProbeSpec,
  type Workload,
  dnsConfigFor,
  gracePeriodSeconds,
  podHostname,
  podKey,
  podStatusPatch,
  probeTiming,
  readinessFor,
  resolvConf,
  sandboxConfigFor,
  workloadFor,
} from './spec.ts';
import { type RunningWorkload, startWorkload, stopWorkload } from './workload.ts';

export interface WorkerDeps {
  cri: CriClient;
  api: Api;
  ctx: AgentContext;
  stateDir: string;
  nodeName: string;
  hostIP: string;
  log: (msg: string, extra?: Record<string, unknown>) => void;
  /** sandbox already running for this pod UID (found at agent start) */
  adoptSandboxId?: string;
  onGone: (uid: string) => void;
}

interface ContainerSlot {
  spec: V1Container;
  workload: Workload;
  state: ContainerRuntimeState;
  proc?: RunningWorkload;
  probe?: ProbeSpec;
  probeTimer?: NodeJS.Timeout;
  successes: number;
  failures: number;
  backoffUntil: number;
  everSucceeded: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class PodWorker {
  pod: V1Pod;
  readonly uid: string;
  private readonly d: WorkerDeps;
  private readonly st: PodRuntimeState;
  private slots: ContainerSlot[] = [];
  private netnsPath?: string;
  private running = false;
  private again = false;
  private stopped = false;
  private deletedFromApi = false;
  private lastPatch = '';
  private retryTimer?: NodeJS.Timeout;
  private sandboxAttempts = 0;
  private sandboxRetryAt = 0;
  private sandboxStopped = false;
  private termination?: Promise<void>;

  constructor(pod: V1Pod, deps: WorkerDeps) {
    this.pod = pod;
    this.uid = pod.metadata!.uid!;
    this.d = deps;
    this.st = { podIPs: [], hostIP: deps.hostIP, containers: [], terminating: false, phase: 'Pending' };
  }

  private get key(): string {
    return podKey(this.pod);
  }

  private podDir(): string {
    return join(this.d.stateDir, 'pods', `${this.pod.metadata!.namespace}_${this.pod.metadata!.name}_${this.uid}`);
  }

  update(pod: V1Pod): void {
    this.pod = pod;
    this.kick();
  }

  /** The pod object is gone from the API (force delete or our own final delete). */
  deleted(pod: V1Pod): void {
    this.pod = pod;
    this.deletedFromApi = true;
    this.kick();
  }

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.sync();
        } while (this.again && !this.stopped);
      } catch (e) {
        this.d.log('sync failed', { pod: this.key, err: String(e) });
        this.scheduleRetry(2000);
      } finally {
        this.running = false;
      }
    })();
  }

  private scheduleRetry(ms: number): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, ms);
  }

  private async sync(): Promise<void> {
    const deleting = this.deletedFromApi || !!this.pod.metadata?.deletionTimestamp;
    if (deleting) {
      // keep writing status while terminating: Ready follows the probes, so EndpointSlices show the endpoint as
      // terminating (serving while the workload still answers)
      this.termination ??= this.terminate().catch((e: unknown) => this.d.log('termination failed', { pod: this.key, err: String(e) }));
      if (!this.stopped) await this.patchStatus();
      return;
    }
    if (this.st.phase === 'Succeeded' || this.st.phase === 'Failed') {
      await this.patchStatus();
      // like the kubelet: a finished pod's sandbox is stopped (CNI DEL frees its IP); it is removed on deletion
      if (this.st.sandboxId && !this.sandboxStopped) {
        await this.d.cri.stopPodSandbox(this.st.sandboxId);
        this.sandboxStopped = true;
        this.d.log('sandbox stopped (pod finished)', { pod: this.key, phase: this.st.phase });
      }
      return;
    }
    if (!this.st.sandboxId) {
      if (Date.now() < this.sandboxRetryAt) return this.scheduleRetry(this.sandboxRetryAt - Date.now());
      const ok = await this.ensureSandbox();
      if (!ok) return;
    }
    this.ensureContainers();
    await this.patchStatus();
  }

  private async ensureSandbox(): Promise<boolean> {
    const { cri, ctx } = this.d;
    try {
      let id = this.d.adoptSandboxId;
      this.d.adoptSandboxId = undefined;
      if (!id) {
        const t0 = Date.now();
        id = await cri.runPodSandbox(sandboxConfigFor(this.pod, ctx));
        this.d.log('sandbox ready', { pod: this.key, id: id.slice(0, 12), ms: Date.now() - t0 });
      } else {
        this.d.log('sandbox adopted', { pod: this.key, id: id.slice(0, 12) });
      }
      const s = await cri.podSandboxStatus(id);
      this.st.sandboxId = id;
      this.st.sandboxError = undefined;
      this.st.startTime ??= new Date().toISOString();
      this.netnsPath = s.hostNetwork ? undefined : s.netnsPath;
      this.st.podIPs = s.hostNetwork || s.ips.length === 0 ? [this.d.hostIP] : s.ips;
      this.sandboxAttempts = 0;
      return true;
    } catch (e) {
      this.sandboxAttempts++;
      this.st.sandboxError = e instanceof Error ? e.message : String(e);
      this.d.log('sandbox failed', { pod: this.key, attempt: this.sandboxAttempts, err: this.st.sandboxError });
      const delay = Math.min(10_000, 500 * 2 ** Math.min(this.sandboxAttempts, 5));
      this.sandboxRetryAt = Date.now() + delay;
      await this.patchStatus();
      this.scheduleRetry(delay);
      return false;
    }
  }

  private ensureContainers(): void {
    const specs = this.pod.spec?.containers ?? [];
    if (this.slots.length === 0) {
      this.slots = specs.map((c) => {
        const workload = workloadFor(c, this.d.ctx, this.pod.metadata?.annotations ?? {});
        if (workload.kind === 'placeholder') this.d.log('placeholder workload', { pod: this.key, container: c.name, reason: workload.reason });
        return {
          spec: c,
          workload,
          state: { name: c.name, image: c.image ?? '', running: false, ready: false, restartCount: 0 },
          successes: 0,
          failures: 0,
          backoffUntil: 0,
          everSucceeded: false,
        };
      });
      this.st.containers = this.slots.map((s) => s.state);
      this.st.phase = 'Running';
    }
    for (const slot of this.slots) {
      if (slot.proc && slot.proc.exitCode === undefined) continue;
      if (slot.proc && !this.shouldRestart(slot)) continue;
      if (Date.now() < slot.backoffUntil) {
        this.scheduleRetry(slot.backoffUntil - Date.now());
        continue;
      }
      if (slot.proc) slot.state.restartCount++;
      this.startContainer(slot);
    }
    this.updatePhase();
    if (this.st.phase === 'Succeeded' || this.st.phase === 'Failed') this.again = true;
  }

  private shouldRestart(slot: ContainerSlot): boolean {
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Always') return true;
    if (policy === 'OnFailure') return (slot.proc?.exitCode ?? 0) !== 0;
    return false;
  }

  private updatePhase(): void {
    const done = this.slots.every((s) => s.proc && s.proc.exitCode !== undefined && !this.shouldRestart(s));
    if (!done || this.slots.length === 0) return;
    this.st.phase = this.slots.every((s) => s.proc!.exitCode === 0) ? 'Succeeded' : 'Failed';
  }

  private envFor(c: V1Container): Record<string, string> {
    const pod = this.pod;
    const env: Record<string, string> = {
      POD_NAME: pod.metadata!.name!,
      // what os.Hostname() returns in the real pod: the node's name for hostNetwork pods
      NETEXEC_HOSTNAME: pod.spec?.hostNetwork ? this.d.nodeName : podHostname(pod),
      POD_NAMESPACE: pod.metadata!.namespace ?? 'default',
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_SERVICE_PORT: '443',
    };
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env[e.name] = e.value;
      else if (e.valueFrom?.fieldRef) {
        const f = e.valueFrom.fieldRef.fieldPath;
        const v: Record<string, string | undefined> = {
          'metadata.name': pod.metadata?.name,
          'metadata.namespace': pod.metadata?.namespace,
          'metadata.uid': pod.metadata?.uid,
          'spec.nodeName': this.d.nodeName,
          'spec.serviceAccountName': pod.spec?.serviceAccountName,
          'status.podIP': this.st.podIPs[0],
          'status.podIPs': this.st.podIPs.join(','),
          'status.hostIP': this.d.hostIP,
          'status.hostIPs': this.d.hostIP,
        };
        if (v[f] !== undefined) env[e.name] = v[f]!;
      }
    }
    return env;
  }

  private startContainer(slot: ContainerSlot): void {
    const dir = this.podDir();
    mkdirSync(dir, { recursive: true });
    const hostNetwork = this.pod.spec?.hostNetwork === true;
    const dns = dnsConfigFor(this.pod, this.d.ctx);
    let resolvPath: string | undefined;
    if (dns.servers.length > 0) {
      resolvPath = join(dir, 'resolv.conf');
      writeFileSync(resolvPath, resolvConf(dns));
    }
    const proc = startWorkload({
      argv: slot.workload.argv,
      netnsPath: hostNetwork ? undefined : this.netnsPath,
      resolvConfPath: resolvPath,
      hostname: hostNetwork ? undefined : podHostname(this.pod),
      env: this.envFor(slot.spec),
      logFile: join(dir, `${slot.spec.name}.log`),
      pidFile: join(dir, `${slot.spec.name}.pid`),
      stateDir: this.d.stateDir,
    });
    slot.proc = proc;
    Object.assign(slot.state, {
      pid: proc.pid,
      running: true,
      ready: false,
      startedAt: proc.startedAt,
      exitCode: undefined,
      finishedAt: undefined,
      waitingReason: undefined,
    });
    slot.successes = 0;
    slot.failures = 0;
    slot.everSucceeded = false;
    slot.probe = readinessFor(slot.spec, this.st.podIPs[0] ?? this.d.hostIP, slot.workload);
    this.d.log('container started', { pod: this.key, container: slot.spec.name, pid: proc.pid, kind: slot.workload.kind });
    void proc.exited.then((code) => this.onExit(slot, proc, code));
    this.startProber(slot, proc);
  }

  private onExit(slot: ContainerSlot, proc: RunningWorkload, code: number): void {
    if (slot.proc !== proc) return;
    if (slot.probeTimer) clearTimeout(slot.probeTimer);
    const finishedAt = new Date().toISOString();
    slot.state.lastTerminated = { exitCode: code, startedAt: slot.state.startedAt, finishedAt };
    Object.assign(slot.state, { running: false, ready: false, exitCode: code, finishedAt, pid: undefined });
    this.d.log('container exited', { pod: this.key, container: slot.spec.name, code });
    if (!this.st.terminating) {
      if (this.shouldRestart(slot)) {
        const backoff = Math.min(10_000, 1000 * 2 ** Math.min(slot.state.restartCount, 4));
        slot.backoffUntil = Date.now() + backoff;
        slot.state.exitCode = undefined;
        slot.state.waitingReason = 'CrashLoopBackOff';
      }
      this.kick();
    }
  }

  private startProber(slot: ContainerSlot, proc: RunningWorkload): void {
    const t = probeTiming(slot.spec.readinessProbe);
    const tick = async (): Promise<void> => {
      if (slot.proc !== proc || proc.exitCode !== undefined || this.stopped) return;
      const ok = await runProbe(slot.probe!, t.timeoutMs, proc.exitCode === undefined);
      if (slot.proc !== proc) return;
      if (ok) {
        slot.failures = 0;
        slot.successes++;
        slot.everSucceeded = true;
      } else {
        slot.successes = 0;
        slot.failures++;
      }
      const before = slot.state.ready;
      if (!before && slot.successes >= t.successThreshold) slot.state.ready = true;
      if (before && slot.failures >= t.failureThreshold) slot.state.ready = false;
      if (before !== slot.state.ready) {
        this.d.log('readiness changed', { pod: this.key, container: slot.spec.name, ready: slot.state.ready });
        this.kick();
      }
      // until the first success probe quickly (the kubelet would wait a full period; tests wait less this way)
      const next = slot.everSucceeded ? t.periodMs : Math.min(t.periodMs, 250);
      slot.probeTimer = setTimeout(() => void tick(), next);
    };
    slot.probeTimer = setTimeout(() => void tick(), t.initialDelayMs);
  }

  private async patchStatus(): Promise<void> {
    if (this.deletedFromApi) return;
    const body = podStatusPatch(this.pod, this.st, new Date().toISOString());
    const fingerprint = JSON.stringify(body, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    if (fingerprint === this.lastPatch) return;
    const m = this.pod.metadata!;
    try {
      await this.d.api.call('PATCH', `/api/v1/namespaces/${m.namespace}/pods/${m.name}/status`, body, 'application/strategic-merge-patch+json');
      this.lastPatch = fingerprint;
    } catch (e) {
      if (e instanceof ApiError && e.notFound) return;
      throw e;
    }
  }

  /** Graceful deletion: SIGTERM, keep probing (Ready follows the probes), SIGKILL after the grace, tear down, delete. */
  private async terminate(): Promise<void> {
    this.st.terminating = true;
    const graceMs = this.deletedFromApi ? 0 : gracePeriodSeconds(this.pod) * 1000;
    this.d.log('terminating', { pod: this.key, graceMs });
    const deadline = Date.now() + graceMs;
    await Promise.all(
      this.slots.map(async (s) => {
        if (!s.proc || s.proc.exitCode !== undefined) return;
        await stopWorkload(s.proc, Math.max(0, deadline - Date.now()));
      }),
    );
    for (const s of this.slots) if (s.probeTimer) clearTimeout(s.probeTimer);
    if (this.st.sandboxId) {
      const id = this.st.sandboxId;
      for (let i = 0; ; i++) {
        try {
          await this.d.cri.stopPodSandbox(id);
          await this.d.cri.removePodSandbox(id);
          break;
        } catch (e) {
          this.d.log('sandbox teardown failed', { pod: this.key, err: String(e), attempt: i });
          if (i >= 5) break;
          await sleep(1000 * (i + 1));
        }
      }
      this.d.log('sandbox removed', { pod: this.key, id: id.slice(0, 12) });
    }
    if (!this.deletedFromApi) {
      await this.patchStatus().catch((e: unknown) => this.d.log('final status failed', { pod: this.key, err: String(e) }));
      const m = this.pod.metadata!;
      this.d.log('deleting pod object', { pod: this.key });
      try {
        await this.d.api.call('DELETE', `/api/v1/namespaces/${m.namespace}/pods/${m.name}`, {
          kind: 'DeleteOptions',
          apiVersion: 'v1',
          gracePeriodSeconds: 0,
          preconditions: { uid: this.uid },
        });
      } catch (e) {
        if (!(e instanceof ApiError && (e.notFound || e.conflict))) this.d.log('final delete failed', { pod: this.key, err: String(e) });
      }
    }
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.d.log('pod gone', { pod: this.key });
    this.d.onGone(this.uid);
  }

  /** Agent shutdown: kill the workloads now; the sandbox stays for containerd's own cleanup or a restarted agent. */
  async shutdown(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.probeTimer) clearTimeout(s.probeTimer);
        if (s.proc && s.proc.exitCode === undefined) await stopWorkload(s.proc, 0);
      }),
    );
  }
}
