// Masquerade rules for bridge attachments (ipMasq), rendered as iptables-restore or nft -f programs. Pure.
//
// Every attachment's rules carry a comment that starts with `<sha512(network)[:16]>-<sha512(ifname:containerID)[:16]>`
// (the same identifier the reference uses for its nftables backend), so DEL removes exactly one attachment's
// rules even when it no longer knows the IPs (netns gone), and GC finds every attachment of a network.
// iptables: one chain per attachment, CNI-<sha512(network:ifname:containerID)[:24]>, jumped to from nat POSTROUTING.
// nftables: table inet cni_plugins_masquerade, chain masq_checks, one rule per attachment IP.
import { createHash } from 'node:crypto';
import { bitsOf, canonicalCidr, formatCidr, formatIP, parseCidr, type Cidr } from '../../lib/net/ip.ts';
import { NftTransaction } from '../../lib/nft/transaction.ts';

export const NFT_TABLE = 'cni_plugins_masquerade';
export const NFT_CHAIN = 'masq_checks';
const COMMENT_MAX = 128;

const sha = (s: string): string => createHash('sha512').update(s).digest('hex');

export function networkHash(network: string): string {
  return sha(network).slice(0, 16);
}

export function instanceHash(network: string, ifname: string, containerID: string): string {
  return `${networkHash(network)}-${sha(`${ifname}:${containerID}`).slice(0, 16)}`;
}

/** `<hash>, net: N, if: I, id: C` with quotes and backslashes dropped, at most 128 chars. */
export function instanceComment(network: string, ifname: string, containerID: string): string {
  const clean = (s: string): string => s.replace(/["\\\n\r]/g, '');
  const c = `${instanceHash(network, ifname, containerID)}, net: ${clean(network)}, if: ${clean(ifname)}, id: ${clean(containerID)}`;
  return c.slice(0, COMMENT_MAX);
}

export function iptablesChain(network: string, ifname: string, containerID: string): string {
  return 'CNI-' + sha(`${network}:${ifname}:${containerID}`).slice(0, 24);
}

export interface Attachment {
  network: string;
  ifname: string;
  containerID: string;
}

function byFamily(ips: readonly string[]): { 4: Cidr[]; 6: Cidr[] } {
  const out: { 4: Cidr[]; 6: Cidr[] } = { 4: [], 6: [] };
  for (const s of ips) {
    const c = parseCidr(s);
    if (!c) throw new Error(`ipmasq: invalid address ${s}`);
    out[c.ip.family].push(c);
  }
  return out;
}

/**
 * iptables-restore --noflush programs (per family) that install the attachment's chain:
 * ACCEPT traffic to each of its own subnets, MASQUERADE everything else except multicast; POSTROUTING -s IP jumps there.
 */
export function renderIptablesAdd(a: Attachment, ips: readonly string[]): { 4?: string; 6?: string } {
  const chain = iptablesChain(a.network, a.ifname, a.containerID);
  const comment = instanceComment(a.network, a.ifname, a.containerID);
  const fam = byFamily(ips);
  const out: { 4?: string; 6?: string } = {};
  for (const f of [4, 6] as const) {
    const list = fam[f];
    if (!list.length) continue;
    const mc = f === 4 ? '224.0.0.0/4' : 'ff00::/8';
    const lines = ['*nat', `:${chain} - [0:0]`];
    const nets = [...new Set(list.map((c) => formatCidr(canonicalCidr(c))))];
    for (const n of nets) lines.push(`-A ${chain} -d ${n} -m comment --comment "${comment}" -j ACCEPT`);
    lines.push(`-A ${chain} ! -d ${mc} -m comment --comment "${comment}" -j MASQUERADE`);
    for (const c of list) lines.push(`-A POSTROUTING -s ${formatIP(c.ip)}/${bitsOf(f)} -m comment --comment "${comment}" -j ${chain}`);
    lines.push('COMMIT', '');
    out[f] = lines.join('\n');
  }
  return out;
}

export interface SavedNat {
  chains: string[];
  /** POSTROUTING rules as printed by iptables-save (without the leading "-A POSTROUTING ") */
  postrouting: string[];
}

/** Parse the nat table of `iptables-save -t nat`. */
export function parseIptablesSaveNat(text: string): SavedNat {
  const out: SavedNat = { chains: [], postrouting: [] };
  let inNat = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) inNat = line === '*nat';
    if (!inNat) continue;
    const ch = /^:(\S+) /.exec(line);
    if (ch) out.chains.push(ch[1]!);
    if (line.startsWith('-A POSTROUTING ')) out.postrouting.push(line.slice('-A POSTROUTING '.length));
  }
  return out;
}

const commentOf = (rule: string): string | undefined => /--comment "?([^"]*)"?/.exec(rule)?.[1] ?? /--comment (\S+)/.exec(rule)?.[1];
const jumpOf = (rule: string): string | undefined => /-j (\S+)\s*$/.exec(rule)?.[1];

/**
 * iptables-restore --noflush program removing the chains named in `chains` and every POSTROUTING rule jumping to
 * them; undefined when there is nothing to remove.
 */
export function renderIptablesRemoveChains(saved: SavedNat, chains: ReadonlySet<string>): string | undefined {
  const present = saved.chains.filter((c) => chains.has(c));
  const jumps = saved.postrouting.filter((r) => chains.has(jumpOf(r) ?? ''));
  if (!present.length && !jumps.length) return undefined;
  const lines = ['*nat'];
  for (const r of jumps) lines.push(`-D POSTROUTING ${r}`);
  for (const c of present) lines.push(`-F ${c}`);
  for (const c of present) lines.push(`-X ${c}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Chains (iptables) belonging to `network` whose instance hash is not in `keep`. */
export function iptablesGcChains(saved: SavedNat, network: string, keep: ReadonlySet<string>): Set<string> {
  const nh = networkHash(network) + '-';
  const stale = new Set<string>();
  for (const r of saved.postrouting) {
    const c = commentOf(r);
    const j = jumpOf(r);
    if (!c || !j || !c.startsWith(nh) || !j.startsWith('CNI-')) continue;
    const inst = c.slice(0, 33);
    if (!keep.has(inst)) stale.add(j);
  }
  return stale;
}

/** nft -f program adding the attachment's masquerade rules (mirrors the reference nftables layout). */
export function renderNftAdd(a: Attachment, ips: readonly string[]): string {
  const comment = instanceComment(a.network, a.ifname, a.containerID);
  const tx = new NftTransaction()
    .addTable('inet', NFT_TABLE, 'Masquerading for plugins from github.com/containernetworking/plugins')
    .addChain('inet', NFT_TABLE, NFT_CHAIN, undefined, 'Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet')
    .addChain('inet', NFT_TABLE, 'postrouting', { type: 'nat', hook: 'postrouting', priority: 'srcnat' })
    .flushChain('inet', NFT_TABLE, 'postrouting')
    .addRule('inet', NFT_TABLE, 'postrouting', 'ip daddr 224.0.0.0/4 return')
    .addRule('inet', NFT_TABLE, 'postrouting', 'ip6 daddr ff00::/8 return')
    .addRule('inet', NFT_TABLE, 'postrouting', `goto ${NFT_CHAIN}`);
  for (const s of ips) {
    const c = parseCidr(s);
    if (!c) throw new Error(`ipmasq: invalid address ${s}`);
    const ipk = c.ip.family === 4 ? 'ip' : 'ip6';
    tx.addRule('inet', NFT_TABLE, NFT_CHAIN, `${ipk} saddr ${formatIP(c.ip)} ${ipk} daddr != ${formatCidr(canonicalCidr(c))} masquerade`, comment);
  }
  return tx.render();
}

export interface NftRuleRef {
  handle: number;
  comment?: string;
}

/** Parse `nft -j -a list chain inet cni_plugins_masquerade masq_checks` into rule handles + comments. */
export function parseNftRules(json: string): NftRuleRef[] {
  if (!json.trim()) return [];
  const doc = JSON.parse(json) as { nftables?: Record<string, unknown>[] };
  const out: NftRuleRef[] = [];
  for (const item of doc.nftables ?? []) {
    const r = item['rule'] as { handle?: number; comment?: string } | undefined;
    if (r && typeof r.handle === 'number') out.push({ handle: r.handle, comment: r.comment });
  }
  return out;
}

/** nft -f program deleting the given rule handles from masq_checks; undefined when none. */
export function renderNftDelete(handles: readonly number[]): string | undefined {
  if (!handles.length) return undefined;
  const tx = new NftTransaction();
  for (const h of handles) tx.deleteRule('inet', NFT_TABLE, NFT_CHAIN, h);
  return tx.render();
}

/** Rules of one attachment. */
export function nftRulesOf(rules: readonly NftRuleRef[], inst: string): number[] {
  return rules.filter((r) => r.comment?.startsWith(inst)).map((r) => r.handle);
}

/** Rules of `network` whose attachment is not in `keep` (a set of instance hashes). */
export function nftGcRules(rules: readonly NftRuleRef[], network: string, keep: ReadonlySet<string>): number[] {
  const nh = networkHash(network) + '-';
  return rules.filter((r) => r.comment?.startsWith(nh) && !keep.has(r.comment.slice(0, 33))).map((r) => r.handle);
}
