// ADD planning for the bridge plugin: config + IPAM result + observed host links -> programs to run. Pure.
import { createHash } from 'node:crypto';
import { CniError, type CniInterface, type CniResult, type IpConfig, type Route } from '../../lib/cni/types.ts';
import { bridgeAddArgs, IpBatch, routeAddArgs, vethAddArgs } from '../../lib/link/batch.ts';
import type { AddrInfo, LinkInfo } from '../../lib/link/parse.ts';
import { sysctlShellLine } from '../../lib/sysctl/sysctl.ts';
import { shq } from '../../lib/netns/netns.ts';
import type { BridgeConfig } from './config.ts';
import { addIP, cidrContains, formatCidr, formatIP, networkOf, normalizeIP, normalizeCidr, parseCidr, parseIP, familyOf, type Cidr } from '../../lib/net/ip.ts';

/** Plugin-specific error codes (100+). */
export const BridgeErrorCode = {
  /** CNI_IFNAME already exists in the container netns */
  IfnameExists: 101,
  /** the bridge already has an address that conflicts with the gateway (and forceAddress is off) */
  AddressConflict: 102,
  /** a link named like the bridge exists and is not a bridge */
  NotABridge: 103,
  /** a kernel program failed */
  KernelProgram: 104,
  /** the IPAM plugin returned no IPs */
  IpamNoIps: 105,
  /** CHECK found the kernel different from prevResult */
  CheckMismatch: 106,
} as const;

/** exit status the container program uses when CNI_IFNAME already exists */
export const EXIT_IFNAME_EXISTS = 17;

export interface HostSysctl {
  key: string;
  value: string;
  optional: boolean;
}

export interface AddInput {
  cfg: BridgeConfig;
  containerId: string;
  ifname: string;
  netns: string;
  /** IPAM ADD result (1.x shape); undefined for an L2-only attachment */
  ipam?: CniResult;
  /** `ip -j -d addr show` in the host netns */
  hostLinks: readonly LinkInfo[];
  /** PID of a process in the host netns (the plugin itself): the container program moves the veth peer there */
  hostPid: number;
  /** 6 random bytes per call (injected for tests) */
  randomBytes: () => Uint8Array;
}

export interface GatewayAddr {
  target: string;
  cidr: string;
}

export interface AddPlan {
  hostVeth: string;
  containerMac: string;
  hostVethMac: string;
  bridgeMac: string;
  bridgeCreated: boolean;
  /** vlan gateway interface (BR.VLAN) created by this ADD */
  vlanGatewayCreated?: string;
  /** sh program run with nsenter --net=CNI_NETNS; reads `containerBatch` on stdin */
  containerProgram: string;
  containerBatch: string;
  hostBatch: string;
  /** `bridge -batch -` program (VLAN membership), if any */
  bridgeBatch?: string;
  hostSysctls: HostSysctl[];
  /** gateway addresses this ADD adds (undone on failure) */
  addedAddrs: GatewayAddr[];
  /** addresses deleted because of forceAddress (restored on failure) */
  removedAddrs: GatewayAddr[];
  masqIps: string[];
  result: CniResult;
}

/** `ip` arguments creating the configured bridge (MAC pinned at creation). */
export function bridgeCreateArgs(cfg: BridgeConfig, mac: string): string[] {
  return bridgeAddArgs({ name: cfg.bridge, mac, mtu: cfg.mtu || undefined, vlanFiltering: cfg.vlanFiltering });
}

export function hostVethName(containerId: string, ifname: string, netns: string): string {
  return 'veth' + createHash('sha256').update(`${containerId}\0${ifname}\0${netns}`).digest('hex').slice(0, 8);
}

export function randomMac(bytes: Uint8Array): string {
  const b = Array.from(bytes.slice(0, 6));
  while (b.length < 6) b.push(0);
  b[0] = (b[0]! & 0xfe) | 0x02; // unicast, locally administered
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The reference's default gateway: the network address + 1. */
export const firstHost = (c: Cidr): string => formatIP(addIP(networkOf(c), 1)!);
const DEFAULT_DST = { 4: '0.0.0.0/0', 6: '::/0' } as const;

export interface Gateways {
  ips: IpConfig[];
  routes: Route[];
  gws: { 4: Cidr[]; 6: Cidr[] };
}

/** The reference's calcGateways: every IP points at interface 2; gateway = network+1 when isGateway; default routes. */
export function calcGateways(cfg: BridgeConfig, ipam: CniResult): Gateways {
  const ips: IpConfig[] = [];
  const routes: Route[] = (ipam.routes ?? []).map((r) => ({ ...r }));
  const gws: Gateways['gws'] = { 4: [], 6: [] };
  const defaultFound = { 4: false, 6: false };
  for (const ip of ipam.ips ?? []) {
    const c = parseCidr(ip.address);
    if (!c) throw new CniError(7, `IPAM returned an invalid address ${JSON.stringify(ip.address)}`);
    const f = c.ip.family;
    const out: IpConfig = { ...ip, interface: 2 };
    if (out.gateway === undefined && cfg.isGateway) out.gateway = firstHost(c);
    if (cfg.isDefaultGateway && !defaultFound[f]) {
      defaultFound[f] = routes.some((r) => r.gw !== undefined && normDst(r.dst) === DEFAULT_DST[f]);
      if (!defaultFound[f]) {
        routes.push(out.gateway ? { dst: DEFAULT_DST[f], gw: out.gateway } : { dst: DEFAULT_DST[f] });
        defaultFound[f] = true;
      }
    }
    if (cfg.isGateway && out.gateway) {
      const g = parseIP(out.gateway);
      if (!g || g.family !== f) throw new CniError(7, `gateway ${out.gateway} does not match address ${ip.address}`);
      gws[f].push({ ip: g, prefix: c.prefix });
    }
    ips.push(out);
  }
  return { ips, routes, gws };
}

function normDst(d: string): string {
  return normalizeCidr(d) ?? d;
}

/** Decide what happens to the gateway address on `target`, given its current addresses (reference ensureAddr). */
export function planGatewayAddr(
  target: string,
  current: AddrInfo[],
  gw: Cidr,
  forceAddress: boolean,
): { add?: string; remove: string[] } {
  const want = formatCidr(gw);
  const remove: string[] = [];
  for (const a of current) {
    if ((a.family === 'inet') !== (gw.ip.family === 4)) continue;
    const have = `${normalizeIP(a.local) ?? a.local}/${a.prefixlen}`;
    if (have === want) return { remove };
    const hc = parseCidr(have)!;
    const overlaps = gw.ip.family === 4 || cidrContains(hc, gw.ip) || cidrContains(gw, hc.ip);
    if (!overlaps) continue;
    if (!forceAddress) {
      throw new CniError(BridgeErrorCode.AddressConflict, `"${target}" already has an IP address different from ${want}`);
    }
    remove.push(have);
  }
  return { add: want, remove };
}

export type ContainerInput = Omit<AddInput, 'hostLinks'>;

export interface ContainerPlan {
  hostVeth: string;
  containerMac: string;
  hostVethMac: string;
  gw: Gateways;
  /** sh program for nsenter --net=CNI_NETNS; reads `containerBatch` on stdin */
  containerProgram: string;
  containerBatch: string;
}

/** exit status of the container program when the veth pair cannot be created for another reason */
export const EXIT_VETH_FAILED = 18;

/** The container half of ADD: needs only the config and the IPAM result, not the host's state. */
export function planContainer(inp: ContainerInput): ContainerPlan {
  const { cfg, ifname, netns } = inp;
  const hostVeth = hostVethName(inp.containerId, ifname, netns);
  const containerMac = cfg.mac ?? randomMac(inp.randomBytes());
  const hostVethMac = randomMac(inp.randomBytes());

  // ---- IPs, gateways, routes
  const gw: Gateways = inp.ipam ? calcGateways(cfg, inp.ipam) : { ips: [], routes: [], gws: { 4: [], 6: [] } };
  if (inp.ipam && gw.ips.length === 0) throw new CniError(BridgeErrorCode.IpamNoIps, 'IPAM plugin returned missing IP config');

  const cb = new IpBatch();
  const lines = ['set -e'];
  // CNI_IFNAME already there? /proc/net/dev lists this netns's devices; shell builtins only (no process)
  lines.push(
    `while IFS=: read -r n _; do n=\${n##* }; if [ "$n" = ${shq(ifname)} ]; then echo ${shq(`container veth name provided (${ifname}) already exists`)} >&2; exit ${EXIT_IFNAME_EXISTS}; fi; done < /proc/net/dev`,
  );
  const veth = vethAddArgs({ name: ifname, peer: hostVeth, mac: containerMac, peerMac: hostVethMac, mtu: cfg.mtu || undefined, peerNetns: inp.hostPid });
  lines.push(`ip ${veth.join(' ')} || exit ${EXIT_VETH_FAILED}`);
  if (inp.ipam) {
    if (cfg.enableDad) {
      lines.push(sysctlShellLine(`net/ipv6/conf/${ifname}/enhanced_dad`, '1', true));
      lines.push(sysctlShellLine(`net/ipv6/conf/${ifname}/accept_dad`, '1', true));
    } else {
      lines.push(sysctlShellLine(`net/ipv6/conf/${ifname}/accept_dad`, '0', true));
    }
    lines.push(sysctlShellLine(`net/ipv4/conf/${ifname}/arp_notify`, '1', true));
    if (gw.ips.some((i) => familyOf(i.address) === 6)) {
      for (const dev of ['lo', ifname]) {
        const f = `/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`;
        lines.push(`[ "$(cat ${shq(f)})" = 0 ] || echo 0 > ${shq(f)}`);
      }
    }
    const famGw: { 4?: string; 6?: string } = {};
    for (const ip of gw.ips) {
      cb.cmd('address', 'add', ip.address, 'dev', ifname);
      const f = familyOf(ip.address) ?? 4;
      if (ip.gateway && famGw[f] === undefined && familyOf(ip.gateway) === f) famGw[f] = ip.gateway;
    }
    cb.cmd('link', 'set', ifname, 'up');
    for (const r of gw.routes) {
      const f = familyOf(r.dst) ?? 4;
      const via = r.gw ?? famGw[f];
      cb.cmd(
        ...routeAddArgs({
          dst: normDst(r.dst),
          via,
          dev: ifname,
          mtu: r.mtu,
          advmss: r.advmss,
          metric: r.priority,
          table: r.table,
          scope: r.scope,
        }),
      );
    }
  } else if (!cfg.disableContainerInterface) {
    cb.cmd('link', 'set', ifname, 'up');
  }
  if (cb.length) lines.push('exec ip -batch -');
  return { hostVeth, containerMac, hostVethMac, gw, containerProgram: lines.join('\n') + '\n', containerBatch: cb.text() };
}

/**
 * The whole ADD. `container` is the already-computed container half (apply runs it before reading the host);
 * without it, it is computed here.
 */
export function planAdd(inp: AddInput, container?: ContainerPlan): AddPlan {
  const { cfg, ifname, netns } = inp;
  const br = cfg.bridge;
  const existing = inp.hostLinks.find((l) => l.ifname === br);
  if (existing && existing.kind !== 'bridge') {
    throw new CniError(BridgeErrorCode.NotABridge, `"${br}" already exists but is not a bridge`);
  }
  const cp = container ?? planContainer(inp);
  const { hostVeth, containerMac, hostVethMac, gw } = cp;
  if (!container && inp.hostLinks.some((l) => l.ifname === hostVeth)) {
    throw new CniError(BridgeErrorCode.IfnameExists, `host veth ${hostVeth} already exists (attachment not deleted?)`);
  }
  const bridgeMac = existing?.address ?? randomMac(inp.randomBytes());

  // ---- host program
  const hb = new IpBatch();
  if (!existing) {
    hb.cmd(...bridgeCreateArgs(cfg, bridgeMac));
  } else {
    // pin the bridge MAC so it does not follow the lowest port MAC as ports come and go
    hb.cmd('link', 'set', br, 'address', bridgeMac);
  }
  if (cfg.promiscMode) hb.cmd('link', 'set', br, 'promisc', 'on');
  hb.cmd('link', 'set', br, 'up');
  hb.cmd('link', 'set', hostVeth, 'master', br);
  hb.cmd('link', 'set', hostVeth, 'type', 'bridge_slave', 'hairpin', cfg.hairpinMode ? 'on' : 'off', 'isolated', cfg.portIsolation ? 'on' : 'off');
  hb.cmd('link', 'set', hostVeth, 'up');

  const vb = new IpBatch();
  const vlanPort = (dev: string, pvid: number, trunk: number[]): void => {
    if ((pvid !== 0 || trunk.length) && !cfg.preserveDefaultVlan) vb.cmd('vlan', 'del', 'dev', dev, 'vid', 1);
    if (pvid !== 0) vb.cmd('vlan', 'add', 'dev', dev, 'vid', pvid, 'pvid', 'untagged');
    for (const v of trunk) vb.cmd('vlan', 'add', 'dev', dev, 'vid', v);
    if (pvid === 0 && trunk.length) vb.cmd('vlan', 'add', 'dev', dev, 'vid', 1, 'pvid', 'untagged');
  };
  vlanPort(hostVeth, cfg.vlan, cfg.vlanTrunk);

  const interfaces: CniInterface[] = [
    { name: br, mac: bridgeMac },
    { name: hostVeth, mac: hostVethMac },
    { name: ifname, mac: containerMac, sandbox: netns },
  ];

  const addedAddrs: GatewayAddr[] = [];
  const removedAddrs: GatewayAddr[] = [];
  const hostSysctls: HostSysctl[] = [{ key: `net/ipv6/conf/${br}/accept_ra`, value: '0', optional: true }];
  let vlanGatewayCreated: string | undefined;
  if (cfg.isGateway && (gw.gws[4].length || gw.gws[6].length)) {
    let target = br;
    let addrs: AddrInfo[] = existing ? [...existing.addrs] : [];
    if (cfg.vlan !== 0) {
      target = `${br}.${cfg.vlan}`;
      const vl = inp.hostLinks.find((l) => l.ifname === target);
      if (vl) addrs = [...vl.addrs];
      else {
        const peer = hostVethName('vlan-gateway', target, '');
        const mac = randomMac(inp.randomBytes());
        hb.cmd(...vethAddArgs({ name: target, peer, mac, peerMac: randomMac(inp.randomBytes()), mtu: cfg.mtu || undefined }));
        hb.cmd('link', 'set', peer, 'master', br);
        hb.cmd('link', 'set', peer, 'type', 'bridge_slave', 'hairpin', 'off', 'isolated', 'off');
        hb.cmd('link', 'set', peer, 'up');
        hb.cmd('link', 'set', target, 'up');
        vlanPort(peer, cfg.vlan, []);
        vlanGatewayCreated = target;
        interfaces.push({ name: target, mac });
        addrs = [];
      }
      if (vl) interfaces.push({ name: target, mac: vl.address });
    }
    for (const f of [4, 6] as const) {
      for (const g of gw.gws[f]) {
        const p = planGatewayAddr(target, addrs, g, cfg.forceAddress);
        for (const r of p.remove) {
          hb.cmd('address', 'del', r, 'dev', target);
          removedAddrs.push({ target, cidr: r });
          addrs = addrs.filter((a) => `${normalizeIP(a.local) ?? a.local}/${a.prefixlen}` !== r);
        }
        if (p.add) {
          // replace: idempotent when a concurrent ADD of the same network adds the same gateway
          hb.cmd('address', 'replace', p.add, 'dev', target);
          addedAddrs.push({ target, cidr: p.add });
          const [l, pl] = p.add.split('/');
          addrs.push({ family: f === 4 ? 'inet' : 'inet6', local: l!, prefixlen: Number(pl) });
        }
      }
      if (gw.gws[f].length) {
        hostSysctls.push(f === 4 ? { key: 'net/ipv4/ip_forward', value: '1', optional: false } : { key: 'net/ipv6/conf/all/forwarding', value: '1', optional: false });
      }
    }
  }

  const result: CniResult = { cniVersion: cfg.cniVersion, interfaces };
  if (inp.ipam) {
    result.ips = gw.ips;
    if (gw.routes.length) result.routes = gw.routes;
    const dnsSet = cfg.dns && (cfg.dns.nameservers || cfg.dns.search || cfg.dns.options || cfg.dns.domain);
    const dns = dnsSet ? cfg.dns : inp.ipam.dns;
    if (dns && Object.keys(dns).length) result.dns = dns;
  }

  return {
    hostVeth,
    containerMac,
    hostVethMac,
    bridgeMac,
    bridgeCreated: !existing,
    vlanGatewayCreated,
    containerProgram: cp.containerProgram,
    containerBatch: cp.containerBatch,
    hostBatch: hb.text(),
    bridgeBatch: vb.length ? vb.text() : undefined,
    hostSysctls,
    addedAddrs,
    removedAddrs,
    masqIps: cfg.ipMasq && inp.ipam ? gw.ips.map((i) => i.address) : [],
    result,
  };
}
