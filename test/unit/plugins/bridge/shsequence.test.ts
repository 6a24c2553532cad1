// lib/netns shSequence: several stdin-fed steps in one sh process, exit 100+i naming the failed step.
import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SH_STEP_EXIT_BASE, shq, shSequence } from '../../../../lib/netns/netns.ts';

describe('shSequence', () => {
  it('feeds each step its own input, in order', () => {
    const out = execFileSync('sh', ['-c', shSequence([{ argv: ['cat'], input: "a 'quoted' $HOME line\n" }, { argv: ['echo', 'x y'] }, { argv: ['cat'], input: 'no newline' }])], {
      encoding: 'utf8',
    });
    expect(out).toBe("a 'quoted' $HOME line\nx y\nno newline\n");
  });
  it('stops at the first failing step with exit 100+i', () => {
    const r = spawnSync('sh', ['-c', shSequence([{ argv: ['true'] }, { argv: ['sh', '-c', 'exit 3'] }, { argv: ['echo', 'never'] }])], { encoding: 'utf8' });
    expect(r.status).toBe(SH_STEP_EXIT_BASE + 1);
    expect(r.stdout).toBe('');
  });
  it('refuses input containing its delimiter', () => {
    expect(() => shSequence([{ argv: ['cat'], input: '__FLATNET_EOF_0__\n' }])).toThrow();
  });
  it('shq quotes single quotes', () => {
    expect(execFileSync('sh', ['-c', `printf %s ${shq("it's")}`], { encoding: 'utf8' })).toBe("it's");
  });
});
