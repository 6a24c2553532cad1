// Pure desired-state computation for portmap: which rules one container owns, per backend and family.

import { createHash } from 'node:crypto';
import type { Family } from '../../lib/net/ip.ts';
import type { ContainerAddr } from './config.ts';
import type { Mapping, PortMapConfig, Protocol } from './config.ts';

// ---- names and ownership ----

export const TOP_DNAT_CHAIN = 'CNI-HOSTPORT-DNAT';
export const SETMARK_CHAIN = 'CNI-HOSTPORT-SETMARK';
export const MASQ_CHAIN = 'CNI-HOSTPORT-MASQ';
export const MASQ_ENTRY_COMMENT = 'CNI portfwd requiring masquerade';
export const SETMARK_COMMENT = 'CNI portfwd masquerade mark';

/**
 * route_localnet=1 on the bridge (needed for localhost hostPorts) also lets a pod send to 127.0.0.1 via the bridge
 * and reach the node's loopback-only services (the CVE-2020-8558 class; the reference portmap has the same hole).
 * Like kube-proxy, drop packets to 127/8 from non-loopback sources unless they belong to a connection or were DNATed.
 */
export const LOCALNET_GUARD_CHAIN = 'CNI-HOSTPORT-LOCALNET';
export const LOCALNET_GUARD_COMMENT = 'block 127/8 reached from outside (CVE-2020-8558)';
export const LOCALNET_GUARD_RULE = [
  '-d', '127.0.0.0/8', '!', '-s', '127.0.0.0/8',
  '-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT',
  '-m', 'comment', '--comment', LOCALNET_GUARD_COMMENT,
  '-j', 'DROP',
];
export const NFT_LOCALNET_GUARD = 'ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related } ct status & dnat == 0 drop';
export const NFT_GUARD_CHAIN = 'localnet_guard';

export const NFT_TABLE = 'flatnet_hostport';
export const NFT_HOSTIP_CHAIN = 'hostip_hostports';
export const NFT_HOSTPORTS_CHAIN = 'hostports';
export const NFT_MASQ_CHAIN = 'masquerading';

const sha512 = (s: string): string => createHash('sha512').update(s).digest('hex');

/** Per-container DNAT chain, as the reference plugin names it: CNI-DN- + sha512(network + containerID), 28 chars. */
export function dnatChainName(network: string, containerId: string): string {
  return ('CNI-DN-' + sha512(network + containerId)).slice(0, 28);
}

/** The comment on a container's entry rules in CNI-HOSTPORT-DNAT (as the reference writes it; max 255 chars). */
export function dnatComment(network: string, containerId: string): string {
  return `dnat name: "${network}" id: "${containerId}"`.slice(0, 255);
}

/** Inverse of dnatComment (undefined if the comment is not one, or was truncated). */
export function parseDnatComment(c: string | undefined): { network: string; containerId: string } | undefined {
  const m = c === undefined ? null : /^dnat name: "(.*)" id: "([^"]*)"$/.exec(c);
  return m ? { network: m[1]!, containerId: m[2]! } : undefined;
}

/** nft ownership tag: fpm:<sha512(network)[0:8]>:<sha512(network+containerID)[0:16]> */
export function nftTag(network: string, containerId: string): { net: string; key: string; comment: string } {
  const net = sha512(network).slice(0, 8);
  const key = sha512(network + containerId).slice(0, 16);
  const id = containerId.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 64);
  return { net, key, comment: `fpm:${net}:${key} ${id}`.trim() };
}

export function parseNftTag(c: string | undefined): { net: string; key: string } | undefined {
  const m = c === undefined ? null : /^fpm:([0-9a-f]{8}):([0-9a-f]{16})(\s|$)/.exec(c);
  return m ? { net: m[1]!, key: m[2]! } : undefined;
}

export function markHex(bit: number): string {
  return '0x' + (2 ** bit).toString(16);
}

/** The mappings that apply to a container address of this family. */
export function mappingsFor(cfg: PortMapConfig, family: Family): Mapping[] {
  return cfg.mappings.filter((m) => m.families.includes(family));
}

function dest(c: ContainerAddr, port: number): string {
  return c.family === 4 ? `${c.ip}:${port}` : `[${c.ip}]:${port}`;
}

// ---- iptables ----

export interface IptablesPlan {
  family: Family;
  dnatChain: string;
  /** rules of the per-container chain, in order */
  dnatRules: string[][];
  /** the container's rules in CNI-HOSTPORT-DNAT, each ending in -j dnatChain */
  entryRules: string[][];
  /** static shared chains (declared = flushed and refilled each time: their content never varies per container) */
  setMarkRule?: string[];
  masqRule?: string[];
}

const PROTOS: Protocol[] = ['sctp', 'tcp', 'udp'];

export function planIptables(cfg: PortMapConfig, containerId: string, c: ContainerAddr): IptablesPlan {
  const maps = mappingsFor(cfg, c.family);
  const dnatChain = dnatChainName(cfg.name, containerId);
  const comment = dnatComment(cfg.name, containerId);
  const conditions = c.family === 4 ? cfg.conditionsV4 : cfg.conditionsV6;
  const setMark = cfg.externalSetMarkChain ?? SETMARK_CHAIN;

  // Like the reference, the entry rules list every mapped port of the protocol in both families (a port whose hostIP
  // is of the other family just finds no rule in the container chain); this keeps the state identical to the
  // reference's, so either plugin can CHECK and DEL the other's rules.
  const entryRules: string[][] = [];
  for (const proto of PROTOS) {
    const ports = [...new Set(cfg.mappings.filter((m) => m.protocol === proto).map((m) => m.hostPort))];
    for (let i = 0; i < ports.length; i += 15) {
      entryRules.push([
        '-p', proto,
        '-m', 'comment', '--comment', comment,
        '-m', 'multiport', '--destination-ports', ports.slice(i, i + 15).join(','),
        ...conditions,
        '-j', dnatChain,
      ]);
    }
  }

  const dnatRules: string[][] = [];
  for (const m of maps) {
    const base = ['-p', m.protocol, '--dport', String(m.hostPort), ...(m.hostIP ? ['-d', m.hostIP] : [])];
    if (cfg.snat) {
      if (cfg.masqAll) dnatRules.push([...base, '-j', setMark]);
      else {
        dnatRules.push([...base, '-s', c.network, '-j', setMark]); // hairpin (any pod of the subnet)
        if (c.family === 4) dnatRules.push([...base, '-s', '127.0.0.1', '-j', setMark]); // localhost
      }
    }
    dnatRules.push([...base, '-j', 'DNAT', '--to-destination', dest(c, m.containerPort)]);
  }

  const mark = `${markHex(cfg.markMasqBit)}/${markHex(cfg.markMasqBit)}`;
  return {
    family: c.family,
    dnatChain,
    dnatRules,
    entryRules,
    ...(cfg.snat && !cfg.externalSetMarkChain
      ? {
          setMarkRule: ['-m', 'comment', '--comment', SETMARK_COMMENT, '-j', 'MARK', '--set-xmark', mark],
          masqRule: ['-m', 'mark', '--mark', mark, '-j', 'MASQUERADE'],
        }
      : {}),
  };
}

// ---- nftables (one inet table for both families) ----

export interface NftRulePlan {
  chain: string;
  body: string;
}

/**
 * The jumps from the base chains (prerouting, output) into the hostport chains. Conditions, when given, guard the
 * jumps of their family; like the reference, whose every ADD rewrites these jumps, the last ADD's conditions hold.
 */
export function planNftJumps(cfg: PortMapConfig): string[] {
  const targets = [NFT_HOSTIP_CHAIN, NFT_HOSTPORTS_CHAIN];
  if (!cfg.conditionsV4.length && !cfg.conditionsV6.length) return targets.map((t) => `fib daddr type local jump ${t}`);
  const out: string[] = [];
  for (const [nfproto, cond] of [['ipv4', cfg.conditionsV4], ['ipv6', cfg.conditionsV6]] as const) {
    for (const t of targets) out.push(['meta nfproto', nfproto, ...cond, 'fib daddr type local jump', t].join(' '));
  }
  return out;
}

/** The container's rules (all carry its tag as comment). */
export function planNft(cfg: PortMapConfig, c: ContainerAddr): NftRulePlan[] {
  const ipx = c.family === 4 ? 'ip' : 'ip6';
  const nfproto = c.family === 4 ? 'ipv4' : 'ipv6';
  const out: NftRulePlan[] = [];
  for (const m of mappingsFor(cfg, c.family)) {
    const match = `meta l4proto ${m.protocol} th dport ${m.hostPort}`;
    const to = `dnat ${ipx} to ${dest(c, m.containerPort)}`;
    if (m.hostIP) out.push({ chain: NFT_HOSTIP_CHAIN, body: `${ipx} daddr ${m.hostIP} ${match} ${to}` });
    else out.push({ chain: NFT_HOSTPORTS_CHAIN, body: `meta nfproto ${nfproto} ${match} ${to}` });
  }
  if (cfg.snat) {
    const seen = new Set<string>();
    for (const m of mappingsFor(cfg, c.family)) {
      const toCtr = `${ipx} daddr ${c.ip} meta l4proto ${m.protocol} th dport ${m.containerPort}`;
      const bodies = cfg.masqAll
        ? [`${toCtr} ct original proto-dst ${m.hostPort} ct status dnat masquerade`]
        : [
            `${ipx} saddr ${c.network} ${toCtr} ct status dnat masquerade`,
            ...(c.family === 4 ? [`ip saddr 127.0.0.0/8 ${toCtr} masquerade`] : []),
          ];
      for (const body of bodies) {
        if (seen.has(body)) continue;
        seen.add(body);
        out.push({ chain: NFT_MASQ_CHAIN, body });
      }
    }
  }
  return out;
}
