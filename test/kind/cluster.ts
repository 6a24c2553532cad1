// The kind tier's handle on a cluster made by `npm run kind:up`: a copy of a kind config under a per-run name, up and
// down through the npm scripts users run, and kubectl / docker exec / in-pod requests against it.
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPrefix } from '../helpers/prefix.ts';

export const ROOT = join(import.meta.dirname, '..', '..');
const CACHE = process.env['FLATNET_CACHE'] ?? '/var/cache/flatnet';
export const KUBECTL = join(CACHE, 'k8s-v1.35.4', 'bin', 'kubectl');
export const AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.59';

export const run = (cmd: string, args: string[], o: ExecFileSyncOptions = {}): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...o }) as string;
export const sh = (script: string): string => run('bash', ['-c', script]);
export const dockerExec = (node: string, ...cmd: string[]): string => run('docker', ['exec', node, ...cmd]);

export interface NodeView { name: string; ips: string[]; podCIDRs: string[] }
export interface PodView { name: string; node: string; ips: string[] }

export class KindCluster {
  readonly name: string;
  private readonly dir: string;
  readonly config: string;

  /** `config`: a kind config in the repository; the copy gets `<run prefix>-<suffix>` as its name */
  constructor(config: string, suffix: string) {
    this.name = `${runPrefix()}-${suffix}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.name}-`));
    this.config = join(this.dir, 'kind.yaml');
    writeFileSync(this.config, readFileSync(join(ROOT, config), 'utf8').replace(/^name: .*$/m, `name: ${this.name}`));
  }

  up(): void {
    run('npm', ['run', '-s', 'kind:up', '--', '--config', this.config], { cwd: ROOT, stdio: 'inherit' });
  }

  down(): void {
    run('npm', ['run', '-s', 'kind:down', '--', '--name', this.name], { cwd: ROOT, stdio: 'inherit' });
    rmSync(this.dir, { recursive: true, force: true });
  }

  k(...args: string[]): string {
    return run(KUBECTL, ['--context', `kind-${this.name}`, ...args]);
  }

  apply(yaml: string): string {
    return run(KUBECTL, ['--context', `kind-${this.name}`, 'apply', '-f', '-'], { input: yaml });
  }

  /** one HTTP request from inside a pod; the body is the answer */
  fromPod(ns: string, pod: string, url: string): string {
    return this.k('-n', ns, 'exec', pod, '--', 'curl', '-sS', '-g', '--max-time', '3', url).trim();
  }

  nodes(): NodeView[] {
    const raw = JSON.parse(this.k('get', 'nodes', '-o', 'json')) as {
      items: { metadata: { name: string }; spec: { podCIDRs?: string[] }; status: { addresses: { type: string; address: string }[] } }[];
    };
    return raw.items.map((n) => ({
      name: n.metadata.name,
      ips: n.status.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.address),
      podCIDRs: n.spec.podCIDRs ?? [],
    }));
  }

  /** one agnhost netexec pod on every node (taints tolerated), label app=netexec; waits until they are Ready */
  netexecPods(ns: string): PodView[] {
    this.k('create', 'namespace', ns);
    for (const n of this.nodes()) {
      this.apply(`apiVersion: v1
kind: Pod
metadata: { name: netexec-${n.name.replace(`${this.name}-`, '')}, namespace: ${ns}, labels: { app: netexec } }
spec:
  nodeName: ${n.name}
  tolerations: [{ operator: Exists }]
  containers:
    - name: agnhost
      image: ${AGNHOST}
      imagePullPolicy: Never
      args: ["netexec", "--http-port=8080", "--udp-port=8081"]
`);
    }
    this.k('-n', ns, 'wait', '--for=condition=Ready', 'pod', '-l', 'app=netexec', '--timeout=180s');
    const p = JSON.parse(this.k('-n', ns, 'get', 'pods', '-l', 'app=netexec', '-o', 'json')) as {
      items: { metadata: { name: string }; spec: { nodeName: string }; status: { podIPs?: { ip: string }[] } }[];
    };
    return p.items.map((i) => ({ name: i.metadata.name, node: i.spec.nodeName, ips: (i.status.podIPs ?? []).map((x) => x.ip) }));
  }
}

/** host state kind:up may touch: netfilter of the host's namespace, the links an engine and kind add, kernel settings */
export function hostState(): Record<string, string> {
  const sysctls = ['vm.overcommit_memory', 'vm.panic_on_oom', 'kernel.panic', 'kernel.panic_on_oops', 'kernel.keys.root_maxkeys',
    'kernel.keys.root_maxbytes', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'];
  const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, '')).join('\n');
  return {
    iptables: strip(sh('iptables-save 2>/dev/null || true')),
    ip6tables: strip(sh('ip6tables-save 2>/dev/null || true')),
    // other tiers' tables come and go with their own prefixes; the host's own are what must not change
    nft: sh("nft list tables 2>/dev/null | grep -v -E ' (ft|fn)[0-9a-f]{4}' || true"),
    links: sh("ls /sys/class/net | grep -E '^(docker|br-|veth|kind)' || true"),
    sysctls: sysctls.map((s) => `${s}=${sh(`sysctl -n ${s} 2>/dev/null || true`).trim()}`).join('\n'),
    brNetfilter: sh('[ -d /sys/module/br_netfilter ] && echo loaded || echo absent').trim(),
  };
}
