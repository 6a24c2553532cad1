// lib/nft: an `nft -f` transaction builder and a thin runner. The builder writes the nft text of portmap and of the
// bridge's masquerade and spoof check; the NetworkPolicy controller uses the runner. The proxy's nftables renderer and
// the overlay's masquerade table write their own text (see the README's dependency section for why and the cost).
//
//   NftTransaction  add/delete/flush tables, chains (base chains with type/hook/priority), rules (with comments),
//                   sets/maps and elements (chunked by ELEMENT_CHUNK = 1000 per command); render() -> text
//   quoteString     comment quoting (rejects '"', '\', newlines; max 128 bytes); checkName validates identifiers
//   Nft             apply(tx) = one atomic `nft -f -`; listTable() = `nft -j list table` parsed (undefined if absent)
//   parseNftJson    the pure parser behind listTable
//   NftSession      (session.ts, imported directly: the plugins never need it) one long-lived `nft -i` for small
//                   transactions, one line each (the policy controller's diffs)
//
// Everything that touches the kernel goes through a Runner (lib/exec), optionally inside a netns, except NftSession:
// a process that stays does not fit a Runner's run-to-completion calls, so it spawns its own (nsenter for a netns).

export { NftTransaction, ELEMENT_CHUNK, checkName, quoteString } from './transaction.ts';
export type { NftFamily, BaseChainSpec, SetSpec } from './transaction.ts';
export { Nft, parseNftJson } from './nft.ts';
export type { NftRule, NftChain, NftTableListing } from './nft.ts';
