// The overlay testbed: "node" netns on a per-run underlay bridge, each running the VXLAN controller in-process with
// an in-memory Node list, and "pod" netns behind each node's bridge. Used by the vxlan netns tests and the overlay
// benchmark.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../lib/log/logger.ts';
import { ExecRunner } from '../../lib/exec/exec.ts';
import type { Runner } from '../../lib/exec/runner.ts';
import { parseOverlayConfig } from '../../proxy/overlay/config.ts';
import { OverlayController } from '../../proxy/overlay/controller.ts';
import { MemoryNodeSource } from '../../proxy/overlay/node.ts';
import { parseSubnetEnv } from '../../lib/overlay/subnet-file.ts';
import { createNetns, removeLinksWithPrefix, removeNetnsWithPrefix, type TestNetns } from './netns.ts';
import { runPrefix } from './prefix.ts';

export interface BedNode {
  name: string;
  ns: TestNetns;
  ip: string;
  podCIDR: string;
  subnetFile: string;
  runner: Runner;
  controller?: OverlayController;
}

export interface BedPod {
  ns: TestNetns;
  ip: string;
  node: BedNode;
}

export interface Testbed {
  prefix: string;
  underlay: TestNetns;
  external: TestNetns;
  externalIp: string;
  nodes: BedNode[];
  store: MemoryNodeSource;
  dir: string;
  table: string;
  /** start node i's controller with extra overlay config; resolves after its first reconcile */
  startController(i: number, extra?: Record<string, unknown>): Promise<OverlayController>;
  /** a pod netns on node i behind the node's bridge cni0 (plain veth), MTU from the node's subnet file */
  addPod(i: number): BedPod;
  /** adds the Node object of node i to the in-memory API */
  putNode(i: number): void;
  destroy(): Promise<void>;
}

export const quietLog: Logger = {
  debug() {},
  info(o, m) {
    if (process.env.FLATNET_TEST_DEBUG === '3') console.error(new Date().toISOString(), 'INFO', m, JSON.stringify(o).slice(0, 100));
    if (process.env.FLATNET_TEST_DEBUG === '2') console.error('INFO', m, JSON.stringify(o));
  },
  warn(o, m) {
    if (process.env.FLATNET_TEST_DEBUG) console.error('WARN', m, JSON.stringify(o));
  },
  error(o, m) {
    console.error('ERROR', m, JSON.stringify(o));
  },
};

export function nsRunner(path: string): Runner {
  const exec = new ExecRunner();
  return { run: (argv, opts = {}) => exec.run(argv, { ...opts, netns: path }) };
}

const UNDERLAY_NET = '10.99.0';

/** nodes: node count (3); underlayMtu: veth MTU; bridges: false leaves cni0 to the CNI plugin (addPod needs it true) */
export async function createTestbed(opts: { nodes?: number; underlayMtu?: number; bridges?: boolean } = {}): Promise<Testbed> {
  const count = opts.nodes ?? 3;
  const prefix = runPrefix();
  const dir = `/tmp/${prefix}-overlay`;
  mkdirSync(dir, { recursive: true });
  const store = new MemoryNodeSource();
  const nodes: BedNode[] = [];
  const pods: TestNetns[] = [];
  const table = `${prefix}_ovl`;
  let underlay: TestNetns | undefined;
  let external: TestNetns | undefined;
  const sh = (argv: string[]): string => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });

  const bed: Testbed = {
    prefix,
    underlay: undefined as unknown as TestNetns,
    external: undefined as unknown as TestNetns,
    externalIp: `${UNDERLAY_NET}.200`,
    nodes,
    store,
    dir,
    table,
    async startController(i, extra = {}) {
      const n = nodes[i]!;
      const config = parseOverlayConfig({
        clusterCIDRs: ['10.244.0.0/16'],
        subnetFile: n.subnetFile,
        masqueradeTable: table,
        resyncIntervalMs: 1000,
        ...extra,
      });
      const c = new OverlayController({ config, nodeName: n.name, source: store.view(), runner: n.runner, log: quietLog });
      await c.start();
      n.controller = c;
      return c;
    },
    putNode(i) {
      const n = nodes[i]!;
      store.put({
        metadata: { name: n.name, annotations: {} },
        spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
        status: { addresses: [{ type: 'InternalIP', address: n.ip }] },
      });
    },
    addPod(i) {
      const n = nodes[i]!;
      const podIndex = pods.filter((p) => p.name.startsWith(`${n.ns.name}p`)).length + 1;
      const ns = createNetns(`${n.ns.name}p${podIndex}`);
      pods.push(ns);
      const mtu = parseSubnetEnv(readFileSync(n.subnetFile, 'utf8')).mtu;
      const hostIf = `vp${podIndex}`;
      const ip = `10.244.${i + 1}.${podIndex + 1}`;
      sh(['ip', '-n', n.ns.name, 'link', 'add', hostIf, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      sh(['ip', '-n', n.ns.name, 'link', 'set', hostIf, 'master', 'cni0', 'up']);
      sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up']);
      sh(['ip', '-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', ns.name, 'route', 'add', 'default', 'via', `10.244.${i + 1}.1`]);
      return { ns, ip, node: n };
    },
    async destroy() {
      for (const n of nodes) await n.controller?.stop().catch(() => undefined);
      for (const p of pods) p.remove();
      for (const n of nodes) n.ns.remove();
      external?.remove();
      underlay?.remove();
      removeNetnsWithPrefix(prefix);
      removeLinksWithPrefix(prefix);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    underlay = createNetns(`${prefix}u`);
    bed.underlay = underlay;
    sh(['ip', '-n', underlay.name, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(['ip', '-n', underlay.name, 'link', 'set', 'br0', 'up']);
    const attach = (ns: TestNetns, idx: string, ip: string): void => {
      const a = `${prefix}${idx}a`;
      const b = `${prefix}${idx}b`;
      sh(['ip', 'link', 'add', a, 'netns', ns.name, 'type', 'veth', 'peer', 'name', b, 'netns', underlay!.name]);
      sh(['ip', '-n', ns.name, 'link', 'set', a, 'name', 'eth0']);
      if (opts.underlayMtu) {
        sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'mtu', String(opts.underlayMtu)]);
        sh(['ip', '-n', underlay!.name, 'link', 'set', b, 'mtu', String(opts.underlayMtu)]);
      }
      sh(['ip', '-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', ns.name, 'link', 'set', 'eth0', 'up']);
      sh(['ip', '-n', underlay!.name, 'link', 'set', b, 'master', 'br0', 'up']);
    };
    for (let i = 0; i < count; i++) {
      const ns = createNetns(`${prefix}n${i + 1}`);
      const ip = `${UNDERLAY_NET}.${i + 1}`;
      const n: BedNode = {
        name: `node-${i + 1}`,
        ns,
        ip,
        podCIDR: `10.244.${i + 1}.0/24`,
        subnetFile: join(dir, `node-${i + 1}`, 'subnet.env'),
        runner: nsRunner(ns.path),
      };
      nodes.push(n);
      attach(ns, `n${i + 1}`, ip);
      ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      if (opts.bridges !== false) {
        sh(['ip', '-n', ns.name, 'link', 'add', 'cni0', 'type', 'bridge']);
        sh(['ip', '-n', ns.name, 'addr', 'add', `10.244.${i + 1}.1/24`, 'dev', 'cni0']);
        sh(['ip', '-n', ns.name, 'link', 'set', 'cni0', 'up']);
      }
    }
    external = createNetns(`${prefix}x`);
    bed.external = external;
    attach(external, 'x', bed.externalIp);
    for (let i = 0; i < count; i++) bed.putNode(i);
    return bed;
  } catch (e) {
    await bed.destroy();
    throw e;
  }
}

/** Start a background process inside a netns; the caller kills it by PID. */
export function spawnIn(ns: TestNetns, argv: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns.name, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
}

export function killProc(p: ChildProcess | undefined): void {
  if (p?.pid && p.exitCode === null && p.signalCode === null) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

