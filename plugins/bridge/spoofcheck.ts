// macspoofchk: frames entering the bridge from the host veth must carry the container's MAC. nftables, bridge family,
// table `nat` (as the reference), a prerouting base chain plus two chains per attachment. Pure rendering.
// ipspoofchk (flatnet's addition, same chains): IPv4, ARP and IPv6 from the veth must carry one of the container's own
// addresses as source (or 0.0.0.0 for ARP probes, :: and link-local for IPv6 neighbour discovery).
import { createHash } from 'node:crypto';

export const SPOOF_TABLE = 'bridge nat';
export const SPOOF_BASE = 'PREROUTING';

export function spoofId(containerID: string, ifname: string): string {
  return createHash('sha256').update(`${containerID}-${ifname}`).digest('hex').slice(0, 16);
}

export function spoofChains(id: string): { iface: string; mac: string } {
  return { iface: `cni-br-iface-${id}`, mac: `cni-br-iface-${id}-mac` };
}

export function spoofComment(id: string): string {
  return `macspoofchk-${id}`;
}

export interface SpoofChecks {
  /** check the source MAC (macspoofchk) */
  mac: boolean;
  /** the container's addresses (no prefix) when the source IP is checked (ipspoofchk) */
  ips?: readonly string[];
}

function ipRules(table: string, chain: string, ips: readonly string[], c: string): string[] {
  for (const ip of ips) if (!/^[0-9a-fA-F.:]+$/.test(ip)) throw new Error('spoofcheck: unsafe IP');
  const v4 = ips.filter((ip) => !ip.includes(':'));
  const v6 = ips.filter((ip) => ip.includes(':'));
  const set = (xs: string[]): string => `{ ${xs.join(', ')} }`;
  return [
    v4.length ? `add rule ${table} ${chain} ether type ip ip saddr != ${set(v4)} drop ${c}` : `add rule ${table} ${chain} ether type ip drop ${c}`,
    `add rule ${table} ${chain} ether type arp arp saddr ip != ${set(['0.0.0.0', ...v4])} drop ${c}`,
    `add rule ${table} ${chain} ether type ip6 ip6 saddr != ${set(['::', 'fe80::/10', ...v6])} drop ${c}`,
  ];
}

export function renderSpoofSetup(id: string, hostVeth: string, mac: string, checks: SpoofChecks = { mac: true }): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(hostVeth) || !/^[0-9a-f:]+$/.test(mac)) throw new Error('spoofcheck: unsafe name or MAC');
  const { iface, mac: macChain } = spoofChains(id);
  const c = `comment "${spoofComment(id)}"`;
  return [
    `add table ${SPOOF_TABLE}`,
    `add chain ${SPOOF_TABLE} ${SPOOF_BASE} { type filter hook prerouting priority -300 ; }`,
    `add chain ${SPOOF_TABLE} ${iface}`,
    `add chain ${SPOOF_TABLE} ${macChain}`,
    `flush chain ${SPOOF_TABLE} ${iface}`,
    `flush chain ${SPOOF_TABLE} ${macChain}`,
    `add rule ${SPOOF_TABLE} ${SPOOF_BASE} iifname "${hostVeth}" jump ${iface} ${c}`,
    ...(checks.ips ? ipRules(SPOOF_TABLE, iface, checks.ips, c) : []),
    ...(checks.mac ? [`add rule ${SPOOF_TABLE} ${iface} jump ${macChain} ${c}`, `add rule ${SPOOF_TABLE} ${macChain} ether saddr ${mac} return ${c}`, `add rule ${SPOOF_TABLE} ${macChain} drop ${c}`] : []),
    '',
  ].join('\n');
}

/** From `nft -j -a list table bridge nat`: the deletion program for attachment `id`, or undefined when absent. */
export function renderSpoofTeardown(id: string, tableJson: string): string | undefined {
  if (!tableJson.trim()) return undefined;
  const doc = JSON.parse(tableJson) as { nftables?: Record<string, unknown>[] };
  const { iface, mac } = spoofChains(id);
  const comment = spoofComment(id);
  const lines: string[] = [];
  const chains = new Set<string>();
  for (const item of doc.nftables ?? []) {
    const ch = item['chain'] as { name?: string } | undefined;
    if (ch?.name) chains.add(ch.name);
    const r = item['rule'] as { chain?: string; handle?: number; comment?: string } | undefined;
    if (r && r.chain === SPOOF_BASE && r.comment === comment && typeof r.handle === 'number') {
      lines.push(`delete rule ${SPOOF_TABLE} ${SPOOF_BASE} handle ${r.handle}`);
    }
  }
  for (const c of [iface, mac]) if (chains.has(c)) lines.push(`flush chain ${SPOOF_TABLE} ${c}`);
  for (const c of [iface, mac]) if (chains.has(c)) lines.push(`delete chain ${SPOOF_TABLE} ${c}`);
  return lines.length ? lines.join('\n') + '\n' : undefined;
}
