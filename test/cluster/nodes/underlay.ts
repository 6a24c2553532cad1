// The underlay: one Linux bridge in the host namespace (the host end holds .1, where the apiserver listens), one netns
// per node and one "external" netns, each attached by a veth whose inner end is eth0. Planned as ip -batch text (pure),
// applied with one `ip -batch` for the host and one per namespace.
import type { Runner } from '../../../lib/exec/runner.ts';
import { CLUSTER_CIDR, SERVICE_CIDR } from '../state.ts';

export interface UnderlayMember {
  netns: string;
  hostVeth: string;
  ip: string;
  /** node namespaces forward packets; the external client does not */
  forward: boolean;
}

export interface UnderlayPlan {
  bridge: string;
  hostIP: string;
  prefixLen: number;
  mtu: number;
  members: UnderlayMember[];
}

export function underlayBase(subnet: string): string {
  const m = /^(\d+\.\d+\.\d+)\.0\/24$/.exec(subnet);
  if (!m) throw new Error(`underlay subnet ${subnet}: expected a /24 such as 172.30.7.0/24`);
  const octets = m[1]!.split('.').map(Number);
  const private_ = octets[0] === 10 || (octets[0] === 172 && octets[1]! >= 16 && octets[1]! <= 31) || (octets[0] === 192 && octets[1] === 168);
  if (!private_ || octets.some((o) => o > 255)) throw new Error(`underlay subnet ${subnet} is not a private IPv4 /24`);
  return m[1]!;
}

/** Node i (0 = control plane) gets .2+i; the external client .200. */
export function nodeIP(subnet: string, index: number): string {
  if (index < 0 || index > 150) throw new Error(`node index ${index} out of range`);
  return `${underlayBase(subnet)}.${2 + index}`;
}

export function externalIP(subnet: string): string {
  return `${underlayBase(subnet)}.200`;
}

export function hostVethName(cluster: string, index: number | 'x'): string {
  const n = `${cluster}-v${index}`;
  if (n.length > 15) throw new Error(`interface name ${n} longer than 15 chars`);
  return n;
}

/** Host-side program: bridge, netns, veths (inner end named eth0, moved into the netns). */
export function hostBatch(p: UnderlayPlan): string {
  const l = [
    `link add ${p.bridge} type bridge`,
    `link set ${p.bridge} mtu ${p.mtu}`,
    `addr add ${p.hostIP}/${p.prefixLen} dev ${p.bridge}`,
    `link set ${p.bridge} up`,
  ];
  for (const m of p.members) {
    l.push(`netns add ${m.netns}`);
    l.push(`link add ${m.hostVeth} mtu ${p.mtu} type veth peer name eth0 mtu ${p.mtu} netns ${m.netns}`);
    l.push(`link set ${m.hostVeth} master ${p.bridge}`);
    l.push(`link set ${m.hostVeth} up`);
  }
  return l.join('\n') + '\n';
}

/** Program run inside one member's namespace. */
export function memberBatch(p: UnderlayPlan, m: UnderlayMember): string {
  return (
    [
      'link set lo up',
      `addr add ${m.ip}/${p.prefixLen} dev eth0`,
      'link set eth0 up',
      // the host does not forward: this default route ends at the bridge address, never on a real network
      `route add default via ${p.hostIP} dev eth0`,
    ].join('\n') + '\n'
  );
}

export function memberSysctls(m: UnderlayMember): string[] {
  const s = ['net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'];
  if (m.forward) s.push('net.ipv4.ip_forward=1');
  return s;
}

export async function applyUnderlay(runner: Runner, p: UnderlayPlan): Promise<void> {
  await runner.run(['ip', '-batch', '-'], { input: hostBatch(p) });
  for (const m of p.members) {
    await runner.run(['ip', '-n', m.netns, '-batch', '-'], { input: memberBatch(p, m) });
    await runner.run(['sysctl', '-q', '-w', ...memberSysctls(m)], { netns: `/var/run/netns/${m.netns}` });
    if (m.forward) {
      // kube-proxy expects bridged pod traffic to traverse iptables (service hairpin on cni0); per-netns since 5.3
      await runner.run(['sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-iptables=1', 'net.bridge.bridge-nf-call-ip6tables=1'], {
        netns: `/var/run/netns/${m.netns}`,
        allowFail: true,
      });
    }
  }
}

/** Picks a free 172.30.<n>.0/24: not used by any host address or route, nor by another local cluster. */
export async function pickUnderlaySubnet(runner: Runner, taken: readonly string[]): Promise<string> {
  const r = await runner.run(['ip', '-4', '-o', 'route', 'show', 'table', 'all']);
  const a = await runner.run(['ip', '-4', '-o', 'addr', 'show']);
  const used = new Set<number>();
  for (const m of (r.stdout + a.stdout + taken.join(' ')).matchAll(/172\.30\.(\d+)\./g)) used.add(Number(m[1]));
  for (let n = 7; n < 250; n++) if (!used.has(n)) return `172.30.${n}.0/24`;
  throw new Error('no free 172.30.x.0/24 underlay subnet');
}

function ipInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

/** True when two IPv4 CIDRs overlap (pure). */
export function cidrsOverlap(a: string, b: string): boolean {
  const [an, al] = a.split('/');
  const [bn, bl] = b.split('/');
  const len = Math.min(Number(al ?? 32), Number(bl ?? 32));
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return ((ipInt(an!) & mask) >>> 0) === ((ipInt(bn!) & mask) >>> 0);
}

/** Refuses an underlay subnet that overlaps any route or address the host already has (other than the default route). */
export async function assertSubnetFree(runner: Runner, subnet: string): Promise<void> {
  underlayBase(subnet);
  for (const [what, cidr] of [['pod network', CLUSTER_CIDR], ['service network', SERVICE_CIDR]] as const) {
    if (cidrsOverlap(cidr, subnet)) throw new Error(`underlay subnet ${subnet} overlaps the ${what} ${cidr}`);
  }
  const r = await runner.run(['ip', '-4', '-o', 'route', 'show', 'table', 'all']);
  const a = await runner.run(['ip', '-4', '-o', 'addr', 'show']);
  const used = [
    ...r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((d) => /^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(d)),
    ...[...a.stdout.matchAll(/inet (\d+\.\d+\.\d+\.\d+\/\d+)/g)].map((m) => m[1]!),
  ].filter((d) => !d.startsWith('127.'));
  const clash = used.find((d) => cidrsOverlap(d.includes('/') ? d : `${d}/32`, subnet));
  if (clash) throw new Error(`underlay subnet ${subnet} overlaps ${clash} already on this host; pick another with --subnet`);
}
