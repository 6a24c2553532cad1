// resolv.conf -> CNI dns (nameserver, domain, search, options), as the reference host-local reads it. Pure.
import type { Dns } from '../../lib/cni/types.ts';

export function parseResolvConf(text: string): Dns {
  const dns: Dns = {};
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...rest] = line.split(/\s+/);
    if (rest.length === 0) continue;
    switch (key) {
      case 'nameserver':
        (dns.nameservers ??= []).push(rest[0]!);
        break;
      case 'domain':
        dns.domain = rest[0]!;
        break;
      case 'search':
        dns.search = [...(dns.search ?? []), ...rest];
        break;
      case 'options':
        dns.options = [...(dns.options ?? []), ...rest];
        break;
    }
  }
  return dns;
}
