// bridge + host-local (ours, dist/bin) in real namespaces: ADD/CHECK/DEL for every spec version, traffic, masquerade
// (both backends), options, GC. Each test runs the plugin inside its own "host" netns, so nothing touches the machine.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runPrefix } from '../helpers/prefix.ts';
import { removeNetnsWithPrefix, createNetns, type TestNetns } from '../helpers/netns.ts';
import { makePair, OURS_BIN, Side, snapshot, VERSIONS, type Attachment, type Conflist, type Json, type Pair } from '../helpers/sbs.ts';

const P = runPrefix();

/** This kernel may be built without CONFIG_BRIDGE_VLAN_FILTERING (the reference plugin fails there too). */
let vlanProbe: boolean | undefined;
function vlanFilteringSupported(): boolean {
  if (vlanProbe !== undefined) return vlanProbe;
  const ns = createNetns(`${P}vp`);
  try {
    execFileSync('ip', ['-n', ns.name, 'link', 'add', 'vp0', 'type', 'bridge', 'vlan_filtering', '1'], { stdio: 'ignore' });
    vlanProbe = true;
  } catch {
    vlanProbe = false;
  } finally {
    ns.remove();
  }
  return vlanProbe;
}
const BR = `${P}br`;
let pairs: Pair[] = [];
let extra: TestNetns[] = [];
let tag = 0;

beforeAll(() => {
  expect(existsSync(`${OURS_BIN}/bridge`)).toBe(true);
});
afterEach(() => {
  for (const p of pairs) p.cleanup();
  for (const n of extra) n.remove();
  pairs = [];
  extra = [];
});
afterAll(() => removeNetnsWithPrefix(P));

function setup(containers = 1): { pair: Pair; side: Side } {
  const pair = makePair(P, `b${tag++}`, containers);
  pairs.push(pair);
  return { pair, side: new Side('ours', [OURS_BIN], pair.host.path) };
}

function conflist(version: string, dataDir: string, extraConf: Json = {}, ipam: Json = {}): Conflist {
  return {
    cniVersion: version,
    name: `${P}net`,
    plugins: [
      {
        type: 'bridge',
        bridge: BR,
        isGateway: true,
        ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.77.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], ...ipam },
        ...extraConf,
      },
    ],
  };
}

const att = (n: TestNetns, id = 'c-' + n.name): Attachment => ({ containerId: id, netns: n.path, ifname: 'eth0' });
const ipJ = (ns: string, ...args: string[]): Json[] => JSON.parse(execFileSync('ip', ['-n', ns, '-j', '-d', ...args], { encoding: 'utf8' }) || '[]') as Json[];

/** Start a TCP server in `serverNs` that answers each connection with the peer address it sees. */
async function peerSeen(serverNs: string, bindIp: string, clientNs: string, port = 18080, attempts = 50, clientSource?: string): Promise<string> {
  const srv = spawn('ip', ['netns', 'exec', serverNs, 'socat', '-T5', `TCP-LISTEN:${port},bind=${bindIp},reuseaddr`, 'SYSTEM:echo $SOCAT_PEERADDR'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < attempts; i++) {
      try {
        const out = execFileSync('ip', ['netns', 'exec', clientNs, 'socat', '-T3', '-', `TCP:${bindIp}:${port},connect-timeout=2${clientSource ? `,bind=${clientSource}` : ''}`], { encoding: 'utf8', input: '', timeout: 5000 });
        if (out.trim()) return out.trim();
      } catch {
        /* server not listening yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('no answer');
  } finally {
    if (srv.pid) {
      try {
        process.kill(srv.pid, 'SIGKILL');
      } catch {
        /* exited */
      }
    }
  }
}

describe.each(VERSIONS)('bridge ADD/CHECK/DEL, cniVersion %s', (v) => {
  it('sets up the bridge, veth, addresses and routes, answers in the config version, and DEL removes it all', async () => {
    const { pair, side } = setup();
    const list = conflist(v, pair.dataDir);
    const a = att(pair.containers[0]!);
    const add = await side.add(list, a);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const r = add.json!;
    expect(r['cniVersion']).toBe(v);
    const ifs = r['interfaces'] as Json[];
    expect(ifs.map((i) => i['name'])).toEqual([BR, expect.stringMatching(/^veth[0-9a-f]{8}$/), 'eth0']);
    expect(ifs[2]!['sandbox']).toBe(a.netns);
    const ips = r['ips'] as Json[];
    expect(ips).toHaveLength(1);
    expect(ips[0]).toMatchObject({ address: '10.77.0.2/24', gateway: '10.77.0.1', interface: 2 });
    if (v.startsWith('0.')) expect(ips[0]!['version']).toBe('4');
    else expect(ips[0]!['version']).toBeUndefined();

    // kernel: host side
    const br = ipJ(pair.host.name, 'addr', 'show', 'dev', BR)[0]!;
    expect((br['linkinfo'] as Json)['info_kind']).toBe('bridge');
    expect((br['addr_info'] as Json[]).map((x) => `${String(x['local'])}/${String(x['prefixlen'])}`)).toContain('10.77.0.1/24');
    expect(br['address']).toBe(ifs[0]!['mac']);
    const hv = ipJ(pair.host.name, 'link', 'show', 'dev', String(ifs[1]!['name']))[0]!;
    expect(hv['master']).toBe(BR);
    expect(hv['address']).toBe(ifs[1]!['mac']);
    expect(execFileSync('ip', ['netns', 'exec', pair.host.name, 'cat', '/proc/sys/net/ipv4/ip_forward'], { encoding: 'utf8' }).trim()).toBe('1');
    // container side
    const eth0 = ipJ(pair.containers[0]!.name, 'addr', 'show', 'dev', 'eth0')[0]!;
    expect(eth0['address']).toBe(ifs[2]!['mac']);
    expect((eth0['flags'] as string[]).includes('UP')).toBe(true);
    expect((eth0['addr_info'] as Json[]).some((x) => x['local'] === '10.77.0.2')).toBe(true);
    const routes = execFileSync('ip', ['-n', pair.containers[0]!.name, 'route'], { encoding: 'utf8' });
    expect(routes).toContain('default via 10.77.0.1 dev eth0');
    expect(execFileSync('ip', ['netns', 'exec', pair.containers[0]!.name, 'cat', '/proc/sys/net/ipv4/conf/eth0/arp_notify'], { encoding: 'utf8' }).trim()).toBe('1');
    // host-local store
    expect(readdirSync(`${pair.dataDir}/${P}net`)).toContain('10.77.0.2');

    if (v !== '0.3.0' && v !== '0.3.1') {
      const chk = await side.check(list, a);
      expect(chk.code, chk.stdout).toBe(0);
      // CHECK must notice a missing route
      execFileSync('ip', ['-n', pair.containers[0]!.name, 'route', 'del', 'default']);
      const bad = await side.check(list, a);
      expect(bad.code).not.toBe(0);
      expect(String(bad.json?.['msg'])).toMatch(/Route|route/);
    }

    const del = await side.del(list, a);
    expect(del.code, del.stdout).toBe(0);
    expect(ipJ(pair.containers[0]!.name, 'link', 'show').map((l) => l['ifname'])).not.toContain('eth0');
    expect(ipJ(pair.host.name, 'link', 'show').map((l) => l['ifname'])).toEqual(['lo', BR]);
    expect(readdirSync(`${pair.dataDir}/${P}net`)).not.toContain('10.77.0.2');
    // idempotent, and fine without a netns
    expect((await side.del(list, a)).code).toBe(0);
    expect((await side.del(list, { ...a, netns: '' })).code).toBe(0);
    pair.containers[0]!.remove();
    expect((await side.del(list, a)).code).toBe(0);
  });
});

describe('bridge traffic and masquerade', () => {
  it('two pods on the bridge reach each other and the gateway with their own source IPs', async () => {
    const { pair, side } = setup(2);
    const list = conflist('1.0.0', pair.dataDir);
    const [c0, c1] = pair.containers as [TestNetns, TestNetns];
    expect((await side.add(list, att(c0))).code).toBe(0);
    expect((await side.add(list, att(c1))).code).toBe(0);
    expect(await peerSeen(c0.name, '10.77.0.2', c1.name)).toBe('10.77.0.3');
    expect(await peerSeen(pair.host.name, '10.77.0.1', c0.name, 18081)).toBe('10.77.0.2');
  });

  it.each(['iptables', 'nftables'])('ipMasq (%s): traffic leaving the bridge subnet is masqueraded; DEL removes the rules', async (backend) => {
    const { pair, side } = setup(1);
    // an "outside" netns linked to the host netns on 192.168.77.0/24
    const out = createNetns(`${P}o${tag}`);
    extra.push(out);
    execFileSync('ip', ['-n', pair.host.name, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth9', 'netns', out.name]);
    execFileSync('ip', ['-n', pair.host.name, 'addr', 'add', '192.168.77.1/24', 'dev', 'up0']);
    execFileSync('ip', ['-n', pair.host.name, 'link', 'set', 'up0', 'up']);
    execFileSync('ip', ['-n', out.name, 'addr', 'add', '192.168.77.2/24', 'dev', 'eth9']);
    execFileSync('ip', ['-n', out.name, 'link', 'set', 'eth9', 'up']);
    const list = conflist('1.0.0', pair.dataDir, { ipMasq: true, ipMasqBackend: backend });
    const a = att(pair.containers[0]!);
    const add = await side.add(list, a);
    expect(add.code, add.stdout).toBe(0);
    // the outside has no route back to 10.77.0.0/24: only masquerading makes this work
    expect(await peerSeen(out.name, '192.168.77.2', pair.containers[0]!.name, 18082)).toBe('192.168.77.1');
    // pod-to-gateway traffic inside the subnet is not masqueraded
    expect(await peerSeen(pair.host.name, '10.77.0.1', pair.containers[0]!.name, 18083)).toBe('10.77.0.2');
    const snap = snapshot(pair.host.path, (n) => n);
    if (backend === 'iptables') expect(snap.iptables.some((l) => l.includes('MASQUERADE'))).toBe(true);
    else expect(snap.nft.some((l) => l.includes('masquerade'))).toBe(true);
    expect((await side.del(list, a)).code).toBe(0);
    const after = snapshot(pair.host.path, (n) => n);
    expect(after.iptables.some((l) => l.includes('CNI-'))).toBe(false);
    expect(after.nft.some((l) => l.includes('masquerade comment'))).toBe(false);
  });

  it('GC removes masquerade rules of attachments that are not valid any more, and keeps the valid ones', async () => {
    const { pair, side } = setup(2);
    const list = conflist('1.1.0', pair.dataDir, { ipMasq: true });
    const nlist = conflist('1.1.0', pair.dataDir, { ipMasq: true, ipMasqBackend: 'nftables' });
    const [c0, c1] = pair.containers as [TestNetns, TestNetns];
    expect((await side.add(list, att(c0, 'keep'))).code).toBe(0);
    expect((await side.add(nlist, att(c1, 'gone'))).code).toBe(0);
    const before = snapshot(pair.host.path, (n) => n);
    expect(before.iptables.filter((l) => l.startsWith('-A POSTROUTING')).length).toBe(1);
    expect(before.nft.filter((l) => l.includes('masquerade comment')).length).toBe(1);
    const gc = await side.gc(list, [{ containerID: 'keep', ifname: 'eth0' }]);
    expect(gc.code, gc.stdout).toBe(0);
    const after = snapshot(pair.host.path, (n) => n);
    expect(after.iptables.filter((l) => l.startsWith('-A POSTROUTING')).length).toBe(1);
    expect(after.nft.filter((l) => l.includes('masquerade comment')).length).toBe(0);
  });
});

describe('bridge concurrency', () => {
  it('10 ADDs in parallel into a bridge that does not exist yet, then 10 DELs in parallel', async () => {
    const { pair, side } = setup(10);
    const list = conflist('1.0.0', pair.dataDir, { ipMasq: true });
    const adds = await Promise.all(pair.containers.map((c) => side.add(list, att(c))));
    for (const a of adds) expect(a.code, a.stdout).toBe(0);
    const ips = adds.map((a) => String((a.json!['ips'] as Json[])[0]!['address']));
    expect(new Set(ips).size).toBe(10);
    const ports = ipJ(pair.host.name, 'link', 'show', 'master', BR);
    expect(ports).toHaveLength(10);
    const br = ipJ(pair.host.name, 'addr', 'show', 'dev', BR)[0]!;
    expect((br['addr_info'] as Json[]).filter((x) => x['family'] === 'inet').map((x) => x['local'])).toEqual(['10.77.0.1']);
    expect(snapshot(pair.host.path, (n) => n).iptables.filter((l) => l.startsWith('-A POSTROUTING')).length).toBe(10);
    const dels = await Promise.all(pair.containers.map((c) => side.del(list, att(c))));
    for (const d of dels) expect(d.code, d.stdout).toBe(0);
    expect(ipJ(pair.host.name, 'link', 'show', 'master', BR)).toHaveLength(0);
    expect(snapshot(pair.host.path, (n) => n).iptables.some((l) => l.includes('CNI-'))).toBe(false);
    expect(readdirSync(`${pair.dataDir}/${P}net`).filter((f) => /^\d/.test(f))).toEqual([]);
  }, 180_000);
});

describe('bridge options', () => {
  it('mtu, hairpinMode, portIsolation, MAC from runtimeConfig', async () => {
    const { pair, side } = setup(1);
    const list = conflist('1.0.0', pair.dataDir, { mtu: 1400, hairpinMode: true, portIsolation: true, runtimeConfig: { mac: '02:12:34:56:78:9a' } });
    const add = await side.add(list, att(pair.containers[0]!));
    expect(add.code, add.stdout).toBe(0);
    const hv = String((add.json!['interfaces'] as Json[])[1]!['name']);
    const port = ipJ(pair.host.name, 'link', 'show', 'dev', hv)[0]!;
    const sd = (port['linkinfo'] as Json)['info_slave_data'] as Json;
    expect(port['mtu']).toBe(1400);
    expect(sd['hairpin']).toBe(true);
    expect(sd['isolated']).toBe(true);
    expect(ipJ(pair.host.name, 'link', 'show', 'dev', BR)[0]!['mtu']).toBe(1400);
    const eth0 = ipJ(pair.containers[0]!.name, 'link', 'show', 'dev', 'eth0')[0]!;
    expect(eth0['mtu']).toBe(1400);
    expect(eth0['address']).toBe('02:12:34:56:78:9a');
  });

  it('MAC from CNI_ARGS (MAC=), unknown CNI_ARGS rejected without IgnoreUnknown', async () => {
    const { pair, side } = setup(2);
    const list = conflist('1.0.0', pair.dataDir);
    const a = { ...att(pair.containers[0]!), cniArgs: 'IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:aa:00:00:00:01' };
    const add = await side.add(list, a);
    expect(add.code, add.stdout).toBe(0);
    expect(ipJ(pair.containers[0]!.name, 'link', 'show', 'dev', 'eth0')[0]!['address']).toBe('02:aa:00:00:00:01');
    expect((await side.check(list, a)).code).toBe(0);
    const bad = await side.add(list, { ...att(pair.containers[1]!), cniArgs: 'K8S_POD_NAME=x' });
    expect(bad.json?.['code']).toBe(4);
    expect(ipJ(pair.containers[1]!.name, 'link', 'show').map((l) => l['ifname'])).toEqual(['lo']);
  });

  it('forceAddress replaces a different bridge address; enabledad turns DAD on in the container', async () => {
    const { pair, side } = setup(1);
    execFileSync('ip', ['-n', pair.host.name, 'link', 'add', BR, 'type', 'bridge']);
    execFileSync('ip', ['-n', pair.host.name, 'addr', 'add', '10.50.0.1/24', 'dev', BR]);
    const list = conflist('1.0.0', pair.dataDir, { forceAddress: true, enabledad: true });
    const add = await side.add(list, att(pair.containers[0]!));
    expect(add.code, add.stdout).toBe(0);
    const br = ipJ(pair.host.name, 'addr', 'show', 'dev', BR)[0]!;
    expect((br['addr_info'] as Json[]).filter((x) => x['family'] === 'inet').map((x) => x['local'])).toEqual(['10.77.0.1']);
    const c = pair.containers[0]!.name;
    const rd = (k: string): string => execFileSync('ip', ['netns', 'exec', c, 'cat', `/proc/sys/net/ipv6/conf/eth0/${k}`], { encoding: 'utf8' }).trim();
    expect(rd('accept_dad')).toBe('1');
    expect(rd('enhanced_dad')).toBe('1');
  });

  it.skipIf(!vlanFilteringSupported())('promiscMode and vlan: bridge promiscuous, vlan filtering, port pvid untagged, gateway on BR.vlan', async () => {
    const { pair, side } = setup(1);
    const list = conflist('1.0.0', pair.dataDir, { promiscMode: true, vlan: 100 });
    const add = await side.add(list, att(pair.containers[0]!));
    expect(add.code, add.stdout).toBe(0);
    const br = ipJ(pair.host.name, 'link', 'show', 'dev', BR)[0]!;
    expect(Number(br['promiscuity'])).toBeGreaterThan(0);
    expect(((br['linkinfo'] as Json)['info_data'] as Json)['vlan_filtering']).toBe(1);
    const hv = String((add.json!['interfaces'] as Json[])[1]!['name']);
    const vl = JSON.parse(execFileSync('ip', ['netns', 'exec', pair.host.name, 'bridge', '-j', 'vlan', 'show', 'dev', hv], { encoding: 'utf8' })) as Json[];
    expect((vl[0]!['vlans'] as Json[]).map((x) => [x['vlan'], x['flags']])).toEqual([[100, ['PVID', 'Egress Untagged']]]);
    expect((add.json!['interfaces'] as Json[])[3]!['name']).toBe(`${BR}.100`);
    const gwIf = ipJ(pair.host.name, 'addr', 'show', 'dev', `${BR}.100`)[0]!;
    expect((gwIf['addr_info'] as Json[]).some((x) => x['local'] === '10.77.0.1')).toBe(true);
    // the pod reaches its gateway through the VLAN
    expect(await peerSeen(pair.host.name, '10.77.0.1', pair.containers[0]!.name, 18084)).toBe('10.77.0.2');
  });

  it.skipIf(vlanFilteringSupported())('vlan on a kernel without bridge VLAN filtering fails cleanly and leaves nothing behind', async () => {
    const { pair, side } = setup(1);
    const list = conflist('1.0.0', pair.dataDir, { vlan: 100 });
    const before = snapshot(pair.host.path, (n) => n);
    const add = await side.add(list, att(pair.containers[0]!));
    expect(add.json!['code']).toBe(104);
    expect(String(add.json!['msg'])).toMatch(/not supported/);
    expect(snapshot(pair.host.path, (n) => n)).toEqual(before);
    expect(ipJ(pair.containers[0]!.name, 'link', 'show').map((l) => l['ifname'])).toEqual(['lo']);
    expect(readdirSync(`${pair.dataDir}/${P}net`).filter((f) => /^\d/.test(f))).toEqual([]);
  });

  it('macspoofchk: frames with a foreign source MAC are dropped; rules go away on DEL', async () => {
    const { pair, side } = setup(1);
    const list = conflist('1.0.0', pair.dataDir, { macspoofchk: true });
    const a = att(pair.containers[0]!);
    expect((await side.add(list, a)).code).toBe(0);
    const c = pair.containers[0]!.name;
    expect(await peerSeen(pair.host.name, '10.77.0.1', c, 18085)).toBe('10.77.0.2');
    execFileSync('ip', ['-n', c, 'link', 'set', 'eth0', 'address', '02:00:00:00:00:66']);
    execFileSync('ip', ['-n', pair.host.name, 'neigh', 'flush', 'all']);
    await expect(peerSeen(pair.host.name, '10.77.0.1', c, 18086, 3)).rejects.toThrow();
    expect(snapshot(pair.host.path, (n) => n).nft.some((l) => l.includes('ether saddr'))).toBe(true);
    expect((await side.del(list, a)).code).toBe(0);
    expect(snapshot(pair.host.path, (n) => n).nft.some((l) => l.includes('cni-br-iface'))).toBe(false);
  }, 120_000);

  it('ipspoofchk: a pod cannot send with another pod\'s IP; its own IP works; rules go away on DEL', async () => {
    const { pair, side } = setup(3);
    const list = conflist('1.0.0', pair.dataDir, { ipspoofchk: true, macspoofchk: true });
    const [a, b] = [att(pair.containers[0]!), att(pair.containers[1]!)];
    expect((await side.add(list, a)).code).toBe(0);
    expect((await side.add(list, b)).code).toBe(0);
    // control: a pod attached without the check (10.77.0.4) can send from an address it was not given
    expect((await side.add(conflist('1.0.0', pair.dataDir), att(pair.containers[2]!))).code).toBe(0);
    execFileSync('ip', ['-n', pair.containers[2]!.name, 'addr', 'add', '10.77.0.201/32', 'dev', 'eth0']);
    expect(await peerSeen(pair.host.name, '10.77.0.1', pair.containers[2]!.name, 18086, 50, '10.77.0.201')).toBe('10.77.0.201');
    const bn = pair.containers[1]!.name;
    expect(await peerSeen(pair.host.name, '10.77.0.1', bn, 18087)).toBe('10.77.0.3');
    // b takes a's address (10.77.0.2) as an extra one and sends from it: dropped on the bridge port (the nft rule
    // below is what stops it; replies to 10.77.0.2 would go to a anyway)
    execFileSync('ip', ['-n', bn, 'addr', 'add', '10.77.0.2/32', 'dev', 'eth0']);
    await expect(peerSeen(pair.host.name, '10.77.0.1', bn, 18088, 3, '10.77.0.2')).rejects.toThrow();
    // a foreign address outside every pod is dropped too, while b's own still works
    execFileSync('ip', ['-n', bn, 'addr', 'add', '10.77.0.200/32', 'dev', 'eth0']);
    await expect(peerSeen(pair.host.name, '10.77.0.1', bn, 18089, 3, '10.77.0.200')).rejects.toThrow();
    expect(await peerSeen(pair.host.name, '10.77.0.1', bn, 18090, 50, '10.77.0.3')).toBe('10.77.0.3');
    expect(snapshot(pair.host.path, (n) => n).nft.some((l) => l.includes('arp saddr ip != { 0.0.0.0, 10.77.0.3 } drop'))).toBe(true);
    expect((await side.del(list, b)).code).toBe(0);
    expect((await side.del(list, a)).code).toBe(0);
    expect(snapshot(pair.host.path, (n) => n).nft.some((l) => l.includes('cni-br-iface'))).toBe(false);
  }, 120_000);

  it('L2 only (no IPAM) and disableContainerInterface', async () => {
    const { pair, side } = setup(2);
    const l2: Conflist = { cniVersion: '1.0.0', name: `${P}l2`, plugins: [{ type: 'bridge', bridge: BR }] };
    const add = await side.add(l2, att(pair.containers[0]!));
    expect(add.code, add.stdout).toBe(0);
    expect(add.json!['ips']).toBeUndefined();
    expect((ipJ(pair.containers[0]!.name, 'link', 'show', 'dev', 'eth0')[0]!['flags'] as string[]).includes('UP')).toBe(true);
    const dis: Conflist = { cniVersion: '1.0.0', name: `${P}l2`, plugins: [{ type: 'bridge', bridge: BR, disableContainerInterface: true }] };
    expect((await side.add(dis, att(pair.containers[1]!))).code).toBe(0);
    expect((ipJ(pair.containers[1]!.name, 'link', 'show', 'dev', 'eth0')[0]!['flags'] as string[]).includes('UP')).toBe(false);
  });

  it('dual-stack host-local: both families on the container, both gateways on the bridge', async () => {
    const { pair, side } = setup(1);
    const list = conflist('1.0.0', pair.dataDir, { isDefaultGateway: true }, { ranges: [[{ subnet: '10.77.0.0/24' }], [{ subnet: 'fd77::/64' }]], routes: [] });
    const add = await side.add(list, att(pair.containers[0]!));
    expect(add.code, add.stdout).toBe(0);
    expect((add.json!['ips'] as Json[]).map((i) => i['address'])).toEqual(['10.77.0.2/24', 'fd77::2/64']);
    const r6 = execFileSync('ip', ['-n', pair.containers[0]!.name, '-6', 'route'], { encoding: 'utf8' });
    expect(r6).toContain('default via fd77::1 dev eth0');
    const br = ipJ(pair.host.name, 'addr', 'show', 'dev', BR)[0]!;
    expect((br['addr_info'] as Json[]).map((x) => x['local'])).toEqual(expect.arrayContaining(['10.77.0.1', 'fd77::1']));
  });
});
