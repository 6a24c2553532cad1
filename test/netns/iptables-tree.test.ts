// Real kernel: the iptables backend's ClusterIP prefix tree (rules.ts). A "node" netns gets 300+ services spread over
// several /20s through the real IptablesProxier; a second netns behind a veth runs TCP listeners (one port per
// endpoint, each answering with its port). Connections from the node to cluster IPs in every level-1 bucket must
// reach their endpoint; a partial sync that adds a service in a brand-new /20, takes the endpoints away from one
// service and deletes another (the only one in its buckets) must create the new buckets without flushing the others;
// the next full sync deletes the emptied buckets. Runs for iptables-nft and iptables-legacy.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { IptablesProxier } from '../../proxy/services/backends/iptables/proxier.ts';
import { clusterIPBuckets, serviceChains } from '../../proxy/services/backends/iptables/rules.ts';
import { planServices } from '../../proxy/services/model/plan.ts';
import type { Endpoint, NodeInfo, ProxyConfigView, ServicePort } from '../../proxy/services/model/types.ts';
import { createNetns, removeNetnsWithPrefix, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { proxyConfig, servicePort } from '../helpers/proxy-fixtures.ts';

const prefix = runPrefix();
const chainPrefix = prefix.toUpperCase();
const procs: ChildProcess[] = [];
const PORTS = 8; // endpoint ports 9000..9007 on the server

const config: ProxyConfigView = proxyConfig();
const node: NodeInfo = { name: 'n1', ips: ['192.168.79.1'], podCIDRs: ['10.244.1.0/24'] };
const ep = (port: number): Endpoint => ({ ip: '10.244.2.2', port, ready: true, serving: true, terminating: false, nodeName: 'n2', isLocal: false });

/** connect from the node to ip:80; returns the answer (the endpoint port) or 'ERR:<msg>' */
function connect(ns: TestNetns, ip: string): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'socat', '-T2', '-', `TCP:${ip}:80,connect-timeout=2`], {
      input: 'hi\n',
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['pipe', 'pipe', 'pipe'],
    }).trim();
  } catch (e) {
    return 'ERR:' + String((e as { stderr?: string }).stderr ?? e).trim().slice(0, 200);
  }
}

for (const mode of ['nft', 'legacy'] as const) {
  describe(`iptables ClusterIP tree in a netns (${mode})`, () => {
    const tag = mode === 'nft' ? 'tn' : 'tl';
    const runner = new ExecRunner();
    let nodeNs: TestNetns, srv: TestNetns;
    let proxier: IptablesProxier;
    const services = new Map<string, ServicePort>();
    const endpoints = new Map<string, Endpoint[]>();
    const portOf = new Map<string, number>(); // cluster IP -> endpoint port

    const add = (name: string, clusterIP: string, port: number): ServicePort => {
      const s = servicePort({ namespace: 't', name, clusterIP });
      services.set(s.key, s);
      endpoints.set(s.key, [ep(port)]);
      portOf.set(clusterIP, port);
      return s;
    };
    const sync = (changed: string[] | 'full') =>
      proxier.sync({
        full: changed === 'full',
        changed: new Set(changed === 'full' ? [] : changed),
        plans: planServices(services, endpoints, node, 4),
        node,
        config,
        family: 4,
      });
    const natSave = (): string => nodeNs.exec([`iptables-${mode}-save`, '-t', 'nat']);
    const chainRules = (save: string, chain: string): string[] => save.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
    const declared = (save: string): Set<string> => new Set([...save.matchAll(/^:(\S+) /gm)].map((m) => m[1]!));

    /** every service with endpoints has its rule in its leaf, its leaf a jump from level 1, level 1 one from SERVICES */
    function expectTree(save: string): void {
      const svcRules = chainRules(save, `${chainPrefix}-SERVICES`);
      for (const s of services.values()) {
        if (!endpoints.get(s.key)?.length) continue;
        const b = clusterIPBuckets(s.clusterIP, chainPrefix)!;
        const leaf = chainRules(save, b.leaf);
        expect(leaf.some((l) => l.includes(`-d ${s.clusterIP}/32 `) && l.endsWith(`-j ${serviceChains(s.key, chainPrefix).svc}`)), `${s.clusterIP} in ${b.leaf}`).toBe(true);
        expect(chainRules(save, b.l1)).toContain(`-A ${b.l1} -d ${b.leafCidr} -j ${b.leaf}`);
        expect(svcRules).toContain(`-A ${chainPrefix}-SERVICES -d ${b.l1Cidr} -j ${b.l1}`);
      }
      // no cluster-IP rule left in SERVICES itself; the NodePorts rule is last
      expect(svcRules.filter((l) => l.includes('cluster IP'))).toEqual([]);
      expect(svcRules[svcRules.length - 1]).toContain('must be the last rule');
    }

    beforeAll(async () => {
      nodeNs = createNetns(`${prefix}${tag}node`);
      srv = createNetns(`${prefix}${tag}srv`);
      execFileSync('ip', ['link', 'add', 'tos', 'netns', nodeNs.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', srv.name]);
      nodeNs.exec(['ip', 'addr', 'add', '10.244.2.1/24', 'dev', 'tos']);
      nodeNs.exec(['ip', 'addr', 'add', '192.168.79.1/32', 'dev', 'lo']);
      nodeNs.exec(['ip', 'link', 'set', 'tos', 'up']);
      // node-originated packets to a ClusterIP need a route before nat OUTPUT (real nodes have a default route)
      nodeNs.exec(['ip', 'route', 'add', 'default', 'via', '10.244.2.254', 'dev', 'tos', 'onlink']);
      srv.exec(['ip', 'addr', 'add', '10.244.2.2/24', 'dev', 'eth0']);
      srv.exec(['ip', 'link', 'set', 'eth0', 'up']);
      for (let i = 0; i < PORTS; i++) {
        const port = 9000 + i;
        const p = spawn('ip', ['netns', 'exec', srv.name, 'socat', `TCP-LISTEN:${port},bind=10.244.2.2,fork,reuseaddr`, `SYSTEM:read x; echo ${port}`], {
          stdio: 'ignore',
          detached: true,
        });
        procs.push(p);
      }
      await new Promise((r) => setTimeout(r, 300));
      // 300 services over 10.96.0.0/18 (four /20s, 64 /24s, ~5 services per /24), one alone in 10.96.70.0/20, and
      // one in 10.200.0.0/20; chunkServices 100: the full sync goes through the chunked path
      for (let i = 0; i < 300; i++) add(`s${i}`, `10.96.${(i * 13) % 64}.${10 + Math.floor(i / 64)}`, 9000 + (i % PORTS));
      add('alone', '10.96.70.1', 9003);
      add('far', '10.200.1.1', 9004);
      proxier = new IptablesProxier({ runner, mode, netns: nodeNs.path, chainPrefix, chunkServices: 100 });
      await sync('full');
    });

    afterAll(() => {
      for (const p of procs.splice(0)) {
        try {
          if (p.pid) process.kill(-p.pid, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
      removeNetnsWithPrefix(`${prefix}${tag}`);
    });

    // one cluster IP in each level-1 bucket (and a couple more in the big ones)
    const probes = ['10.96.0.10', '10.96.13.10', '10.96.17.11', '10.96.33.12', '10.96.63.10', '10.96.50.13', '10.96.70.1', '10.200.1.1'];

    it('full sync: the tree is in the kernel and every level-1 bucket routes to its endpoints', () => {
      const save = natSave();
      const l1 = chainRules(save, `${chainPrefix}-SERVICES`).filter((l) => l.includes('-SVCT-'));
      expect(l1.map((l) => l.replace(/^.* -d (\S+) .*$/, '$1'))).toEqual(['10.96.0.0/20', '10.96.16.0/20', '10.96.32.0/20', '10.96.48.0/20', '10.96.64.0/20', '10.200.0.0/20']);
      expect([...declared(save)].filter((c) => c.startsWith(`${chainPrefix}-SVCL-`))).toHaveLength(66);
      expectTree(save);
      for (const ip of probes) expect(connect(nodeNs, ip), ip).toBe(String(portOf.get(ip)));
    });

    it('partial sync: a service in a new /20 works, removed ones stop working, no bucket flushed or lost', async () => {
      const before = natSave();
      const nw = add('new', '10.150.40.7', 9006);
      const noEps = [...services.values()].find((s) => s.clusterIP === '10.96.17.11')!;
      endpoints.set(noEps.key, []);
      const alone = [...services.values()].find((s) => s.clusterIP === '10.96.70.1')!;
      services.delete(alone.key);
      endpoints.delete(alone.key);
      await sync([nw.key, noEps.key, alone.key]);
      expect(proxier.lastStats.get(4)!.full).toBe(false);
      const prog = proxier.lastProgram.get(4)!;
      const nb = clusterIPBuckets(nw.clusterIP, chainPrefix)!;
      // only the new buckets are declared
      expect(prog.split('\n').filter((l) => /^:\S+-SVC[TL]-/.test(l))).toEqual([`:${nb.l1} - [0:0]`, `:${nb.leaf} - [0:0]`]);

      expect(connect(nodeNs, '10.150.40.7')).toBe('9006');
      const t0 = Date.now();
      expect(connect(nodeNs, '10.96.17.11')).toMatch(/^ERR:.*(refused|reset)/i); // REJECT (tcp-reset) in filter
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(connect(nodeNs, '10.96.70.1')).toMatch(/^ERR/); // no rules at all: not DNATed, goes nowhere
      for (const ip of probes.filter((p) => !['10.96.17.11', '10.96.70.1'].includes(p))) expect(connect(nodeNs, ip), ip).toBe(String(portOf.get(ip)));

      const save = natSave();
      expectTree(save);
      // every bucket that existed is still there with the same rules, except the leaf that lost 10.96.17.11 (one
      // rule less) and the emptied buckets of 10.96.70.1 (empty, still referenced, until the next full sync)
      const ab = clusterIPBuckets('10.96.70.1', chainPrefix)!;
      const nb17 = clusterIPBuckets('10.96.17.11', chainPrefix)!;
      for (const c of [...declared(before)].filter((x) => /-SVC[TL]-/.test(x))) {
        expect(declared(save).has(c), c).toBe(true);
        const want = chainRules(before, c).filter((l) => !l.includes('-d 10.96.17.11/32 ') && !l.includes('-d 10.96.70.1/32 '));
        expect(chainRules(save, c).sort(), c).toEqual(want.sort());
      }
      expect(chainRules(save, ab.leaf)).toEqual([]);
      expect(chainRules(save, ab.l1)).toEqual([`-A ${ab.l1} -d ${ab.leafCidr} -j ${ab.leaf}`]);
      expect(chainRules(save, nb17.leaf).length).toBe(chainRules(before, nb17.leaf).length - 1);
    });

    it('full sync: the emptied buckets are deleted, the rest keeps working', async () => {
      await sync('full');
      expect(proxier.lastStats.get(4)!.full).toBe(true);
      const ab = clusterIPBuckets('10.96.70.1', chainPrefix)!;
      const save = natSave();
      expect(declared(save).has(ab.leaf)).toBe(false);
      expect(declared(save).has(ab.l1)).toBe(false);
      expect(save).not.toContain('10.96.64.0/20');
      expectTree(save);
      for (const ip of ['10.150.40.7', '10.96.0.10', '10.96.63.10', '10.200.1.1']) expect(connect(nodeNs, ip), ip).toBe(String(portOf.get(ip)));
      await proxier.cleanup();
      expect(nodeNs.exec([`iptables-${mode}-save`])).not.toContain(chainPrefix);
    });
  });
}
