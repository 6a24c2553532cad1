// Side-by-side harness: run CNI plugins (ours from dist/bin, the reference Go plugins from /usr/lib/cni) the way
// libcni does, each inside its own throw-away "host" netns with its own container netns, and capture normalised
// kernel state for comparison. Also used by the bridge/loopback/fault netns tests.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNetns, type TestNetns } from './netns.ts';

export const REPO = resolve(import.meta.dirname, '../..');
export const OURS_BIN = join(REPO, 'dist/bin');
export const REF_BIN = '/usr/lib/cni';
export const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

export type Json = Record<string, unknown>;

export interface ExecOutcome {
  code: number;
  stdout: string;
  stderr: string;
  /** parsed stdout (result or error object), undefined when empty */
  json?: Json;
  ms: number;
  pid: number;
}

export interface PluginCall {
  /** CNI_PATH (first entry is where `type` is looked up) */
  path: string[];
  type: string;
  command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';
  containerId: string;
  netns: string;
  ifname: string;
  cniArgs?: string;
  conf: Json;
  /** host netns path the plugin runs in (nsenter --net=...) */
  hostNetns: string;
  extraEnv?: Record<string, string>;
}

function findBin(path: string[], type: string): string {
  for (const d of path) {
    try {
      execFileSync('test', ['-x', join(d, type)]);
      return join(d, type);
    } catch {
      /* next */
    }
  }
  throw new Error(`plugin ${type} not found in ${path.join(':')}`);
}

/** Start a plugin process; resolves with its outcome. `onSpawn` gets the child's pid (fault tests kill it). */
export function execPlugin(call: PluginCall, onSpawn?: (pid: number) => void): Promise<ExecOutcome> {
  const bin = findBin(call.path, call.type);
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname,
    CNI_PATH: call.path.join(':'),
    ...(call.cniArgs ? { CNI_ARGS: call.cniArgs } : {}),
    ...(call.extraEnv ?? {}),
  };
  const t0 = performance.now();
  return new Promise((res, rej) => {
    const child = spawn('nsenter', [`--net=${call.hostNetns}`, '--', bin], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', rej);
    if (child.pid && onSpawn) onSpawn(child.pid);
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString();
      let json: Json | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Json) : undefined;
      } catch {
        json = undefined;
      }
      res({ code: code ?? (signal ? 128 + 9 : -1), stdout, stderr: Buffer.concat(err).toString(), json, ms: performance.now() - t0, pid: child.pid ?? -1 });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(JSON.stringify(call.conf));
  });
}

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Json[];
}

export interface Attachment {
  containerId: string;
  netns: string;
  ifname: string;
  cniArgs?: string;
  /** libcni's cached result (the last plugin's ADD output) */
  cached?: Json;
}

/** A libcni-like invoker of a conflist for one side (binary dir + host netns). */
export class Side {
  readonly name: string;
  readonly path: string[];
  readonly hostNetns: string;
  readonly extraEnv: Record<string, string>;
  constructor(name: string, path: string[], hostNetns: string, extraEnv: Record<string, string> = {}) {
    this.name = name;
    this.path = path;
    this.hostNetns = hostNetns;
    this.extraEnv = extraEnv;
  }

  private conf(list: Conflist, plugin: Json, prev?: Json): Json {
    const c: Json = { ...plugin, name: list.name, cniVersion: list.cniVersion };
    if (prev) c['prevResult'] = prev;
    return c;
  }

  call(command: PluginCall['command'], a: Attachment, conf: Json, onSpawn?: (pid: number) => void): Promise<ExecOutcome> {
    return execPlugin(
      { path: this.path, type: String(conf['type']), command, containerId: a.containerId, netns: a.netns, ifname: a.ifname, cniArgs: a.cniArgs, conf, hostNetns: this.hostNetns, extraEnv: this.extraEnv },
      onSpawn,
    );
  }

  /** ADD through the chain, threading prevResult; stops at the first failure. */
  async add(list: Conflist, a: Attachment): Promise<ExecOutcome> {
    let prev: Json | undefined;
    let last: ExecOutcome | undefined;
    for (const p of list.plugins) {
      last = await this.call('ADD', a, this.conf(list, p, prev));
      if (last.code !== 0) return last;
      prev = last.json;
    }
    a.cached = prev;
    return last!;
  }

  /** CHECK every plugin with the cached result. */
  async check(list: Conflist, a: Attachment): Promise<ExecOutcome> {
    let last: ExecOutcome | undefined;
    for (const p of list.plugins) {
      last = await this.call('CHECK', a, this.conf(list, p, a.cached));
      if (last.code !== 0) return last;
    }
    return last!;
  }

  /** DEL in reverse order with the cached result; keeps going and returns the first failure (or the last outcome). */
  async del(list: Conflist, a: Attachment): Promise<ExecOutcome> {
    let first: ExecOutcome | undefined;
    let last: ExecOutcome | undefined;
    for (const p of [...list.plugins].reverse()) {
      last = await this.call('DEL', a, this.conf(list, p, a.cached));
      if (last.code !== 0 && !first) first = last;
    }
    return first ?? last!;
  }

  async gc(list: Conflist, valid: { containerID: string; ifname: string }[]): Promise<ExecOutcome> {
    let last: ExecOutcome | undefined;
    for (const p of list.plugins) {
      const conf = { ...this.conf(list, p), 'cni.dev/valid-attachments': valid };
      last = await execPlugin({ path: this.path, type: String(p['type']), command: 'GC', containerId: '', netns: '', ifname: '', conf, hostNetns: this.hostNetns, extraEnv: this.extraEnv });
      if (last.code !== 0) return last;
    }
    return last!;
  }
}

/** A host netns + container netns pair plus a private host-local data dir. */
export interface Pair {
  host: TestNetns;
  containers: TestNetns[];
  dataDir: string;
  cleanup(): void;
}

export function makePair(prefix: string, tag: string, containers = 1): Pair {
  const host = createNetns(`${prefix}${tag}h`);
  const cs: TestNetns[] = [];
  for (let i = 0; i < containers; i++) {
    const c = createNetns(`${prefix}${tag}c${i}`);
    // a fresh container netns has lo down, as a runtime creates it
    execFileSync('ip', ['-n', c.name, 'link', 'set', 'lo', 'down']);
    cs.push(c);
  }
  const dataDir = mkdtempSync(join(tmpdir(), `${prefix}${tag}-ipam-`));
  return {
    host,
    containers: cs,
    dataDir,
    cleanup() {
      for (const c of cs) c.remove();
      host.remove();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------ kernel state capture

function nsSh(netns: string, script: string): string {
  return execFileSync('nsenter', [`--net=${netns}`, '--', 'sh', '-c', script], { encoding: 'utf8' });
}

export interface Snapshot {
  links: string[];
  addrs: string[];
  routes: string[];
  sysctls: string[];
  iptables: string[];
  nft: string[];
  vlans: string[];
}

type Obj = Record<string, unknown>;
const SEP = '@@SNAP@@';

/**
 * Capture one namespace. Names listed in `rename` are replaced (random veth names, per-run bridge names);
 * MACs, link-local IPv6 addresses, ifindexes and counters are left out; rule hashes become placeholders.
 */
export function snapshot(netns: string, rename: (name: string) => string, sysctlKeys: string[] = []): Snapshot {
  const sys = sysctlKeys.map((k) => `echo "${k}=$(cat /proc/sys/${k} 2>/dev/null || echo -)"`).join('; ');
  const out = nsSh(
    netns,
    [
      'ip -j -d link show',
      `echo ${SEP}`,
      'ip -j addr show',
      `echo ${SEP}`,
      'ip -j -4 route show table main',
      `echo ${SEP}`,
      'ip -j -6 route show table main',
      `echo ${SEP}`,
      sys || 'true',
      `echo ${SEP}`,
      '(iptables-save -t nat; ip6tables-save -t nat) 2>/dev/null || true',
      `echo ${SEP}`,
      'nft list ruleset 2>/dev/null || true',
      `echo ${SEP}`,
      'bridge -j vlan show 2>/dev/null || echo "[]"',
    ].join('; '),
  );
  const [links = '[]', addrs = '[]', r4 = '[]', r6 = '[]', sysOut = '', ipt = '', nft = '', vl = '[]'] = out.split(SEP + '\n');
  const L = JSON.parse(links) as Obj[];
  const linkLines = L.map((l) => {
    const li = (l['linkinfo'] ?? {}) as Obj;
    const sd = (li['info_slave_data'] ?? {}) as Obj;
    const id = (li['info_data'] ?? {}) as Obj;
    const flags = ((l['flags'] as string[]) ?? []).filter((f) => f !== 'LOWER_UP' && f !== 'NO-CARRIER').sort();
    const parts = [
      rename(String(l['ifname'])),
      `kind=${String(li['info_kind'] ?? l['link_type'])}`,
      `flags=${flags.join(',')}`,
      `mtu=${String(l['mtu'])}`,
    ];
    if (l['master']) parts.push(`master=${rename(String(l['master']))}`);
    if (Number(l['promiscuity'] ?? 0) > 0) parts.push('promisc');
    if (li['info_slave_kind'] === 'bridge') parts.push(`hairpin=${String(sd['hairpin'])}`, `isolated=${String(sd['isolated'])}`);
    if (li['info_kind'] === 'bridge') parts.push(`vlan_filtering=${String(id['vlan_filtering'])}`);
    return parts.join(' ');
  }).sort();
  const addrLines: string[] = [];
  for (const l of JSON.parse(addrs) as Obj[]) {
    for (const a of (l['addr_info'] as Obj[]) ?? []) {
      if (a['scope'] === 'link' && a['family'] === 'inet6') continue;
      addrLines.push(`${rename(String(l['ifname']))} ${String(a['local'])}/${String(a['prefixlen'])}`);
    }
  }
  const routeLines: string[] = [];
  for (const r of [...(JSON.parse(r4 || '[]') as Obj[]), ...(JSON.parse(r6 || '[]') as Obj[])]) {
    const dst = String(r['dst']);
    if (dst.startsWith('fe80:') || dst.startsWith('ff00:') || dst.startsWith('multicast')) continue;
    routeLines.push(
      [dst, r['gateway'] ? `via ${String(r['gateway'])}` : '', `dev ${rename(String(r['dev']))}`, `proto ${String(r['protocol'] ?? '')}`, r['scope'] ? `scope ${String(r['scope'])}` : '']
        .filter(Boolean)
        .join(' '),
    );
  }
  const vlanLines: string[] = [];
  for (const p of JSON.parse(vl.trim() || '[]') as Obj[]) {
    for (const v of (p['vlans'] as Obj[]) ?? []) {
      vlanLines.push(`${rename(String(p['ifname']))} vid=${String(v['vlan'])} ${((v['flags'] as string[]) ?? []).join(',')}`);
    }
  }
  return {
    links: linkLines,
    addrs: addrLines.sort(),
    routes: routeLines.sort(),
    sysctls: sysOut.split('\n').filter(Boolean).map((s) => s.replace(/\/conf\/([^/]+)\//, (_m, n: string) => `/conf/${rename(n)}/`)),
    iptables: normIptables(ipt, rename),
    nft: nft.split('\n').map((s) => s.trim()).filter(Boolean).map((s) => normHashes(s, rename)),
    vlans: vlanLines.sort(),
  };
}

function normHashes(s: string, rename: (n: string) => string): string {
  return s
    .replace(/CNI-[0-9a-f]{16,}/g, 'CNI-<hash>')
    .replace(/--comment ("(?:[^"\\]|\\.)*"|\S+)/g, '--comment <c>')
    .replace(/comment "(?:[^"\\]|\\.)*"/g, 'comment <c>')
    .replace(/counter packets \d+ bytes \d+/g, 'counter')
    .replace(/# handle \d+/g, '')
    .replace(/veth[0-9a-f]{8}/g, (m) => rename(m));
}

function normIptables(text: string, rename: (n: string) => string): string[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .map((l) => normHashes(l, rename))
    .sort();
}

/** Standard renamer: per-run bridge -> BR, veth<8 hex> -> VETH, anything containing the prefix -> stripped. */
export function renamer(prefix: string, bridges: Record<string, string> = {}): (n: string) => string {
  return (n) => {
    if (bridges[n]) return bridges[n];
    for (const [k, v] of Object.entries(bridges)) if (n.startsWith(k + '.')) return v + n.slice(k.length);
    if (/^veth[0-9a-f]{8}$/.test(n)) return 'VETH';
    return n.replaceAll(prefix, '');
  };
}

/** Normalise a CNI result for comparison: MACs, random veth names, sandbox paths and per-run names. */
export function normalizeResult(r: Json | undefined, rename: (n: string) => string, sandboxes: Record<string, string> = {}): Json | undefined {
  if (!r) return r;
  const c = JSON.parse(JSON.stringify(r)) as Json;
  const ifs = (c['interfaces'] as Obj[] | undefined) ?? [];
  for (const i of ifs) {
    if (typeof i['name'] === 'string') i['name'] = rename(i['name']);
    if (typeof i['mac'] === 'string') i['mac'] = i['mac'] === '00:00:00:00:00:00' ? i['mac'] : '<mac>';
    if (typeof i['sandbox'] === 'string') i['sandbox'] = sandboxes[i['sandbox']] ?? '<sandbox>';
  }
  return c;
}

/** Everything a test must compare to prove "nothing left behind": links, addresses, routes, rules. */
export function hostFingerprint(netns: string, rename: (n: string) => string = (n) => n): Omit<Snapshot, 'sysctls'> {
  const s = snapshot(netns, rename);
  return { links: s.links, addrs: s.addrs, routes: s.routes, iptables: s.iptables, nft: s.nft, vlans: s.vlans };
}

/** Sorted list of files in a host-local data dir (relative paths), excluding the lock file. */
export function storeFiles(dir: string): string[] {
  try {
    return execFileSync('find', [dir, '-type', 'f'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => f.slice(dir.length))
      .filter((f) => !f.endsWith('/lock'))
      .sort();
  } catch {
    return [];
  }
}

// ------------------------------------------------------------------ cnitool (the real libcni) as the invoker

export const CNITOOL_VERSION = 'v1.3.0';
export const CNITOOL = `/var/cache/flatnet/cnitool-${CNITOOL_VERSION}/cnitool`;

/** Build cnitool if needed (test/helpers/build-cnitool.sh); returns its path or undefined when it cannot be built. */
export function ensureCnitool(): string | undefined {
  try {
    execFileSync('test', ['-x', CNITOOL]);
    return CNITOOL;
  } catch {
    try {
      return execFileSync('bash', [join(REPO, 'test/helpers/build-cnitool.sh')], { encoding: 'utf8', env: { ...process.env, CNITOOL_VERSION } }).trim();
    } catch {
      return undefined;
    }
  }
}

/** One side driven through cnitool: conflists live in `netconfDir`; plugins run in `hostNetns`. */
export class CniTool {
  readonly cnitool: string;
  readonly path: string[];
  readonly hostNetns: string;
  readonly netconfDir: string;
  constructor(cnitool: string, path: string[], hostNetns: string, netconfDir: string) {
    this.cnitool = cnitool;
    this.path = path;
    this.hostNetns = hostNetns;
    this.netconfDir = netconfDir;
  }

  writeConflist(list: Conflist): void {
    execFileSync('sh', ['-c', `cat > ${JSON.stringify(join(this.netconfDir, `${list.name}.conflist`))}`], { input: JSON.stringify(list, null, 2) });
  }

  run(verb: 'add' | 'check' | 'del' | 'gc' | 'status', network: string, netns: string, opts: { ifname?: string; capArgs?: Json; cniArgs?: string } = {}): Promise<ExecOutcome> {
    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      NETCONFPATH: this.netconfDir,
      CNI_PATH: this.path.join(':'),
      CNI_IFNAME: opts.ifname ?? 'eth0',
      ...(opts.capArgs ? { CAP_ARGS: JSON.stringify(opts.capArgs) } : {}),
      ...(opts.cniArgs ? { CNI_ARGS: opts.cniArgs } : {}),
    };
    const t0 = performance.now();
    return new Promise((res, rej) => {
      const child = spawn('nsenter', [`--net=${this.hostNetns}`, '--', this.cnitool, verb, network, netns], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', rej);
      child.on('close', (code) => {
        const stdout = Buffer.concat(out).toString();
        let json: Json | undefined;
        try {
          json = stdout.trim() ? (JSON.parse(stdout) as Json) : undefined;
        } catch {
          json = undefined;
        }
        res({ code: code ?? -1, stdout, stderr: Buffer.concat(err).toString(), json, ms: performance.now() - t0, pid: child.pid ?? -1 });
      });
    });
  }
}

/** Remove libcni's cached results for networks whose name contains `prefix`. */
export function removeLibcniCache(prefix: string): void {
  execFileSync('sh', ['-c', `rm -f /var/lib/cni/results/*${prefix}* 2>/dev/null; true`]);
}

export const HOST_SYSCTLS = (br: string): string[] => ['net/ipv4/ip_forward', 'net/ipv6/conf/all/forwarding', `net/ipv6/conf/${br}/accept_ra`];
export const CONT_SYSCTLS = (ifname: string): string[] => [
  `net/ipv4/conf/${ifname}/arp_notify`,
  `net/ipv6/conf/${ifname}/accept_dad`,
  `net/ipv6/conf/${ifname}/disable_ipv6`,
  'net/ipv6/conf/lo/disable_ipv6',
];

export interface SideRun {
  add: ExecOutcome;
  check?: ExecOutcome;
  del?: ExecOutcome;
  result?: Json;
  afterAdd: { host: Snapshot; cont: Snapshot };
  afterDel?: { host: Snapshot; cont: Snapshot };
}

/** ADD, snapshot, CHECK (when the version allows), DEL, snapshot: one side of a side-by-side case. */
export async function runSide(
  tool: CniTool,
  list: Conflist,
  container: TestNetns,
  rename: (n: string) => string,
  opts: { ifname?: string; capArgs?: Json; bridge: string },
): Promise<SideRun> {
  tool.writeConflist(list);
  const ifname = opts.ifname ?? 'eth0';
  const snap = (): { host: Snapshot; cont: Snapshot } => ({
    host: snapshot(tool.hostNetns, rename, HOST_SYSCTLS(opts.bridge)),
    cont: snapshot(container.path, rename, CONT_SYSCTLS(ifname)),
  });
  const add = await tool.run('add', list.name, container.path, opts);
  const run: SideRun = { add, result: add.json, afterAdd: snap() };
  if (add.code !== 0) return run;
  if (!['0.3.0', '0.3.1'].includes(list.cniVersion)) run.check = await tool.run('check', list.name, container.path, opts);
  run.del = await tool.run('del', list.name, container.path, opts);
  run.afterDel = snap();
  return run;
}

/** Result normalisation for side-by-side: drop empty dns (Go prints "dns":{}), MACs, veth names, sandboxes. */
export function sbsResult(r: Json | undefined, rename: (n: string) => string, sandbox: string): Json | undefined {
  const n = normalizeResult(r, rename, { [sandbox]: '<sandbox>' });
  if (n && n['dns'] && Object.keys(n['dns'] as Json).length === 0) delete n['dns'];
  return n;
}
