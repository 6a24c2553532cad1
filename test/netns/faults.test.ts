// Faults: each broken ADD must fail with the right CNI error and leave the host exactly as it was (links, addresses,
// routes, iptables/nft rules, host-local store) and the container netns without a new interface.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { pauseAt } from '../helpers/pause-at.ts';
import { runPrefix } from '../helpers/prefix.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { hostFingerprint, makePair, OURS_BIN, Side, storeFiles, type Attachment, type Conflist, type Json, type Pair } from '../helpers/sbs.ts';

const P = runPrefix();
const BR = `${P}br`;
let pairs: Pair[] = [];
let tmp: string[] = [];
let tmpCleanup: (() => void)[] = [];
let tag = 0;
afterEach(() => {
  for (const p of pairs) p.cleanup();
  for (const c of tmpCleanup) c();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
  pairs = [];
  tmp = [];
  tmpCleanup = [];
});
afterAll(() => removeNetnsWithPrefix(P));

function conflist(dataDir: string, extra: Json = {}, ipam: Json = {}, name = `${P}net`): Conflist {
  return {
    cniVersion: '1.0.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge: BR,
        isGateway: true,
        ipMasq: true,
        ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.77.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], ...ipam },
        ...extra,
      },
    ],
  };
}

interface World {
  pair: Pair;
  side: Side;
  list: Conflist;
  warm: Attachment;
  victim: Attachment;
  state(): { host: ReturnType<typeof hostFingerprint>; store: string[]; victimLinks: string[] };
}

/** A host with one working attachment (so the bridge, its address and masquerade rules already exist). */
async function world(extra: Json = {}, ipam: Json = {}): Promise<World> {
  const pair = makePair(P, `f${tag++}`, 2);
  pairs.push(pair);
  const side = new Side('ours', [OURS_BIN], pair.host.path);
  const list = conflist(pair.dataDir, extra, ipam);
  const warm: Attachment = { containerId: 'warm', netns: pair.containers[0]!.path, ifname: 'eth0' };
  const victim: Attachment = { containerId: 'victim', netns: pair.containers[1]!.path, ifname: 'eth0' };
  const add = await side.add(list, warm);
  expect(add.code, add.stdout).toBe(0);
  return {
    pair,
    side,
    list,
    warm,
    victim,
    state: () => ({
      host: hostFingerprint(pair.host.path),
      store: storeFiles(pair.dataDir),
      victimLinks: (JSON.parse(execFileSync('ip', ['-n', pair.containers[1]!.name, '-j', 'link', 'show'], { encoding: 'utf8' })) as Json[]).map((l) => String(l['ifname'])),
    }),
  };
}

const errOf = (o: { code: number; json?: Json }): { code: unknown; msg: string } => {
  expect(o.code).not.toBe(0);
  return { code: o.json?.['code'], msg: String(o.json?.['msg']) };
};

describe('bridge faults leave the host as it was', () => {
  it('CNI_IFNAME already exists in the netns', async () => {
    const w = await world();
    execFileSync('ip', ['-n', w.pair.containers[1]!.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    const before = w.state();
    const e = errOf(await w.side.add(w.list, w.victim));
    expect(e.code).toBe(101);
    expect(e.msg).toMatch(/eth0.*already exists/);
    expect(w.state()).toEqual(before); // the pre-existing eth0 is still there, untouched
  });

  it('CNI_NETNS is a regular file', async () => {
    const w = await world();
    const d = mkdtempSync(join(tmpdir(), `${P}nf-`));
    tmp.push(d);
    writeFileSync(join(d, 'notns'), 'x');
    const before = w.state();
    const e = errOf(await w.side.add(w.list, { ...w.victim, netns: join(d, 'notns') }));
    expect(e.code).toBe(4);
    expect(e.msg).toMatch(/CNI_NETNS.*not a network namespace/);
    expect(w.state()).toEqual(before);
  });

  it('the IPAM plugin fails: its error is passed on', async () => {
    const w = await world();
    const d = mkdtempSync(join(tmpdir(), `${P}ipam-`));
    tmp.push(d);
    writeFileSync(join(d, 'failipam'), '#!/bin/sh\ncat >/dev/null\necho \'{"cniVersion":"1.0.0","code":11,"msg":"ipam says no"}\'\nexit 1\n');
    chmodSync(join(d, 'failipam'), 0o755);
    const side = new Side('ours', [d, OURS_BIN], w.pair.host.path);
    const list = conflist(w.pair.dataDir, {}, { type: 'failipam' });
    const before = w.state();
    const e = errOf(await side.add(list, w.victim));
    expect(e.code).toBe(11);
    expect(e.msg).toMatch(/ipam says no/);
    expect(w.state()).toEqual(before);
  });

  it('the range is exhausted', async () => {
    const w = await world({}, { ranges: [[{ subnet: '10.77.0.0/30' }]] });
    const before = w.state();
    const e = errOf(await w.side.add(w.list, w.victim));
    expect(e.msg).toMatch(/no IP addresses available/);
    expect(w.state()).toEqual(before);
  });

  it('the bridge has a different address and forceAddress is off; IPAM is released', async () => {
    const w = await world();
    const other = conflist(w.pair.dataDir, {}, { ranges: [[{ subnet: '10.78.0.0/24' }]] }, `${P}other`);
    const before = w.state();
    const e = errOf(await w.side.add(other, w.victim));
    expect(e.code).toBe(102);
    expect(e.msg).toMatch(/already has an IP address different from 10.78.0.1\/24/);
    const after = w.state();
    // the other network's store may now exist (lock/last_reserved_ip), but holds no allocation
    expect(after.store.filter((f) => /\/\d+\.\d+\.\d+\.\d+$/.test(f))).toEqual(before.store.filter((f) => /\/\d+\.\d+\.\d+\.\d+$/.test(f)));
    expect({ ...after, store: [] }).toEqual({ ...before, store: [] });
  });

  it.each(['after-ipam', 'after-container', 'after-host'] as const)(
    'SIGKILL at %s: DEL then GC leave nothing behind',
    async (step) => {
      const w = await world();
      const before = w.state();
      const pause = pauseAt(step, join(OURS_BIN, 'bridge'));
      tmpCleanup.push(() => pause.cleanup());
      const side = new Side('ours', [OURS_BIN], w.pair.host.path, pause.env);
      const run = side.add(w.list, w.victim);
      const pid = await pause.held();
      process.kill(pid, 'SIGKILL');
      const killed = await run;
      expect(killed.code).not.toBe(0);
      // something was left behind (otherwise this test proves nothing)...
      expect(w.state()).not.toEqual(before);
      // ...until the runtime's DEL and GC
      const del = await w.side.del(w.list, w.victim);
      expect(del.code, del.stdout).toBe(0);
      const gcList = { ...w.list, cniVersion: '1.1.0' };
      const gc = await w.side.gc(gcList, [{ containerID: 'warm', ifname: 'eth0' }]);
      expect(gc.code, gc.stdout).toBe(0);
      expect(w.state()).toEqual(before);
    },
    60_000,
  );
});
