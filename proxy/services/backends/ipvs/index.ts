// The IPVS proxy backend (upstream kube-proxy deprecated IPVS mode in 1.35, KEP-5495). The daemon imports this
// lazily when mode is ipvs; createBackend throws IpvsUnavailableError when the kernel lacks IPVS or dummy links.
import type { Logger } from '../../../../lib/log/logger.ts';
import type { Runner } from '../../../../lib/exec/runner.ts';
import type { ProxyBackend } from '../../model/types.ts';
import { IpvsProxier, checkIpvsSupport } from './proxier.ts';

export { IpvsProxier, IpvsUnavailableError, checkIpvsSupport } from './proxier.ts';
export { renderFull, renderIncremental, parseIpvsadmSave, DUMMY_IF } from './rules.ts';

export interface CreateIpvsBackendOptions {
  family: 4 | 6;
  runner: Runner;
  log: Logger;
  netns?: string;
  config?: Record<string, unknown>;
}

export async function createBackend(opts: CreateIpvsBackendOptions): Promise<ProxyBackend> {
  await checkIpvsSupport(opts.runner, opts.netns);
  opts.log.warn({}, 'proxy mode ipvs is deprecated upstream (Kubernetes 1.35, KEP-5495) and untested on a live kernel in flatnet');
  return new IpvsProxier({ family: opts.family, runner: opts.runner, log: opts.log, netns: opts.netns });
}
