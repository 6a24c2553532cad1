// lib/nft/session.ts on a real kernel: one line per transaction, all or nothing, errors reported, restart after one;
// a missing table or a dead nft process ends a transaction with an error, never a wait without end.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftSession, NftSessionError } from '../../lib/nft/session.ts';
import { NftTransaction } from '../../lib/nft/transaction.ts';
import { createNetns, type TestNetns } from '../helpers/netns.ts';
import { runPrefix } from '../helpers/prefix.ts';

describe('NftSession', () => {
  let ns: TestNetns;
  let s: NftSession;
  const T = 'sess';
  const list = (): string => ns.exec(['nft', 'list', 'set', 'inet', T, 'peers']);
  const createTable = (): void => {
    execFileSync('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], {
      input: new NftTransaction().addTable('inet', T).addSet('inet', T, 'peers', { type: 'ipv4_addr' }).render(),
    });
  };
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  beforeAll(() => {
    ns = createNetns(`${runPrefix()}-nfts`);
    createTable();
    s = new NftSession({ netns: ns.path });
  });
  afterAll(async () => {
    await s?.close();
    ns?.remove();
  });

  it('applies transactions in order, each atomically, in one process', async () => {
    await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.1', '10.0.0.2']).addChain('inet', T, 'c').addRule('inet', T, 'c', 'ip saddr @peers drop').render());
    const pid = s.pid;
    await s.apply(new NftTransaction().deleteElements('inet', T, 'peers', ['10.0.0.1']).render());
    expect(s.pid).toBe(pid);
    expect(list()).toContain('10.0.0.2');
    expect(list()).not.toContain('10.0.0.1');
  });

  it('a rejected transaction changes nothing, throws, and the next one works', async () => {
    const bad = new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.9']).deleteElements('inet', T, 'peers', ['10.0.0.77']).render();
    await expect(s.apply(bad)).rejects.toBeInstanceOf(NftSessionError);
    expect(list()).not.toContain('10.0.0.9');
    await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.3']).render());
    expect(list()).toContain('10.0.0.3');
  });

  it('sees changes made by other nft processes (its cache follows the ruleset generation)', async () => {
    ns.exec(['nft', 'add', 'element', 'inet', T, 'peers', '{ 10.0.0.4 }']);
    await s.apply(new NftTransaction().deleteElements('inet', T, 'peers', ['10.0.0.4']).render());
    expect(list()).not.toContain('10.0.0.4');
  });

  it('the table deleted by hand: the transaction fails with nft\'s error; once the table is back, the next one works', async () => {
    ns.exec(['nft', 'delete', 'table', 'inet', T]);
    await expect(s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.5']).render())).rejects.toThrow(/Error: .*No such file or directory/);
    createTable();
    await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.6']).render());
    expect(list()).toContain('10.0.0.6');
  });

  it('nft killed between transactions: the next one starts a new process', async () => {
    await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.7']).render());
    const pid = s.pid!;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 200 && alive(pid); i++) await new Promise((r) => setTimeout(r, 10));
    // the exit may or may not have been seen yet: either this transaction fails and the next one works, or it works
    const first = await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.8']).render()).then(
      () => true,
      (e: unknown) => (e instanceof NftSessionError ? false : Promise.reject(e)),
    );
    if (!first) await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.8']).render());
    expect(s.pid).not.toBe(pid);
    expect(list()).toContain('10.0.0.8');
  });

  it('replaced by a new process after recycleAfterBytes of input', async () => {
    const small = new NftSession({ netns: ns.path, recycleAfterBytes: 300 });
    try {
      const pids: number[] = [];
      for (let i = 0; i < 6; i++) {
        await small.apply(new NftTransaction().addElements('inet', T, 'peers', [`10.0.1.${i}`]).render());
        if (small.pid) pids.push(small.pid);
      }
      // each transaction is ~70 bytes with its marker line: a new process every few transactions
      expect(new Set(pids).size).toBeGreaterThan(1);
      expect(list()).toContain('10.0.1.5');
    } finally {
      await small.close();
    }
  });

  it('close ends the process', async () => {
    await s.apply(new NftTransaction().addElements('inet', T, 'peers', ['10.0.0.10']).render());
    const pid = s.pid!;
    await s.close();
    expect(alive(pid)).toBe(false);
    expect(s.pid).toBeUndefined();
  });
});
