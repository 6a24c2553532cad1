// KubeProxyConfiguration.conntrack -> netfilter sysctls. Pure; main.ts writes them (per network namespace).
// Only fields given explicitly are applied (kube-proxy also applies its defaults, 24h established / 1h close-wait;
// flatnet leaves the kernel defaults alone unless asked, since nodes here can share a kernel).
// maxPerCore/min (nf_conntrack_max) are global to the kernel and only writable from the initial netns.

import { parseDuration } from '../../config/config.ts';

export interface Sysctl {
  key: string;
  value: string;
}

const TIMEOUTS: Record<string, string> = {
  tcpEstablishedTimeout: 'net.netfilter.nf_conntrack_tcp_timeout_established',
  tcpCloseWaitTimeout: 'net.netfilter.nf_conntrack_tcp_timeout_close_wait',
  udpTimeout: 'net.netfilter.nf_conntrack_udp_timeout',
  udpStreamTimeout: 'net.netfilter.nf_conntrack_udp_timeout_stream',
};

export function conntrackSysctls(conntrack: Record<string, unknown>, cpus: number): Sysctl[] {
  const out: Sysctl[] = [];
  const maxPerCore = conntrack.maxPerCore;
  const min = conntrack.min;
  if (typeof maxPerCore === 'number' && maxPerCore > 0) {
    const max = Math.max(maxPerCore * cpus, typeof min === 'number' ? min : 0);
    out.push({ key: 'net.netfilter.nf_conntrack_max', value: String(max) });
  }
  for (const [field, key] of Object.entries(TIMEOUTS)) {
    const v = conntrack[field];
    if (v === undefined || v === null) continue;
    const ms = parseDuration(v, `conntrack.${field}`);
    if (ms > 0) out.push({ key, value: String(Math.round(ms / 1000)) });
  }
  const liberal = conntrack.tcpBeLiberal;
  if (liberal === true) out.push({ key: 'net.netfilter.nf_conntrack_tcp_be_liberal', value: '1' });
  return out;
}
