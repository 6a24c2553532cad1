// A small CRI v1 RuntimeService client (sandbox calls only) over a unix socket, on @grpc/grpc-js + @grpc/proto-loader.
// Workload containers are not created through CRI: the agent runs them as plain processes in the sandbox netns.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO = fileURLToPath(new URL('./api.proto', import.meta.url));

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface PortMapping {
  protocol?: Protocol;
  containerPort: number;
  hostPort: number;
  hostIp?: string;
}

export interface SandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface DnsConfig {
  servers?: string[];
  searches?: string[];
  options?: string[];
}

export interface SandboxConfig {
  metadata: SandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: DnsConfig;
  portMappings?: PortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** share the node's network namespace (hostNetwork: true) */
  hostNetwork?: boolean;
  cgroupParent?: string;
}

export interface VersionInfo {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export type SandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface SandboxStatus {
  id: string;
  metadata: SandboxMetadata;
  state: SandboxState;
  createdAt: string;
  /** primary IP first; empty for hostNetwork sandboxes */
  ips: string[];
  hostNetwork: boolean;
  /** from the verbose info: the pause process pid and the netns path (containerd) */
  pid?: number;
  netnsPath?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface SandboxSummary {
  id: string;
  metadata: SandboxMetadata;
  state: SandboxState;
  createdAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

export class CriError extends Error {
  readonly method: string;
  readonly grpcCode: number;
  constructor(method: string, grpcCode: number, message: string, options?: { cause?: unknown }) {
    super(`CRI ${method}: ${message}`, options);
    this.name = 'CriError';
    this.method = method;
    this.grpcCode = grpcCode;
  }
  /** the sandbox (or other object) does not exist */
  get notFound(): boolean {
    return this.grpcCode === grpc.status.NOT_FOUND;
  }
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type UnaryMethod = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void;

let serviceCtor: grpc.ServiceClientConstructor | undefined;
function runtimeServiceCtor(): grpc.ServiceClientConstructor {
  if (!serviceCtor) {
    const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } };
    };
    serviceCtor = pkg.runtime.v1.RuntimeService;
  }
  return serviceCtor;
}

interface RawMeta {
  name?: string;
  uid?: string;
  namespace?: string;
  attempt?: number;
}
interface RawStatus {
  id: string;
  metadata?: RawMeta;
  state: SandboxState;
  createdAt: string;
  network?: { ip?: string; additionalIps?: { ip: string }[] };
  linux?: { namespaces?: { options?: { network?: string } } };
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function meta(m: RawMeta | undefined): SandboxMetadata {
  return { name: m?.name ?? '', uid: m?.uid ?? '', namespace: m?.namespace ?? '', attempt: m?.attempt ?? 0 };
}

/** Parse containerd's verbose sandbox info ({"info": "{...pid, runtimeSpec...}"}) for the pid and netns path. */
export function parseSandboxInfo(info: Record<string, string> | undefined): { pid?: number; netnsPath?: string } {
  const raw = info?.['info'];
  if (!raw) return {};
  try {
    const j = JSON.parse(raw) as {
      pid?: number;
      runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } };
    };
    const ns = j.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network');
    const out: { pid?: number; netnsPath?: string } = {};
    if (typeof j.pid === 'number' && j.pid > 0) out.pid = j.pid;
    if (ns?.path) out.netnsPath = ns.path;
    else if (out.pid) out.netnsPath = `/proc/${out.pid}/ns/net`;
    return out;
  } catch {
    return {};
  }
}

export class CriClient {
  readonly socket: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;

  constructor(socket: string, opts: { timeoutMs?: number } = {}) {
    this.socket = socket;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    const Ctor = runtimeServiceCtor();
    this.client = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    });
  }

  private call<T>(method: string, req: object, timeoutMs = this.timeoutMs): Promise<T> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method];
    if (!fn) throw new Error(`CRI method ${method} not in proto`);
    return new Promise((resolve, reject) => {
      fn.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message, { cause: err }));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<VersionInfo> {
    return this.call<VersionInfo>('Version', { version: 'v1' }, 10_000);
  }

  async status(): Promise<RuntimeCondition[]> {
    const res = await this.call<{ status?: { conditions?: RuntimeCondition[] } }>('Status', { verbose: false }, 10_000);
    return res.status?.conditions ?? [];
  }

  async runPodSandbox(cfg: SandboxConfig): Promise<string> {
    const req = {
      config: {
        metadata: { ...cfg.metadata, attempt: cfg.metadata.attempt ?? 0 },
        hostname: cfg.hostname ?? '',
        logDirectory: cfg.logDirectory ?? '',
        dnsConfig: cfg.dnsConfig ?? {},
        portMappings: (cfg.portMappings ?? []).map((p) => ({
          protocol: p.protocol ?? 'TCP',
          containerPort: p.containerPort,
          hostPort: p.hostPort,
          hostIp: p.hostIp ?? '',
        })),
        labels: cfg.labels ?? {},
        annotations: cfg.annotations ?? {},
        linux: {
          cgroupParent: cfg.cgroupParent ?? '',
          securityContext: {
            namespaceOptions: { network: cfg.hostNetwork ? 'NODE' : 'POD', pid: 'CONTAINER', ipc: 'POD' },
          },
        },
      },
      runtimeHandler: '',
    };
    const res = await this.call<{ podSandboxId: string }>('RunPodSandbox', req);
    return res.podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id });
  }

  async podSandboxStatus(id: string): Promise<SandboxStatus> {
    const res = await this.call<{ status?: RawStatus; info?: Record<string, string> }>('PodSandboxStatus', {
      podSandboxId: id,
      verbose: true,
    });
    const s = res.status;
    if (!s) throw new CriError('PodSandboxStatus', grpc.status.NOT_FOUND, `no status for ${id}`);
    const ips: string[] = [];
    if (s.network?.ip) ips.push(s.network.ip);
    for (const a of s.network?.additionalIps ?? []) if (a.ip) ips.push(a.ip);
    return {
      id: s.id,
      metadata: meta(s.metadata),
      state: s.state,
      createdAt: s.createdAt,
      ips,
      hostNetwork: s.linux?.namespaces?.options?.network === 'NODE',
      labels: s.labels ?? {},
      annotations: s.annotations ?? {},
      ...parseSandboxInfo(res.info),
    };
  }

  async listPodSandbox(filter: { id?: string; state?: SandboxState; labels?: Record<string, string> } = {}): Promise<SandboxSummary[]> {
    const f: Record<string, unknown> = {};
    if (filter.id) f['id'] = filter.id;
    if (filter.state) f['state'] = { state: filter.state };
    if (filter.labels) f['labelSelector'] = filter.labels;
    const res = await this.call<{ items?: RawStatus[] }>('ListPodSandbox', { filter: f });
    return (res.items ?? []).map((s) => ({
      id: s.id,
      metadata: meta(s.metadata),
      state: s.state,
      createdAt: s.createdAt,
      labels: s.labels ?? {},
      annotations: s.annotations ?? {},
    }));
  }

  /** Wait until the runtime answers Version (the socket may exist before the server serves). */
  async waitReady(timeoutMs = 30_000): Promise<VersionInfo> {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < end) {
      try {
        return await this.version();
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`CRI at ${this.socket} not ready after ${timeoutMs} ms`, { cause: last });
  }

  close(): void {
    this.client.close();
  }
}
