// Service proxy e2e on the local cluster (real apiserver, controllers, containerd pods, flatnet's daemon per node).
// The proxy mode comes from FLATNET_PROXY_MODE (default iptables) so the same scenarios run for nftables.
// Scenarios follow the kube-proxy-dependent conformance tests named in ANCHORS section 4.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { record, loadState } from '../cluster/state.ts';
import { startDetached, stopProcess } from '../cluster/control-plane/proc.ts';
import { waitFor } from '../helpers/wait.ts';
import { manifest, netexecPod, useCluster, type Cluster } from './helpers/cluster.ts';

type Mode = 'iptables' | 'nftables' | 'ipvs';
const MODE = (process.env.FLATNET_PROXY_MODE ?? 'iptables') as Mode;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface SvcJson {
  spec: { clusterIP?: string; ports?: { name?: string; nodePort?: number; port: number }[]; healthCheckNodePort?: number };
}

function service(ns: string, name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec };
}
const http = (port = 80, targetPort = 8080, name = 'http') => ({ name, port, targetPort, protocol: 'TCP' });

/** poll fn until it returns a value (not undefined) or the timeout passes; returns the last value */
async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  return waitFor(what, fn, timeoutMs, 500);
}

describe(`service proxy e2e (${MODE})`, () => {
  let c: Cluster;
  let ns: string;
  let worker: string;
  let worker2: string;
  const extRoutes: string[] = [];

  const get = (name: string) => c.kubectlJson<SvcJson>(['get', 'svc', '-n', ns, name]);
  const ipOf = async (name: string) => (await get(name)).spec.clusterIP!;
  const nodePortOf = async (name: string, i = 0) => (await get(name)).spec.ports![i]!.nodePort!;

  /** one request; returns trimmed body or undefined on failure */
  async function tryCurl(target: string, url: string, timeoutS = 3): Promise<string | undefined> {
    const r = await c.exec(target, ['curl', '-sS', '-m', String(timeoutS), url], { allowFail: true });
    return r.code === 0 ? r.stdout.trim() : undefined;
  }
  async function hostnames(target: string, url: string, n: number): Promise<Set<string>> {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const h = await tryCurl(target, url);
      seen.add(h ?? 'FAIL');
    }
    return seen;
  }
  async function udp(target: string, ip: string, port: number, msg: string, sourcePort?: number): Promise<string | undefined> {
    const addr = `UDP:${ip}:${port}${sourcePort ? `,sourceport=${sourcePort},reuseaddr` : ''}`;
    const r = await c.exec(target, ['socat', '-T1', '-', addr], { input: msg + '\n', allowFail: true, timeoutMs: 5000 });
    const out = r.stdout.trim();
    return out || undefined;
  }

  beforeAll(async () => {
    c = await useCluster({ nodes: 3, proxyMode: MODE });
    worker = c.nodeNames[1]!;
    worker2 = c.nodeNames[2]!;
    ns = await c.createNamespace('proxy');
    const pods = [
      netexecPod({ name: 's1', namespace: ns, node: worker, labels: { app: 'web', pod: 's1' } }),
      netexecPod({ name: 's2', namespace: ns, node: worker2, labels: { app: 'web', pod: 's2' } }),
      netexecPod({ name: 'c1', namespace: ns, node: worker, labels: { role: 'client' } }),
      netexecPod({ name: 'c2', namespace: ns, node: worker2, labels: { role: 'client' } }),
      netexecPod({ name: 'u1', namespace: ns, node: worker2, labels: { role: 'dns' } }),
    ];
    const svcs = [
      service(ns, 'web', { selector: { app: 'web' }, ports: [http()] }),
      service(ns, 'multi', {
        selector: { pod: 's1' },
        ports: [http(80, 8080, 'http'), { name: 'udp', port: 81, targetPort: 8081, protocol: 'UDP' }],
      }),
      service(ns, 'dual', {
        selector: { pod: 's2' },
        ports: [
          { name: 'tcp', port: 53, targetPort: 8080, protocol: 'TCP' },
          { name: 'udp', port: 53, targetPort: 8081, protocol: 'UDP' },
        ],
      }),
      service(ns, 'np', { type: 'NodePort', selector: { app: 'web' }, ports: [http()] }),
      service(ns, 'aff', { selector: { app: 'web' }, sessionAffinity: 'ClientIP', ports: [http()] }),
      service(ns, 'affnp', { type: 'NodePort', selector: { app: 'web' }, sessionAffinity: 'ClientIP', ports: [http()] }),
      // healthCheckNodePort is allocated for type LoadBalancer only
      service(ns, 'etp', { type: 'LoadBalancer', externalTrafficPolicy: 'Local', selector: { pod: 's1' }, ports: [http()] }),
      service(ns, 'itp', { internalTrafficPolicy: 'Local', selector: { pod: 's1' }, ports: [http()] }),
      service(ns, 'none', { selector: { app: 'nothing' }, ports: [http()] }),
      service(ns, 'self', { selector: { pod: 's1' }, ports: [http()] }),
      service(ns, 'dns', { selector: { role: 'dns' }, ports: [{ name: 'dns', port: 53, targetPort: 8081, protocol: 'UDP' }] }),
      service(ns, 'lb', { type: 'LoadBalancer', selector: { app: 'web' }, ports: [http()] }),
      service(ns, 'extip', { selector: { app: 'web' }, externalIPs: ['192.0.2.101'], ports: [http()] }),
    ];
    await c.apply(manifest(...svcs, ...pods));
    await c.waitPodsReady(ns, 'app=web', 2, 180_000);
    await c.waitPodsReady(ns, 'role=client', 2, 180_000);
    await c.waitPodsReady(ns, 'role=dns', 1, 180_000);
    // LoadBalancer status (no cloud controller here): set ingress by hand
    await c.kubectl([
      'patch', 'svc', 'lb', '-n', ns, '--subresource=status', '--type=merge',
      '-p', JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: '192.0.2.100', ipMode: 'VIP' }] } } }),
    ]);
    // the external client reaches the LB / external IPs through the first worker
    for (const ip of ['192.0.2.100/32', '192.0.2.101/32']) {
      await c.exec('external', ['ip', 'route', 'replace', ip, 'via', c.nodeIP(worker)]);
      extRoutes.push(ip);
    }
    // wait until the proxy serves the web service from a client pod
    const ip = await ipOf('web');
    await eventually('web reachable', async () => tryCurl(`${ns}/c1`, `http://${ip}/hostname`), 60_000);
  }, 600_000);

  afterAll(async () => {
    if (!c) return;
    for (const r of extRoutes) await c.exec('external', ['ip', 'route', 'del', r], { allowFail: true });
    if (ns) await c.deleteNamespace(ns);
  });

  it('serves a basic endpoint from pods (both endpoints, client IP preserved)', async () => {
    const ip = await ipOf('web');
    expect(await hostnames(`${ns}/c1`, `http://${ip}/hostname`, 20)).toEqual(new Set(['s1', 's2']));
    const seen = await tryCurl(`${ns}/c1`, `http://${ip}/clientip`);
    expect(seen?.replace(/:\d+$/, '')).toBe(await c.podIP(`${ns}/c1`));
  });

  it('serves multiport endpoints from pods', async () => {
    const ip = await ipOf('multi');
    expect(await tryCurl(`${ns}/c2`, `http://${ip}:80/hostname`)).toBe('s1');
    expect(await udp(`${ns}/c2`, ip, 81, 'hostname')).toBe('s1');
  });

  it('serves endpoints on the same port and different protocols', async () => {
    const ip = await ipOf('dual');
    expect(await tryCurl(`${ns}/c1`, `http://${ip}:53/hostname`)).toBe('s2');
    expect(await udp(`${ns}/c1`, ip, 53, 'hostname')).toBe('s2');
  });

  it('creates a functioning NodePort service (every node, from outside)', async () => {
    const np = await nodePortOf('np');
    for (const n of c.nodeNames) {
      const h = await tryCurl('external', `http://${c.nodeIP(n)}:${np}/hostname`);
      expect(['s1', 's2'], `via ${n}`).toContain(h);
    }
  });

  it('reaches a ClusterIP from a node (host-originated traffic)', async () => {
    const ip = await ipOf('web');
    for (const n of [c.nodeNames[0]!, worker]) expect(['s1', 's2']).toContain(await tryCurl(n, `http://${ip}/hostname`));
  });

  it('session affinity on ClusterIP, then switching it off', async () => {
    const ip = await ipOf('aff');
    expect((await hostnames(`${ns}/c1`, `http://${ip}/hostname`, 10)).size).toBe(1);
    await c.kubectl(['patch', 'svc', 'aff', '-n', ns, '--type=merge', '-p', '{"spec":{"sessionAffinity":"None"}}']);
    const both = await eventually('affinity off', async () => {
      const s = await hostnames(`${ns}/c1`, `http://${ip}/hostname`, 10);
      return s.size === 2 ? s : undefined;
    });
    expect(both).toEqual(new Set(['s1', 's2']));
    await c.kubectl(['patch', 'svc', 'aff', '-n', ns, '--type=merge', '-p', '{"spec":{"sessionAffinity":"ClientIP"}}']);
    await eventually('affinity back on', async () => ((await hostnames(`${ns}/c1`, `http://${ip}/hostname`, 10)).size === 1 ? true : undefined));
  });

  it('session affinity on a NodePort service from outside', async () => {
    const np = await nodePortOf('affnp');
    const seen = await hostnames('external', `http://${c.nodeIP(worker)}:${np}/hostname`, 10);
    expect(seen.size).toBe(1);
    expect(seen.has('FAIL')).toBe(false);
  });

  it('externalTrafficPolicy Local: client IP preserved, only nodes with endpoints answer, health check 200/503', async () => {
    const svc = await get('etp');
    const np = svc.spec.ports![0]!.nodePort!;
    const hc = svc.spec.healthCheckNodePort!;
    expect(hc).toBeGreaterThan(0);
    const client = await tryCurl('external', `http://${c.nodeIP(worker)}:${np}/clientip`);
    expect(client?.replace(/:\d+$/, '')).toBe(c.externalIP);
    expect(await tryCurl('external', `http://${c.nodeIP(worker2)}:${np}/hostname`, 2)).toBeUndefined();
    const ok = await c.exec('external', ['curl', '-sS', '-m', '3', '-w', '\n%{http_code}', `http://${c.nodeIP(worker)}:${hc}/`]);
    const [body, code] = ok.stdout.trim().split('\n');
    expect(code).toBe('200');
    expect(JSON.parse(body!)).toMatchObject({ service: { namespace: ns, name: 'etp' }, localEndpoints: 1 });
    const bad = await c.exec('external', ['curl', '-sS', '-m', '3', '-w', '\n%{http_code}', `http://${c.nodeIP(worker2)}:${hc}/`]);
    const [body2, code2] = bad.stdout.trim().split('\n');
    expect(code2).toBe('503');
    expect(JSON.parse(body2!).localEndpoints).toBe(0);
    // pods on a node without endpoints still reach the service through the NodePort (short-circuit)
    expect(await tryCurl(`${ns}/c2`, `http://${c.nodeIP(worker2)}:${np}/hostname`)).toBe('s1');
  });

  it('internalTrafficPolicy Local: only clients on the endpoint node get through', async () => {
    const ip = await ipOf('itp');
    expect(await tryCurl(`${ns}/c1`, `http://${ip}/hostname`)).toBe('s1');
    expect(await tryCurl(`${ns}/c2`, `http://${ip}/hostname`, 2)).toBeUndefined();
  });

  it('rejects a service without endpoints at once', async () => {
    const ip = await ipOf('none');
    const t0 = Date.now();
    const r = await c.exec(`${ns}/c1`, ['curl', '-sS', '-m', '5', `http://${ip}/`], { allowFail: true });
    // 7 = could not connect (refused by a reset / port unreachable); a timeout would be 28
    expect(r.code).toBe(7);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('hairpin: a pod reaches itself through its service', async () => {
    const ip = await ipOf('self');
    expect(await tryCurl(`${ns}/s1`, `http://${ip}/hostname`)).toBe('s1');
  });

  it('LoadBalancer ingress IP and externalIPs from the external network', async () => {
    expect(['s1', 's2']).toContain(await eventually('lb', () => tryCurl('external', 'http://192.0.2.100/hostname')));
    expect(['s1', 's2']).toContain(await tryCurl('external', 'http://192.0.2.101/hostname'));
  });

  it('changes the type from ExternalName to ClusterIP and NodePort and back', async () => {
    await c.apply(manifest(service(ns, 'ename', { type: 'ExternalName', externalName: 'example.invalid' })));
    await c.kubectl([
      'patch', 'svc', 'ename', '-n', ns, '--type=merge',
      '-p', JSON.stringify({ spec: { type: 'ClusterIP', externalName: null, selector: { app: 'web' }, ports: [http()] } }),
    ]);
    const ip = await ipOf('ename');
    expect(['s1', 's2']).toContain(await eventually('ename as ClusterIP', () => tryCurl(`${ns}/c1`, `http://${ip}/hostname`)));
    await c.kubectl(['patch', 'svc', 'ename', '-n', ns, '--type=merge', '-p', '{"spec":{"type":"NodePort"}}']);
    const np = await nodePortOf('ename');
    expect(['s1', 's2']).toContain(await eventually('ename as NodePort', () => tryCurl('external', `http://${c.nodeIP(worker)}:${np}/hostname`)));
    await c.kubectl([
      'patch', 'svc', 'ename', '-n', ns, '--type=merge',
      '-p', JSON.stringify({ spec: { type: 'ExternalName', externalName: 'example.invalid', clusterIP: null, clusterIPs: null, selector: null, ports: null } }),
    ]);
    await eventually('old ClusterIP no longer proxied', async () => ((await tryCurl(`${ns}/c1`, `http://${ip}/hostname`, 2)) === undefined ? true : undefined));
    await eventually('old NodePort closed', async () => ((await tryCurl('external', `http://${c.nodeIP(worker)}:${np}/hostname`, 2)) === undefined ? true : undefined));
  });

  it('UDP (DNS-like) through a ClusterIP keeps working after the backend pod is replaced (stale conntrack cleared)', async () => {
    const ip = await ipOf('dns');
    const ask = () => udp(`${ns}/c1`, ip, 53, 'hostname', 40053);
    expect(await eventually('u1 answers', ask)).toBe('u1');
    await c.kubectl(['delete', 'pod', 'u1', '-n', ns, '--grace-period=0', '--force']);
    await c.apply(manifest(netexecPod({ name: 'u2', namespace: ns, node: worker, labels: { role: 'dns' } })));
    await c.waitPodReady(`${ns}/u2`, 120_000);
    // the same client 5-tuple must reach the new backend soon, without waiting for conntrack timeouts
    const t0 = Date.now();
    const ans = await eventually('u2 answers the same client socket', async () => ((await ask()) === 'u2' ? 'u2' : undefined), 20_000);
    expect(ans).toBe('u2');
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('restarting the proxy during a client loop drops nothing', async () => {
    const ip = await ipOf('web');
    // one shell loop inside the client pod: ~80 requests over ~8 s
    const script = `for i in $(seq 80); do curl -sS -m 3 http://${ip}/hostname || echo FAIL; echo; sleep 0.1; done`;
    const loop = c.exec(`${ns}/c1`, ['sh', '-c', script], { timeoutMs: 120_000 });
    await sleep(1500);
    const t0 = Date.now();
    await c.restartDaemon(worker);
    const restartMs = Date.now() - t0;
    const out = (await loop).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const ok = out.filter((l) => l === 's1' || l === 's2').length;
    expect(out.filter((l) => l.includes('FAIL'))).toEqual([]);
    expect(ok).toBe(80);
    expect(restartMs).toBeGreaterThan(0);
  });

  it('keeps serving while the apiserver restarts, and picks up changes after', async () => {
    const s = loadState(c.name)!;
    const api = s.processes.find((p) => p.role === 'kube-apiserver')!;
    expect(api.argv.length).toBeGreaterThan(0);
    const ip = await ipOf('web');
    await stopProcess(api, 10_000);
    // the dataplane does not need the apiserver (from a node: resolving a pod's netns would need the API)
    await sleep(2000);
    for (const n of [worker, worker2]) expect(['s1', 's2']).toContain(await tryCurl(n, `http://${ip}/hostname`));
    const fresh = startDetached(api.argv, { role: 'kube-apiserver', log: api.log });
    record(s, (x) => {
      x.processes = x.processes.map((p) => (p.role === 'kube-apiserver' ? { ...fresh, argv: api.argv } : p));
    });
    await eventually('apiserver back', async () => ((await c.kubectlResult(['get', '--raw', '/readyz'])).code === 0 ? true : undefined), 90_000);
    // the watches resumed: a new service is programmed
    await c.apply(manifest(service(ns, 'after', { selector: { app: 'web' }, ports: [http()] })));
    const ip2 = await ipOf('after');
    expect(['s1', 's2']).toContain(await eventually('new service after apiserver restart', () => tryCurl(`${ns}/c1`, `http://${ip2}/hostname`), 60_000));
  });
});
