// Pure parts of the runtime/agent/netexec stack (no kernel, no processes): pod -> sandbox config, workloads,
// probes, status; flag parsing; containerd config; CRI verbose info parsing. Kept beside the cri* netns tests.
import { describe, expect, it } from 'vitest';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseSandboxInfo } from '../cluster/cri/client.ts';
import { renderContainerdConfig } from '../cluster/runtime/containerd.ts';
import { parseCniArgs } from '../cluster/runtime/cnibin.ts';
import { parseAgentFlags } from '../cluster/agent/flags.ts';
import {
  dnsConfigFor,
  gracePeriodSeconds,
  hostPortMappings,
  podStatusPatch,
  readinessFor,
  resolvConf,
  sandboxConfigFor,
  workloadFor,
  type AgentContext,
  type PodRuntimeState,
} from '../cluster/agent/spec.ts';
import { workloadArgv } from '../cluster/agent/workload.ts';
import { hostPort, parseNetexecArgs, udpCommand } from '../cluster/netexec/server.ts';
import { parseServeHostnameArgs, porterPorts } from '../cluster/netexec/others.ts';

const ctx: AgentContext = { clusterDNS: ['10.96.0.10'], clusterDomain: 'cluster.local', netexecMain: '/n/main.ts', nodeBin: '/bin/node', logRoot: '/logs' };
const AGN = 'registry.k8s.io/e2e-test-images/agnhost:2.53';

function pod(spec: Partial<NonNullable<V1Pod['spec']>>, meta: Partial<NonNullable<V1Pod['metadata']>> = {}): V1Pod {
  return { metadata: { name: 'p', namespace: 'ns1', uid: 'u1', ...meta }, spec: { containers: [], ...spec } } as V1Pod;
}

describe('pod -> sandbox', () => {
  it('collects hostPort mappings from all containers, skipping ports without hostPort', () => {
    const p = pod({
      containers: [
        { name: 'a', ports: [{ containerPort: 80 }, { containerPort: 8080, hostPort: 18080 }] },
        { name: 'b', ports: [{ containerPort: 53, hostPort: 5353, protocol: 'UDP', hostIP: '10.0.0.1' }] },
      ],
    });
    expect(hostPortMappings(p)).toEqual([
      { protocol: 'TCP', containerPort: 8080, hostPort: 18080 },
      { protocol: 'UDP', containerPort: 53, hostPort: 5353, hostIp: '10.0.0.1' },
    ]);
  });

  it.each([
    ['ClusterFirst', false, ['10.96.0.10'], ['ns1.svc.cluster.local', 'svc.cluster.local', 'cluster.local']],
    ['ClusterFirst', true, [], []],
    ['ClusterFirstWithHostNet', true, ['10.96.0.10'], ['ns1.svc.cluster.local', 'svc.cluster.local', 'cluster.local']],
    ['Default', false, [], []],
    ['None', false, [], []],
  ] as const)('dnsPolicy %s (hostNetwork %s)', (dnsPolicy, hostNetwork, servers, searches) => {
    const d = dnsConfigFor(pod({ dnsPolicy, hostNetwork }), ctx);
    expect(d.servers).toEqual(servers);
    expect(d.searches).toEqual(searches);
  });

  it('merges pod dnsConfig (extra servers, searches, options overriding by name)', () => {
    const d = dnsConfigFor(pod({ dnsConfig: { nameservers: ['1.2.3.4'], searches: ['x.y'], options: [{ name: 'ndots', value: '2' }, { name: 'edns0' }] } }), ctx);
    expect(d).toEqual({
      servers: ['10.96.0.10', '1.2.3.4'],
      searches: ['ns1.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'x.y'],
      options: ['ndots:2', 'edns0'],
    });
    expect(resolvConf(d)).toBe('search ns1.svc.cluster.local svc.cluster.local cluster.local x.y\nnameserver 10.96.0.10\nnameserver 1.2.3.4\noptions ndots:2 edns0\n');
  });

  it('builds the CRI sandbox config (labels, hostname, hostNetwork without port mappings)', () => {
    const c = sandboxConfigFor(pod({ hostname: 'h1', containers: [{ name: 'a', ports: [{ containerPort: 1, hostPort: 2 }] }] }), ctx);
    expect(c.metadata).toEqual({ name: 'p', namespace: 'ns1', uid: 'u1', attempt: 0 });
    expect(c.hostname).toBe('h1');
    expect(c.labels).toMatchObject({ 'io.kubernetes.pod.uid': 'u1', 'flatnet.io/agent': 'true' });
    expect(c.portMappings).toHaveLength(1);
    const h = sandboxConfigFor(pod({ hostNetwork: true, containers: [{ name: 'a', ports: [{ containerPort: 1, hostPort: 2 }] }] }), ctx);
    expect(h.hostNetwork).toBe(true);
    expect(h.portMappings).toEqual([]);
    expect(h.hostname).toBe('');
  });

  it('uses deletionGracePeriodSeconds, then terminationGracePeriodSeconds, then 30', () => {
    expect(gracePeriodSeconds(pod({ terminationGracePeriodSeconds: 5 }, { deletionGracePeriodSeconds: 2 }))).toBe(2);
    expect(gracePeriodSeconds(pod({ terminationGracePeriodSeconds: 5 }))).toBe(5);
    expect(gracePeriodSeconds(pod({}))).toBe(30);
  });
});

describe('containers -> workloads and readiness', () => {
  const c = (x: Partial<V1Container>): V1Container => ({ name: 'c', image: AGN, ...x });
  it.each([
    [c({ args: ['netexec', '--http-port=8080', '--udp-port=8081'] }), 'netexec', 8080],
    [c({ command: ['/agnhost', 'netexec'], args: ['--http-port', '9000'] }), 'netexec', 9000],
    [c({ args: ['serve-hostname'] }), 'serve-hostname', 9376],
    [c({ args: ['serve-hostname', '--tcp', '--http=false', '--port', '9377'] }), 'serve-hostname', 9377],
    [c({ args: ['serve-hostname', '--udp', '--http=false'] }), 'serve-hostname', undefined],
    [c({ args: ['porter'] }), 'porter', undefined],
    [c({ args: ['pause'] }), 'pause', undefined],
    [c({ image: 'registry.k8s.io/pause:3.10' }), 'pause', undefined],
  ])('%#: emulated agnhost %s', (container, sub, port) => {
    const w = workloadFor(container, ctx);
    expect(w.kind).toBe('agnhost');
    if (w.kind !== 'agnhost') return;
    expect(w.subcommand).toBe(sub);
    expect(w.argv.slice(0, 3)).toEqual(['/bin/node', '/n/main.ts', sub]);
    expect(w.readyPort).toBe(port);
  });

  it('runs the command as is only with the flatnet.io/run-command annotation', () => {
    const busy = c({ image: 'busybox', command: ['sh', '-c', 'exit 0'] });
    expect(workloadFor(busy, ctx, { 'flatnet.io/run-command': 'true' })).toEqual({ kind: 'command', argv: ['sh', '-c', 'exit 0'] });
    expect(workloadFor(busy, ctx, {}).kind).toBe('placeholder');
  });

  it('runs a placeholder for anything else', () => {
    expect(workloadFor(c({ image: 'busybox', command: ['sh', '-c', 'sleep 1d'] }), ctx)).toMatchObject({ kind: 'placeholder', argv: ['sleep', 'infinity'] });
    expect(workloadFor(c({ args: ['dns-server'] }), ctx)).toMatchObject({ kind: 'placeholder' });
  });

  it('readiness: httpGet (named port), tcpSocket, default port, process', () => {
    const ne = workloadFor(c({ args: ['netexec'] }), ctx);
    const http = readinessFor(c({ ports: [{ name: 'web', containerPort: 8080 }], readinessProbe: { httpGet: { path: '/readyz', port: 'web' } } }), '10.1.1.2', ne);
    expect(http).toEqual({ kind: 'http', host: '10.1.1.2', port: 8080, path: '/readyz', scheme: 'HTTP', headers: {} });
    expect(readinessFor(c({ readinessProbe: { tcpSocket: { port: 81 } } }), '10.1.1.2', ne)).toEqual({ kind: 'tcp', host: '10.1.1.2', port: 81 });
    expect(readinessFor(c({}), '10.1.1.2', ne)).toEqual({ kind: 'tcp', host: '10.1.1.2', port: 8080 });
    expect(readinessFor(c({ image: 'busybox' }), '10.1.1.2', workloadFor(c({ image: 'busybox' }), ctx))).toEqual({ kind: 'process' });
  });

  it('wraps the workload: netns, private mount+UTS namespace for resolv.conf and hostname, same PID via exec', () => {
    expect(workloadArgv({ argv: ['sleep', '1'], netnsPath: '/run/ns/x', resolvConfPath: '/r', hostname: 'h' })).toEqual([
      'nsenter', '--net=/run/ns/x', '--', 'unshare', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', expect.stringContaining('exec "$@"'), 'sh', '/r', 'h', 'sleep', '1',
    ]);
    expect(workloadArgv({ argv: ['sleep', '1'] })).toEqual(['sleep', '1']);
  });
});

describe('status', () => {
  const st = (x: Partial<PodRuntimeState>): PodRuntimeState => ({ podIPs: ['10.1.1.2'], hostIP: '172.30.0.2', containers: [], terminating: false, phase: 'Running', sandboxId: 'abcdef0123456789', ...x });
  it('Ready only when every container is ready; pod IPs and host IPs', () => {
    const p = pod({ containers: [{ name: 'a', image: AGN }] });
    const notReady = podStatusPatch(p, st({ containers: [{ name: 'a', image: AGN, running: true, ready: false, restartCount: 0, pid: 5, startedAt: '2026-01-01T00:00:00.123Z' }] }), '2026-01-01T00:00:01.000Z');
    const s1 = notReady['status'] as Record<string, unknown>;
    const conds = s1['conditions'] as { type: string; status: string; reason: string | null }[];
    expect(conds.find((x) => x.type === 'Ready')).toMatchObject({ status: 'False', reason: 'ContainersNotReady' });
    expect(conds.find((x) => x.type === 'PodScheduled')?.status).toBe('True');
    expect(s1).toMatchObject({ phase: 'Running', podIP: '10.1.1.2', podIPs: [{ ip: '10.1.1.2' }], hostIP: '172.30.0.2', hostIPs: [{ ip: '172.30.0.2' }] });
    expect((s1['containerStatuses'] as object[])[0]).toMatchObject({ name: 'a', ready: false, started: true, state: { running: { startedAt: '2026-01-01T00:00:00Z' } } });
    const ready = podStatusPatch(p, st({ containers: [{ name: 'a', image: AGN, running: true, ready: true, restartCount: 1, pid: 5 }] }), '2026-01-01T00:00:02Z');
    const c2 = (ready['status'] as { conditions: { type: string; status: string; reason: unknown; message: unknown }[] }).conditions;
    // reason/message are explicitly nulled so a strategic merge patch clears the old ones
    expect(c2.find((x) => x.type === 'Ready')).toMatchObject({ status: 'True', reason: null, message: null });
  });

  it('keeps lastTransitionTime while a condition does not change', () => {
    const p = pod({}, {});
    p.status = { conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: new Date('2025-01-01T00:00:00Z') }] };
    const s = podStatusPatch(p, st({}), '2026-01-01T00:00:00Z')['status'] as { conditions: { type: string; lastTransitionTime: string }[] };
    expect(s.conditions.find((c) => c.type === 'PodScheduled')!.lastTransitionTime).toBe('2025-01-01T00:00:00Z');
    expect(s.conditions.find((c) => c.type === 'Initialized')!.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
  });
});

describe('flags and configs', () => {
  it('parses agent flags and rejects unknown ones', () => {
    expect(parseAgentFlags(['--node', 'n1', '--kubeconfig=/k', '--cri-socket', '/s', '--state-dir', '/d', '--register-node', '--cluster-dns', '10.0.0.10,10.0.0.11'])).toMatchObject({
      node: 'n1', kubeconfig: '/k', criSocket: '/s', stateDir: '/d', registerNode: true, clusterDNS: ['10.0.0.10', '10.0.0.11'], heartbeat: true,
    });
    expect(() => parseAgentFlags(['--node', 'n1'])).toThrow(/--kubeconfig is required/);
    expect(() => parseAgentFlags(['--node', 'n', '--kubeconfig', 'k', '--cri-socket', 's', '--state-dir', 'd', '--bogus', 'x'])).toThrow(/unknown flag --bogus/);
  });

  it('parses netexec / serve-hostname flags like agnhost', () => {
    expect(parseNetexecArgs(['netexec', '--http-port=8080', '--udp-port', '-1', '--delay-shutdown=3'])).toEqual({ httpPort: 8080, udpPort: -1, delayShutdown: 3 });
    expect(() => parseNetexecArgs(['--http-port=x'])).toThrow(/integer/);
    expect(() => parseNetexecArgs(['--tls-cert-file=/a'])).toThrow(/not supported/);
    expect(parseServeHostnameArgs(['serve-hostname', '--tcp', '--http=false', '--port=1234'])).toEqual({ http: false, tcp: true, udp: false, close: false, port: 1234 });
    expect(() => parseServeHostnameArgs(['--tcp'])).toThrow(/same time/);
    expect(porterPorts({ SERVE_PORT_81: 'b', SERVE_PORT_80: 'a', OTHER: 'x' })).toEqual([{ port: 80, body: 'a' }, { port: 81, body: 'b' }]);
  });

  it('answers UDP commands and formats peers like Go', () => {
    expect(udpCommand('HOSTNAME\n', 'h', 'c', 1)).toBe('h');
    expect(udpCommand('echo Hello', 'h', 'c', 1)).toBe('hello'); // agnhost lowercases the request
    expect(udpCommand('clientip', 'h', '1.2.3.4:5', 1)).toBe('1.2.3.4:5');
    expect(udpCommand('nope', 'h', 'c', 1)).toBeUndefined();
    expect(hostPort('::ffff:10.0.0.1', 80)).toBe('10.0.0.1:80');
    expect(hostPort('fd00::1', 80)).toBe('[fd00::1]:80');
  });

  it('renders a private containerd config with the settings this machine needs', () => {
    const t = renderContainerdConfig({ stateDir: '/s', grpcSocket: '/s/c.sock', ttrpcSocket: '/s/t.sock', cniBinDir: '/b', cniConfDir: '/c', sandboxImage: 'registry.k8s.io/pause:3.10' });
    for (const line of [
      'root = "/s/root"',
      'state = "/s/state"',
      'address = "/s/c.sock"',
      'restrict_oom_score_adj = true',
      'disable_apparmor = true',
      'netns_mounts_under_state_dir = true',
      'sandbox_image = "registry.k8s.io/pause:3.10"',
      'bin_dir = "/b"',
      'conf_dir = "/c"',
      'max_conf_num = 1',
      'SystemdCgroup = false',
      'Root = "/s/runc"',
      'path = "/s/opt"',
    ]) {
      expect(t).toContain(line);
    }
  });

  it('reads the pid and netns path from containerd verbose sandbox info', () => {
    const info = { info: JSON.stringify({ pid: 42, runtimeSpec: { linux: { namespaces: [{ type: 'pid' }, { type: 'network', path: '/s/netns/cni-1' }] } } }) };
    expect(parseSandboxInfo(info)).toEqual({ pid: 42, netnsPath: '/s/netns/cni-1' });
    expect(parseSandboxInfo({ info: JSON.stringify({ pid: 42, runtimeSpec: { linux: { namespaces: [] } } }) })).toEqual({ pid: 42, netnsPath: '/proc/42/ns/net' });
    expect(parseSandboxInfo(undefined)).toEqual({});
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_UID=b=c')).toEqual({ IgnoreUnknown: '1', K8S_POD_NAME: 'a', K8S_POD_UID: 'b=c' });
  });
});
