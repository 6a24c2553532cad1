// Flows a policy change no longer allows. Established traffic is accepted before any policy rule, so removing an
// allowance only stops new flows; the flows already in conntrack are re-checked here against the new state and the
// ones it denies are deleted one by one (`conntrack -D` with the full original tuple, so that an allowed flow of the
// same pair of pods survives). Pure except for the runner calls in the controller.

import { normalizeIP } from '../../lib/net/ip.ts';
import { flowAllowed, localPodByIP, type Flow, type PolicyState } from './compute.ts';

export interface ConntrackEntry {
  readonly family: 4 | 6;
  readonly proto: string;
  /** the original direction: what the client sent */
  readonly origSrc: string;
  readonly origDst: string;
  readonly origSport?: number;
  readonly origDport?: number;
  /** the reply direction's source: the real server after DNAT */
  readonly replySrc: string;
  readonly replySport?: number;
  /** TCP's conntrack state (ESTABLISHED, TIME_WAIT, ...); absent for other protocols */
  readonly tcpState?: string;
}

/** Parses `conntrack -L` output (one entry a line, the default format, with or without the leading l3 column). */
export function parseConntrack(text: string): ConntrackEntry[] {
  const out: ConntrackEntry[] = [];
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words.length < 4) continue;
    let i = 0;
    if (words[0] === 'ipv4' || words[0] === 'ipv6') i = 2;
    const proto = words[i];
    if (!proto || !/^[a-z0-9]+$/.test(proto)) continue;
    const kv: Record<string, string[]> = {};
    for (const w of words.slice(i)) {
      const m = /^([a-z]+)=(.*)$/.exec(w);
      if (m) (kv[m[1]!] ??= []).push(m[2]!);
    }
    const src = kv.src ?? [];
    const dst = kv.dst ?? [];
    if (src.length < 2 || dst.length < 1) continue;
    const os = normalizeIP(src[0]!);
    const od = normalizeIP(dst[0]!);
    const rs = normalizeIP(src[1]!);
    if (!os || !od || !rs) continue;
    const num = (v: string | undefined): number | undefined => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined);
    const state = proto === 'tcp' ? words.slice(i, words.indexOf(`src=${src[0]}`)).find((w) => /^[A-Z_]+$/.test(w)) : undefined;
    const e: ConntrackEntry = {
      family: os.includes(':') ? 6 : 4,
      proto,
      origSrc: os,
      origDst: od,
      replySrc: rs,
      ...(num(kv.sport?.[0]) !== undefined ? { origSport: num(kv.sport?.[0]) } : {}),
      ...(num(kv.dport?.[0]) !== undefined ? { origDport: num(kv.dport?.[0]) } : {}),
      ...(num(kv.sport?.[1]) !== undefined ? { replySport: num(kv.sport?.[1]) } : {}),
      ...(state ? { tcpState: state } : {}),
    };
    out.push(e);
  }
  return out;
}

/** The policy question a conntrack entry asks: the client, the real server and its port. */
export function entryFlow(e: ConntrackEntry): Flow {
  const port = e.replySport ?? e.origDport;
  return { src: e.origSrc, dst: e.replySrc, proto: e.proto, ...(port !== undefined ? { dport: port } : {}) };
}

/** `conntrack -D` for exactly this entry */
export function deleteCommand(e: ConntrackEntry): string[] {
  const c = ['conntrack', '-D', '-f', e.family === 6 ? 'ipv6' : 'ipv4', '-p', e.proto, '--orig-src', e.origSrc, '--orig-dst', e.origDst];
  if (e.origSport !== undefined) c.push('--orig-port-src', String(e.origSport));
  if (e.origDport !== undefined) c.push('--orig-port-dst', String(e.origDport));
  return c;
}

/**
 * TCP entries of flows that are over (reset or closed): nothing passes on them any more, and a SYN that matches one
 * makes conntrack drop the entry and start a new flow, which policy judges. Deleting them would only cost time: a
 * client that opened many short connections leaves one per connection (over a thousand after a connection benchmark,
 * each a `conntrack -D` of its own).
 */
const FINISHED_TCP = new Set(['CLOSE', 'TIME_WAIT']);

/** Entries touching a local pod that the state no longer allows, as deletion commands. */
export function planFlowDeletions(state: PolicyState, entries: readonly ConntrackEntry[], nodeIPs: ReadonlySet<string>): string[][] {
  const byIP = localPodByIP(state);
  const out: string[][] = [];
  for (const e of entries) {
    if (!byIP.has(e.origSrc) && !byIP.has(e.replySrc)) continue;
    if (e.tcpState && FINISHED_TCP.has(e.tcpState)) continue;
    if (!flowAllowed(state, entryFlow(e), nodeIPs, byIP)) out.push(deleteCommand(e));
  }
  return out;
}
