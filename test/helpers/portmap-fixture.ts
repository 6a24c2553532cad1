// Shared scenario for the portmap netns tests: a "node" netns with a bridge made by the reference bridge+host-local,
// container netns on it, and a "client" netns standing for another host (veth to the node). Everything is private
// to namespaces created here, so iptables/nft state never touches the machine's own.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNetns, removeLinksWithPrefix, removeNetnsWithPrefix, type TestNetns } from './netns.ts';
import { runPrefix } from './prefix.ts';
import { CniError, type Attachment, type CniCommand, type CniResult, type InvocationContext, type NetConf, type PluginHandlers } from '../../lib/cni/types.ts';
import type { Logger } from '../../lib/log/logger.ts';
import { canonicalIP } from '../../lib/net/ip.ts';

export const NODE_A = '192.168.77.10';
export const NODE_B = '192.168.77.11';
export const CLIENT = '192.168.77.2';
export const NODE6_A = 'fd77::10';
export const NODE6_B = 'fd77::11';
export const CLIENT6 = 'fd77::2';
export const GW4 = '10.77.0.1';
export const GW6 = 'fd00:77::1';
export const NET = 'pmnet';

export type Proto = 'tcp' | 'udp';

/** Node 24 from node_modules (never the system node) */
const NODE = resolve(import.meta.dirname, '../../node_modules/.bin/node');

const UDP_SERVER = `const d = require('node:dgram'); const [port, label] = process.argv.slice(1);
for (const [type, host] of [['udp4', '0.0.0.0'], ['udp6', '::']]) {
  const s = d.createSocket({ type, ipv6Only: type === 'udp6' });
  s.on('message', (m, r) => s.send(label + ' ' + r.address + '\\n', r.port, r.address));
  s.bind(Number(port), host);
}`;

const UDP_CLIENT = `const d = require('node:dgram'); const [h, p, t, sport] = process.argv.slice(1);
const s = d.createSocket(h.includes(':') ? 'udp6' : 'udp4');
s.on('message', (m) => { process.stdout.write(m); process.exit(0); });
s.on('error', () => process.exit(1));
s.bind(Number(sport || 0), () => s.send('ping\\n', Number(p), h));
setTimeout(() => process.exit(2), Number(t) * 1000);`;

export interface Container {
  id: string;
  ns: TestNetns;
  prevResult: CniResult;
  v4: string;
  v6: string;
}

export const quietLog: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** The CNI environment for one invocation (plugins found in the reference directory) */
function pluginEnv(command: CniCommand, containerId: string, netns: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
  };
}

export class Scenario {
  readonly p = runPrefix();
  /** host-local's dataDir, made in setup() (a suite filtered out by -t never creates it) */
  dataDir = '';
  node!: TestNetns;
  client!: TestNetns;
  readonly containers: Container[] = [];
  private readonly procs: ChildProcess[] = [];

  get bridge(): string {
    return `${this.p}br`;
  }

  setup(): void {
    this.dataDir = mkdtempSync(join(tmpdir(), 'fpm-'));
    this.node = createNetns(`${this.p}-node`);
    this.client = createNetns(`${this.p}-cli`);
    const ip = (...a: string[]) => execFileSync('ip', a);
    ip('link', 'add', `${this.p}nc`, 'type', 'veth', 'peer', 'name', `${this.p}cn`);
    ip('link', 'set', `${this.p}nc`, 'netns', this.node.name);
    ip('link', 'set', `${this.p}cn`, 'netns', this.client.name);
    const n = (...a: string[]) => this.node.exec(a);
    const c = (...a: string[]) => this.client.exec(a);
    n('ip', 'addr', 'add', `${NODE_A}/24`, 'dev', `${this.p}nc`);
    n('ip', 'addr', 'add', `${NODE_B}/24`, 'dev', `${this.p}nc`);
    n('ip', 'addr', 'add', `${NODE6_A}/64`, 'dev', `${this.p}nc`, 'nodad');
    n('ip', 'addr', 'add', `${NODE6_B}/64`, 'dev', `${this.p}nc`, 'nodad');
    n('ip', 'link', 'set', `${this.p}nc`, 'up');
    c('ip', 'addr', 'add', `${CLIENT}/24`, 'dev', `${this.p}cn`);
    c('ip', 'addr', 'add', `${CLIENT6}/64`, 'dev', `${this.p}cn`, 'nodad');
    c('ip', 'link', 'set', `${this.p}cn`, 'up');
    n('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    n('sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1');
  }

  bridgeConf(): NetConf {
    return {
      cniVersion: '1.0.0',
      name: NET,
      type: 'bridge',
      bridge: this.bridge,
      isGateway: true,
      hairpinMode: true,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.77.0.0/24' }], [{ subnet: 'fd00:77::/64' }]],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
        dataDir: this.dataDir,
      },
    };
  }

  /** Run a CNI binary inside the node netns; returns stdout (throws with stdout+stderr on failure). `env` overrides. */
  execPlugin(binary: string, command: CniCommand, containerId: string, netns: string, conf: unknown, env: Record<string, string> = {}): string {
    try {
      return execFileSync('ip', ['netns', 'exec', this.node.name, binary], {
        input: JSON.stringify(conf),
        encoding: 'utf8',
        env: { ...pluginEnv(command, containerId, netns), ...env },
      });
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; status?: number };
      throw new Error(`${binary} ${command} exited ${err.status}: ${err.stdout ?? ''} ${err.stderr ?? ''}`, { cause: e });
    }
  }

  /** execPlugin, asynchronously (for concurrent invocations); resolves to {code, stdout}. */
  execPluginAsync(binary: string, command: CniCommand, containerId: string, netns: string, conf: unknown): Promise<{ code: number; stdout: string }> {
    return new Promise((res) => {
      const child = execFile(
        'ip',
        ['netns', 'exec', this.node.name, binary],
        {
          encoding: 'utf8',
          env: pluginEnv(command, containerId, netns),
        },
        (err, stdout) => res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
      );
      child.stdin?.end(JSON.stringify(conf));
    });
  }

  /** A container netns wired to the bridge by the reference bridge + host-local (dual-stack). */
  addContainer(label: string): Container {
    const id = `${this.p}-${label}-${Math.random().toString(16).slice(2, 10)}`;
    const ns = createNetns(`${this.p}-${label}`);
    const prevResult = JSON.parse(this.execPlugin('/usr/lib/cni/bridge', 'ADD', id, ns.path, this.bridgeConf())) as CniResult;
    const addr = (fam: 4 | 6) => prevResult.ips!.find((i) => (fam === 4) === !i.address.includes(':'))!.address.split('/')[0]!;
    const c = { id, ns, prevResult, v4: addr(4), v6: addr(6) };
    this.containers.push(c);
    return c;
  }

  /** route_localnet and the sysctls a test wants to see */
  sysctl(key: string): string {
    return this.node.exec(['sysctl', '-n', key]).trim();
  }

  /**
   * A server in the container answering "<label> <peer address>" on tcp or udp, v4 and v6. TCP: socat (forks per
   * accepted connection). UDP: one Node process (socat's forking UDP server races its children for datagrams).
   */
  async serve(c: { ns: TestNetns }, proto: Proto, port: number, label: string): Promise<void> {
    const spawnIn = (argv: string[]) => {
      this.procs.push(spawn('ip', ['netns', 'exec', c.ns.name, ...argv], { stdio: 'ignore', detached: true }));
    };
    if (proto === 'tcp') {
      for (const fam of [4, 6]) {
        spawnIn(['socat', `TCP${fam}-LISTEN:${port},reuseaddr,fork${fam === 6 ? ',ipv6only=1' : ''}`, `SYSTEM:read l; echo ${label} $SOCAT_PEERADDR`]);
      }
    } else {
      spawnIn([NODE, '-e', UDP_SERVER, String(port), label]);
    }
    // wait until both listeners are bound (generous: the machine is shared and often very busy)
    for (let i = 0; i < 300; i++) {
      const out = c.ns.exec(['ss', '-Hln', proto === 'tcp' ? '-t' : '-u', `sport = :${port}`]);
      if (out.trim().split('\n').filter(Boolean).length >= 2) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`server ${label} on ${proto}/${port} did not start`);
  }

  /**
   * One request from a netns; returns {label, peer} as the server saw it, or undefined if nothing answered.
   */
  request(from: TestNetns, proto: Proto, host: string, port: number, timeoutS = 5, udpSourcePort = 0): { label: string; peer: string } | undefined {
    // UDP is lossy and the machine is shared and busy: a datagram gets a second chance
    const r = this.requestOnce(from, proto, host, port, timeoutS, udpSourcePort);
    return r || proto === 'tcp' ? r : this.requestOnce(from, proto, host, port, timeoutS, udpSourcePort);
  }

  private requestOnce(
    from: TestNetns,
    proto: Proto,
    host: string,
    port: number,
    timeoutS: number,
    udpSourcePort: number,
  ): { label: string; peer: string } | undefined {
    const v6 = host.includes(':');
    // TCP: socat, waiting up to timeoutS after stdin EOF too (its default of 0.5 s loses replies on a busy machine).
    // UDP: a Node one-liner that exits on the first reply (socat would wait out its timeout every time).
    const argv =
      proto === 'tcp'
        ? ['socat', `-T${timeoutS}`, `-t${timeoutS}`, '-', `TCP${v6 ? '6' : '4'}:${v6 ? `[${host}]` : host}:${port}`]
        : [NODE, '-e', UDP_CLIENT, host, String(port), String(timeoutS), String(udpSourcePort)];
    let out = '';
    try {
      out = execFileSync('ip', ['netns', 'exec', from.name, 'timeout', String(timeoutS + 5), ...argv], {
        input: 'ping\n',
        encoding: 'utf8',
        stdio: ['pipe', 'pipe', 'ignore'],
      });
    } catch {
      return undefined;
    }
    const [label, peerRaw] = out.trim().split(/\s+/);
    if (!label || !peerRaw) return undefined;
    const peer = canonicalIP(peerRaw.replace(/^\[|\]$/g, '').replace(/^::ffff:/, ''));
    return { label, peer };
  }

  natRules(family: 4 | 6 = 4): string {
    const out = this.node.exec([family === 4 ? 'iptables-save' : 'ip6tables-save', '-t', 'nat']);
    return normalizeSave(out);
  }

  nftRuleset(): string {
    return this.node.exec(['nft', 'list', 'ruleset']);
  }

  teardown(): void {
    for (const p of this.procs) {
      try {
        if (p.pid) process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    removeNetnsWithPrefix(this.p);
    removeLinksWithPrefix(this.p);
    if (this.dataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** iptables-save without comments/counters, so two dumps compare by content only. */
export function normalizeSave(text: string): string {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
    .join('\n');
}

/** Invoke a portmap handler in-process the way the skeleton would. */
export async function invoke(
  h: PluginHandlers,
  command: 'ADD' | 'DEL' | 'CHECK' | 'GC',
  c: { id: string; ns?: { path: string } },
  conf: NetConf,
  validAttachments: Attachment[] = [],
): Promise<CniResult | undefined> {
  const ctx: InvocationContext = {
    env: { command, containerId: c.id, netns: c.ns?.path ?? '', ifname: 'eth0', args: {}, path: ['/usr/lib/cni'] },
    conf,
    stdin: JSON.stringify(conf),
    log: quietLog,
    delegator: {
      exec: () => {
        throw new Error('portmap delegates nothing');
      },
    },
    validAttachments,
  };
  switch (command) {
    case 'ADD':
      return h.add(ctx);
    case 'DEL':
      return h.del(ctx).then(() => undefined);
    case 'CHECK':
      return h.check(ctx).then(() => undefined);
    case 'GC':
      return h.gc!(ctx).then(() => undefined);
  }
}

/** A portmap conf as the runtime would pass it: name, cniVersion, runtimeConfig and prevResult injected. */
export function portmapConf(
  prevResult: CniResult | undefined,
  portMappings: { hostPort: number; containerPort: number; protocol?: string; hostIP?: string }[],
  extra: Record<string, unknown> = {},
): NetConf {
  return {
    cniVersion: '1.0.0',
    name: NET,
    type: 'portmap',
    capabilities: { portMappings: true },
    runtimeConfig: { portMappings },
    ...(prevResult ? { prevResult } : {}),
    ...extra,
  };
}

export type Invoker = (
  command: 'ADD' | 'DEL' | 'CHECK' | 'GC',
  c: { id: string; ns?: { path: string } },
  conf: NetConf,
  validAttachments?: Attachment[],
) => Promise<CniResult | undefined>;

/** In-process handlers, acting inside the scenario's node netns. */
export function inProcessInvoker(h: PluginHandlers): Invoker {
  return (command, c, conf, valid) => invoke(h, command, c, conf, valid);
}

/**
 * The built binary (e.g. dist/bin/portmap) run inside the node netns with CNI env and stdin, exactly as a runtime
 * would. Errors come back as CniError with the code and msg from the error JSON on stdout.
 */
export function binaryInvoker(s: Scenario, binary: string): Invoker {
  return async (command, c, conf, valid = []) => {
    const stdinConf =
      command === 'GC' ? { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': valid, 'cni.dev/attachments': valid } : conf;
    let out: string;
    try {
      out = s.execPlugin(binary, command, c.id, c.ns?.path ?? '', stdinConf);
    } catch (e) {
      const m = /exited \d+: (\{.*?\})\s/s.exec(String((e as Error).message));
      if (!m) throw e;
      const j = JSON.parse(m[1]!) as { code: number; msg: string; details?: string };
      throw new CniError(j.code, j.msg, j.details ?? '');
    }
    return command === 'ADD' ? (JSON.parse(out) as CniResult) : undefined;
  };
}
