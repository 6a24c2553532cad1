import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseDuration } from '../../../proxy/config/config.ts';
import { ProxyDaemon } from '../../../proxy/daemon.ts';
import { ProxyHealth } from '../../../proxy/services/healthcheck/proxy-health.ts';
import type { AddressInfo } from 'node:net';
import { ServiceHealthServers, startMetricsServer } from '../../../proxy/services/healthcheck/servers.ts';
import { ProxyMetrics } from '../../../proxy/services/metrics/metrics.ts';
import type { ProxyBackend, SyncInput } from '../../../proxy/services/model/types.ts';
import { FakeSource, proxyConfig, sliceObject, svcObject } from '../../helpers/proxy-fixtures.ts';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

describe('config', () => {
  const file = `
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
hostnameOverride: node-a
iptables:
  masqueradeAll: true
  masqueradeBit: 15
  minSyncPeriod: 2s
  syncPeriod: 1m
  localhostNodePorts: true
detectLocalMode: InterfaceNamePrefix
detectLocal:
  interfaceNamePrefix: veth
nodePortAddresses: [192.168.0.0/16]
conntrack:
  maxPerCore: 0
`;
  it('reads a KubeProxyConfiguration and lets flags override it', () => {
    const { config } = loadConfig(['--config', '/cfg', '--hostname-override=node-b', '--proxy-mode', 'nftables'], () => file);
    expect(config.clusterCIDRs).toEqual(['10.244.0.0/16', 'fd00:10:244::/56']);
    expect(config.hostnameOverride).toBe('node-b');
    expect(config.mode).toBe('nftables');
    expect(config.masqueradeAll).toBe(true);
    expect(config.masqueradeBit).toBe(15);
    expect(config.sync).toEqual({ minSyncPeriodMs: 2000, syncPeriodMs: 60000 });
    expect(config.localhostNodePorts).toBe(true);
    expect(config.detectLocalMode).toBe('InterfaceNamePrefix');
    expect(config.interfaceNamePrefix).toBe('veth');
    expect(config.nodePortAddresses).toEqual(['192.168.0.0/16']);
  });

  it('defaults', () => {
    const { config } = loadConfig([]);
    expect(config.mode).toBe('iptables');
    expect(config.masqueradeBit).toBe(14);
    expect(config.sync).toEqual({ minSyncPeriodMs: 1000, syncPeriodMs: 30000 });
    expect(config.localhostNodePorts).toBe(false);
    expect(config.healthzBindAddress).toBe('0.0.0.0:10256');
    expect(config.metricsBindAddress).toBe('127.0.0.1:10249');
  });

  it.each([
    [['--proxy-mode', 'userspace'], /unsupported proxy mode/],
    [['--nope'], /unknown flag --nope/],
    [['--config', '/x'], /cannot read config file/],
    [['--detect-local-mode', 'BridgeInterface'], /bridgeInterface/],
  ])('rejects %j', (argv, re) => {
    expect(() => loadConfig(argv, () => { throw new Error('ENOENT'); })).toThrow(re);
  });

  it('rejects bad files clearly', () => {
    expect(() => loadConfig(['--config', 'f'], () => 'kind: Pod')).toThrow(ConfigError);
    expect(() => loadConfig(['--config', 'f'], () => 'iptables: {syncPeriod: soon}')).toThrow(/invalid duration/);
    expect(() => loadConfig(['--config', 'f'], () => 'iptables: {masqueradeBit: 40}')).toThrow(/0..31/);
    expect(() => loadConfig(['--config', 'f'], () => ': : :')).toThrow(ConfigError);
  });

  it('parses Go durations', () => {
    expect(parseDuration('1m30s', 'x')).toBe(90000);
    expect(parseDuration('250ms', 'x')).toBe(250);
    expect(parseDuration('0', 'x')).toBe(0);
  });
});

describe('ProxyHealth', () => {
  it('is healthy until a queued update waits longer than the timeout; /healthz also needs the node', () => {
    let t = 1000;
    const h = new ProxyHealth(60000, () => t);
    expect(h.respond('/healthz')[0]).toBe(200);
    h.queued(4);
    t += 59000;
    expect(h.respond('/healthz')[0]).toBe(200);
    t += 2000;
    expect(h.respond('/healthz')[0]).toBe(503);
    expect(h.respond('/livez')[0]).toBe(503);
    h.updated(4);
    expect(h.respond('/healthz')[0]).toBe(200);
    h.setNodeEligible(false);
    const [code, body] = h.respond('/healthz');
    expect(code).toBe(503);
    expect(JSON.parse(body).nodeEligible).toBe(false);
    expect(h.respond('/livez')[0]).toBe(200);
  });
});

describe('ServiceHealthServers', () => {
  it('answers 200/503 with kube-proxy JSON and closes removed ports', async () => {
    const s = new ServiceHealthServers('127.0.0.1', () => true);
    const port = 20000 + Math.floor(Math.random() * 20000);
    try {
      await s.sync(new Map([[port, { namespace: 'ns', name: 'web', localEndpoints: 2 }]]));
      let r = await fetch(`http://127.0.0.1:${port}/`);
      expect(r.status).toBe(200);
      expect(await r.json()).toEqual({ service: { namespace: 'ns', name: 'web' }, localEndpoints: 2, serviceProxyHealthy: true });
      await s.sync(new Map([[port, { namespace: 'ns', name: 'web', localEndpoints: 0 }]]));
      r = await fetch(`http://127.0.0.1:${port}/`);
      expect(r.status).toBe(503);
      expect((await r.json()).localEndpoints).toBe(0);
      await s.sync(new Map());
      await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
    } finally {
      await s.stop();
    }
  });
});

describe('startMetricsServer', () => {
  it('serves /metrics and /proxyMode (plain text, as kube-proxy answers on its metrics port)', async () => {
    const server = await startMetricsServer('127.0.0.1', 0, () => 'm 1\n', undefined, 'nftables');
    try {
      const port = (server.address() as AddressInfo).port;
      const mode = await fetch(`http://127.0.0.1:${port}/proxyMode`);
      expect(mode.status).toBe(200);
      expect(await mode.text()).toBe('nftables');
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toBe('m 1\n');
      expect((await fetch(`http://127.0.0.1:${port}/configz`)).status).toBe(404);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('ProxyMetrics', () => {
  it('renders kube-proxy metric names in Prometheus text format', () => {
    const m = new ProxyMetrics();
    m.syncDuration.observe(0.003);
    m.syncDuration.observe(5);
    m.serviceChangesTotal.inc(3);
    const text = m.render();
    expect(text).toContain('# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="+Inf"} 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_count 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_service_changes_total 3');
    for (const n of [
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'kubeproxy_network_programming_duration_seconds',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      'kubeproxy_sync_proxy_rules_service_changes_pending',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    ]) expect(text).toContain(`# TYPE ${n} `);
  });
});

class RecordingBackend implements ProxyBackend {
  readonly mode = 'iptables' as const;
  calls: SyncInput[] = [];
  failNext = false;
  sync(input: SyncInput): Promise<void> {
    this.calls.push(input);
    if (this.failNext) {
      this.failNext = false;
      return Promise.reject(new Error('restore failed'));
    }
    return Promise.resolve();
  }
  cleanup(): Promise<void> {
    return Promise.resolve();
  }
}

const svc = svcObject;
const slice = sliceObject;

describe('ProxyDaemon', () => {
  function setup() {
    const source = new FakeSource();
    const backend = new RecordingBackend();
    const d = new ProxyDaemon({
      nodeName: 'n1',
      config: proxyConfig(),
      backends: new Map([[4, backend]]),
      source,
      log: silent,
      minSyncPeriodMs: 0,
      syncPeriodMs: 30000,
      fallbackNodeIPs: ['192.168.0.9'],
    });
    return { source, backend, d };
  }

  it('programs nothing before the initial lists, then full, then partial syncs of exactly the changed keys', async () => {
    const { source, backend, d } = setup();
    const started = d.start();
    source.h!.service(svc('a', '10.96.0.1'), false);
    source.h!.slice(slice('a', ['10.244.1.2']), false);
    await new Promise((r) => setTimeout(r, 20));
    expect(backend.calls).toHaveLength(0);
    source.release!();
    await started;
    expect(backend.calls).toHaveLength(1);
    expect(backend.calls[0]!.full).toBe(true);
    expect(backend.calls[0]!.plans.get('ns/a:http/TCP/v4')!.clusterEndpoints.map((e) => e.ip)).toEqual(['10.244.1.2']);
    expect(backend.calls[0]!.node.ips).toEqual(['192.168.0.9']);

    source.h!.service(svc('b', '10.96.0.2'), false);
    source.h!.service(svc('a', '10.96.0.1'), false); // no-op
    await new Promise((r) => setTimeout(r, 30));
    await d.idle();
    const last = backend.calls.at(-1)!;
    expect(last.full).toBe(false);
    expect([...last.changed]).toEqual(['ns/b:http/TCP/v4']);
    expect(last.plans.size).toBe(2);
    await d.stop();
  });

  it('a failed sync makes the next one full; node changes force a full sync', async () => {
    const { source, backend, d } = setup();
    const started = d.start();
    source.release!();
    await started;
    backend.failNext = true;
    source.h!.service(svc('a', '10.96.0.1'), false);
    await new Promise((r) => setTimeout(r, 30));
    await d.idle();
    expect(backend.calls.at(-1)!.full).toBe(false);
    expect(d.metrics.restoreFailures.get()).toBe(1);
    // the retry (after the retry interval) is full; trigger it sooner with a new change
    source.h!.service(svc('b', '10.96.0.2'), false);
    await new Promise((r) => setTimeout(r, 1100));
    await d.idle();
    expect(backend.calls.at(-1)!.full).toBe(true);
    expect(backend.calls.at(-1)!.plans.size).toBe(2);
    const node: V1Node = { metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.7' }] } };
    source.h!.node(node, false);
    await new Promise((r) => setTimeout(r, 1100));
    await d.idle();
    expect(backend.calls.at(-1)!.full).toBe(true);
    expect(backend.calls.at(-1)!.node.ips).toEqual(['192.168.0.7']);
    await d.stop();
  });

  it('never runs two syncs at once, even when a sync outlasts syncPeriod', async () => {
    const source = new FakeSource();
    let active = 0;
    let maxActive = 0;
    let calls = 0;
    const slow: ProxyBackend = {
      mode: 'iptables',
      async sync() {
        calls++;
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setTimeout(r, 150));
        active--;
      },
      cleanup: () => Promise.resolve(),
    };
    const d = new ProxyDaemon({
      nodeName: 'n1',
      config: { clusterCIDRs: [], detectLocalMode: 'ClusterCIDR', masqueradeAll: false, masqueradeBit: 14, nodePortAddresses: [] },
      backends: new Map([[4, slow]]),
      source,
      log: silent,
      minSyncPeriodMs: 10,
      syncPeriodMs: 40,
    });
    const started = d.start();
    source.release!();
    await started;
    for (let i = 0; i < 5; i++) {
      source.h!.service(svc(`s${i}`, `10.96.0.${i + 10}`), false);
      await new Promise((r) => setTimeout(r, 60));
    }
    await d.stop();
    expect(calls).toBeGreaterThan(2);
    expect(maxActive).toBe(1);
  });
});
