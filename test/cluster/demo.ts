// npm run demo [-- --nodes 3 --proxy-mode iptables --proxy flatnet|kube-proxy --pod-network routes|overlay --name flatnet]: brings the local cluster up, deploys an agnhost
// netexec app across the nodes (pods pinned with spec.nodeName, a ClusterIP Service), prints a connectivity matrix
// and leaves everything running.
import { clusterHandle, manifest, netexecPod, type Cluster } from '../e2e/helpers/handle.ts';
import { parseArgs, up } from './cli.ts';
import { DEFAULT_CLUSTER_NAME, type PodNetwork, type ProxyImpl, type ProxyMode } from './state.ts';

const NS = 'demo';

interface Cell {
  ok: boolean;
  text: string;
  ms: number;
}

async function probe(c: Cluster, from: string, url: string, expectHost: string | undefined): Promise<Cell> {
  const t0 = Date.now();
  const r = await c.curl(from, url, { allowFail: true, extra: ['-m', '3'] });
  const body = r.stdout.trim();
  const ok = r.code === 0 && (expectHost === undefined ? body.length > 0 : body === expectHost);
  return { ok, text: ok ? body : r.code === 0 ? `?${body.slice(0, 12)}` : `FAIL(${r.code})`, ms: Date.now() - t0 };
}

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((x, i) => x.padEnd(w[i]!)).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const p = parseArgs(['demo', ...process.argv.slice(2)]);
  const str = (k: string) => (typeof p.flags.get(k) === 'string' ? (p.flags.get(k) as string) : undefined);
  const name = str('name') ?? process.env.FLATNET_CLUSTER ?? DEFAULT_CLUSTER_NAME;
  const s = await up({
    name,
    nodes: Number(str('nodes') ?? 3),
    proxyMode: (str('proxy-mode') ?? 'iptables') as ProxyMode,
    proxyImpl: str('proxy') as ProxyImpl | undefined,
    podNetwork: str('pod-network') as PodNetwork | undefined,
  });
  const c = clusterHandle(s);

  // one pod per node, and a second on the first worker so the matrix has a same-node pair
  const placement = c.nodeNames.map((n, i) => ({ pod: `web-${i}`, node: n }));
  if (c.nodeNames.length > 1) placement.push({ pod: `web-${c.nodeNames.length}`, node: c.nodeNames[1]! });
  await c.kubectlResult(['create', 'namespace', NS]);
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: NS },
    spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  };
  process.stderr.write(`[demo] deploying ${placement.length} netexec pods and Service ${NS}/web\n`);
  // the first pod of each node first (one per node, in parallel), then the same-node extra: a node's first CNI ADD
  // creates its cni0 bridge
  const pod = (x: (typeof placement)[number]) => netexecPod({ name: x.pod, namespace: NS, node: x.node, labels: { app: 'web' } });
  const first = placement.slice(0, c.nodeNames.length);
  await c.apply(manifest(svc, ...first.map(pod)));
  await Promise.all(first.map((x) => c.waitPodReady(`${NS}/${x.pod}`, 180_000)));
  if (placement.length > first.length) await c.apply(manifest(...placement.slice(first.length).map(pod)));
  await c.waitPodsReady(NS, 'app=web', placement.length, 180_000);
  const pods = await Promise.all(placement.map(async (x) => ({ ...x, ip: await c.podIP(`${NS}/${x.pod}`) })));
  const clusterIP = await c.kubectl(['get', 'svc', 'web', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}']);

  const header = ['from \\ to', ...pods.map((x) => `${x.pod}@${x.node.slice(name.length + 1)}`), `svc ${clusterIP}`];
  const rows: string[][] = [header];
  const sources = [...pods.map((x) => ({ label: `${x.pod} (${x.ip})`, target: `${NS}/${x.pod}`, node: x.node })), ...c.nodeNames.map((n) => ({ label: `node ${n}`, target: n, node: n }))];
  let failures = 0;
  for (const src of sources) {
    const row = [src.label];
    for (const dst of pods) {
      const cell = await probe(c, src.target, `http://${dst.ip}:8080/hostname`, dst.pod);
      if (!cell.ok) failures++;
      const where = src.target === `${NS}/${dst.pod}` ? 'self' : src.node === dst.node ? 'same' : 'cross';
      row.push(`${cell.ok ? 'ok' : cell.text} ${where}`);
    }
    const svcCell = await probe(c, src.target, `http://${clusterIP}:80/hostname`, undefined);
    if (!svcCell.ok) failures++;
    row.push(svcCell.ok ? `ok -> ${svcCell.text}` : svcCell.text);
    rows.push(row);
  }
  process.stdout.write(`\nConnectivity (HTTP GET /hostname; same = same node, cross = another node, svc = ClusterIP via the node daemon):\n\n`);
  process.stdout.write(table(rows) + '\n');
  process.stdout.write(`\n${failures === 0 ? 'all paths work' : `${failures} path(s) failed`} (proxy ${s.options.proxyImpl ?? 'flatnet'} ${s.options.proxyMode}, pod network ${s.options.podNetwork})\n`);
  const nameFlag = name === DEFAULT_CLUSTER_NAME ? '' : ` -- --name ${name}`;
  process.stdout.write(`
The cluster is still running. Try:
  eval "$(npm run -s cluster:env${nameFlag})"; $KUBECTL get pods -n ${NS} -o wide
  npm run -s cluster:exec -- ${name === DEFAULT_CLUSTER_NAME ? '' : `--name ${name} `}${NS}/${pods[0]!.pod} -- curl -s http://${clusterIP}/hostname
Tear it down with: npm run cluster:down${nameFlag}
`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
