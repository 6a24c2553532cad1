// Side by side: loopback through the reference plugin and ours, driven by cnitool (ifname lo), every cniVersion.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runPrefix } from '../helpers/prefix.ts';
import { removeNetnsWithPrefix } from '../helpers/netns.ts';
import { CniTool, ensureCnitool, makePair, OURS_BIN, REF_BIN, removeLibcniCache, renamer, runSide, sbsResult, VERSIONS, type Conflist } from '../helpers/sbs.ts';

const P = runPrefix();
let cleanup: (() => void)[] = [];
let tag = 0;
afterEach(() => {
  for (const c of cleanup) c();
  cleanup = [];
});
afterAll(() => {
  removeNetnsWithPrefix(P);
  removeLibcniCache(P);
});

async function side(kind: 'ref' | 'ours', version: string) {
  const pair = makePair(P, `${kind[0]}${tag++}`);
  const confDir = mkdtempSync(join(tmpdir(), `${P}conf-`));
  cleanup.push(() => {
    pair.cleanup();
    rmSync(confDir, { recursive: true, force: true });
  });
  const tool = new CniTool(ensureCnitool()!, [kind === 'ref' ? REF_BIN : OURS_BIN], pair.host.path, confDir);
  const list: Conflist = { cniVersion: version, name: `${P}lo`, plugins: [{ type: 'loopback' }] };
  const run = await runSide(tool, list, pair.containers[0]!, renamer(P), { ifname: 'lo', bridge: 'none' });
  return { run, result: sbsResult(run.result, renamer(P), pair.containers[0]!.path) };
}

describe.skipIf(!ensureCnitool())('side by side with the reference loopback (cnitool)', () => {
  it.each(VERSIONS)('cniVersion %s: same result, same lo state after ADD and DEL', async (version) => {
    // the reference (plugins 1.1.1) speaks up to 1.0.0: compare ours at 1.1.0 with it at 1.0.0
    const ref = await side('ref', version === '1.1.0' ? '1.0.0' : version);
    const ours = await side('ours', version);
    expect(ref.run.add.code, ref.run.add.stderr).toBe(0);
    expect(ours.run.add.code, ours.run.add.stderr).toBe(0);
    if (version === '1.1.0') ours.result!['cniVersion'] = '1.0.0';
    if (version.startsWith('0.')) {
      // kept on purpose: the reference loopback (1.1.1) prints "version": "" in 0.x ip entries, which the spec does not
      // allow; ours prints "4" / "6"
      const refIps = ref.result!['ips'] as Record<string, unknown>[];
      expect(refIps.map((i) => i['version'])).toEqual(['', '']);
      const ourIps = ours.result!['ips'] as Record<string, unknown>[];
      expect(ourIps.map((i) => i['version'])).toEqual(['4', '6']);
      for (const i of refIps) delete i['version'];
      for (const i of ourIps) delete i['version'];
    }
    expect(ours.result).toEqual(ref.result);
    expect(ours.run.check?.code).toEqual(ref.run.check?.code);
    expect(ours.run.del?.code).toEqual(ref.run.del?.code);
    expect(ours.run.afterAdd.cont).toEqual(ref.run.afterAdd.cont);
    expect(ours.run.afterDel!.cont).toEqual(ref.run.afterDel!.cont);
    expect(ours.run.afterAdd.cont.links.find((l) => l.startsWith('lo '))).toContain('UP');
  });
});
