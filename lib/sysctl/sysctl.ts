// sysctl access through /proc/sys. /proc/sys/net reflects the network namespace of the *calling* process,
// so these functions act on the namespace the plugin runs in; for another netns render `sysctlShellLine`
// into a program that runs there.
import { readFileSync, writeFileSync } from 'node:fs';

/** net/ipv4/conf/eth0.100/arp_notify -> /proc/sys/net/ipv4/conf/eth0.100/arp_notify (dots in names kept) */
export function sysctlPath(key: string): string {
  return '/proc/sys/' + key.replace(/^\/+/, '');
}

export function readSysctl(key: string): string {
  return readFileSync(sysctlPath(key), 'utf8').trim();
}

/** Write a sysctl in the current netns; returns false instead of throwing when `optional` and it fails. */
export function writeSysctl(key: string, value: string, optional = false): boolean {
  try {
    writeFileSync(sysctlPath(key), value);
    return true;
  } catch (e) {
    if (optional) return false;
    throw e;
  }
}

/** A shell line that sets a sysctl (in whatever netns the shell runs in). Optional ones never fail the program. */
export function sysctlShellLine(key: string, value: string, optional = false): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(key) || !/^[A-Za-z0-9_-]+$/.test(value)) throw new Error(`unsafe sysctl ${key}=${value}`);
  const line = `echo ${value} > ${sysctlPath(key)}`;
  return optional ? `{ ${line}; } 2>/dev/null || true` : line;
}

/** sysctl(8)'s dotted form (net.bridge.bridge-nf-call-iptables) -> the path form these functions take; only for keys
 * whose components hold no dots themselves (interface names can: use the path form for those) */
export function sysctlKeyPath(dotted: string): string {
  return dotted.replaceAll('.', '/');
}
