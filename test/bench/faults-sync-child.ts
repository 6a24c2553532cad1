// One daemon start's worth of proxy programming, as a process the fault runs can kill -9: a full sync of --services
// Services (3 endpoints each) with the real backend, run inside the caller's netns (`ip netns exec`). Prints
// "synced <ms>" when the kernel holds the whole ruleset.
//   node test/bench/faults-sync-child.ts --mode nftables|iptables --services N
import { ExecRunner } from '../../lib/exec/exec.ts';
import { IptablesProxier } from '../../proxy/services/backends/iptables/proxier.ts';
import { NftablesProxier } from '../../proxy/services/backends/nftables/proxier.ts';
import { planServices } from '../../proxy/services/model/plan.ts';
import type { Endpoint, NodeInfo, ProxyBackend, ServicePort } from '../../proxy/services/model/types.ts';
import { proxyConfig, servicePort } from '../helpers/proxy-fixtures.ts';
import { opt } from './util.ts';

export const FAULT_NODE: NodeInfo = { name: 'n1', ips: ['192.168.77.1'], podCIDRs: ['10.244.1.0/24'] };

/** n Services with a NodePort each and 3 endpoints, deterministic. */
export function syntheticServices(n: number): { services: Map<string, ServicePort>; endpoints: Map<string, Endpoint[]> } {
  const services = new Map<string, ServicePort>();
  const endpoints = new Map<string, Endpoint[]>();
  for (let i = 0; i < n; i++) {
    const sp = servicePort({ namespace: 'f', name: `s${i}`, clusterIP: `10.96.${(i >> 8) & 255}.${i & 255}`, nodePort: 30000 + (i % 2700) });
    services.set(sp.key, sp);
    endpoints.set(
      sp.key,
      [0, 1, 2].map((k) => ({ ip: `10.244.${(i * 3 + k) >> 8 & 255}.${((i * 3 + k) & 255) || 1}`, port: 8080, ready: true, serving: true, terminating: false, nodeName: 'n2', isLocal: false })),
    );
  }
  return { services, endpoints };
}

export function faultBackend(mode: string, netns?: string): ProxyBackend {
  const runner = new ExecRunner();
  const log = { debug() {}, info() {}, warn() {}, error() {} };
  return mode === 'nftables' ? new NftablesProxier({ family: 4, runner, log, netns }) : new IptablesProxier({ runner, mode: 'nft', netns, log });
}

if (import.meta.main) {
  const mode = opt('mode', 'nftables');
  const { services, endpoints } = syntheticServices(Number(opt('services', '10000')));
  const t0 = performance.now();
  await faultBackend(mode).sync({ full: true, changed: new Set(), plans: planServices(services, endpoints, FAULT_NODE, 4), node: FAULT_NODE, config: proxyConfig(), family: 4 });
  process.stdout.write(`synced ${Math.round(performance.now() - t0)}\n`);
}
