// lib/iptables: text builders and a thin runner for iptables, shared by the portmap plugin and the proxy.
//
//   RestoreProgram   build an iptables-restore program (declare chains, -A/-I/-D/-F/-X); render() -> text
//   parseSave        parse iptables-save output -> tables -> chains + rules (args unquoted, ready for -D)
//   Iptables         one family (4|6) and mode (nft|legacy): save(), restore(program) with --noflush -w,
//                    exists() (-C), ensureChain() (-N without flushing), run()
//   detectMode       iptables-nft vs iptables-legacy as kube-proxy/kind decide it (hint chains, then rule counts,
//                    nft on a tie); decideMode is the pure part
//
// Everything that touches the kernel goes through a Runner (lib/exec), optionally inside a netns.

export { RestoreProgram, quoteArg, renderArgs, checkChainName, type IptablesTable } from './restore.ts';
export { parseSave, tokenize, chainRules, hasChain, argValue, jumpTarget, countRules } from './save.ts';
export type { SavedRule, SavedTable, SavedRuleset } from './save.ts';
export { Iptables, binaries, decideMode, detectMode } from './iptables.ts';
export type { IptablesMode, IpFamily, IptablesOptions, ModeEvidence } from './iptables.ts';
