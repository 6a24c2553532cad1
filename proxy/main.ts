// flatnet-proxy: the node daemon replacing kube-proxy (and hosting the VXLAN overlay controller).
//   node proxy/main.ts --kubeconfig /etc/kubernetes/proxy.conf --hostname-override node1 --cluster-cidr 10.244.0.0/16
//   node proxy/main.ts --config /var/lib/flatnet/config.yaml
//   node proxy/main.ts --cleanup           remove every rule flatnet's proxy created, then exit
// SIGTERM/SIGINT: stop watching and serving, stop the overlay controller, leave the kernel rules in place.

import { existsSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import pino from 'pino';
import { ExecRunner } from '../lib/exec/exec.ts';
import type { Runner } from '../lib/exec/runner.ts';
import { readSysctl, sysctlKeyPath, writeSysctl } from '../lib/sysctl/sysctl.ts';
import { IptablesProxier } from './services/backends/iptables/proxier.ts';
import { conntrackSysctls, type Sysctl } from './services/conntrack/sysctls.ts';
import { configView, loadConfig, splitHostPort, type DaemonConfig } from './config/config.ts';
import { ProxyDaemon } from './daemon.ts';
import { ServiceHealthServers, startHealthzServer, startMetricsServer } from './services/healthcheck/servers.ts';
import type { IpFamily, ProxyBackend } from './services/model/types.ts';
import { KubeWatchSource, loadKubeConfig } from './services/watch/informers.ts';

const USAGE = `usage: flatnet-proxy [--config FILE] [--kubeconfig FILE] [--master URL] [--hostname-override NAME]
  [--cluster-cidr CIDRS] [--proxy-mode iptables|nftables|ipvs] [--healthz-bind-address HOST:PORT]
  [--metrics-bind-address HOST:PORT] [--nodeport-addresses CIDRS] [--masquerade-all] [--detect-local-mode MODE]
  [--iptables-localhost-nodeports] [--service-proxy-name NAME] [--overlay vxlan|none] [--network-policy true|false] [--cleanup] [--v N]`;

type Log = pino.Logger;

interface BackendModule {
  createBackend(opts: { family: IpFamily; runner: Runner; log: Log; netns?: string; config?: Record<string, unknown> }): Promise<ProxyBackend>;
}

// The backends and the overlay controller load on demand, through literal import()s so that the daemon bundle
// (deploy/build.mjs -> dist/proxy/flatnet-proxy.mjs) carries them.
const modules = {
  nftables: (): Promise<BackendModule> => import('./services/backends/nftables/index.ts') as Promise<BackendModule>,
  ipvs: (): Promise<BackendModule> => import('./services/backends/ipvs/index.ts') as Promise<BackendModule>,
  overlay: (): Promise<unknown> => import('./overlay/index.ts'),
  policy: (): Promise<typeof import('./policy/index.ts')> => import('./policy/index.ts'),
};

async function makeBackends(cfg: DaemonConfig, families: IpFamily[], runner: Runner, log: Log): Promise<Map<IpFamily, ProxyBackend>> {
  const out = new Map<IpFamily, ProxyBackend>();
  if (cfg.mode === 'iptables') {
    const p = new IptablesProxier({ runner, log, localhostNodePorts: cfg.localhostNodePorts });
    for (const f of families) out.set(f, p);
    return out;
  }
  const mod = await (cfg.mode === 'nftables' ? modules.nftables() : modules.ipvs());
  for (const f of families) out.set(f, await mod.createBackend({ family: f, runner, log, config: cfg.mode === 'nftables' ? cfg.nftables : cfg.ipvs }));
  return out;
}

/** Global unicast addresses of this host (netns), used for NodePorts until the Node object is seen. */
async function localAddresses(runner: Runner): Promise<string[]> {
  const r = await runner.run(['ip', '-j', 'addr', 'show', 'scope', 'global'], { allowFail: true });
  if (r.code !== 0) return [];
  try {
    const links = JSON.parse(r.stdout) as { addr_info?: { local?: string; scope?: string }[] }[];
    return links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local ?? '')).filter(Boolean);
  } catch {
    return [];
  }
}

async function cleanupAll(cfg: DaemonConfig, nodeName: string, runner: Runner, log: Log): Promise<void> {
  await new IptablesProxier({ runner, log }).cleanup();
  // the overlay's device, peers, masquerade table and subnet file
  type OverlayCleanup = { cleanupOverlay(o: { nodeName: string; log: Log; config: Record<string, unknown>; runner?: Runner }): Promise<void> };
  try {
    const ov = (await modules.overlay()) as OverlayCleanup;
    await ov.cleanupOverlay({ nodeName, log, runner, config: { clusterCIDRs: cfg.clusterCIDRs, ...cfg.overlayConfig } });
  } catch (err) {
    log.warn({ err: String(err) }, 'cleanup of the overlay failed');
  }
  await (await modules.policy()).cleanupPolicy(runner, cfg.networkPolicyConfig).catch((err: unknown) => log.warn({ err: String(err) }, 'cleanup of the policy table failed'));
  for (const [name, load] of [['nftables', modules.nftables], ['ipvs', modules.ipvs]] as const) {
    try {
      const mod = await load();
      for (const f of [4, 6] as const) await (await mod.createBackend({ family: f, runner, log })).cleanup();
    } catch (err) {
      log.warn({ backend: name, err: String(err) }, 'cleanup of backend failed');
    }
  }
}

/**
 * The kernel settings the daemon's config asks of the node: conntrack timeouts and limits, and (for the init step,
 * with NetworkPolicy on) bridged pod traffic through the IP hooks: br_netfilter's bridge-nf-call-ip(6)tables, per
 * network namespace, which the policy controller checks again at its start.
 */
function nodeSysctls(cfg: DaemonConfig, cpus: number): Sysctl[] {
  const out = conntrackSysctls(cfg.conntrack, cpus);
  if (cfg.initNode && cfg.networkPolicy) {
    for (const key of ['net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-ip6tables']) out.push({ key, value: '1' });
  }
  return out;
}

/** Writes the settings that differ; one already in place is not written (the daemon cannot, unprivileged). */
function applySysctls(sysctls: readonly Sysctl[], log: Log): void {
  for (const sc of sysctls) {
    const path = sysctlKeyPath(sc.key);
    let cur = '';
    try {
      cur = readSysctl(path);
    } catch {
      /* absent (module not loaded): the write below reports it */
    }
    if (cur === sc.value) continue;
    if (writeSysctl(path, sc.value, true)) log.info({ sysctl: sc.key, value: sc.value }, 'sysctl set');
    else log.warn({ sysctl: sc.key, value: cur || 'absent', want: sc.value }, 'cannot set sysctl');
  }
}

async function main(argv: string[]): Promise<number> {
  let cfg: DaemonConfig;
  try {
    const loaded = loadConfig(argv);
    if (loaded.help) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    cfg = loaded.config;
  } catch (e) {
    process.stderr.write(`flatnet-proxy: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const nodeName = cfg.hostnameOverride || hostname();
  const log: Log = pino({ level: cfg.logLevel, base: { component: 'flatnet-proxy', node: nodeName } }, pino.destination({ dest: 2, sync: true }));
  const runner = new ExecRunner();

  if (cfg.cleanup) {
    await cleanupAll(cfg, nodeName, runner, log);
    log.info({}, 'cleanup done');
    return 0;
  }

  let sysctls: ReturnType<typeof nodeSysctls>;
  try {
    sysctls = nodeSysctls(cfg, availableParallelism());
  } catch (e) {
    process.stderr.write(`flatnet-proxy: ${(e as Error).message}\n`);
    return 2;
  }
  if (cfg.initNode) {
    // the DaemonSet's privileged init container: /proc/sys is read-only in the unprivileged daemon
    if (cfg.networkPolicy && !existsSync('/proc/sys/net/bridge')) {
      const r = await runner.run(['modprobe', 'br_netfilter'], { allowFail: true });
      if (r.code !== 0) log.warn({ err: r.stderr.trim() }, 'cannot load br_netfilter: same-node pods will not be isolated by NetworkPolicy');
    }
    applySysctls(sysctls, log);
    log.info({}, 'node settings applied');
    return 0;
  }
  applySysctls(sysctls, log);

  const families: IpFamily[] = [4];
  if (cfg.clusterCIDRs.some((c) => c.includes(':'))) families.push(6);
  if (cfg.clusterCIDRs.length && cfg.clusterCIDRs.every((c) => c.includes(':'))) families.shift();

  let backends: Map<IpFamily, ProxyBackend>;
  try {
    backends = await makeBackends(cfg, families, runner, log);
  } catch (e) {
    log.error({ err: String(e) }, 'cannot start the proxy backend');
    process.stderr.write(`flatnet-proxy: ${(e as Error).message}\n`);
    return 1;
  }

  const kc = loadKubeConfig(cfg.kubeconfig, cfg.master);
  const source = new KubeWatchSource(kc, log);
  const healthServers = new ServiceHealthServers('0.0.0.0', () => daemon.health.status().healthy, log);
  const daemon: ProxyDaemon = new ProxyDaemon({
    nodeName,
    config: configView(cfg),
    backends,
    source,
    runner,
    log,
    minSyncPeriodMs: cfg.sync.minSyncPeriodMs,
    syncPeriodMs: cfg.sync.syncPeriodMs,
    serviceProxyName: cfg.serviceProxyName,
    fallbackNodeIPs: await localAddresses(runner),
    onHealthPorts: (ports) => healthServers.sync(ports),
  });

  const servers: { close(cb?: () => void): unknown }[] = [];
  try {
    const hz = splitHostPort(cfg.healthzBindAddress);
    if (hz) servers.push(await startHealthzServer(hz[0], hz[1], daemon.health));
    const mz = splitHostPort(cfg.metricsBindAddress);
    if (mz) servers.push(await startMetricsServer(mz[0], mz[1], () => daemon.metrics.render(), daemon.health, cfg.mode));
  } catch (e) {
    log.error({ err: String(e) }, 'cannot open the health/metrics ports');
    return 1;
  }

  // the overlay controller (proxy/overlay), unless disabled
  let overlay: { stop(): Promise<void> } | undefined;
  if (cfg.overlay !== 'none') {
    type OverlayModule = {
      startOverlay(o: { kubeconfig: string; nodeName: string; log: Log; config: Record<string, unknown> }): Promise<{ stop(): Promise<void> }>;
    };
    try {
      const mod = (await modules.overlay()) as OverlayModule;
      overlay = await mod.startOverlay({
        kubeconfig: cfg.kubeconfig,
        nodeName,
        log: log.child({ subsystem: 'overlay' }),
        config: { clusterCIDRs: cfg.clusterCIDRs, ...cfg.overlayConfig },
      });
    } catch (e) {
      log.error({ err: String(e) }, 'overlay controller failed to start');
      if (cfg.overlay === 'vxlan') return 1;
    }
  }

  // the NetworkPolicy controller (proxy/policy): its own nftables table; turned off, it removes that table
  let policy: { stop(): Promise<void> } | undefined;
  const pmod = await modules.policy();
  if (cfg.networkPolicy) {
    policy = pmod.startPolicy({ kubeconfig: cfg.kubeconfig, master: cfg.master, nodeName, runner, log: log.child({ subsystem: 'policy' }), config: cfg.networkPolicyConfig });
  } else {
    await pmod.cleanupPolicy(runner, cfg.networkPolicyConfig).catch((e: unknown) => log.warn({ err: String(e) }, 'removing the policy table failed'));
  }

  let stopping = false;
  const done = new Promise<number>((resolve) => {
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ sig }, 'stopping; kernel rules stay in place');
      void (async () => {
        await daemon.stop().catch(() => {});
        await overlay?.stop().catch((e: unknown) => log.warn({ err: String(e) }, 'overlay stop failed'));
        await policy?.stop().catch((e: unknown) => log.warn({ err: String(e) }, 'policy controller stop failed'));
        await healthServers.stop();
        for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
        resolve(0);
      })();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

  log.info({ mode: cfg.mode, families, clusterCIDRs: cfg.clusterCIDRs }, 'starting');
  daemon.start().then(
    () => log.info({ syncs: daemon.syncCount }, 'proxy started'),
    (e: unknown) => log.error({ err: String(e) }, 'start failed'),
  );
  return done;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`flatnet-proxy: ${String((e as Error)?.stack ?? e)}\n`);
    process.exit(1);
  },
);
