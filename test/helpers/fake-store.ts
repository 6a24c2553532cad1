// An in-memory Store for allocator unit tests.
import type { Store } from '../../ipam/host-local/allocator.ts';
import { formatIP, parseIP, type IP } from '../../lib/net/ip.ts';

export class MemoryStore implements Store {
  readonly held = new Map<string, { id: string; ifname: string }>();
  readonly last = new Map<number, string>();

  reserve(id: string, ifname: string, ip: IP, rangeSetIndex: number): boolean {
    const k = formatIP(ip);
    if (this.held.has(k)) return false;
    this.held.set(k, { id, ifname });
    this.last.set(rangeSetIndex, k);
    return true;
  }
  lastReservedIP(i: number): IP | undefined {
    const s = this.last.get(i);
    return s ? parseIP(s) : undefined;
  }
  release(ip: IP): void {
    this.held.delete(formatIP(ip));
  }
  getByID(id: string, ifname: string): IP[] {
    return [...this.held].filter(([, v]) => v.id === id && v.ifname === ifname).map(([k]) => parseIP(k)!);
  }
  releaseByID(id: string, ifname: string): IP[] {
    const ips = this.getByID(id, ifname);
    for (const ip of ips) this.release(ip);
    return ips;
  }
  ips(): string[] {
    return [...this.held.keys()].sort();
  }
}
