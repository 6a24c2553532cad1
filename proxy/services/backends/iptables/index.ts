export { IptablesProxier, type IptablesProxierOptions, type SyncStats } from './proxier.ts';
export { renderRules, builtinJumps, serviceChains, endpointChain, topNames, type RuleOptions } from './rules.ts';
