// macspoofchk: frames entering the bridge from the host veth must carry the container's MAC. nftables, bridge family,
// table `nat` (as the reference), a prerouting base chain plus two chains per attachment. Pure rendering.
// ipspoofchk (flatnet's addition, same chains): IPv4, ARP and IPv6 from the veth must carry one of the container's own
// addresses as source (or 0.0.0.0 for ARP probes, :: and link-local for IPv6 neighbour discovery).
import { createHash } from 'node:crypto';
import { NftTransaction } from '../../lib/nft/transaction.ts';

export const SPOOF_TABLE = 'bridge nat';
const [FAM, TABLE] = ['bridge', 'nat'] as const;
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

function ipRules(tx: NftTransaction, chain: string, ips: readonly string[], comment: string): void {
  for (const ip of ips) if (!/^[0-9a-fA-F.:]+$/.test(ip)) throw new Error('spoofcheck: unsafe IP');
  const v4 = ips.filter((ip) => !ip.includes(':'));
  const v6 = ips.filter((ip) => ip.includes(':'));
  const set = (xs: string[]): string => `{ ${xs.join(', ')} }`;
  tx.addRule(FAM, TABLE, chain, v4.length ? `ether type ip ip saddr != ${set(v4)} drop` : 'ether type ip drop', comment);
  tx.addRule(FAM, TABLE, chain, `ether type arp arp saddr ip != ${set(['0.0.0.0', ...v4])} drop`, comment);
  tx.addRule(FAM, TABLE, chain, `ether type ip6 ip6 saddr != ${set(['::', 'fe80::/10', ...v6])} drop`, comment);
}

export function renderSpoofSetup(id: string, hostVeth: string, mac: string, checks: SpoofChecks = { mac: true }): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(hostVeth) || !/^[0-9a-f:]+$/.test(mac)) throw new Error('spoofcheck: unsafe name or MAC');
  const { iface, mac: macChain } = spoofChains(id);
  const c = spoofComment(id);
  const tx = new NftTransaction()
    .addTable(FAM, TABLE)
    .addChain(FAM, TABLE, SPOOF_BASE, { type: 'filter', hook: 'prerouting', priority: -300 })
    .addChain(FAM, TABLE, iface)
    .addChain(FAM, TABLE, macChain)
    .flushChain(FAM, TABLE, iface)
    .flushChain(FAM, TABLE, macChain)
    .addRule(FAM, TABLE, SPOOF_BASE, `iifname "${hostVeth}" jump ${iface}`, c);
  if (checks.ips) ipRules(tx, iface, checks.ips, c);
  if (checks.mac) {
    tx.addRule(FAM, TABLE, iface, `jump ${macChain}`, c);
    tx.addRule(FAM, TABLE, macChain, `ether saddr ${mac} return`, c);
    tx.addRule(FAM, TABLE, macChain, 'drop', c);
  }
  return tx.render();
}

/** From `nft -j -a list table bridge nat`: the deletion program for attachment `id`, or undefined when absent. */
export function renderSpoofTeardown(id: string, tableJson: string): string | undefined {
  if (!tableJson.trim()) return undefined;
  const doc = JSON.parse(tableJson) as { nftables?: Record<string, unknown>[] };
  const { iface, mac } = spoofChains(id);
  const comment = spoofComment(id);
  const tx = new NftTransaction();
  const chains = new Set<string>();
  for (const item of doc.nftables ?? []) {
    const ch = item['chain'] as { name?: string } | undefined;
    if (ch?.name) chains.add(ch.name);
    const r = item['rule'] as { chain?: string; handle?: number; comment?: string } | undefined;
    if (r && r.chain === SPOOF_BASE && r.comment === comment && typeof r.handle === 'number') {
      tx.deleteRule(FAM, TABLE, SPOOF_BASE, r.handle);
    }
  }
  for (const c of [iface, mac]) if (chains.has(c)) tx.flushChain(FAM, TABLE, c);
  for (const c of [iface, mac]) if (chains.has(c)) tx.deleteChain(FAM, TABLE, c);
  return tx.isEmpty() ? undefined : tx.render();
}
