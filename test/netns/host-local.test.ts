// host-local through the BUILT binary (dist/bin/host-local), against real files, with the reference plugin
// (/usr/lib/cni/host-local) for compatibility. Every test works in its own temp dataDir.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = resolve(import.meta.dirname, '../..');
const OURS = join(REPO, 'dist/bin/host-local');
const REF = '/usr/lib/cni/host-local';
const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

type Json = Record<string, unknown>;
interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
  json?: Json;
}

let root: string;
let n = 0;

beforeAll(() => {
  if (!existsSync(OURS)) spawnSync('npm', ['run', 'build', '--', '--quiet'], { cwd: REPO, stdio: 'inherit' });
  root = mkdtempSync(join(tmpdir(), 'flatnet-hl-'));
}, 300_000);

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function newDataDir(): string {
  const d = join(root, `d${n++}`);
  mkdirSync(d);
  return d;
}

function envFor(command: string, id: string, extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: '/var/run/netns/none',
    CNI_IFNAME: 'eth0',
    CNI_PATH: join(REPO, 'dist/bin'),
  };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function parse(stdout: string): Json | undefined {
  try {
    return stdout.trim() ? (JSON.parse(stdout) as Json) : undefined;
  } catch {
    return undefined;
  }
}

function run(bin: string, command: string, id: string, conf: Json | string, extra: Record<string, string | undefined> = {}): Outcome {
  const r = spawnSync(bin, [], { env: envFor(command, id, extra), input: typeof conf === 'string' ? conf : JSON.stringify(conf), encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json: parse(r.stdout) };
}

function runAsync(bin: string, command: string, id: string, conf: Json, extra: Record<string, string | undefined> = {}): Promise<Outcome> {
  return new Promise((res, rej) => {
    const c = spawn(bin, [], { env: envFor(command, id, extra), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.stderr.on('data', (b: Buffer) => (err += b.toString()));
    c.on('error', rej);
    c.on('close', (code) => res({ code: code ?? -1, stdout: out, stderr: err, json: parse(out) }));
    c.stdin.end(JSON.stringify(conf));
  });
}

const netConf = (dataDir: string, ipam: Json, extra: Json = {}, version = '1.0.0'): Json => ({
  cniVersion: version,
  name: 'hlnet',
  type: 'bridge',
  ipam: { type: 'host-local', dataDir, ...ipam },
  ...extra,
});

/** file name -> content, for every file under dir (recursive); undefined when dir is missing. */
function snapshot(dir: string): Record<string, string> | undefined {
  if (!existsSync(dir)) return undefined;
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      const r = rel ? `${rel}/${f}` : f;
      if (statSync(p).isDirectory()) {
        out[`${r}/`] = '';
        walk(p, r);
      } else out[r] = readFileSync(p, 'latin1');
    }
  };
  walk(dir, '');
  return out;
}

const ipFiles = (dir: string): string[] =>
  readdirSync(dir)
    .filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip.') && !f.startsWith('.'))
    .sort();

const addresses = (o: Outcome): string[] => ((o.json?.ips as Array<{ address: string }> | undefined) ?? []).map((i) => i.address);

describe('host-local options (built binary)', () => {
  it.each(VERSIONS)('dual-stack, routes, resolvConf at cniVersion %s', (v) => {
    const dd = newDataDir();
    const resolv = join(dd, 'resolv.conf');
    writeFileSync(resolv, 'nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n');
    const conf = netConf(
      dd,
      { ranges: [[{ subnet: '10.20.0.0/24' }], [{ subnet: 'fd20::/64' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }], resolvConf: resolv },
      {},
      v,
    );
    const r = run(OURS, 'ADD', 'ctr1', conf);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const legacy = v.startsWith('0.');
    expect(r.json).toEqual({
      cniVersion: v,
      ips: [
        { ...(legacy ? { version: '4' } : {}), address: '10.20.0.2/24', gateway: '10.20.0.1' },
        { ...(legacy ? { version: '6' } : {}), address: 'fd20::2/64', gateway: 'fd20::1' },
      ],
      routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
      dns: { nameservers: ['10.96.0.10'], search: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] },
    });
    expect(r.json).not.toHaveProperty('interfaces');
    const dir = join(dd, 'hlnet');
    expect(ipFiles(dir)).toEqual(['10.20.0.2', 'fd20::2']);
    expect(readFileSync(join(dir, '10.20.0.2'), 'utf8')).toBe('ctr1\r\neth0');
    expect(readFileSync(join(dir, 'last_reserved_ip.0'), 'utf8')).toBe('10.20.0.2');
    expect(readFileSync(join(dir, 'last_reserved_ip.1'), 'utf8')).toBe('fd20::2');
    expect(statSync(join(dir, 'lock')).size).toBe(0);
    if (v !== '0.3.0' && v !== '0.3.1') expect(run(OURS, 'CHECK', 'ctr1', conf).code).toBe(0);
    expect(run(OURS, 'DEL', 'ctr1', conf).code).toBe(0);
    expect(ipFiles(dir)).toEqual([]);
    // DEL is idempotent
    expect(run(OURS, 'DEL', 'ctr1', conf).code).toBe(0);
  });

  it('legacy subnet form with rangeStart, rangeEnd and gateway', () => {
    const dd = newDataDir();
    const conf = netConf(dd, { subnet: '10.21.0.0/24', rangeStart: '10.21.0.100', rangeEnd: '10.21.0.101', gateway: '10.21.0.254' });
    expect(addresses(run(OURS, 'ADD', 'a', conf))).toEqual(['10.21.0.100/24']);
    const b = run(OURS, 'ADD', 'b', conf);
    expect(b.json?.ips).toEqual([{ address: '10.21.0.101/24', gateway: '10.21.0.254' }]);
    const c = run(OURS, 'ADD', 'c', conf);
    expect(c.code).toBe(1);
    expect(c.json?.code).toBe(100);
    expect(String(c.json?.msg)).toMatch(/no IP addresses available/);
    expect(ipFiles(join(dd, 'hlnet'))).toEqual(['10.21.0.100', '10.21.0.101']);
  });

  it('dual-stack: when the v6 range is exhausted the v4 address just taken is released (as the reference)', () => {
    // the same steps through ours and the reference: the failed ADD releases its v4 address but leaves the v4
    // round-robin cursor where it moved, so the next ADD skips that address on both
    const steps = (bin: string) => {
      const dd = newDataDir();
      const conf = netConf(dd, { ranges: [[{ subnet: '10.24.0.0/24' }], [{ subnet: 'fd24::/64', rangeStart: 'fd24::10', rangeEnd: 'fd24::11' }]] });
      const a = addresses(run(bin, 'ADD', 'a', conf));
      const b = addresses(run(bin, 'ADD', 'b', conf));
      const files = ipFiles(join(dd, 'hlnet'));
      const c = run(bin, 'ADD', 'c', conf);
      const afterFailed = { files: ipFiles(join(dd, 'hlnet')), store: snapshot(dd) };
      const del = run(bin, 'DEL', 'a', conf).code;
      const again = addresses(run(bin, 'ADD', 'c', conf));
      return { a, b, files, c, afterFailed, del, again, store: snapshot(dd) };
    };
    const ours = steps(OURS);
    const ref = steps(REF);
    expect(ours.a).toEqual(['10.24.0.2/24', 'fd24::10/64']);
    expect(ours.b).toEqual(['10.24.0.3/24', 'fd24::11/64']);
    expect(ours.c.code).toBe(1);
    expect(ours.c.json?.code).toBe(100);
    expect(String(ours.c.json?.msg)).toContain('fd24::10-fd24::11');
    expect(ours.afterFailed.files).toEqual(ours.files);
    expect(ours.afterFailed.store?.['hlnet/last_reserved_ip.0']).toBe('10.24.0.4');
    // after a DEL the freed v6 address is reusable; v4 goes on from the cursor
    expect(ours.del).toBe(0);
    expect(ours.again).toEqual(['10.24.0.5/24', 'fd24::10/64']);
    // the reference: the same addresses, the same store at every step (its error code is its generic 999)
    expect(ref.c.code).toBe(1);
    expect({ ...ref, c: undefined }).toEqual({ ...ours, c: undefined });
  });

  it('requested IPs through CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips', () => {
    const dd = newDataDir();
    const base = { ranges: [[{ subnet: '10.22.0.0/24' }], [{ subnet: 'fd22::/64' }]] };
    const a = run(OURS, 'ADD', 'a', netConf(dd, base), { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.22.0.50,fd22::50' });
    expect(addresses(a)).toEqual(['10.22.0.50/24', 'fd22::50/64']);
    const b = run(OURS, 'ADD', 'b', netConf(dd, base, { args: { cni: { ips: ['10.22.0.60'] } } }));
    expect(addresses(b)).toEqual(['10.22.0.60/24', 'fd22::51/64']);
    const c = run(OURS, 'ADD', 'c', netConf(dd, base, { runtimeConfig: { ips: ['fd22::70/64'] } }));
    expect(addresses(c)).toEqual(['10.22.0.61/24', 'fd22::70/64']);
    // a taken address is refused and nothing is allocated
    const before = snapshot(dd);
    const d = run(OURS, 'ADD', 'd', netConf(dd, base), { CNI_ARGS: 'IP=10.22.0.50' });
    expect(d.json?.code).toBe(100);
    expect(snapshot(dd)).toEqual(before);
    // unknown CNI_ARGS without IgnoreUnknown are refused (as the reference)
    const e = run(OURS, 'ADD', 'e', netConf(dd, base), { CNI_ARGS: 'K8S_POD_NAME=x' });
    expect(e.json?.code).toBe(4);
    expect(snapshot(dd)).toEqual(before);
  });

  it('several ifnames of one container get separate addresses; DEL frees only its ifname', () => {
    const dd = newDataDir();
    const conf = netConf(dd, { ranges: [[{ subnet: '10.23.0.0/24' }]] });
    expect(addresses(run(OURS, 'ADD', 'a', conf))).toEqual(['10.23.0.2/24']);
    expect(addresses(run(OURS, 'ADD', 'a', conf, { CNI_IFNAME: 'net1' }))).toEqual(['10.23.0.3/24']);
    // a second ADD for the same attachment is refused
    expect(run(OURS, 'ADD', 'a', conf).json?.code).toBe(101);
    expect(run(OURS, 'DEL', 'a', conf, { CNI_IFNAME: 'net1', CNI_NETNS: undefined }).code).toBe(0);
    expect(ipFiles(join(dd, 'hlnet'))).toEqual(['10.23.0.2']);
    expect(run(OURS, 'CHECK', 'a', conf, { CNI_IFNAME: 'net1' }).json?.code).toBe(3);
  });

  // native: the flock(2) addon embedded in the SEA; flock1: util-linux flock(1) on an inherited descriptor
  it.each(['native', 'flock1'])('100 parallel ADDs in separate processes never share an address (lock: %s)', async (lock) => {
    const dd = newDataDir();
    const conf = netConf(dd, { ranges: [[{ subnet: '10.30.0.0/24' }], [{ subnet: 'fd30::/120' }]] });
    const outs = await Promise.all(Array.from({ length: 100 }, (_, i) => runAsync(OURS, 'ADD', `par${i}`, conf, { FLATNET_LOCK: lock })));
    const failed = outs.filter((o) => o.code !== 0);
    expect(failed.map((o) => o.stdout + o.stderr)).toEqual([]);
    const v4 = outs.map((o) => addresses(o)[0]!);
    const v6 = outs.map((o) => addresses(o)[1]!);
    expect(new Set(v4).size).toBe(100);
    expect(new Set(v6).size).toBe(100);
    const dir = join(dd, 'hlnet');
    expect(ipFiles(dir).length).toBe(200);
    // every file names the container that got that address
    outs.forEach((o, i) => {
      const ip = addresses(o)[0]!.split('/')[0]!;
      expect(readFileSync(join(dir, ip), 'utf8')).toBe(`par${i}\r\neth0`);
    });
    // the store is consistent: no temp files left behind
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
    // and the lock was taken the way we asked
    const one = await runAsync(OURS, 'ADD', 'probe', conf, { FLATNET_LOCK: lock, FLATNET_LOG_LEVEL: 'debug' });
    expect(JSON.parse(one.stderr.trim().split('\n').find((l) => l.includes('"allocated"'))!)).toMatchObject({ lock });
    // 100 Node starts on 2 shared cores: minutes under load, so the limit is only a guard against a hang
  }, 600_000);

  it('DEL then GC leaves an empty store', () => {
    const dd = newDataDir();
    const conf = netConf(dd, { ranges: [[{ subnet: '10.31.0.0/24' }], [{ subnet: 'fd31::/64' }]] }, {}, '1.1.0');
    for (const id of ['k1', 'k2', 'k3', 'k4']) expect(run(OURS, 'ADD', id, conf).code).toBe(0);
    // a leaked allocation in the reference's old format (container ID only)
    writeFileSync(join(dd, 'hlnet', '10.31.0.200'), 'oldctr');
    expect(run(OURS, 'DEL', 'k1', conf).code).toBe(0);
    expect(ipFiles(join(dd, 'hlnet')).length).toBe(7);
    // GC keeps valid attachments
    const gcConf = { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'k2', ifname: 'eth0' }] };
    const g1 = run(OURS, 'GC', '', gcConf, { CNI_CONTAINERID: undefined, CNI_IFNAME: undefined, CNI_NETNS: undefined });
    expect(g1.code, g1.stdout).toBe(0);
    expect(ipFiles(join(dd, 'hlnet'))).toEqual(['10.31.0.3', 'fd31::3']);
    // the older key name works too; with no valid attachments everything goes
    const g2 = run(OURS, 'GC', '', { ...conf, 'cni.dev/attachments': [] }, { CNI_CONTAINERID: undefined, CNI_IFNAME: undefined });
    expect(g2.code).toBe(0);
    expect(ipFiles(join(dd, 'hlnet'))).toEqual([]);
    // GC below 1.1.0 is refused
    expect(run(OURS, 'GC', '', { ...conf, cniVersion: '1.0.0' }).json?.code).toBe(1);
  });

  it('DEL, CHECK and GC on a network that never existed create nothing', () => {
    const dd = newDataDir();
    const conf = netConf(dd, { ranges: [[{ subnet: '10.32.0.0/24' }]] }, {}, '1.1.0');
    expect(run(OURS, 'DEL', 'x', conf).code).toBe(0);
    expect(run(OURS, 'GC', '', conf).code).toBe(0);
    expect(run(OURS, 'CHECK', 'x', conf).json?.code).toBe(3);
    expect(readdirSync(dd)).toEqual([]);
  });
});

describe('compatibility with the reference host-local', () => {
  it('reference store -> ours -> reference, dual-stack', () => {
    const dd = newDataDir();
    const conf = netConf(dd, { ranges: [[{ subnet: '10.40.0.0/24' }], [{ subnet: 'fd40::/64' }]] }, {}, '1.0.0');
    const dir = join(dd, 'hlnet');
    for (const id of ['r1', 'r2', 'r3']) expect(run(REF, 'ADD', id, conf).code).toBe(0);
    expect(ipFiles(dir)).toEqual(['10.40.0.2', '10.40.0.3', '10.40.0.4', 'fd40::2', 'fd40::3', 'fd40::4']);
    // ours continues after the reference's last reserved address and reads its files
    const o = run(OURS, 'ADD', 'o1', conf);
    expect(addresses(o)).toEqual(['10.40.0.5/24', 'fd40::5/64']);
    expect(run(OURS, 'CHECK', 'r2', conf).code).toBe(0);
    expect(run(OURS, 'DEL', 'r2', conf).code).toBe(0);
    expect(ipFiles(dir)).toEqual(['10.40.0.2', '10.40.0.4', '10.40.0.5', 'fd40::2', 'fd40::4', 'fd40::5']);
    // the reference continues after ours, reads our files and frees our allocation
    expect(addresses(run(REF, 'ADD', 'r4', conf))).toEqual(['10.40.0.6/24', 'fd40::6/64']);
    expect(run(REF, 'CHECK', 'o1', conf).code).toBe(0);
    expect(run(REF, 'DEL', 'o1', conf).code).toBe(0);
    expect(ipFiles(dir)).toEqual(['10.40.0.2', '10.40.0.4', '10.40.0.6', 'fd40::2', 'fd40::4', 'fd40::6']);
    // byte-identical file format
    run(OURS, 'ADD', 'same', conf);
    run(REF, 'ADD', 'same', conf, { CNI_IFNAME: 'net1' });
    expect(readFileSync(join(dir, '10.40.0.7'), 'latin1')).toBe('same\r\neth0');
    expect(readFileSync(join(dir, '10.40.0.8'), 'latin1')).toBe('same\r\nnet1');
    expect(readFileSync(join(dir, 'last_reserved_ip.0'), 'latin1')).toBe('10.40.0.8');
    expect(readFileSync(join(dir, 'last_reserved_ip.1'), 'latin1')).toBe('fd40::8');
  });

  it('same results as the reference for every common version, and the reference lock excludes us', async () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0']) {
      const ddA = newDataDir();
      const ddB = newDataDir();
      const ipam = { ranges: [[{ subnet: '10.41.0.0/24', rangeStart: '10.41.0.10' }], [{ subnet: 'fd41::/64' }]], routes: [{ dst: '0.0.0.0/0' }] };
      const ours = run(OURS, 'ADD', 'c', netConf(ddA, ipam, {}, v));
      const ref = run(REF, 'ADD', 'c', netConf(ddB, ipam, {}, v));
      // the reference always prints an empty "dns" object; ours leaves it out
      const refJson = { ...ref.json };
      if (JSON.stringify(refJson.dns) === '{}') delete refJson.dns;
      expect(ours.json, v).toEqual(refJson);
      expect(snapshot(ddA)).toEqual(snapshot(ddB));
    }
    // hold the store's lock with flock(1) (what the reference takes); our ADD must wait for it, with either mechanism
    for (const lock of ['native', 'flock1']) {
      const dd = newDataDir();
      const conf = netConf(dd, { ranges: [[{ subnet: '10.42.0.0/24' }]] });
      expect(run(OURS, 'ADD', 'first', conf).code).toBe(0);
      const holder = spawn('flock', ['-x', join(dd, 'hlnet', 'lock'), 'sleep', '1.5'], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 300));
        const t0 = Date.now();
        const o = await runAsync(OURS, 'ADD', 'second', conf, { FLATNET_LOCK: lock });
        const waited = Date.now() - t0;
        expect(o.code, lock).toBe(0);
        expect(waited, lock).toBeGreaterThan(800);
        expect(addresses(o)).toEqual(['10.42.0.3/24']);
      } finally {
        if (holder.exitCode === null) holder.kill();
      }
    }
  });
});

describe('bad input fails cleanly and changes nothing on disk', () => {
  const good = (dd: string): Json => netConf(dd, { ranges: [[{ subnet: '10.50.0.0/24' }]] });
  // [name, input, error code, the round-robin cursor after the failed ADD when it moved]
  const cases: Array<[string, (dd: string) => { conf: Json | string; env?: Record<string, string | undefined>; dataDirOverride?: string }, number, string?]> = [
    ['invalid JSON', () => ({ conf: '{"cniVersion": "1.0.0", "name": ' }), 6],
    ['not an object', () => ({ conf: '"hello"' }), 6],
    ['missing name', (dd) => ({ conf: { ...good(dd), name: undefined } }), 7],
    ['missing type', (dd) => ({ conf: { ...good(dd), type: undefined } }), 7],
    ['unknown cniVersion', (dd) => ({ conf: { ...good(dd), cniVersion: '0.9.9' } }), 1],
    ['missing ipam', (dd) => ({ conf: { ...good(dd), ipam: undefined } }), 7],
    ['bad CIDR', (dd) => ({ conf: netConf(dd, { ranges: [[{ subnet: '10.50.0.0/40' }]] }) }), 7],
    ['CIDR with host bits', (dd) => ({ conf: netConf(dd, { ranges: [[{ subnet: '10.50.0.7/24' }]] }) }), 7],
    ['overlapping range sets', (dd) => ({ conf: netConf(dd, { ranges: [[{ subnet: '10.50.0.0/16' }], [{ subnet: '10.50.1.0/24' }]] }) }), 7],
    ['rangeStart outside the subnet', (dd) => ({ conf: netConf(dd, { ranges: [[{ subnet: '10.50.0.0/24', rangeStart: '10.51.0.1' }]] }) }), 7],
    ['missing CNI_NETNS', (dd) => ({ conf: good(dd), env: { CNI_NETNS: undefined } }), 4],
    ['missing CNI_CONTAINERID', (dd) => ({ conf: good(dd), env: { CNI_CONTAINERID: undefined } }), 4],
    ['invalid CNI_IFNAME', (dd) => ({ conf: good(dd), env: { CNI_IFNAME: 'much-too-long-ifname' } }), 4],
    ['invalid IP= in CNI_ARGS', (dd) => ({ conf: good(dd), env: { CNI_ARGS: 'IP=10.50.0.999' } }), 4],
    ['unreadable resolvConf', (dd) => ({ conf: netConf(dd, { ranges: [[{ subnet: '10.50.0.0/24' }]], resolvConf: join(dd, 'nope') }) }), 5],
    ['unwritable dataDir', (dd) => ({ conf: netConf(join(dd, 'afile', 'sub'), { ranges: [[{ subnet: '10.50.0.0/24' }]] }) }), 5],
    ['requested IP outside every range', (dd) => ({ conf: good(dd), env: { CNI_ARGS: 'IP=192.168.9.9' } }), 102],
    // found by fuzzing: the first address is served before the second fails; it is released, and the round-robin
    // cursor stays where serving it moved it, as in the reference (test 'dual-stack: when the v6 range is exhausted')
    ['two requested IPs for one range set', (dd) => ({ conf: { ...good(dd), runtimeConfig: { ips: ['10.50.0.7', '10.50.0.8'] } } }), 102, '10.50.0.7'],
  ];

  it.each(cases)('%s', (_name, make, code, cursor) => {
    const dd = newDataDir();
    // a live store with one allocation and a regular file (for the unwritable-dataDir case)
    expect(run(OURS, 'ADD', 'existing', good(dd)).code).toBe(0);
    writeFileSync(join(dd, 'afile'), 'x');
    chmodSync(join(dd, 'afile'), 0o444);
    const before = snapshot(dd);
    const { conf, env } = make(dd);
    const r = run(OURS, 'ADD', 'newctr', conf, env ?? {});
    expect(r.code).toBe(1);
    expect(r.json?.code, r.stdout).toBe(code);
    expect(typeof r.json?.msg).toBe('string');
    expect(r.json?.msg).not.toBe('');
    const after = snapshot(dd);
    expect(after).toEqual(cursor === undefined ? before : { ...before, 'hlnet/last_reserved_ip.0': cursor });
  });
});
