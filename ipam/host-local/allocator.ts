// The host-local allocator: round-robin over range sets on top of a Store. Pure logic: the Store is the only
// side effect, and the caller holds its lock around every call.
import { CniError, type IpConfig } from '../../lib/cni/types.ts';
import { addIP, compareIP, formatIP, ipEq, lastOf, networkOf, type IP } from '../../lib/net/ip.ts';
import { formatRangeSet, rangeContains, rangeSetContains, type Range, type RangeSet } from './config.ts';

/** What the allocator needs from storage. Implementations: DiskStore (the reference's on-disk format), fakes in tests. */
export interface Store {
  /** Records ip for (id, ifname); false when the ip is already taken. Also records it as the last reserved of the set. */
  reserve(id: string, ifname: string, ip: IP, rangeSetIndex: number): boolean;
  lastReservedIP(rangeSetIndex: number): IP | undefined;
  /** Frees one address (no error when it is not allocated). */
  release(ip: IP): void;
  /** Addresses held by (id, ifname). */
  getByID(id: string, ifname: string): IP[];
  /** Frees every address held by (id, ifname); returns them. */
  releaseByID(id: string, ifname: string): IP[];
}

/** host-local's own error codes (the spec reserves 100+ for plugins). */
export const HostLocalCode = {
  /** no free address in a range set, or a requested address is taken */
  Exhausted: 100,
  /** the container already holds an address in this range set */
  Duplicate: 101,
  /** a requested address is in no range set, or is a gateway */
  BadRequest: 102,
} as const;

function skippable(r: Range, ip: IP): boolean {
  if (ipEq(ip, r.gateway)) return true;
  if (ipEq(ip, networkOf(r.subnet))) return true;
  return r.subnet.ip.family === 4 && ipEq(ip, lastOf(r.subnet));
}

/**
 * Candidate addresses of a range set in round-robin order: from lastReserved + 1 (in the range holding it) to the
 * end of that range, through the following ranges (wrapping), ending with lastReserved itself; from the first
 * range's start when there is no usable last reserved address. Gateways, network and IPv4 broadcast addresses are skipped.
 */
export function* candidates(set: RangeSet, lastReserved: IP | undefined): Generator<{ ip: IP; range: Range }> {
  let idx = 0;
  let cur: IP | undefined;
  if (lastReserved) {
    const i = set.findIndex((r) => rangeContains(r, lastReserved));
    if (i >= 0) {
      idx = i;
      cur = lastReserved;
    }
  }
  let start: IP | undefined;
  for (;;) {
    let r = set[idx]!;
    if (cur === undefined) {
      cur = r.rangeStart;
    } else if (compareIP(cur, r.rangeEnd) >= 0) {
      idx = (idx + 1) % set.length;
      r = set[idx]!;
      cur = r.rangeStart;
    } else {
      cur = addIP(cur, 1)!;
    }
    if (start === undefined) start = cur;
    else if (ipEq(cur, start)) return;
    if (!skippable(r, cur)) yield { ip: cur, range: r };
  }
}

function ipConfig(ip: IP, r: Range): IpConfig {
  return { address: `${formatIP(ip)}/${r.subnet.prefix}`, gateway: formatIP(r.gateway) };
}

/** Allocates one address from range set `index` for (id, ifname), or the requested one. */
export function allocateOne(
  store: Store,
  set: RangeSet,
  index: number,
  id: string,
  ifname: string,
  requested?: IP,
): { ip: IP; config: IpConfig } {
  if (requested) {
    const r = set.find((x) => rangeContains(x, requested));
    if (!r) throw new CniError(HostLocalCode.BadRequest, `requested IP ${formatIP(requested)} is not in range set ${formatRangeSet(set)}`);
    if (ipEq(requested, r.gateway)) throw new CniError(HostLocalCode.BadRequest, `requested IP ${formatIP(requested)} is the subnet's gateway`);
    if (!store.reserve(id, ifname, requested, index)) {
      throw new CniError(
        HostLocalCode.Exhausted,
        `requested IP address ${formatIP(requested)} is not available in range set ${formatRangeSet(set)}`,
      );
    }
    return { ip: requested, config: ipConfig(requested, r) };
  }
  // duplicate allocation is not allowed by the spec
  for (const held of store.getByID(id, ifname)) {
    if (rangeSetContains(set, held)) {
      throw new CniError(HostLocalCode.Duplicate, `${formatIP(held)} has been allocated to ${id}, duplicate allocation is not allowed`);
    }
  }
  for (const { ip, range } of candidates(set, store.lastReservedIP(index))) {
    if (store.reserve(id, ifname, ip, index)) return { ip, config: ipConfig(ip, range) };
  }
  throw new CniError(HostLocalCode.Exhausted, `no IP addresses available in range set: ${formatRangeSet(set)}`);
}

/**
 * Allocates one address per range set (requested addresses go to the set containing them). All or nothing:
 * when any set fails, the addresses taken so far by this call are released.
 */
export function allocate(store: Store, sets: readonly RangeSet[], id: string, ifname: string, requested: readonly IP[]): IpConfig[] {
  const inSet = (ip: IP): boolean => sets.some((set) => rangeSetContains(set, ip) || set.some((r) => ipEq(r.gateway, ip)));
  const stray = requested.filter((ip) => !inSet(ip));
  if (stray.length > 0) {
    throw new CniError(HostLocalCode.BadRequest, `requested IPs are in no range set: ${stray.map(formatIP).join(', ')}`);
  }
  const pending = [...requested];
  const taken: IP[] = [];
  const out: IpConfig[] = [];
  try {
    sets.forEach((set, index) => {
      const i = pending.findIndex((ip) => rangeSetContains(set, ip) || set.some((r) => ipEq(r.gateway, ip)));
      const req = i >= 0 ? pending.splice(i, 1)[0] : undefined;
      const got = allocateOne(store, set, index, id, ifname, req);
      taken.push(got.ip);
      out.push(got.config);
    });
    if (pending.length > 0) {
      throw new CniError(HostLocalCode.BadRequest, `failed to allocate all requested IPs: ${pending.map(formatIP).join(', ')}`);
    }
    return out;
  } catch (e) {
    for (const ip of taken) store.release(ip);
    throw e;
  }
}
