// Pure translation from a Pod to what the agent does: the CRI sandbox config, the workload argv per container,
// the readiness probe, the resolv.conf, and the status the agent writes back. No I/O here.
import type { V1Container, V1Pod, V1PodCondition, V1Probe } from '@kubernetes/client-node';
import type { PortMapping, Protocol, SandboxConfig } from '../cri/client.ts';

export const AGNHOST_IMAGE = /(^|\/)agnhost(:|@|$)/;

export interface AgentContext {
  clusterDNS: string[];
  clusterDomain: string;
  /** absolute path of test/cluster/netexec/main.ts */
  netexecMain: string;
  /** the node binary that runs netexec (Node 24) */
  nodeBin: string;
  logRoot: string;
}

export function podKey(pod: Pick<V1Pod, 'metadata'>): string {
  return `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? ''}`;
}

export function hostPortMappings(pod: V1Pod): PortMapping[] {
  const out: PortMapping[] = [];
  for (const c of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
    for (const p of c.ports ?? []) {
      if (!p.hostPort) continue;
      out.push({
        protocol: (p.protocol ?? 'TCP') as Protocol,
        containerPort: p.containerPort,
        hostPort: p.hostPort,
        ...(p.hostIP ? { hostIp: p.hostIP } : {}),
      });
    }
  }
  return out;
}

/** The kubelet's DNS policy handling (ClusterFirst, ClusterFirstWithHostNet, Default, None + dnsConfig). */
export function dnsConfigFor(pod: V1Pod, ctx: Pick<AgentContext, 'clusterDNS' | 'clusterDomain'>): { servers: string[]; searches: string[]; options: string[] } {
  const ns = pod.metadata?.namespace ?? 'default';
  const policy = pod.spec?.dnsPolicy ?? 'ClusterFirst';
  const hostNet = pod.spec?.hostNetwork === true;
  let servers: string[] = [];
  let searches: string[] = [];
  let options: string[] = [];
  const clusterFirst = (policy === 'ClusterFirst' && !hostNet) || policy === 'ClusterFirstWithHostNet';
  if (clusterFirst && ctx.clusterDNS.length > 0) {
    servers = [...ctx.clusterDNS];
    const d = ctx.clusterDomain;
    searches = [`${ns}.svc.${d}`, `svc.${d}`, d];
    options = ['ndots:5'];
  }
  const extra = pod.spec?.dnsConfig;
  if (extra) {
    servers = [...servers, ...(extra.nameservers ?? [])];
    searches = [...searches, ...(extra.searches ?? [])];
    for (const o of extra.options ?? []) {
      const s = o.value !== undefined ? `${o.name}:${o.value}` : (o.name ?? '');
      const key = s.split(':')[0];
      options = [...options.filter((x) => x.split(':')[0] !== key), s];
    }
  }
  return { servers, searches, options };
}

export function resolvConf(dns: { servers: string[]; searches: string[]; options: string[] }): string {
  const lines: string[] = [];
  if (dns.searches.length) lines.push(`search ${dns.searches.join(' ')}`);
  for (const s of dns.servers) lines.push(`nameserver ${s}`);
  if (dns.options.length) lines.push(`options ${dns.options.join(' ')}`);
  return lines.join('\n') + '\n';
}

export function podLogDir(pod: V1Pod, root: string): string {
  return `${root}/${pod.metadata?.namespace}_${pod.metadata?.name}_${pod.metadata?.uid}`;
}

export function sandboxConfigFor(pod: V1Pod, ctx: AgentContext): SandboxConfig {
  const m = pod.metadata!;
  const hostNetwork = pod.spec?.hostNetwork === true;
  return {
    metadata: { name: m.name!, namespace: m.namespace ?? 'default', uid: m.uid!, attempt: 0 },
    hostname: hostNetwork ? '' : podHostname(pod),
    logDirectory: podLogDir(pod, ctx.logRoot),
    dnsConfig: dnsConfigFor(pod, ctx),
    portMappings: hostNetwork ? [] : hostPortMappings(pod),
    labels: {
      'io.kubernetes.pod.name': m.name!,
      'io.kubernetes.pod.namespace': m.namespace ?? 'default',
      'io.kubernetes.pod.uid': m.uid!,
      'flatnet.io/agent': 'true',
    },
    annotations: { ...(m.annotations ?? {}) },
    hostNetwork,
  };
}

/** spec.hostname (+ subdomain is only DNS) or the pod name, truncated to 63 chars like the kubelet. */
export function podHostname(pod: V1Pod): string {
  const h = pod.spec?.hostname || pod.metadata?.name || 'pod';
  return h.slice(0, 63).replace(/[-.]+$/, '');
}

export type Workload =
  | { kind: 'command'; argv: string[] }
  | { kind: 'agnhost'; subcommand: string; argv: string[]; /** the TCP port that answers once it serves, if any */ readyPort?: number }
  | { kind: 'placeholder'; argv: string[]; reason: string };

const EMULATED = ['netexec', 'serve-hostname', 'porter', 'pause'];

/** Pod annotation: run non-agnhost containers' command/args with the host's binaries inside the pod netns. */
export const RUN_COMMAND_ANNOTATION = 'flatnet.io/run-command';

function flagValue(flags: readonly string[], name: string): string | undefined {
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    if (f === `--${name}` || f === `-${name}`) return flags[i + 1];
    const m = new RegExp(`^--?${name}=(.*)$`).exec(f);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * How a container runs here: agnhost netexec / serve-hostname / porter / pause -> our emulation
 * (test/cluster/netexec/main.ts); anything else -> a sleeping placeholder (its network identity is the sandbox's).
 */
export function workloadFor(c: V1Container, ctx: Pick<AgentContext, 'netexecMain' | 'nodeBin'>, annotations: Record<string, string> = {}): Workload {
  const args = [...(c.command ?? []), ...(c.args ?? [])];
  // opt-in: run the container's command as is, with the host's binaries (e.g. sh -c "curl ..." client pods)
  if (annotations[RUN_COMMAND_ANNOTATION] === 'true' && args.length > 0 && !AGNHOST_IMAGE.test(c.image ?? '')) {
    return { kind: 'command', argv: args };
  }
  // agnhost images use the entrypoint /agnhost; `command: ["/agnhost", "netexec", ...]` or args only
  const cleaned = args[0] && /(^|\/)agnhost$/.test(args[0]) ? args.slice(1) : args;
  const sub = cleaned[0] ?? '';
  if (AGNHOST_IMAGE.test(c.image ?? '') && EMULATED.includes(sub)) {
    const flags = cleaned.slice(1);
    let readyPort: number | undefined;
    if (sub === 'netexec') readyPort = Number(flagValue(flags, 'http-port') ?? 8080);
    if (sub === 'serve-hostname') {
      const udpOnly = flags.some((f) => /^--?udp(=true)?$/.test(f)) && !flags.some((f) => /^--?tcp(=true)?$/.test(f));
      readyPort = udpOnly ? undefined : Number(flagValue(flags, 'port') ?? 9376);
    }
    return { kind: 'agnhost', subcommand: sub, argv: [ctx.nodeBin, ctx.netexecMain, sub, ...flags], ...(readyPort ? { readyPort } : {}) };
  }
  if (/(^|\/)pause(:|@|$)/.test(c.image ?? '')) return { kind: 'agnhost', subcommand: 'pause', argv: [ctx.nodeBin, ctx.netexecMain, 'pause'] };
  const reason = AGNHOST_IMAGE.test(c.image ?? '') ? `agnhost ${sub || '(no subcommand)'} is not emulated` : `image ${c.image} is not emulated`;
  return { kind: 'placeholder', argv: ['sleep', 'infinity'], reason };
}

export type ProbeSpec =
  | { kind: 'http'; host: string; port: number; path: string; scheme: string; headers: Record<string, string> }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'process' };

export interface ProbeTiming {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
}

function resolvePort(port: number | string | undefined, c: V1Container): number | undefined {
  if (typeof port === 'number') return port;
  if (port === undefined) return undefined;
  if (/^\d+$/.test(port)) return Number(port);
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

export function probeTiming(p: V1Probe | undefined): ProbeTiming {
  return {
    initialDelayMs: (p?.initialDelaySeconds ?? 0) * 1000,
    periodMs: (p?.periodSeconds ?? 10) * 1000,
    timeoutMs: (p?.timeoutSeconds ?? 1) * 1000,
    successThreshold: p?.successThreshold ?? 1,
    failureThreshold: p?.failureThreshold ?? 3,
  };
}

/**
 * The readiness check for a container: its httpGet/tcpSocket readinessProbe against the pod IP; without one, an
 * emulated agnhost server is ready when its port answers and anything else when its process runs.
 */
export function readinessFor(c: V1Container, podIP: string, w: Workload): ProbeSpec {
  const p = c.readinessProbe;
  if (p?.httpGet) {
    const port = resolvePort(p.httpGet.port as number | string, c);
    if (port !== undefined) {
      const headers: Record<string, string> = {};
      for (const h of p.httpGet.httpHeaders ?? []) headers[h.name] = h.value;
      return { kind: 'http', host: p.httpGet.host || podIP, port, path: p.httpGet.path || '/', scheme: p.httpGet.scheme ?? 'HTTP', headers };
    }
  }
  if (p?.tcpSocket) {
    const port = resolvePort(p.tcpSocket.port as number | string, c);
    if (port !== undefined) return { kind: 'tcp', host: p.tcpSocket.host || podIP, port };
  }
  if (!p && w.kind === 'agnhost' && w.readyPort) return { kind: 'tcp', host: podIP, port: w.readyPort };
  return { kind: 'process' };
}

export interface ContainerRuntimeState {
  name: string;
  image: string;
  pid?: number;
  running: boolean;
  ready: boolean;
  restartCount: number;
  startedAt?: string;
  exitCode?: number;
  finishedAt?: string;
  lastTerminated?: { exitCode: number; startedAt?: string; finishedAt: string };
  /** waiting reason while not running (ContainerCreating, CrashLoopBackOff) */
  waitingReason?: string;
}

export interface PodRuntimeState {
  sandboxId?: string;
  podIPs: string[];
  hostIP: string;
  startTime?: string;
  containers: ContainerRuntimeState[];
  terminating: boolean;
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  /** sandbox creation error, surfaced as a condition message */
  sandboxError?: string;
}

function rfc3339(d: string | undefined): string | undefined {
  return d?.replace(/\.\d+Z$/, 'Z');
}

function cond(type: string, ok: boolean, prev: V1PodCondition[] | undefined, now: string, reason?: string, message?: string): Record<string, unknown> {
  const status = ok ? 'True' : 'False';
  const old = prev?.find((c) => c.type === type);
  const oldTime = old?.lastTransitionTime as Date | string | undefined;
  const lastTransitionTime =
    old && old.status === status && oldTime ? (oldTime instanceof Date ? rfc3339(oldTime.toISOString()) : oldTime) : now;
  // reason/message null when absent: the strategic merge patch would otherwise keep stale ones
  return { type, status, lastProbeTime: null, lastTransitionTime, reason: reason ?? null, message: message ?? null };
}

/** The status the agent owns (a merge patch body for pods/status). */
export function podStatusPatch(pod: V1Pod, st: PodRuntimeState, nowIso: string): Record<string, unknown> {
  const now = rfc3339(nowIso)!;
  const prev = pod.status?.conditions;
  const sandboxReady = st.sandboxId !== undefined && !st.sandboxError;
  const allRunning = st.containers.length > 0 && st.containers.every((c) => c.running);
  const containersReady = allRunning && st.containers.every((c) => c.ready);
  const notReadyNames = st.containers.filter((c) => !c.ready).map((c) => c.name);
  const notReadyMsg = notReadyMsgFor(notReadyNames);
  const conditions = [
    cond('PodReadyToStartContainers', sandboxReady, prev, now),
    cond('Initialized', true, prev, now),
    cond('Ready', containersReady, prev, now, containersReady ? undefined : 'ContainersNotReady', containersReady ? undefined : notReadyMsg),
    cond('ContainersReady', containersReady, prev, now, containersReady ? undefined : 'ContainersNotReady', containersReady ? undefined : notReadyMsg),
    cond('PodScheduled', true, prev, now),
  ];
  if (st.sandboxError) conditions[0] = cond('PodReadyToStartContainers', false, prev, now, 'SandboxCreateFailed', st.sandboxError.slice(0, 500));
  const containerStatuses = st.containers.map((c) => {
    const spec = pod.spec?.containers.find((x) => x.name === c.name);
    const state: Record<string, unknown> = c.running
      ? { running: { startedAt: rfc3339(c.startedAt) } }
      : c.exitCode !== undefined
        ? { terminated: { exitCode: c.exitCode, reason: c.exitCode === 0 ? 'Completed' : 'Error', startedAt: rfc3339(c.startedAt), finishedAt: rfc3339(c.finishedAt) } }
        : { waiting: { reason: c.waitingReason ?? 'ContainerCreating' } };
    const lastState: Record<string, unknown> = c.lastTerminated
      ? {
          terminated: {
            exitCode: c.lastTerminated.exitCode,
            reason: c.lastTerminated.exitCode === 0 ? 'Completed' : 'Error',
            startedAt: rfc3339(c.lastTerminated.startedAt),
            finishedAt: rfc3339(c.lastTerminated.finishedAt),
          },
        }
      : {};
    return {
      name: c.name,
      image: spec?.image ?? c.image,
      imageID: `${spec?.image ?? c.image}@flatnet-emulated`,
      containerID: c.pid ? `flatnet://${st.sandboxId?.slice(0, 12)}-${c.name}-${c.pid}` : undefined,
      ready: c.ready,
      started: c.running,
      restartCount: c.restartCount,
      state,
      lastState,
    };
  });
  const status: Record<string, unknown> = {
    phase: st.phase,
    conditions,
    hostIP: st.hostIP,
    hostIPs: st.hostIP ? [{ ip: st.hostIP }] : [],
    containerStatuses,
  };
  if (st.startTime) status['startTime'] = rfc3339(st.startTime);
  if (st.podIPs.length) {
    status['podIP'] = st.podIPs[0];
    status['podIPs'] = st.podIPs.map((ip) => ({ ip }));
  }
  return { status };
}

function notReadyMsgFor(names: string[]): string {
  return names.length ? `containers with unready status: [${names.join(' ')}]` : 'containers not started';
}

/** Seconds the agent waits between SIGTERM and SIGKILL. */
export function gracePeriodSeconds(pod: V1Pod): number {
  const g = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
  return Math.max(0, g);
}
