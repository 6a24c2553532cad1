// Property-based fuzzing of the built plugins (dist/bin): fast-check generators over stdin configs, CNI_* variables,
// prevResult and runtimeConfig for every plugin and verb, and a "world" (a throw-away host netns the plugin runs in,
// a container netns, a private data dir) that checks each invocation's contract:
//   - exit 0 with a result valid for the config's version (ADD), a VERSION reply, or nothing (other verbs); or
//   - exit 1 with exactly one error JSON on stdout, code from the spec or 100+ (999, "internal", counts as a crash);
//   - within the time limit;
//   - a failed ADD (and every non-ADD verb, the world having no attachment) leaves the host netns, the container netns
//     and the data dir as they were; a successful ADD is undone by DEL with its result, leaving no interface, no
//     address and no allocation behind.
// Paths in generated cases are tokens (@DATA@, @NETNS@, @BIN@, @BR@) resolved per world, so a stored case replays
// anywhere. Every path a case can name lies inside the world's data dir or netns: a plugin never touches the host.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { createNetns, type TestNetns } from './netns.ts';
import { errorViolations, resultViolations, versionViolations } from './cni-schema.ts';
import { hostFingerprint, OURS_BIN, storeFiles } from './sbs.ts';

export const PLUGINS = ['bridge', 'host-local', 'loopback', 'portmap', 'vxlan'] as const;
export type PluginName = (typeof PLUGINS)[number];
export const VERBS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'] as const;

/** One generated invocation. `env` values of undefined mean "not set". */
export interface FuzzCase {
  plugin: PluginName;
  verb: string;
  env: Record<string, string | undefined>;
  stdin: string;
}

export type Verdict =
  | { ok: true; outcome: 'result' | 'error' | 'empty' | 'version'; code?: number; addDel?: boolean }
  | { ok: false; kind: 'hang' | 'crash' | 'stdout' | 'schema' | 'leftover' | 'del-failed'; detail: string };

// ------------------------------------------------------------------ generators

const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
/** weighted choice: mostly the first arbitrary (valid values), sometimes the others (edge and wrong values) */
const mostly = <T>(good: fc.Arbitrary<T>, ...bad: fc.Arbitrary<unknown>[]): fc.Arbitrary<unknown> =>
  fc.oneof({ arbitrary: good, weight: 6 }, ...bad.map((b) => ({ arbitrary: b, weight: 1 })));
const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.integer({ min: -5, max: 70000 }),
  fc.constantFrom('', 'x', ' ', '\n', 'a'.repeat(300), '../..', '\u00e9\u2603', '{}', '-j ACCEPT'),
  fc.constant({}),
  fc.constant([]),
  fc.boolean(),
);
const anyBool = mostly(fc.boolean(), fc.constantFrom('true', 1, 0, null));
const cniVersion = mostly(fc.constantFrom(...SUPPORTED), fc.constantFrom('0.1.0', '0.2.0', '2.0.0', '1.0', ''), junk);
const ip4 = fc.constantFrom('10.77.0.1', '10.77.0.2', '10.77.0.9', '10.77.0.254', '10.77.1.5', '10.78.0.1', '0.0.0.0', '127.0.0.1', '255.255.255.255');
const ip6 = fc.constantFrom('fd77::1', 'fd77::5', 'fe80::1', '::', '::1', '::ffff:10.77.0.3');
const badIp = fc.constantFrom('10.77.0.999', '10.77.0', 'fd77:::1', 'garbage', '10.77.0.1/24', ' 10.77.0.1');
const anyIp = mostly(fc.oneof(ip4, ip6), badIp, junk);
const cidr = fc.constantFrom('10.77.0.0/24', '10.77.0.0/30', '10.77.0.0/31', '10.77.0.0/32', '10.77.1.0/24', '10.77.0.0/16', 'fd77::/64', 'fd77::/120', '0.0.0.0/0', '::/0');
const badCidr = fc.constantFrom('10.77.0.7/24', '10.77.0.0/40', 'fd77::/129', '10.77.0.0', 'garbage/8', '10.77.0.0/-1', '10.77.0.0/024');
const anyCidr = mostly(cidr, badCidr, junk);
const mac = mostly(fc.constantFrom('0a:58:0a:4d:00:05', '02:00:00:00:00:01', '0A:58:0A:4D:00:06'), fc.constantFrom('01:00:5e:00:00:01', '00:00:00:00:00:00', 'zz:zz', '0a:58:0a:4d:00'), junk);

type Model = Record<string, fc.Arbitrary<unknown>>;
/** a record whose keys other than `required` may be absent */
const rec = (model: Model, required: string[]): fc.Arbitrary<Record<string, unknown>> => fc.record(model, { requiredKeys: required });

/** host-local's config; dataDir always lies in the world's data dir */
const hostLocalIpam = rec(
  {
    type: mostly(fc.constant('host-local'), fc.constantFrom('nonexistent', 'vxlan', 'loopback', '../host-local', 'host-local/x', ''), junk),
    dataDir: mostly(fc.constant('@DATA@/ipam'), fc.constantFrom('@DATA@/afile/sub', '@DATA@/ipam2', '@DATA@/ipam/../ipam')),
    ranges: mostly(
      fc.array(fc.array(fc.record({ subnet: anyCidr, rangeStart: anyIp, rangeEnd: anyIp, gateway: anyIp }, { requiredKeys: ['subnet'] }), { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 2 }),
      junk,
      fc.constant([[]]),
    ),
    subnet: anyCidr,
    rangeStart: anyIp,
    gateway: anyIp,
    routes: mostly(fc.array(fc.record({ dst: anyCidr, gw: anyIp }, { requiredKeys: ['dst'] }), { maxLength: 3 }), junk),
    resolvConf: mostly(fc.constant('@DATA@/resolv.conf'), fc.constantFrom('@DATA@/nope', '@DATA@/afile', '@DATA@'), junk),
  },
  ['type', 'dataDir'],
);

const prevResult = mostly(
  fc.record(
    {
      cniVersion: cniVersion,
      interfaces: mostly(fc.array(fc.record({ name: mostly(fc.constantFrom('eth0', 'veth0', '@BR@'), junk), mac, sandbox: mostly(fc.constant('@NETNS@'), junk) }, { requiredKeys: ['name'] }), { maxLength: 3 }), junk),
      ips: mostly(
        fc.array(fc.record({ address: mostly(fc.constantFrom('10.77.0.5/24', '10.77.0.6/24', 'fd77::5/64'), badCidr, junk), gateway: anyIp, interface: mostly(fc.nat({ max: 3 }), junk), version: fc.constantFrom('4', '6', '5') }, { requiredKeys: ['address'] }), { maxLength: 3 }),
        junk,
      ),
      routes: mostly(fc.array(fc.record({ dst: anyCidr, gw: anyIp }), { maxLength: 2 }), junk),
      dns: mostly(fc.record({ nameservers: fc.array(anyIp, { maxLength: 2 }), domain: fc.constantFrom('cluster.local', ''), search: fc.array(fc.constantFrom('a', 'b.c'), { maxLength: 2 }) }), junk),
    },
    { requiredKeys: [] },
  ),
  junk,
);

const portMappings = mostly(
  fc.array(
    fc.record(
      {
        hostPort: mostly(fc.integer({ min: 1, max: 65535 }), fc.constantFrom(0, -1, 65536, 80.5, '80')),
        containerPort: mostly(fc.integer({ min: 1, max: 65535 }), fc.constantFrom(0, 70000, '8080')),
        protocol: mostly(fc.constantFrom('tcp', 'udp', 'sctp', 'TCP', ''), fc.constantFrom('icmp', 'tcp; drop'), junk),
        hostIP: mostly(fc.constantFrom('', '0.0.0.0', '10.77.0.1', '::', '127.0.0.1', '::1'), badIp, junk),
        HostPort: fc.integer({ min: 1, max: 65535 }),
      },
      { requiredKeys: ['hostPort', 'containerPort'] },
    ),
    { maxLength: 4 },
  ),
  junk,
);

const runtimeConfig = mostly(
  fc.record({ portMappings, mac, ips: mostly(fc.array(fc.constantFrom('10.77.0.7/24', '10.77.0.8', 'fd77::7/64'), { maxLength: 2 }), junk) }, { requiredKeys: [] }),
  junk,
);
const argsCni = mostly(fc.record({ cni: mostly(fc.record({ ips: mostly(fc.array(fc.constantFrom('10.77.0.7', '10.77.0.50', 'fd77::9'), { maxLength: 2 }), junk), mac }, { requiredKeys: [] }), junk) }, { requiredKeys: [] }), junk);

const common = (type: string): Record<string, fc.Arbitrary<unknown>> => ({
  cniVersion,
  name: mostly(fc.constant('@P@net'), fc.constantFrom('', 'bad name', 'a/b', '-x', '_x'), junk),
  type: mostly(fc.constant(type), fc.constantFrom('bridge', 'portmap', 'nonexistent', ''), junk),
  runtimeConfig,
  args: argsCni,
  prevResult,
  capabilities: mostly(fc.constant({ portMappings: true }), junk),
});

const bridgeConf = rec(
  {
    ...common('bridge'),
    bridge: mostly(fc.constantFrom('@BR@', '@BR@x'), fc.constantFrom('', 'much-too-long-bridge-name', 'bad name', 'eth0', 'lo', 'a/b'), junk),
    isGateway: anyBool,
    isDefaultGateway: anyBool,
    forceAddress: anyBool,
    ipMasq: anyBool,
    ipMasqBackend: mostly(fc.constantFrom('iptables', 'nftables'), junk),
    mtu: mostly(fc.constantFrom(1500, 1450, 9000), fc.constantFrom(0, 67, 65535, 65536, -1, 1.5), junk),
    hairpinMode: anyBool,
    promiscMode: anyBool,
    vlan: mostly(fc.integer({ min: 0, max: 4094 }), fc.constantFrom(4095, -1, 1.5), junk),
    vlanTrunk: mostly(fc.array(fc.record({ id: fc.integer({ min: 0, max: 4096 }), minID: fc.integer({ min: 0, max: 4096 }), maxID: fc.integer({ min: 0, max: 4096 }) }, { requiredKeys: [] }), { maxLength: 2 }), junk),
    preserveDefaultVlan: anyBool,
    enabledad: anyBool,
    macspoofchk: anyBool,
    ipspoofchk: anyBool,
    disableContainerInterface: anyBool,
    portIsolation: anyBool,
    ipam: mostly(hostLocalIpam, junk, fc.constant({ type: 'host-local' })),
    dns: mostly(fc.record({ nameservers: fc.array(anyIp, { maxLength: 2 }) }), junk),
  },
  ['cniVersion', 'name', 'type', 'bridge', 'ipam'],
);

const hostLocalConf = rec({ ...common('host-local'), ipam: hostLocalIpam }, ['cniVersion', 'name', 'type', 'ipam']);

const loopbackConf = rec(common('loopback'), ['cniVersion', 'name', 'type']);

const portmapConf = rec(
  {
    ...common('portmap'),
    snat: anyBool,
    masqAll: anyBool,
    markMasqBit: mostly(fc.integer({ min: 0, max: 31 }), fc.constantFrom(32, -1, 1.5), junk),
    externalSetMarkChain: mostly(fc.constantFrom('KUBE-MARK-MASQ', 'X'), fc.constantFrom('-bad', 'a b', 'x'.repeat(40)), junk),
    conditionsV4: mostly(fc.array(fc.constantFrom('-s 10.0.0.0/8', '! -d 10.77.0.1', '-m comment --comment x'), { maxLength: 2 }), fc.constant(['-bogus']), fc.constant(['a\nb']), junk),
    conditionsV6: mostly(fc.array(fc.constantFrom('-s fd00::/8'), { maxLength: 1 }), junk),
    backend: mostly(fc.constantFrom('iptables', 'nftables'), junk),
  },
  ['cniVersion', 'name', 'type', 'runtimeConfig', 'prevResult'],
);

const vxlanConf = rec(
  {
    ...common('vxlan'),
    subnetFile: mostly(fc.constant('@DATA@/subnet.env'), fc.constantFrom('@DATA@/missing.env', '@DATA@/bad.env', '@DATA@/empty.env', '@DATA@', 'relative.env'), junk),
    dataDir: mostly(fc.constant('@DATA@/vx'), fc.constantFrom('@DATA@/afile/sub', 'relative', '@DATA@/vx/../vx'), junk),
    delegate: mostly(
      fc.record({ bridge: mostly(fc.constant('@BR@'), junk), mtu: mostly(fc.constantFrom(1400, 1450), junk), type: mostly(fc.constant('bridge'), fc.constantFrom('vxlan', 'nonexistent', 'loopback', '', 'a/b'), junk), ipam: junk, macspoofchk: anyBool, ipMasq: anyBool }, { requiredKeys: ['bridge'] }),
      junk,
    ),
    // the delegated host-local's store always lies in the data dir
    ipam: mostly(fc.record({ dataDir: fc.constant('@DATA@/ipam'), type: mostly(fc.constant('host-local'), junk), rangeStart: anyIp }, { requiredKeys: ['dataDir'] }), junk),
  },
  ['cniVersion', 'name', 'type', 'delegate', 'ipam'],
);

// Valid configurations, so that a good share of cases reach the kernel; each case is a valid one with up to two keys
// replaced by the wild generator's values, or the wild record itself.
const versionArb = fc.constantFrom(...SUPPORTED);
const validIpam = fc.record({
  type: fc.constant('host-local'),
  dataDir: fc.constant('@DATA@/ipam'),
  ranges: fc.constantFrom([[{ subnet: '10.77.0.0/24' }]], [[{ subnet: '10.77.0.0/24' }], [{ subnet: 'fd77::/64' }]], [[{ subnet: '10.77.0.0/24', rangeStart: '10.77.0.10', rangeEnd: '10.77.0.20', gateway: '10.77.0.1' }]]),
  routes: fc.constantFrom([], [{ dst: '0.0.0.0/0' }], [{ dst: '10.96.0.0/12', gw: '10.77.0.1' }]),
});
const validPrev = (v: string): fc.Arbitrary<Record<string, unknown>> =>
  fc.constantFrom('10.77.0.5/24', 'fd77::5/64').map((address) => ({
    cniVersion: v,
    interfaces: [{ name: 'eth0', sandbox: '@NETNS@' }],
    ips: [{ address, interface: 0, ...(['0.3.0', '0.3.1', '0.4.0'].includes(v) ? { version: address.includes(':') ? '6' : '4' } : {}) }],
  }));
const VALID: Record<PluginName, fc.Arbitrary<Record<string, unknown>>> = {
  'host-local': fc.record({ cniVersion: versionArb, name: fc.constant('@P@net'), type: fc.constant('host-local'), ipam: validIpam }),
  loopback: fc.record({ cniVersion: versionArb, name: fc.constant('@P@net'), type: fc.constant('loopback') }),
  bridge: fc.record({
    cniVersion: versionArb,
    name: fc.constant('@P@net'),
    type: fc.constant('bridge'),
    bridge: fc.constant('@BR@'),
    isGateway: fc.boolean(),
    ipMasq: fc.boolean(),
    ipMasqBackend: fc.constantFrom('iptables', 'nftables'),
    hairpinMode: fc.boolean(),
    macspoofchk: fc.boolean(),
    ipspoofchk: fc.boolean(),
    ipam: validIpam,
  }),
  portmap: versionArb.chain((v) =>
    fc.record({
      cniVersion: fc.constant(v),
      name: fc.constant('@P@net'),
      type: fc.constant('portmap'),
      snat: fc.boolean(),
      backend: fc.constantFrom('iptables', 'nftables'),
      runtimeConfig: fc.record({ portMappings: fc.uniqueArray(fc.record({ hostPort: fc.integer({ min: 8000, max: 8010 }), containerPort: fc.integer({ min: 1, max: 65535 }), protocol: fc.constantFrom('tcp', 'udp', 'sctp') }), { maxLength: 3, selector: (m) => `${m.hostPort}/${m.protocol}` }) }),
      prevResult: validPrev(v),
    }),
  ),
  vxlan: fc.record({
    cniVersion: versionArb,
    name: fc.constant('@P@net'),
    type: fc.constant('vxlan'),
    subnetFile: fc.constant('@DATA@/subnet.env'),
    dataDir: fc.constant('@DATA@/vx'),
    delegate: fc.record({ bridge: fc.constant('@BR@') }),
    ipam: fc.constant({ dataDir: '@DATA@/ipam' }),
  }),
};

const WILD: Record<PluginName, fc.Arbitrary<Record<string, unknown>>> = {
  bridge: bridgeConf,
  'host-local': hostLocalConf,
  loopback: loopbackConf,
  portmap: portmapConf,
  vxlan: vxlanConf,
};

/** a valid value with up to `n` keys taken from a wild one (a key absent from the wild value is deleted) */
function mutated<T extends Record<string, unknown>>(valid: fc.Arbitrary<T>, wild: fc.Arbitrary<Record<string, unknown>>, keys: readonly string[], n: number): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(valid, wild, fc.subarray([...keys], { maxLength: n })).map(([v, w, ks]) => {
    const out: Record<string, unknown> = { ...v };
    for (const k of ks) {
      if (k in w) out[k] = w[k];
      else delete out[k];
    }
    return out;
  });
}

function confArb(plugin: PluginName): fc.Arbitrary<Record<string, unknown>> {
  const keys = [...new Set([...Object.keys(fc.sample(VALID[plugin], { numRuns: 1, seed: 0 })[0]!), ...Object.keys(common(plugin)), 'ipam', 'runtimeConfig', 'prevResult'])];
  return fc.oneof(
    { arbitrary: VALID[plugin], weight: 4 },
    { arbitrary: mutated(VALID[plugin], WILD[plugin], keys, 2), weight: 8 },
    { arbitrary: WILD[plugin], weight: 3 },
  );
}

/** stdin: mostly the config as JSON; sometimes text damage (truncation, non-JSON, not an object, NUL bytes) */
function stdinOf(conf: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<string> {
  const json = conf.map((c) => JSON.stringify(c));
  return fc.oneof(
    { arbitrary: json, weight: 12 },
    { arbitrary: fc.tuple(json, fc.nat()).map(([s, n]) => s.slice(0, n % Math.max(1, s.length))), weight: 1 },
    { arbitrary: fc.constantFrom('', '{', 'null', '[]', '"x"', '42', '{"cniVersion":"1.0.0"}', '\u0000\u0001', '{"cniVersion":"1.0.0","name":"n","type":"x","cniVersion":"0.1.0"}'), weight: 1 },
    { arbitrary: fc.tuple(json, fc.constantFrom('\u0000', '\ufffd', ' trailing', '}')).map(([s, t]) => s + t), weight: 1 },
  );
}

const wildEnv = rec(
  {
    CNI_CONTAINERID: mostly(fc.nat().map((h) => `c${h.toString(16)}`), fc.constantFrom(undefined, '', 'a/b', '../x', '-x', 'x'.repeat(300), 'c\u00e9', 'c d')),
    CNI_NETNS: mostly(fc.constant('@NETNS@'), fc.constantFrom(undefined, '', '/nonexistent/ns', '@DATA@/afile', '@DATA@', '/proc/self/ns/net', 'relative')),
    CNI_IFNAME: mostly(fc.constantFrom('eth0', 'net1'), fc.constantFrom(undefined, '', 'much-too-long-ifname', 'lo', 'a/b', 'eth 0', '..', '\u00e9th0', 'eth0:1')),
    CNI_ARGS: fc.oneof(
      fc.constant(undefined),
      fc
        .array(fc.constantFrom('IgnoreUnknown=1', 'IgnoreUnknown=true', 'IgnoreUnknown=0', 'IP=10.77.0.40', 'IP=10.77.0.999', 'IP=fd77::40', 'IP=10.77.0.40,10.77.0.41', 'MAC=0a:58:0a:4d:00:07', 'MAC=bad', 'K8S_POD_NAME=p', 'FOO=bar', 'novalue', '=x', ''), { maxLength: 4 })
        .map((a) => a.join(';')),
    ),
    CNI_PATH: mostly(fc.constant('@BIN@'), fc.constantFrom(undefined, '', '/nonexistent', '/nonexistent:@BIN@', '@DATA@')),
  },
  ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'],
);

const validEnv = fc.record({
  CNI_CONTAINERID: fc.nat().map((h) => `c${h.toString(16)}`),
  CNI_NETNS: fc.constant('@NETNS@'),
  CNI_IFNAME: fc.constantFrom('eth0', 'net1'),
  CNI_ARGS: fc.constantFrom(undefined, 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p'),
  CNI_PATH: fc.constant('@BIN@'),
}) as fc.Arbitrary<Record<string, string | undefined>>;
const envArb = fc.oneof(
  { arbitrary: validEnv, weight: 3 },
  { arbitrary: mutated(validEnv, wildEnv, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'], 1), weight: 3 },
  { arbitrary: wildEnv as fc.Arbitrary<Record<string, string | undefined>>, weight: 1 },
) as fc.Arbitrary<Record<string, string | undefined>>;

const verbArb = fc.oneof(
  { arbitrary: fc.constant('ADD'), weight: 10 },
  { arbitrary: fc.constantFrom('DEL', 'CHECK'), weight: 6 },
  { arbitrary: fc.constantFrom('VERSION', 'GC', 'STATUS'), weight: 3 },
  { arbitrary: fc.constantFrom(undefined, '', 'add', 'FOO'), weight: 1 },
);

/** Cases for one plugin. */
export function caseArb(plugin: PluginName): fc.Arbitrary<FuzzCase> {
  return fc.record({ verb: verbArb, env: envArb, stdin: stdinOf(confArb(plugin)) }).map(({ verb, env, stdin }) => ({ plugin, verb: verb ?? '', env: { CNI_COMMAND: verb, ...env }, stdin }));
}

// ------------------------------------------------------------------ the world a case runs in

export interface WorldOptions {
  /** the plugins' directory (default dist/bin) */
  bin?: string;
  /** per-invocation time limit */
  timeoutMs?: number;
}

interface Fingerprint {
  host: ReturnType<typeof hostFingerprint>;
  ctr: string[];
  files: string[];
}

/** A host netns, a container netns and a data dir; `run` executes one case and checks its contract. */
export class FuzzWorld {
  readonly prefix: string;
  readonly bin: string;
  readonly timeoutMs: number;
  private host!: TestNetns;
  private ctr!: TestNetns;
  private data!: string;
  private baseline!: Fingerprint;
  private generation = 0;

  constructor(prefix: string, opts: WorldOptions = {}) {
    this.prefix = prefix;
    this.bin = opts.bin ?? OURS_BIN;
    this.timeoutMs = opts.timeoutMs ?? 20_000;
    this.reset();
  }

  /** Fresh namespaces and data dir (after a successful ADD, whose bridge and base chains legitimately stay). */
  reset(): void {
    this.teardown();
    const g = this.generation++;
    this.host = createNetns(`${this.prefix}h${g}`);
    this.ctr = createNetns(`${this.prefix}c${g}`);
    execFileSync('ip', ['-n', this.ctr.name, 'link', 'set', 'lo', 'down']);
    this.data = mkdtempSync(join(tmpdir(), `${this.prefix}-fuzz-`));
    writeFileSync(join(this.data, 'afile'), 'x');
    chmodSync(join(this.data, 'afile'), 0o444);
    writeFileSync(join(this.data, 'resolv.conf'), 'nameserver 10.77.0.53\nsearch cluster.local\noptions ndots:5\n');
    writeFileSync(join(this.data, 'subnet.env'), 'FLATNET_NETWORK=10.77.0.0/16\nFLATNET_SUBNET=10.77.0.0/24\nFLATNET_MTU=1450\nFLATNET_IPMASQ=true\n');
    writeFileSync(join(this.data, 'bad.env'), 'FLATNET_SUBNET=10.77.0.0/40\nFLATNET_MTU=x\n');
    writeFileSync(join(this.data, 'empty.env'), '');
    mkdirSync(join(this.data, 'cwd'));
    this.baseline = this.fingerprint();
  }

  teardown(): void {
    this.host?.remove();
    this.ctr?.remove();
    if (this.data) rmSync(this.data, { recursive: true, force: true });
  }

  private fingerprint(): Fingerprint {
    const ctr = execFileSync('ip', ['-n', this.ctr.name, '-o', 'addr', 'show'], { encoding: 'utf8' })
      .split('\n')
      .concat(execFileSync('ip', ['-n', this.ctr.name, '-o', 'link', 'show'], { encoding: 'utf8' }).split('\n'))
      .map((l) => l.replace(/^\d+:\s*/, '').replace(/\s+(valid_lft|link\/ether|alias).*$/, '').trim())
      .filter(Boolean)
      .sort();
    // host-local's round-robin cursor (last_reserved_ip.N) is not an allocation: a failed ADD leaves it where it moved,
    // as the reference does (test/netns/host-local.test.ts), and DEL cannot know its old value
    const files = storeFiles(this.data).filter((f) => !/\/last_reserved_ip\.\d+$/.test(f));
    return { host: hostFingerprint(this.host.path), ctr, files };
  }

  /** The case with tokens replaced by this world's paths and names. */
  resolve(c: FuzzCase): { env: Record<string, string>; stdin: string } {
    const sub = (s: string): string =>
      s.replaceAll('@DATA@', this.data).replaceAll('@NETNS@', this.ctr.path).replaceAll('@BIN@', this.bin).replaceAll('@BR@', `${this.prefix}br`).replaceAll('@P@', this.prefix);
    const env: Record<string, string> = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
    for (const [k, v] of Object.entries(c.env)) if (v !== undefined) env[k] = sub(v);
    return { env, stdin: sub(c.stdin) };
  }

  private exec(plugin: string, env: Record<string, string>, stdin: string): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string; timedOut: boolean }> {
    return new Promise((res, rej) => {
      const child = spawn('nsenter', [`--net=${this.host.path}`, '--', join(this.bin, plugin)], { env, cwd: join(this.data, 'cwd'), stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, this.timeoutMs);
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', rej);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        res({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut });
      });
      child.stdin.on('error', () => {});
      child.stdin.end(stdin);
    });
  }

  /** Runs a case; after a failed one the world starts afresh, so a failure never leaks into the next case. */
  async run(c: FuzzCase): Promise<Verdict> {
    const v = await this.check(c);
    if (!v.ok && v.kind !== 'leftover' && v.kind !== 'del-failed') this.reset();
    return v;
  }

  private async check(c: FuzzCase): Promise<Verdict> {
    const { env, stdin } = this.resolve(c);
    const r = await this.exec(c.plugin, env, stdin);
    if (r.timedOut) return { ok: false, kind: 'hang', detail: `no exit within ${this.timeoutMs} ms` };
    if (r.code === null) return { ok: false, kind: 'crash', detail: `killed by ${r.signal}` };
    const text = r.stdout.trim();
    let json: unknown;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        return { ok: false, kind: 'stdout', detail: `stdout is not one JSON document: ${JSON.stringify(r.stdout.slice(0, 300))}` };
      }
    }
    let verdict: Verdict;
    if (r.code === 0) {
      if (c.verb === 'VERSION') {
        const v = versionViolations(json);
        if (v.length) return { ok: false, kind: 'schema', detail: v.join('; ') };
        verdict = { ok: true, outcome: 'version' };
      } else if (c.verb === 'ADD') {
        const version = (JSON.parse(stdin) as { cniVersion: string }).cniVersion;
        const v = resultViolations(json, version);
        if (v.length) return { ok: false, kind: 'schema', detail: `${v.join('; ')} in ${text.slice(0, 300)}` };
        return this.undoAdd(c, env, stdin, json as Record<string, unknown>);
      } else {
        if (text) return { ok: false, kind: 'stdout', detail: `${c.verb} succeeded but printed ${text.slice(0, 200)}` };
        verdict = { ok: true, outcome: 'empty' };
      }
    } else {
      if (r.code !== 1) return { ok: false, kind: 'crash', detail: `exit ${r.code}: ${r.stderr.slice(0, 300)}` };
      const v = errorViolations(json);
      if (v.length) return { ok: false, kind: 'stdout', detail: `${v.join('; ')}: ${text.slice(0, 300)}` };
      const code = (json as { code: number }).code;
      // 999 is the reference plugins' "internal" code, used on purpose for failed kernel programs; a JavaScript
      // exception turned into 999 by the skeleton is a crash
      if (code === 999 && JS_EXCEPTION.test(text)) return { ok: false, kind: 'crash', detail: `uncaught exception: ${text.slice(0, 400)}` };
      verdict = { ok: true, outcome: 'error', code };
    }
    const now = this.fingerprint();
    const diff = diffFingerprints(this.baseline, now);
    if (diff) {
      this.reset();
      return { ok: false, kind: 'leftover', detail: `${c.verb} (${verdict.ok && verdict.outcome === 'error' ? `error ${verdict.code}` : 'ok'}) changed ${diff}` };
    }
    return verdict;
  }

  /** A successful ADD: DEL with the same config and its result must succeed and take the attachment away. */
  private async undoAdd(c: FuzzCase, env: Record<string, string>, stdin: string, result: Record<string, unknown>): Promise<Verdict> {
    const conf = JSON.parse(stdin) as Record<string, unknown>;
    const del = await this.exec(c.plugin, { ...env, CNI_COMMAND: 'DEL' }, JSON.stringify({ ...conf, prevResult: result }));
    let verdict: Verdict = { ok: true, outcome: 'result', addDel: true };
    if (del.timedOut || del.code !== 0) verdict = { ok: false, kind: 'del-failed', detail: `DEL after a successful ADD: exit ${del.code} ${del.stdout.slice(0, 300)}` };
    else {
      const now = this.fingerprint();
      const left: string[] = [];
      const ifname = env['CNI_IFNAME'];
      // an interface the container did not have before (host-local and loopback create none; `lo` always exists)
      const newLinks = now.ctr.filter((l) => /^\S+:?\s*</.test(l) && !this.baseline.ctr.includes(l) && !l.startsWith('lo:'));
      if (ifname && newLinks.some((l) => l.startsWith(`${ifname}:`) || l.startsWith(`${ifname}@`))) left.push(`container still has ${ifname}`);
      if (now.ctr.some((l) => /inet6? (?!127\.|::1)/.test(l) && !/scope link/.test(l))) left.push('container still has addresses');
      if (now.host.links.some((l) => l.startsWith('veth'))) left.push('host still has a veth');
      const allocations = now.files.filter((f) => /\/(\d+\.\d+\.\d+\.\d+|[0-9a-f:]+:[0-9a-f:]*)$/.test(f));
      if (allocations.length) left.push(`allocations ${allocations.join(',')}`);
      const saved = now.files.filter((f) => f.startsWith('/vx/') && f.endsWith('.json'));
      if (saved.length) left.push(`saved delegate configs ${saved.join(',')}`);
      if (left.length) verdict = { ok: false, kind: 'leftover', detail: `after ADD+DEL: ${left.join('; ')}` };
    }
    this.reset();
    return verdict;
  }
}

const JS_EXCEPTION = /TypeError|ReferenceError|RangeError|SyntaxError|Cannot read properties|is not a function|is not iterable|Maximum call stack|Invalid array length|ERR_[A-Z_]+/;

function diffFingerprints(a: Fingerprint, b: Fingerprint): string | undefined {
  const parts: string[] = [];
  const d = (what: string, x: string[], y: string[]): void => {
    const added = y.filter((l) => !x.includes(l));
    const removed = x.filter((l) => !y.includes(l));
    if (added.length || removed.length) parts.push(`${what}: +[${added.join(' | ')}] -[${removed.join(' | ')}]`);
  };
  for (const k of Object.keys(a.host) as (keyof Fingerprint['host'])[]) d(`host ${k}`, a.host[k], b.host[k]);
  d('container', a.ctr, b.ctr);
  d('files', a.files, b.files);
  return parts.length ? parts.join('; ') : undefined;
}

/** Counts per plugin for a results table. */
export interface FuzzTally {
  cases: number;
  results: number;
  errors: number;
  empty: number;
  versions: number;
  codes: Record<string, number>;
  /** failures per kind (crash, stdout, schema, hang, leftover, del-failed) */
  kinds: Record<string, number>;
  failures: { kind: string; detail: string; case: FuzzCase }[];
  ms: number;
}

export function newTally(): FuzzTally {
  return { cases: 0, results: 0, errors: 0, empty: 0, versions: 0, codes: {}, kinds: {}, failures: [], ms: 0 };
}

export function record(t: FuzzTally, c: FuzzCase, v: Verdict): void {
  t.cases++;
  if (!v.ok) {
    t.kinds[v.kind] = (t.kinds[v.kind] ?? 0) + 1;
    t.failures.push({ kind: v.kind, detail: v.detail, case: c });
    return;
  }
  if (v.outcome === 'result') t.results++;
  else if (v.outcome === 'error') {
    t.errors++;
    t.codes[String(v.code)] = (t.codes[String(v.code)] ?? 0) + 1;
  } else if (v.outcome === 'empty') t.empty++;
  else t.versions++;
}
