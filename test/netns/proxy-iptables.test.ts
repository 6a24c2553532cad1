// Real kernel: load flatnet's iptables rules into a "node" netns and send real traffic
// client netns -> node (ClusterIP / NodePort rules) -> server netns. Runs for iptables-nft and iptables-legacy.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { IptablesProxier } from '../../proxy/services/backends/iptables/proxier.ts';
import { planConntrackCleanup, runConntrackCleanup } from '../../proxy/services/conntrack/stale.ts';
import { planServices } from '../../proxy/services/model/plan.ts';
import type { Endpoint, NodeInfo, ProxyConfigView, ServicePlan, ServicePort } from '../../proxy/services/model/types.ts';
import { createNetns, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { proxyConfig, servicePort } from '../helpers/proxy-fixtures.ts';

const prefix = runPrefix();
const chainPrefix = prefix.toUpperCase();
const procs: ChildProcess[] = [];

function sh(argv: string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
}

function startServer(ns: TestNetns, args: string[]): void {
  const p = spawn('ip', ['netns', 'exec', ns.name, 'socat', ...args], { stdio: 'ignore', detached: true });
  procs.push(p);
}

/** run a client command in a netns; returns stdout (trimmed) or 'ERR:<msg>' */
function client(ns: TestNetns, args: string[], input = 'hi\n'): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'socat', ...args], { input, encoding: 'utf8', timeout: 5000, stdio: ['pipe', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    return 'ERR:' + String((e as { stderr?: string }).stderr ?? e).trim().slice(0, 200);
  }
}

const config: ProxyConfigView = proxyConfig();
const node: NodeInfo = { name: 'n1', ips: ['192.168.77.1'], podCIDRs: ['10.244.1.0/24'] };

function sp(name: string, over: Partial<ServicePort>): ServicePort {
  return servicePort({ namespace: 't', clusterIP: '10.96.0.1', name, ...over });
}
const ep = (ip: string, port: number): Endpoint => ({ ip, port, ready: true, serving: true, terminating: false, nodeName: 'n2', isLocal: false });

for (const mode of ['nft', 'legacy'] as const) {
  describe(`iptables proxier in a netns (${mode})`, () => {
    let nodeNs: TestNetns, cli: TestNetns, srv: TestNetns;
    let proxier: IptablesProxier;
    const runner = new ExecRunner();
    const tag = mode === 'nft' ? 'n' : 'l';
    const services = new Map<string, ServicePort>();
    const endpoints = new Map<string, Endpoint[]>();
    let lastPlans = new Map<string, ServicePlan>();

    async function sync(changed: string[] | 'full'): Promise<Map<string, ServicePlan>> {
      const plans = planServices(services, endpoints, node, 4);
      await proxier.sync({ full: changed === 'full', changed: new Set(changed === 'full' ? [] : changed), plans, node, config, family: 4 });
      const prev = lastPlans;
      lastPlans = plans;
      return prev;
    }

    beforeAll(async () => {
      nodeNs = createNetns(`${prefix}${tag}node`);
      cli = createNetns(`${prefix}${tag}cli`);
      srv = createNetns(`${prefix}${tag}srv`);
      const pair = (a: TestNetns, an: string, b: TestNetns, bn: string): void => {
        sh(['ip', 'link', 'add', an, 'netns', a.name, 'type', 'veth', 'peer', 'name', bn, 'netns', b.name]);
      };
      pair(nodeNs, 'toc', cli, 'eth0');
      pair(nodeNs, 'tos', srv, 'eth0');
      const n = (args: string[]) => nodeNs.exec(['ip', ...args]);
      n(['addr', 'add', '10.244.1.1/24', 'dev', 'toc']);
      n(['addr', 'add', '10.244.2.1/24', 'dev', 'tos']);
      n(['addr', 'add', '192.168.77.1/32', 'dev', 'lo']);
      n(['link', 'set', 'toc', 'up']);
      n(['link', 'set', 'tos', 'up']);
      // a default route, as real nodes have: node-originated packets to a ClusterIP need a route before nat OUTPUT
      n(['route', 'add', 'default', 'via', '10.244.2.254', 'dev', 'tos', 'onlink']);
      nodeNs.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      cli.exec(['ip', 'addr', 'add', '10.244.1.2/24', 'dev', 'eth0']);
      cli.exec(['ip', 'link', 'set', 'eth0', 'up']);
      cli.exec(['ip', 'route', 'add', 'default', 'via', '10.244.1.1']);
      srv.exec(['ip', 'addr', 'add', '10.244.2.2/24', 'dev', 'eth0']);
      srv.exec(['ip', 'addr', 'add', '10.244.2.3/24', 'dev', 'eth0']);
      srv.exec(['ip', 'link', 'set', 'eth0', 'up']);
      srv.exec(['ip', 'route', 'add', 'default', 'via', '10.244.2.1']);
      // servers answer with their identity and the client address they see
      startServer(srv, ['TCP-LISTEN:8080,bind=10.244.2.2,fork,reuseaddr', 'SYSTEM:read x; echo A $SOCAT_PEERADDR']);
      startServer(srv, ['TCP-LISTEN:8080,bind=10.244.2.3,fork,reuseaddr', 'SYSTEM:read x; echo B $SOCAT_PEERADDR']);
      startServer(srv, ['UDP-RECVFROM:5353,bind=10.244.2.2,fork', 'SYSTEM:read x; echo A']);
      startServer(srv, ['UDP-RECVFROM:5353,bind=10.244.2.3,fork', 'SYSTEM:read x; echo B']);
      await new Promise((r) => setTimeout(r, 300));
      // chunkServices 2: full syncs here go through the chunked path (4 services -> 2 chunks + main program)
      proxier = new IptablesProxier({ runner, mode, netns: nodeNs.path, chainPrefix, chunkServices: 2 });
      services.set('t/web:/TCP/v4', sp('web', { clusterIP: '10.96.0.10', nodePort: 30080 }));
      endpoints.set('t/web:/TCP/v4', [ep('10.244.2.2', 8080), ep('10.244.2.3', 8080)]);
      services.set('t/aff:/TCP/v4', sp('aff', { clusterIP: '10.96.0.11', affinityTimeoutSeconds: 30 }));
      endpoints.set('t/aff:/TCP/v4', [ep('10.244.2.2', 8080), ep('10.244.2.3', 8080)]);
      services.set('t/none:/TCP/v4', sp('none', { clusterIP: '10.96.0.12' }));
      services.set('t/dns:/UDP/v4', sp('dns', { clusterIP: '10.96.0.53', port: 53, protocol: 'UDP' }));
      endpoints.set('t/dns:/UDP/v4', [ep('10.244.2.2', 5353)]);
      await sync('full');
    });

    afterAll(async () => {
      for (const p of procs.splice(0)) {
        try {
          if (p.pid) process.kill(-p.pid, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
      removeNetnsWithPrefix(`${prefix}${tag}`);
    });

    it('pod -> ClusterIP reaches both endpoints with the client IP preserved', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 30 && seen.size < 2; i++) {
        const out = client(cli, ['-T2', '-', 'TCP:10.96.0.10:80']);
        expect(out).toMatch(/^[AB] 10\.244\.1\.2$/);
        seen.add(out[0]!);
      }
      expect([...seen].sort()).toEqual(['A', 'B']);
    });

    it('node -> ClusterIP is masqueraded to the node address', () => {
      expect(client(nodeNs, ['-T2', '-', 'TCP:10.96.0.10:80'])).toMatch(/^[AB] 10\.244\.2\.1$/);
    });

    it('NodePort from the client is DNATed and masqueraded', () => {
      expect(client(cli, ['-T2', '-', 'TCP:192.168.77.1:30080'])).toMatch(/^[AB] 10\.244\.2\.1$/);
    });

    it('session affinity sticks to one endpoint', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) seen.add(client(cli, ['-T2', '-', 'TCP:10.96.0.11:80'])[0]!);
      expect(seen.size).toBe(1);
    });

    it('a service without endpoints is refused at once', () => {
      const t0 = Date.now();
      const out = client(cli, ['-T2', '-', 'TCP:10.96.0.12:80']);
      expect(out).toMatch(/^ERR:.*(refused|Connection reset)/i);
      expect(Date.now() - t0).toBeLessThan(1500);
    });

    it('partial sync: endpoint removal takes effect, stale SEP chain deleted', async () => {
      endpoints.set('t/web:/TCP/v4', [ep('10.244.2.3', 8080)]);
      await sync(['t/web:/TCP/v4']);
      expect(proxier.lastStats.get(4)!.full).toBe(false);
      expect(proxier.lastStats.get(4)!.chainsDeleted).toBe(1);
      for (let i = 0; i < 6; i++) expect(client(cli, ['-T2', '-', 'TCP:10.96.0.10:80'])).toBe('B 10.244.1.2');
      // the service getting endpoints back
      endpoints.set('t/none:/TCP/v4', [ep('10.244.2.2', 8080)]);
      await sync(['t/none:/TCP/v4']);
      expect(client(cli, ['-T2', '-', 'TCP:10.96.0.12:80'])).toBe('A 10.244.1.2');
    });

    it('UDP: a replaced backend is reached once stale conntrack entries are deleted', async () => {
      const ask = () => client(cli, ['-T1', '-', 'UDP:10.96.0.53:53,sourceport=40053'], 'q\n');
      expect(ask()).toBe('A');
      endpoints.set('t/dns:/UDP/v4', [ep('10.244.2.3', 5353)]);
      const prev = await sync(['t/dns:/UDP/v4']);
      // the conntrack entry still points at A (the DNS black hole when A is gone)
      expect(ask()).toBe('A');
      const cmds = planConntrackCleanup(prev, lastPlans, ['t/dns:/UDP/v4']);
      expect(cmds.length).toBeGreaterThan(0);
      await runConntrackCleanup(runner, cmds, nodeNs.path);
      expect(ask()).toBe('B');
    });

    it('a full re-sync (restart) keeps rules and traffic; cleanup removes everything', async () => {
      const fresh = new IptablesProxier({ runner, mode, netns: nodeNs.path, chainPrefix });
      await fresh.sync({ full: true, changed: new Set(), plans: lastPlans, node, config, family: 4 });
      expect(client(cli, ['-T2', '-', 'TCP:10.96.0.10:80'])).toBe('B 10.244.1.2');
      const save = nodeNs.exec([`iptables-${mode}-save`]);
      // jumps are not duplicated by a second full sync
      expect(save.split('\n').filter((l) => l === `-A PREROUTING -m comment --comment "flatnet service portals" -j ${chainPrefix}-SERVICES`)).toHaveLength(1);
      await fresh.cleanup();
      const after = nodeNs.exec([`iptables-${mode}-save`]);
      expect(after).not.toContain(chainPrefix);
      expect(client(cli, ['-T1', '-', 'TCP:10.96.0.10:80'])).toMatch(/^ERR/);
    });
  });
}

describe('iptables proxier in a netns: dual-stack (IPv6 through ip6tables)', () => {
  let nodeNs: TestNetns, cli: TestNetns, srv: TestNetns;
  const runner = new ExecRunner();
  let proxier: IptablesProxier;
  const node6: NodeInfo = { name: 'n1', ips: ['192.168.78.1', 'fd78::1'], podCIDRs: ['10.244.1.0/24', 'fd10:1::/64'] };
  const config6: ProxyConfigView = { ...config, clusterCIDRs: ['10.244.0.0/16', 'fd10::/16'] };

  beforeAll(async () => {
    nodeNs = createNetns(`${prefix}6node`);
    cli = createNetns(`${prefix}6cli`);
    srv = createNetns(`${prefix}6srv`);
    sh(['ip', 'link', 'add', 'toc', 'netns', nodeNs.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', cli.name]);
    sh(['ip', 'link', 'add', 'tos', 'netns', nodeNs.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', srv.name]);
    const n = (args: string[]) => nodeNs.exec(['ip', ...args]);
    n(['-6', 'addr', 'add', 'fd10:1::1/64', 'dev', 'toc', 'nodad']);
    n(['-6', 'addr', 'add', 'fd10:2::1/64', 'dev', 'tos', 'nodad']);
    n(['-6', 'addr', 'add', 'fd78::1/128', 'dev', 'lo', 'nodad']);
    n(['addr', 'add', '192.168.78.1/32', 'dev', 'lo']);
    n(['link', 'set', 'toc', 'up']);
    n(['link', 'set', 'tos', 'up']);
    nodeNs.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    for (const [ns, ip, gw] of [
      [cli, 'fd10:1::2/64', 'fd10:1::1'],
      [srv, 'fd10:2::2/64', 'fd10:2::1'],
    ] as const) {
      ns.exec(['ip', '-6', 'addr', 'add', ip, 'dev', 'eth0', 'nodad']);
      ns.exec(['ip', 'link', 'set', 'eth0', 'up']);
      ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', gw]);
    }
    startServer(srv, ['TCP6-LISTEN:8080,fork,reuseaddr', 'SYSTEM:read x; echo S6 $SOCAT_PEERADDR']);
    await new Promise((r) => setTimeout(r, 300));
    proxier = new IptablesProxier({ runner, mode: 'nft', netns: nodeNs.path, chainPrefix });
    const v4 = sp('web', { clusterIP: '10.96.0.10', nodePort: 30080 });
    const v6 = { ...sp('web', { clusterIP: 'fd96::10', nodePort: 30080, family: 6 }), key: 't/web:/TCP/v6' };
    const services = new Map([
      [v4.key, v4],
      [v6.key, v6],
    ]);
    const eps = new Map([
      [v4.key, [ep('10.244.2.2', 8080)]],
      [v6.key, [ep('fd10:2::2', 8080)]],
    ]);
    for (const family of [4, 6] as const) {
      const plans = planServices(services, eps, node6, family);
      await proxier.sync({ full: true, changed: new Set(), plans, node: node6, config: config6, family });
    }
  });

  afterAll(() => {
    for (const p of procs.splice(0)) {
      try {
        if (p.pid) process.kill(-p.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    removeNetnsWithPrefix(`${prefix}6`);
  });

  it('pod -> IPv6 ClusterIP keeps the client address; NodePort on the node IPv6 address is masqueraded', () => {
    expect(client(cli, ['-T2', '-', 'TCP6:[fd96::10]:80'])).toBe('S6 [fd10:0001:0000:0000:0000:0000:0000:0002]');
    expect(client(cli, ['-T2', '-', 'TCP6:[fd78::1]:30080'])).toBe('S6 [fd10:0002:0000:0000:0000:0000:0000:0001]');
  });

  it('each family got its own ruleset', () => {
    expect(nodeNs.exec(['ip6tables-nft-save', '-t', 'nat'])).toContain('--to-destination [fd10:2::2]:8080');
    const v4 = nodeNs.exec(['iptables-nft-save', '-t', 'nat']);
    expect(v4).toContain('--to-destination 10.244.2.2:8080');
    expect(v4).not.toContain('fd10');
  });
});
