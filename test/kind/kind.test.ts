// The kind tier: `npm run kind:up` on a config of this run's own name (3 nodes, no kindnet, no kube-proxy), then what
// users rely on, observed on the real cluster (kubeadm, kubelets exec'ing flatnet's plugins, flatnet's DaemonSet):
// pods on every node get addresses from their node's podCIDR, reach each other across nodes without NAT, reach a
// Service's ClusterIP and NodePort, resolve names through CoreDNS, leave the cluster masqueraded, and are isolated by a
// NetworkPolicy. Then `npm run kind:down`, after which the host's netfilter, links and kernel settings are what they
// were before kind:up.
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPrefix } from '../helpers/prefix.ts';
import { waitFor } from '../helpers/wait.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const CACHE = process.env['FLATNET_CACHE'] ?? '/var/cache/flatnet';
const KUBECTL = join(CACHE, 'k8s-v1.35.4', 'bin', 'kubectl');
const AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.59';
const NAME = `${runPrefix()}-kind`;
const NS = 'kind-tier';

const run = (cmd: string, args: string[], o: ExecFileSyncOptions = {}): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...o }) as string;
const sh = (script: string): string => run('bash', ['-c', script]);
const k = (...args: string[]): string => run(KUBECTL, ['--context', `kind-${NAME}`, ...args]);
const kApply = (yaml: string): string => run(KUBECTL, ['--context', `kind-${NAME}`, 'apply', '-f', '-'], { input: yaml });
const dockerExec = (node: string, ...cmd: string[]): string => run('docker', ['exec', node, ...cmd]);
/** one request from inside a pod (agnhost's connect/curl are not used: the answer's body is what we check) */
const fromPod = (pod: string, url: string): string =>
  k('-n', NS, 'exec', pod, '--', 'curl', '-sS', '--max-time', '3', url).trim();

/** host state kind:up may touch: netfilter of the host's namespace, links, kernel settings */
function hostState(): Record<string, string> {
  const sysctls = ['vm.overcommit_memory', 'vm.panic_on_oom', 'kernel.panic', 'kernel.panic_on_oops', 'kernel.keys.root_maxkeys',
    'kernel.keys.root_maxbytes', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'];
  const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, '')).join('\n');
  return {
    iptables: strip(sh('iptables-save 2>/dev/null || true')),
    ip6tables: strip(sh('ip6tables-save 2>/dev/null || true')),
    // our other tiers' tables come and go with their own prefixes; the host's own are what must not change
    nft: sh("nft list tables 2>/dev/null | grep -v -E ' (ft|fn)[0-9a-f]{4}' || true"),
    // what an engine and kind add (other tiers' links come and go with their own prefixes)
    links: sh("ls /sys/class/net | grep -E '^(docker|br-|veth|kind)' || true"),
    sysctls: sysctls.map((s) => `${s}=${sh(`sysctl -n ${s} 2>/dev/null || true`).trim()}`).join('\n'),
    brNetfilter: sh('[ -d /sys/module/br_netfilter ] && echo loaded || echo absent').trim(),
  };
}

interface PodView { name: string; node: string; ip: string }
let before: Record<string, string> = {};
let tmp = '';
let nodes: { name: string; ip: string; podCIDR: string }[] = [];
let pods: PodView[] = [];
let externalIP = '';
const external = `${NAME}-external`;

function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/') as [string, string];
  const n = (a: string) => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(n(ip) / size) === Math.floor(n(net) / size);
}

describe('kind: npm run kind:up, a 3-node cluster running flatnet', () => {
  beforeAll(() => {
    // an engine kind:up started earlier and no cluster left: kind:down stops it first, so "before" is the host as
    // a fresh machine has it (with other kind clusters running it leaves everything, and so does the end of this run)
    run('npm', ['run', '-s', 'kind:down', '--', '--name', NAME], { cwd: ROOT, stdio: 'inherit' });
    before = hostState();
    tmp = mkdtempSync(join(tmpdir(), `${NAME}-`));
    const cfg = readFileSync(join(ROOT, 'kind-config.yaml'), 'utf8').replace(/^name: .*$/m, `name: ${NAME}`);
    writeFileSync(join(tmp, 'kind.yaml'), cfg);
    run('npm', ['run', '-s', 'kind:up', '--', '--config', join(tmp, 'kind.yaml')], { cwd: ROOT, stdio: 'inherit' });

    const raw = JSON.parse(k('get', 'nodes', '-o', 'json')) as { items: { metadata: { name: string }; spec: { podCIDR: string }; status: { addresses: { type: string; address: string }[] } }[] };
    nodes = raw.items.map((n) => ({
      name: n.metadata.name,
      ip: n.status.addresses.find((a) => a.type === 'InternalIP')?.address ?? '',
      podCIDR: n.spec.podCIDR,
    }));
    // one agnhost netexec pod on every node (the control plane's taint tolerated), and a Service in front of them
    k('create', 'namespace', NS);
    for (const n of nodes) {
      kApply(`apiVersion: v1
kind: Pod
metadata: { name: netexec-${n.name.replace(`${NAME}-`, '')}, namespace: ${NS}, labels: { app: netexec } }
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
    kApply(`apiVersion: v1
kind: Service
metadata: { name: netexec, namespace: ${NS} }
spec:
  type: NodePort
  selector: { app: netexec }
  ports: [{ name: http, port: 80, targetPort: 8080, protocol: TCP }]
`);
    k('-n', NS, 'wait', '--for=condition=Ready', 'pod', '-l', 'app=netexec', '--timeout=180s');
    const p = JSON.parse(k('-n', NS, 'get', 'pods', '-o', 'json')) as { items: { metadata: { name: string }; spec: { nodeName: string }; status: { podIP: string } }[] };
    pods = p.items.map((i) => ({ name: i.metadata.name, node: i.spec.nodeName, ip: i.status.podIP }));
    // a server outside the cluster, on the nodes' Docker network
    run('docker', ['run', '-d', '--name', external, '--network', 'kind', '--entrypoint', '/agnhost', AGNHOST, 'netexec', '--http-port=8080']);
    externalIP = run('docker', ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', external]).trim();
  }, 1_200_000);

  afterAll(() => {
    try {
      run('docker', ['rm', '-f', external]);
    } catch {
      // not created
    }
    run('npm', ['run', '-s', 'kind:down', '--', '--name', NAME], { cwd: ROOT, stdio: 'inherit' });
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 600_000);

  it('every node is Ready, with flatnet running and its plugins and conflist installed', () => {
    expect(nodes).toHaveLength(3);
    const ready = k('get', 'nodes', '-o', 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}').trim().split('\n');
    expect(ready).toEqual(['True', 'True', 'True']);
    const ds = JSON.parse(k('-n', 'flatnet-system', 'get', 'ds', 'flatnet', '-o', 'json')) as { status: { numberReady: number } };
    expect(ds.status.numberReady).toBe(3);
    // the binaries on each node are the ones `npm run build` wrote (one SEA binary under five names)
    const sea = createHash('sha256').update(readFileSync(realpathSync(join(ROOT, 'dist', 'bin', 'bridge')))).digest('hex');
    for (const n of nodes) {
      for (const plugin of ['bridge', 'host-local', 'loopback', 'portmap', 'vxlan']) {
        expect(dockerExec(n.name, 'sha256sum', `/opt/cni/bin/${plugin}`).split(' ')[0], `${n.name} ${plugin}`).toBe(sea);
      }
      const conf = JSON.parse(dockerExec(n.name, 'cat', '/etc/cni/net.d/10-flatnet.conflist')) as { plugins: { type: string }[] };
      expect(conf.plugins.map((pl) => pl.type)).toEqual(['vxlan', 'portmap']);
      expect(dockerExec(n.name, 'ls', '/etc/cni/net.d').trim().split('\n')).toEqual(['10-flatnet.conflist']);
      // agnhost:2.59 is in every node's containerd, as the contract says
      expect(dockerExec(n.name, 'crictl', 'images', '-o', 'json')).toContain(AGNHOST);
    }
  });

  it('each pod gets an address from its own node podCIDR, all distinct', () => {
    expect(pods).toHaveLength(3);
    for (const p of pods) {
      const node = nodes.find((n) => n.name === p.node);
      expect(node, p.name).toBeDefined();
      expect(inCidr(p.ip, node!.podCIDR), `${p.ip} in ${node!.podCIDR}`).toBe(true);
    }
    expect(new Set(pods.map((p) => p.ip)).size).toBe(3);
  });

  it('pods reach pods on every node without NAT, and a pod sees its own IP as others see it', () => {
    for (const a of pods) {
      for (const b of pods) {
        // netexec answers with the address the request came from
        const seen = fromPod(a.name, `http://${b.ip}:8080/clientip`);
        expect(seen.split(':')[0], `${a.name} -> ${b.name}`).toBe(a.ip);
      }
      expect(k('-n', NS, 'exec', a.name, '--', 'ip', '-4', '-o', 'addr', 'show', 'eth0')).toContain(` ${a.ip}/`);
    }
  });

  it('nodes reach pods on other nodes', () => {
    for (const n of nodes) {
      for (const p of pods) {
        expect(dockerExec(n.name, 'curl', '-sS', '--max-time', '3', `http://${p.ip}:8080/hostname`).trim()).toBe(p.name);
      }
    }
  });

  it('a ClusterIP Service load-balances over the pods of every node, from every pod', async () => {
    const ip = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIP}');
    for (const a of pods) {
      const seen = new Set<string>();
      await waitFor(`${a.name} reaching all 3 backends through ${ip}`, () => {
        seen.add(fromPod(a.name, `http://${ip}/hostname`));
        return seen.size === 3;
      }, 60_000, 50);
      expect([...seen].sort()).toEqual(pods.map((p) => p.name).sort());
    }
  });

  it('the NodePort answers on every node address, from the host and from pods', async () => {
    const port = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.ports[0].nodePort}');
    for (const n of nodes) {
      const name = await waitFor(`host -> ${n.ip}:${port}`, () => sh(`curl -sS --max-time 3 http://${n.ip}:${port}/hostname`).trim());
      expect(pods.map((p) => p.name)).toContain(name);
      for (const a of pods) {
        expect(pods.map((p) => p.name)).toContain(fromPod(a.name, `http://${n.ip}:${port}/hostname`));
      }
    }
  });

  it('pods resolve Service names through CoreDNS', () => {
    const ip = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIP}');
    for (const a of pods) {
      const out = k('-n', NS, 'exec', a.name, '--', 'dig', '+short', '+time=3', '+tries=2', `netexec.${NS}.svc.cluster.local`);
      expect(out.trim(), a.name).toBe(ip);
      expect(fromPod(a.name, 'http://netexec/hostname')).toMatch(/^netexec-/);
    }
  });

  it('traffic leaving the cluster is masqueraded to the node address', () => {
    for (const a of pods) {
      const node = nodes.find((n) => n.name === a.node)!;
      expect(fromPod(a.name, `http://${externalIP}:8080/clientip`).split(':')[0], a.name).toBe(node.ip);
    }
  });

  it('a NetworkPolicy isolates the pods it selects, and lets in what it allows', async () => {
    const [target, allowed, denied] = pods as [PodView, PodView, PodView];
    k('-n', NS, 'label', 'pod', allowed.name, 'role=client');
    k('-n', NS, 'label', 'pod', target.name, 'isolated=yes');
    kApply(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: only-clients, namespace: ${NS} }
spec:
  podSelector: { matchLabels: { isolated: "yes" } }
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: { matchLabels: { role: client } } }], ports: [{ port: 8080, protocol: TCP }] }]
`);
    const url = `http://${target.ip}:8080/hostname`;
    await waitFor(`${denied.name} -> ${target.name} refused`, () => {
      try {
        fromPod(denied.name, url);
        return false;
      } catch {
        return true;
      }
    }, 60_000, 200);
    expect(fromPod(allowed.name, url)).toBe(target.name);
    k('-n', NS, 'delete', 'networkpolicy', 'only-clients');
    await waitFor(`${denied.name} -> ${target.name} allowed again`, () => fromPod(denied.name, url) === target.name, 60_000, 200);
  });
});

describe('kind: npm run kind:down', () => {
  it('removes the cluster and leaves the host as it was', () => {
    // the suite above ends with kind:down in its afterAll; running it again here is a no-op that proves idempotence
    run('npm', ['run', '-s', 'kind:down', '--', '--name', NAME], { cwd: ROOT, stdio: 'inherit' });
    expect(sh(`docker ps -a --format '{{.Names}}' 2>/dev/null | grep '^${NAME}' || true`).trim()).toBe('');
    const after = hostState();
    for (const key of Object.keys(before)) expect(after[key], key).toBe(before[key]);
  });
});
