// The vxlan CNI meta-plugin run as a process inside each "node" netns, delegating to the built bridge + host-local
// (dist/bin), on top of the overlay controller: code 11 / 50 before the subnet file exists, real pods across nodes
// afterwards, DEL from the saved config after the subnet file changed.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderSubnetEnv } from '../../lib/overlay/subnet-file.ts';
import { createTestbed, killProc, spawnIn, type BedNode, type Testbed } from '../helpers/overlay-testbed.ts';
import { createNetns, type TestNetns } from '../helpers/netns.ts';

const root = resolve(import.meta.dirname, '../..');
const CNI_PATH = join(root, 'dist/bin');
// the plugin under test: FLATNET_VXLAN_BIN, else the built dist/bin/vxlan when it is newer than the plugin's sources,
// else the development form of plugins/main.ts (so a stale build never hides a source change)
function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}
const built = join(root, 'dist/bin/vxlan');
const builtFresh = existsSync(built) && statSync(built).mtimeMs >= newestSource(join(root, 'plugins/vxlan'));
const VXLAN = process.env.FLATNET_VXLAN_BIN
  ? [process.env.FLATNET_VXLAN_BIN]
  : builtFresh
    ? [built]
    : [join(root, 'node_modules/.bin/node'), join(root, 'plugins/main.ts'), 'vxlan'];
const haveBuild = existsSync(join(CNI_PATH, 'bridge')) && existsSync(join(CNI_PATH, 'host-local'));

let bed: Testbed;

interface CniOut {
  code: number;
  json: Record<string, unknown>;
  stderr: string;
}

function conf(n: BedNode, cniVersion = '1.0.0'): Record<string, unknown> {
  return {
    cniVersion,
    name: 'flatnet',
    type: 'vxlan',
    subnetFile: n.subnetFile,
    dataDir: join(bed.dir, n.name, 'vxlan'),
    ipam: { dataDir: join(bed.dir, n.name, 'ipam') },
  };
}

function cni(n: BedNode, command: string, containerId: string, pod: TestNetns | undefined, c = conf(n)): CniOut {
  const r = spawnSync('ip', ['netns', 'exec', n.ns.name, ...VXLAN], {
    input: JSON.stringify(c),
    encoding: 'utf8',
    env: {
      ...process.env,
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: pod?.path ?? '',
      CNI_IFNAME: 'eth0',
      CNI_PATH,
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p',
    },
  });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout || '{}') as Record<string, unknown>;
  } catch {
    json = { raw: r.stdout };
  }
  return { code: r.status ?? -1, json, stderr: r.stderr };
}

const links = (ns: TestNetns): string[] =>
  (JSON.parse(ns.exec(['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);

function peerSeen(client: TestNetns, server: TestNetns, ip: string, port: number, source?: string, waitMs = 6000): string {
  const srv = spawnIn(server, ['socat', `TCP-LISTEN:${port},bind=${ip},reuseaddr,fork`, 'SYSTEM:echo $SOCAT_PEERADDR']);
  try {
    const t0 = Date.now();
    for (;;) {
      const r = spawnSync('ip', ['netns', 'exec', client.name, 'socat', '-t5', '-T5', '-', `TCP:${ip}:${port},connect-timeout=2${source ? `,bind=${source}` : ''}`], { input: 'x\n', encoding: 'utf8' });
      if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
      if (Date.now() - t0 > waitMs) throw new Error(`TCP ${ip}:${port}: ${r.stderr}`);
      spawnSync('sleep', ['0.1']);
    }
  } finally {
    killProc(srv);
  }
}

beforeAll(async () => {
  bed = await createTestbed({ bridges: false });
});

afterAll(async () => {
  await bed?.destroy();
});

describe.skipIf(!haveBuild)('vxlan CNI plugin over the overlay controller', () => {
  const pods: { ns: TestNetns; ip: string; node: BedNode; id: string }[] = [];

  it('fails ADD with code 11 and STATUS with code 50 while the subnet file is missing, leaving nothing behind', () => {
    const n1 = bed.nodes[0]!;
    const pod = createNetns(`${bed.prefix}n1pa`);
    const add = cni(n1, 'ADD', 'early', pod);
    expect(add.code).not.toBe(0);
    expect(add.json).toMatchObject({ code: 11 });
    expect(String(add.json.msg)).toMatch(/subnet file .* does not exist yet/);
    const st = cni(n1, 'STATUS', '', undefined, conf(n1, '1.1.0'));
    expect(st.json).toMatchObject({ code: 50 });
    expect(links(n1.ns)).not.toContain('cni0');
    expect(links(pod)).toEqual(['lo']);
    expect(existsSync(join(bed.dir, n1.name, 'vxlan'))).toBe(false);
    pod.remove();
  });

  it('ADD attaches pods on each node with the node podCIDR, overlay MTU and a cluster route', async () => {
    for (let i = 0; i < 3; i++) await bed.startController(i);
    for (const n of bed.nodes) await n.controller!.reconcile();
    expect(cni(bed.nodes[0]!, 'STATUS', '', undefined, conf(bed.nodes[0]!, '1.1.0')).code).toBe(0);
    for (const [i, n] of bed.nodes.entries()) {
      const ns = createNetns(`${bed.prefix}n${i + 1}pc`);
      const id = `ctr${i + 1}`;
      const r = cni(n, 'ADD', id, ns);
      expect(r.code, `${r.stderr} ${JSON.stringify(r.json)}`).toBe(0);
      const ip = String((r.json.ips as { address: string }[])[0]!.address).split('/')[0]!;
      expect(ip.startsWith(`10.244.${i + 1}.`)).toBe(true);
      pods.push({ ns, ip, node: n, id });
      const eth0 = (JSON.parse(ns.exec(['ip', '-j', 'link', 'show', 'eth0'])) as { mtu: number }[])[0]!;
      expect(eth0.mtu).toBe(1450);
      expect(ns.exec(['ip', 'route', 'show'])).toMatch(new RegExp(`10\\.244\\.0\\.0/16 via 10\\.244\\.${i + 1}\\.1`));
      expect(existsSync(join(bed.dir, n.name, 'vxlan', `${id}-eth0.json`))).toBe(true);
    }
  });

  it('pods reach each other across nodes with their own IPs, and egress is masqueraded by the controller', () => {
    const [a, b, c] = pods;
    expect(peerSeen(a!.ns, b!.ns, b!.ip, 7101)).toBe(a!.ip);
    expect(peerSeen(c!.ns, a!.ns, a!.ip, 7102)).toBe(c!.ip);
    expect(peerSeen(b!.ns, bed.external, bed.externalIp, 7103)).toBe(b!.node.ip);
  });

  it('by default a pod cannot send from an address it was not given; delegate macspoofchk/ipspoofchk false opts out', () => {
    const [a, b] = pods;
    const n2 = b!.node;
    // b adds an address of its node's podCIDR that IPAM never gave it: replies would reach it, but nothing leaves
    b!.ns.exec(['ip', 'addr', 'add', '10.244.2.250/32', 'dev', 'eth0']);
    expect(() => peerSeen(b!.ns, a!.ns, a!.ip, 7104, '10.244.2.250', 3000)).toThrow();
    expect(peerSeen(b!.ns, a!.ns, a!.ip, 7105)).toBe(b!.ip);
    // the same on a pod attached with the checks turned off: the forged source goes through
    const ns = createNetns(`${bed.prefix}n2po`);
    const optOut = { ...conf(n2), delegate: { macspoofchk: false, ipspoofchk: false } };
    const add = cni(n2, 'ADD', 'ctr-optout', ns, optOut);
    expect(add.code, add.stderr).toBe(0);
    ns.exec(['ip', 'addr', 'add', '10.244.2.251/32', 'dev', 'eth0']);
    expect(peerSeen(ns, a!.ns, a!.ip, 7106, '10.244.2.251')).toBe('10.244.2.251');
    expect(cni(n2, 'DEL', 'ctr-optout', ns, optOut).code).toBe(0);
    ns.remove();
  });

  it('CHECK passes for an attached pod (prevResult from ADD) and a 0.3.1 config gets a 0.3.1 result', () => {
    const n2 = bed.nodes[1]!;
    const ns = createNetns(`${bed.prefix}n2pd`);
    const add = cni(n2, 'ADD', 'ctr-old', ns, conf(n2, '0.3.1'));
    expect(add.code, add.stderr).toBe(0);
    expect(add.json.cniVersion).toBe('0.3.1');
    expect((add.json.ips as { version?: string }[])[0]!.version).toBe('4');
    const chk = cni(n2, 'CHECK', 'ctr-old', ns, { ...conf(n2, '0.4.0'), prevResult: { ...add.json, cniVersion: '0.4.0' } });
    expect(chk.code, `${chk.stderr} ${JSON.stringify(chk.json)}`).toBe(0);
    const del = cni(n2, 'DEL', 'ctr-old', ns, conf(n2, '0.3.1'));
    expect(del.code, del.stderr).toBe(0);
    expect(links(ns)).toEqual(['lo']);
    ns.remove();
  });

  it('DEL after the subnet file changed uses the saved config: IP released, veth gone; a second DEL succeeds', () => {
    const a = pods[0]!;
    const ipamDir = join(bed.dir, a.node.name, 'ipam', 'flatnet');
    expect(readdirSync(ipamDir)).toContain(a.ip);
    // the controller keeps rewriting the file; stop it first so the changed file stays
    return a.node.controller!.stop().then(() => {
      writeFileSync(a.node.subnetFile, renderSubnetEnv({ networks: ['10.244.0.0/16'], subnets: ['10.244.77.0/24'], mtu: 1400, ipMasq: true }));
      const del = cni(a.node, 'DEL', a.id, a.ns);
      expect(del.code, del.stderr).toBe(0);
      expect(readdirSync(ipamDir)).not.toContain(a.ip);
      expect(links(a.ns)).toEqual(['lo']);
      expect(existsSync(join(bed.dir, a.node.name, 'vxlan', `${a.id}-eth0.json`))).toBe(false);
      const again = cni(a.node, 'DEL', a.id, undefined);
      expect(again.code, again.stderr).toBe(0);
    });
  });
});
