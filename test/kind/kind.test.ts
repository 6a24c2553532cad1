// The kind tier: `npm run kind:up` on a config of this run's own name (3 nodes, no kindnet, no kube-proxy), then what
// users rely on, observed on the real cluster (kubeadm, kubelets exec'ing flatnet's plugins, flatnet's DaemonSet):
// pods on every node get addresses from their node's podCIDR, reach each other across nodes without NAT, reach a
// Service's ClusterIP and NodePort, resolve names through CoreDNS, leave the cluster masqueraded, and are isolated by a
// NetworkPolicy. Then `npm run kind:down`, after which the host's netfilter, links and kernel settings are what they
// were before kind:up.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cidrContainsText } from '../../lib/net/ip.ts';
import { waitFor } from '../helpers/wait.ts';
import { AGNHOST, dockerExec, hostState, KindCluster, ROOT, run, sh } from './cluster.ts';

const NS = 'kind-tier';
const cluster = new KindCluster('kind-config.yaml', 'kind');
const NAME = cluster.name;
const k = (...args: string[]): string => cluster.k(...args);
const kApply = (yaml: string): string => cluster.apply(yaml);
const fromPod = (pod: string, url: string): string => cluster.fromPod(NS, pod, url);

interface PodView { name: string; node: string; ip: string }
let before: Record<string, string> = {};
let nodes: { name: string; ip: string; podCIDR: string }[] = [];
let pods: PodView[] = [];
let externalIP = '';
const external = `${NAME}-external`;

function switchMode(mode: 'iptables' | 'nftables'): void {
  const cm = JSON.parse(k('-n', 'flatnet-system', 'get', 'configmap', 'flatnet-config', '-o', 'json')) as { data: Record<string, string> };
  cm.data['config.yaml'] = cm.data['config.yaml']!.replace(/^mode: *[a-z]+/m, `mode: ${mode}`);
  k('-n', 'flatnet-system', 'patch', 'configmap', 'flatnet-config', '--type', 'merge', '-p', JSON.stringify({ data: { 'config.yaml': cm.data['config.yaml'] } }));
  k('-n', 'flatnet-system', 'rollout', 'restart', 'ds/flatnet');
  k('-n', 'flatnet-system', 'rollout', 'status', 'ds/flatnet', '--timeout=300s');
}

/** polls a synchronous read until it stops throwing (a file the pod writes when its loop ends) */
function waitForSync(fn: () => string): string {
  for (let i = 0; ; i++) {
    try {
      return fn();
    } catch (e) {
      if (i > 60) throw e;
      execFileSync('sleep', ['1']);
    }
  }
}

describe('kind: npm run kind:up, a 3-node cluster running flatnet', () => {
  beforeAll(() => {
    // an engine kind:up started earlier and no cluster left: kind:down stops it first, so "before" is the host as
    // a fresh machine has it (with other kind clusters running it leaves everything, and so does the end of this run)
    run('npm', ['run', '-s', 'kind:down', '--', '--name', NAME], { cwd: ROOT, stdio: 'inherit' });
    before = hostState();
    cluster.up();
    nodes = cluster.nodes().map((n) => ({ name: n.name, ip: n.ips[0]!, podCIDR: n.podCIDRs[0]! }));
    // one agnhost netexec pod on every node (the control plane's taint tolerated), and a Service in front of them
    pods = cluster.netexecPods(NS).map((p) => ({ name: p.name, node: p.node, ip: p.ips[0]! }));
    kApply(`apiVersion: v1
kind: Service
metadata: { name: netexec, namespace: ${NS} }
spec:
  type: NodePort
  selector: { app: netexec }
  ports: [{ name: http, port: 80, targetPort: 8080, protocol: TCP }]
`);
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
    cluster.down();
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
      expect(cidrContainsText(node!.podCIDR, p.ip), `${p.ip} in ${node!.podCIDR}`).toBe(true);
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

  it('pods resolve Service names through the kube-dns Service, over UDP and over TCP', () => {
    const ip = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIP}');
    const dns = k('-n', 'kube-system', 'get', 'svc', 'kube-dns', '-o', 'jsonpath={.spec.clusterIP}');
    for (const a of pods) {
      for (const transport of ['+notcp', '+tcp']) {
        const out = k('-n', NS, 'exec', a.name, '--', 'dig', `@${dns}`, transport, '+short', '+time=3', '+tries=2', `netexec.${NS}.svc.cluster.local`);
        expect(out.trim(), `${a.name} ${transport}`).toBe(ip);
      }
      expect(fromPod(a.name, 'http://netexec/hostname')).toMatch(/^netexec-/);
    }
  });

  it('hostPort: the pod answers on its node address; deleting the pod removes the mapping (CNI DEL through kubelet)', async () => {
    const node = nodes.find((n) => n.name.endsWith('-worker'))!;
    const hostPort = 31180;
    kApply(`apiVersion: v1
kind: Pod
metadata: { name: hostport, namespace: ${NS} }
spec:
  nodeName: ${node.name}
  containers:
    - name: agnhost
      image: ${AGNHOST}
      imagePullPolicy: Never
      args: ["netexec", "--http-port=8080"]
      ports: [{ containerPort: 8080, hostPort: ${hostPort}, protocol: TCP }]
`);
    k('-n', NS, 'wait', '--for=condition=Ready', 'pod/hostport', '--timeout=120s');
    const rules = () => dockerExec(node.name, 'sh', '-c', `{ iptables-save; nft list ruleset; } 2>/dev/null | grep -c ${hostPort} || true`).trim();
    expect(Number(rules())).toBeGreaterThan(0);
    expect(await waitFor('host -> hostPort', () => sh(`curl -sS --max-time 3 http://${node.ip}:${hostPort}/hostname`).trim())).toBe('hostport');
    const other = pods.find((p) => p.node !== node.name)!;
    expect(fromPod(other.name, `http://${node.ip}:${hostPort}/hostname`)).toBe('hostport');
    k('-n', NS, 'delete', 'pod', 'hostport', '--wait=true', '--timeout=120s');
    await waitFor('hostPort rules removed', () => rules() === '0', 60_000, 500);
  });

  it('traffic leaving the cluster is masqueraded to the node address', () => {
    for (const a of pods) {
      const node = nodes.find((n) => n.name === a.node)!;
      expect(fromPod(a.name, `http://${externalIP}:8080/clientip`).split(':')[0], a.name).toBe(node.ip);
    }
  });

  it('a NetworkPolicy isolates the pods it selects, from other nodes and from its own bridge, and lets in what it allows', async () => {
    const [target, allowed, denied] = pods as [PodView, PodView, PodView];
    // a client on the target's node: its packets cross only the node's bridge (br_netfilter, set by init-node)
    kApply(`apiVersion: v1
kind: Pod
metadata: { name: neighbour, namespace: ${NS} }
spec:
  nodeName: ${target.node}
  tolerations: [{ operator: Exists }]
  containers: [{ name: agnhost, image: ${AGNHOST}, imagePullPolicy: Never, args: ["pause"] }]
`);
    k('-n', NS, 'wait', '--for=condition=Ready', 'pod/neighbour', '--timeout=120s');
    for (const n of nodes) expect(dockerExec(n.name, 'sysctl', '-n', 'net.bridge.bridge-nf-call-iptables').trim(), n.name).toBe('1');
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
    expect(() => fromPod('neighbour', url)).toThrow();
    expect(fromPod(allowed.name, url)).toBe(target.name);
    k('-n', NS, 'label', 'pod', 'neighbour', 'role=client');
    await waitFor('neighbour, now a client, let in', () => fromPod('neighbour', url) === target.name, 60_000, 200);
    k('-n', NS, 'delete', 'networkpolicy', 'only-clients');
    await waitFor(`${denied.name} -> ${target.name} allowed again`, () => fromPod(denied.name, url) === target.name, 60_000, 200);
    k('-n', NS, 'delete', 'pod', 'neighbour', '--wait=false');
  });

  // The mode is switched the way users and kind:conformance do it: the ConfigMap, then a DaemonSet rollout.
  for (const mode of ['nftables', 'iptables'] as const) {
    it(`proxy mode ${mode} (switched through the ConfigMap): its rules on every node, ClusterIP, NodePort, affinity, externalTrafficPolicy Local`, async () => {
      switchMode(mode);
      for (const n of nodes) {
        const state = mode === 'nftables'
          ? dockerExec(n.name, 'nft', 'list', 'tables')
          : dockerExec(n.name, 'sh', '-c', 'iptables-save -t nat');
        expect(state, n.name).toContain(mode === 'nftables' ? 'table ip flatnet-proxy' : ':FLATNET-SERVICES');
      }
      const ip = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIP}');
      const port = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.ports[0].nodePort}');
      for (const a of pods) {
        const seen = new Set<string>();
        await waitFor(`${mode}: ${a.name} reaching all backends through ${ip}`, () => {
          seen.add(fromPod(a.name, `http://${ip}/hostname`));
          return seen.size === 3;
        }, 60_000, 50);
      }
      for (const n of nodes) {
        expect(pods.map((p) => p.name)).toContain(await waitFor(`${mode}: host -> ${n.ip}:${port}`, () => sh(`curl -sS --max-time 3 http://${n.ip}:${port}/hostname`).trim()));
      }
      // ClientIP affinity: one client, one backend
      kApply(`apiVersion: v1
kind: Service
metadata: { name: sticky, namespace: ${NS} }
spec:
  selector: { app: netexec }
  sessionAffinity: ClientIP
  ports: [{ port: 80, targetPort: 8080 }]
`);
      const sticky = k('-n', NS, 'get', 'svc', 'sticky', '-o', 'jsonpath={.spec.clusterIP}');
      const client = pods[0]!;
      await waitFor(`${mode}: sticky reachable`, () => fromPod(client.name, `http://${sticky}/hostname`));
      const answers = new Set<string>();
      for (let i = 0; i < 20; i++) answers.add(fromPod(client.name, `http://${sticky}/hostname`));
      expect(answers.size).toBe(1);
      // externalTrafficPolicy Local: the host's own address arrives at the pod (no SNAT) on the endpoint's node
      const target = pods.find((p) => p.node.endsWith('-worker'))!;
      const targetNode = nodes.find((n) => n.name === target.node)!;
      k('-n', NS, 'label', 'pod', target.name, 'local=yes', '--overwrite');
      kApply(`apiVersion: v1
kind: Service
metadata: { name: local, namespace: ${NS} }
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: { local: "yes" }
  ports: [{ port: 80, targetPort: 8080 }]
`);
      const localPort = k('-n', NS, 'get', 'svc', 'local', '-o', 'jsonpath={.spec.ports[0].nodePort}');
      const hostAddr = / src (\S+)/.exec(sh(`ip -4 -o route get ${targetNode.ip}`))?.[1];
      const seenFrom = await waitFor(`${mode}: host -> Local NodePort`, () => sh(`curl -sS --max-time 3 http://${targetNode.ip}:${localPort}/clientip`).trim());
      expect(seenFrom.split(':')[0]).toBe(hostAddr);
      k('-n', NS, 'delete', 'svc', 'sticky', 'local');
    });
  }

  it('a rollout restart of the flatnet DaemonSet under a client loop loses no request', () => {
    const ip = k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIP}');
    const client = pods[0]!;
    k('-n', NS, 'exec', client.name, '--', 'rm', '-f', '/tmp/stop', '/tmp/loop.out');
    // the loop runs in the pod until told to stop, counting answered and failed requests
    k('-n', NS, 'exec', client.name, '--', 'sh', '-c',
      `nohup sh -c 'ok=0; fail=0; while [ ! -f /tmp/stop ]; do if curl -s --max-time 2 -o /dev/null http://${ip}/hostname; then ok=$((ok+1)); else fail=$((fail+1)); fi; done; echo "$ok $fail" > /tmp/loop.out' >/dev/null 2>&1 &`);
    k('-n', 'flatnet-system', 'rollout', 'restart', 'ds/flatnet');
    k('-n', 'flatnet-system', 'rollout', 'status', 'ds/flatnet', '--timeout=300s');
    k('-n', NS, 'exec', client.name, '--', 'touch', '/tmp/stop');
    const out = waitForSync(() => k('-n', NS, 'exec', client.name, '--', 'cat', '/tmp/loop.out').trim());
    const [ok, fail] = out.split(' ').map(Number) as [number, number];
    expect(ok).toBeGreaterThan(50);
    expect(fail).toBe(0);
  });

  it('pod churn with a kubelet restart in the middle leaves no stale IP allocation, veth or CNI state', async () => {
    const node = nodes.find((n) => n.name.endsWith('-worker2'))!;
    const churn = (i: number) => `apiVersion: v1
kind: Pod
metadata: { name: churn-${i}, namespace: ${NS}, labels: { churn: "yes" } }
spec:
  nodeName: ${node.name}
  terminationGracePeriodSeconds: 1
  containers: [{ name: pause, image: ${AGNHOST}, imagePullPolicy: Never, args: ["pause"] }]
`;
    for (let i = 0; i < 8; i++) kApply(churn(i));
    k('-n', NS, 'wait', '--for=condition=Ready', 'pod', '-l', 'churn=yes', '--timeout=180s');
    k('-n', NS, 'delete', 'pod', 'churn-0', 'churn-1', 'churn-2', 'churn-3', '--wait=false');
    dockerExec(node.name, 'systemctl', 'restart', 'kubelet');
    for (let i = 8; i < 12; i++) kApply(churn(i));
    k('-n', NS, 'delete', 'pod', 'churn-4', 'churn-5', '--wait=false');
    dockerExec(node.name, 'systemctl', 'restart', 'kubelet');
    await waitFor('churn settled', () => {
      const left = k('-n', NS, 'get', 'pods', '-l', 'churn=yes', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{"\\n"}{end}').split('\n').filter((l) => l.trim());
      // six left, each Running and not being deleted (an empty deletionTimestamp)
      return left.length === 6 && left.every((l) => /^\S+ Running\s*$/.test(l));
    }, 240_000, 1000);
    k('-n', NS, 'delete', 'pod', '-l', 'churn=yes', '--wait=true', '--timeout=180s');
    // what the node holds must be exactly what its remaining pods use
    const expected = JSON.parse(k('get', 'pods', '-A', '--field-selector', `spec.nodeName=${node.name}`, '-o', 'json')) as { items: { spec: { hostNetwork?: boolean }; status: { podIP?: string } }[] };
    const podIPs = expected.items.filter((i) => !i.spec.hostNetwork).map((i) => i.status.podIP ?? '').sort();
    await waitFor('allocations equal the pods on the node', () => {
      const files = dockerExec(node.name, 'sh', '-c', 'ls /var/lib/cni/networks/flatnet 2>/dev/null | grep -E "^[0-9a-f.:]+$" || true').trim();
      return JSON.stringify(files ? files.split('\n').sort() : []) === JSON.stringify(podIPs);
    }, 60_000, 500);
    const veths = dockerExec(node.name, 'sh', '-c', 'ip -o link show master cni0 type veth 2>/dev/null | wc -l').trim();
    expect(Number(veths)).toBe(podIPs.length);
    const state = dockerExec(node.name, 'sh', '-c', 'ls /var/lib/cni/flatnet 2>/dev/null | grep -c json || true').trim();
    expect(Number(state)).toBe(podIPs.length);
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
