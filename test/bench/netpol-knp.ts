// bench:netpol -- --sections knp: kube-network-policies (kubernetes-sigs; kindnet embeds it) beside flatnet's policy
// controller, on the same pods, policies and kernel, in one run (test/bench/netpol.ts calls this).
//
// Both read the same objects from a real apiserver: a local cluster with no runtime, no proxy and no DNS
// (test/cluster), holding 10 namespaces, the bench's NetworkPolicies and Pod objects for the fixture's pods a (server)
// and c (client), bound to the cluster's one Node, with their addresses written into pod status. Each enforces on the
// fixture's node netns (test/netns/policy-fixture.ts):
//   flatnet  PolicyController with the API source (as the daemon runs it), in this process;
//   knp      kube-network-policies v0.8.0 built from its Go module (test/bench/build-knp.sh), in the node netns with
//            --disable-nri, in-cluster config from a private mount namespace (token and CA under
//            /var/run/secrets/...), the apiserver reached through a unix-socket relay (socat), as a pod on the host
//            network would reach it.
// kube-network-policies needs the kernel's nftables queue expression (CONFIG_NFT_QUEUE); without it (the development
// kernel) its modes are skipped with the reason, and flatnet is measured alone the same way.
// Rounds, the order rotating: none (flatnet's table without policies: conntrack on, no policy), flatnet, knp, each
// checked to enforce (c -> a:8080 dropped, c -> a:7000 allowed) before measuring: new-TCP-connection latency c -> a
// (connlat) and one TCP stream (iperf3); knp's CPU during the connections and its peak RSS.
// Then flatnet's time from an API write to the change committed in the kernel, through the apiserver and its watch:
// pod c relabelled out of the allowed peers (deny) and back (allow). kube-network-policies has no such moment (it
// decides at the next packet); connection probes were tried to time it and, at 30 ms per probe on a loaded 2-core
// machine, failed on their own.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ExecRunner } from '../../lib/exec/exec.ts';
import { KubeClient } from '../../lib/kube/client.ts';
import { loadKubeConfigFile } from '../../lib/kube/config.ts';
import { KubePolicySource, PolicyController } from '../../proxy/policy/controller.ts';
import { down, up } from '../cluster/cli.ts';
import { IP, type PolicyFixture } from '../netns/policy-fixture.ts';
import { nsObj, podObj } from '../unit/proxy/policy/fixtures.ts';
import { pct, r1 } from './util.ts';

const HERE = dirname(new URL(import.meta.url).pathname);
const silent = { debug() {}, info() {}, warn() {}, error() {} };

export interface KnpInput {
  fx: PolicyFixture;
  /** flatnet's table name in the fixture's node netns */
  table: string;
  /** flatnet's table without policies (the "none" baseline) */
  emptyProgram: string;
  connlat(n: number): number[];
  iperf(): number;
  namespaces: number;
  policies: Record<string, unknown>[];
  conns: number;
  rounds: number;
  flips: number;
  log(m: string): void;
}

type Mode = 'none' | 'flatnet' | 'knp';

export interface KnpResult {
  version: string;
  /** why kube-network-policies did not run (its modes are then absent) */
  knpSkipped?: string;
  rounds: number;
  connectionsPerMode: number;
  policies: number;
  newConnectionUs: Partial<Record<Mode, { p50: number; p90: number; p99: number }>>;
  throughputGbps: Partial<Record<Mode, { mean: number; samples: number[] }>>;
  knpCpuSecondsPer1000Conns?: number;
  knpPeakRssMB?: number;
  /** flatnet: API write -> committed to the kernel, ms (kube-network-policies decides at the next packet: no commit) */
  flipMs: { flatnet: { deny: number[]; allow: number[] } };
}

/** Can the node netns take an nftables `queue` rule (CONFIG_NFT_QUEUE), which kube-network-policies' rules use? */
function nftQueueSupported(fx: PolicyFixture): string | undefined {
  const t = `${fx.prefix}q`;
  try {
    execFileSync('ip', ['netns', 'exec', fx.node.name, 'nft', `add table inet ${t}; add chain inet ${t} c; add rule inet ${t} c queue num 100 bypass`], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    const err = String((e as { stderr?: Buffer }).stderr ?? e).split('\n')[0];
    return `this kernel takes no nftables queue rule (${err}; CONFIG_NFT_QUEUE is not set in /proc/config.gz), and kube-network-policies sends packets to user space with one`;
  } finally {
    spawnSync('ip', ['netns', 'exec', fx.node.name, 'nft', `delete table inet ${t}`], { stdio: 'ignore' });
  }
}

function stat(pid: number): { cpu: number; hwmMB: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpu: (Number(f[11]) + Number(f[12])) / 100, hwmMB: Math.round(Number(hwm?.[1] ?? 0) / 1024) };
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** polls without a timer step: the controller runs in this process, on this event loop */
async function until(pred: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setImmediate(r));
  }
}

async function stopChild(p: ChildProcess, graceMs = 8000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

export async function knpSection(o: KnpInput): Promise<KnpResult> {
  const knpSkipped = nftQueueSupported(o.fx);
  if (knpSkipped) o.log(`kube-network-policies cannot run: ${knpSkipped}; measuring flatnet alone`);
  const knpBin = knpSkipped ? '' : execFileSync('bash', [join(HERE, 'build-knp.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const version = /knp-(v[\d.]+)/.exec(knpBin)?.[1] ?? 'v0.8.0';
  const name = `kp${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const procs: ChildProcess[] = [];
  const nodeNs = o.fx.node;
  let api: KubeClient | undefined;
  try {
    o.log(`local cluster ${name} (apiserver only) for the API objects`);
    const s = await up({ name, nodes: 1, proxyMode: 'none', noRuntime: true, noDns: true, log: (m) => o.log(`  [cluster] ${m}`) });
    const nodeName = s.nodes[0]!.name;
    const admin = loadKubeConfigFile(s.adminKubeconfig!);
    api = new KubeClient(admin, { maxSockets: 16 });
    const k = api;
    for (let i = 0; i < o.namespaces; i++) await k.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', ...nsObj(`ns${i}`, { idx: String(i) }) });
    const pod = (podName: string, ip: string, labels: Record<string, string>): Record<string, unknown> => {
      const p = podObj({ ns: 'ns0', name: podName, ip, labels, node: nodeName, ports: podName === 'a' ? [{ name: 'http', containerPort: 8080 }] : [] });
      const spec = p['spec'] as { containers: Record<string, unknown>[] };
      spec.containers[0]!['image'] = 'registry.k8s.io/pause:3.10';
      return { apiVersion: 'v1', kind: 'Pod', ...p };
    };
    const pods = [pod('a', IP.a, { app: 'app0', role: 'server' }), pod('c', IP.c, { role: 'bench-client' })];
    for (const p of pods) {
      const m = p['metadata'] as { name: string };
      await k.create('/api/v1/namespaces/ns0/pods', { ...p, status: undefined });
      await k.patch(`/api/v1/namespaces/ns0/pods/${m.name}/status`, { status: p['status'] });
    }
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < o.policies.length) {
          const p = o.policies[next++]!;
          await k.create(`/apis/networking.k8s.io/v1/namespaces/${(p['metadata'] as { namespace: string }).namespace}/networkpolicies`, p);
        }
      }),
    );
    o.log(`  ${o.policies.length} policies, pods a and c on ${nodeName}`);

    // the apiserver as a pod on the host network sees it: 127.0.0.1:16443 in the node netns, relayed to the real one
    const url = new URL(s.apiserverURL!);
    const sock = join(dir, 'api.sock');
    const relay = (argv: string[]): void => {
      const p = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
      procs.push(p);
    };
    relay(['socat', `UNIX-LISTEN:${sock},fork`, `TCP:${url.hostname}:${url.port}`]);
    await waitUntil('relay socket', () => {
      try {
        readFileSync(sock);
        return false;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code !== 'ENOENT';
      }
    }, 10_000);
    relay(['ip', 'netns', 'exec', nodeNs.name, 'socat', 'TCP-LISTEN:16443,bind=127.0.0.1,reuseaddr,fork', `UNIX-CONNECT:${sock}`]);
    const daemonCfg = loadKubeConfigFile(s.daemonKubeconfig!);
    writeFileSync(join(dir, 'token'), daemonCfg.token ?? readFileSync(daemonCfg.tokenFile!, 'utf8'));
    writeFileSync(join(dir, 'ca.crt'), daemonCfg.ca!);

    // kept after the run (outside the scratch dir) for a look when it fails
    const knpLog = join(tmpdir(), `${name}-knp.log`);
    const startKnp = (): ChildProcess => {
      const sa = '/run/secrets/kubernetes.io/serviceaccount';
      const script = `mount -t tmpfs tmpfs /run && mkdir -p ${sa} && cp ${join(dir, 'token')} ${join(dir, 'ca.crt')} ${sa}/ && exec ${knpBin} --hostname-override=${nodeName} --disable-nri --metrics-bind-address=127.0.0.1:19080 -v=0`;
      // nsenter opens the netns path before /run is covered (in this mount namespace only)
      const p = spawn('unshare', ['-m', '--propagation', 'private', '--', 'nsenter', `--net=/run/netns/${nodeNs.name}`, '--', 'sh', '-c', script], {
        stdio: ['ignore', 'ignore', openSync(knpLog, 'a')],
        env: { ...process.env, KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '16443' },
      });
      procs.push(p);
      return p;
    };
    const enforcing = (): boolean => {
      try {
        const denied = o.fx.probe('c', [`tcp:${IP.a}:8080`], 300)[0]!.startsWith('ERR');
        return denied && o.connlat(1).length === 1;
      } catch {
        return false;
      }
    };
    const nft = (text: string): void => {
      execFileSync('ip', ['netns', 'exec', nodeNs.name, 'nft', '-f', '-'], { input: text });
    };
    const tables = (): string => nodeNs.exec(['nft', 'list', 'tables']);

    const lat: Record<Mode, number[]> = { none: [], flatnet: [], knp: [] };
    const thr: Record<Mode, number[]> = { none: [], flatnet: [], knp: [] };
    let knpCpu = 0;
    let knpConns = 0;
    let knpHwm = 0;
    const flips = { flatnet: { deny: [] as number[], allow: [] as number[] } };

    // API write -> committed to the kernel, through the apiserver and the controller's watch: pod c relabelled out of
    // the allowed peers (deny) and back (allow), each checked with a connection afterwards
    const flipRounds = async (ctl: PolicyController): Promise<void> => {
      for (let i = 0; i < o.flips; i++) {
        for (const [kind, role] of [['deny', 'other'], ['allow', 'bench-client']] as const) {
          const before = ctl.changesApplied;
          const t0 = performance.now();
          await k.patch('/api/v1/namespaces/ns0/pods/c', { metadata: { labels: { role } } });
          await until(() => ctl.changesApplied > before && ctl.changesApplied === ctl.changesSeen, 60_000);
          flips.flatnet[kind].push(r1(performance.now() - t0));
          // a restricting change goes on with its conntrack re-check after the commit: let it end before the check
          // below blocks this event loop, or the next change would wait for it
          await until(() => ctl.settled, 60_000);
          // connlat's server resets every connection: allowed = reset (or data), denied = no answer
          const denied = o.fx.probe('c', [`tcp:${IP.a}:7000`], 500)[0] === 'ERR:TIMEOUT';
          if (denied !== (kind === 'deny')) throw new Error(`after the ${kind} relabel c -> a:7000 was ${denied ? 'denied' : 'allowed'}`);
        }
      }
    };

    const modes: Mode[] = knpSkipped ? ['none', 'flatnet'] : ['none', 'flatnet', 'knp'];
    // every mode takes every place in the order once per len(modes) rounds
    const order = modes.map((_, i) => [...modes.slice(i), ...modes.slice(0, i)]);
    const perRound = Math.ceil(o.conns / o.rounds);
    for (let r = 0; r < o.rounds; r++) {
      for (const mode of order[r % order.length]!) {
        if (mode === 'none') {
          nft(o.emptyProgram);
          lat.none.push(...o.connlat(perRound));
          thr.none.push(o.iperf());
          nft(`delete table inet ${o.table}\n`);
        } else if (mode === 'flatnet') {
          const ctl = new PolicyController({ nodeName, runner: new ExecRunner(), log: silent, source: new KubePolicySource(admin), table: o.table, netns: nodeNs.path });
          await ctl.start();
          try {
            await waitUntil('flatnet settled and enforcing', () => ctl.settled && enforcing(), 60_000);
            lat.flatnet.push(...o.connlat(perRound));
            thr.flatnet.push(o.iperf());
            if (r === 0) await flipRounds(ctl);
          } finally {
            await ctl.stop();
            await PolicyController.cleanup(new ExecRunner(), o.table, nodeNs.path);
          }
        } else {
          const p = startKnp();
          try {
            await waitUntil(
              'kube-network-policies enforcing',
              () => {
                if (p.exitCode !== null) throw new Error(`kube-network-policies exited (${p.exitCode}); log ${knpLog}`);
                return enforcing();
              },
              90_000,
            );
            const before = stat(p.pid!).cpu;
            lat.knp.push(...o.connlat(perRound));
            knpCpu += stat(p.pid!).cpu - before;
            knpConns += perRound;
            thr.knp.push(o.iperf());
            knpHwm = Math.max(knpHwm, stat(p.pid!).hwmMB);
          } finally {
            await stopChild(p);
            // its table goes with it; if not (killed), remove it so the next mode measures alone
            if (tables().includes('kube-network-policies')) nodeNs.exec(['nft', 'delete', 'table', 'inet', 'kube-network-policies']);
          }
        }
        o.log(`  round ${r + 1} ${mode}: new connection p50 ${r1(pct(lat[mode], 50))} us, ${r1(thr[mode].at(-1)!)} Gbit/s`);
      }
    }
    const summary = (xs: number[]): { p50: number; p90: number; p99: number } => ({ p50: r1(pct(xs, 50)), p90: r1(pct(xs, 90)), p99: r1(pct(xs, 99)) });
    const tp = (xs: number[]): { mean: number; samples: number[] } => ({ mean: r1(xs.reduce((a, b) => a + b, 0) / xs.length), samples: xs.map(r1) });
    return {
      version,
      ...(knpSkipped ? { knpSkipped } : {}),
      rounds: o.rounds,
      connectionsPerMode: perRound * o.rounds,
      policies: o.policies.length,
      newConnectionUs: Object.fromEntries(modes.map((m) => [m, summary(lat[m])])),
      throughputGbps: Object.fromEntries(modes.map((m) => [m, tp(thr[m])])),
      ...(knpSkipped ? {} : { knpCpuSecondsPer1000Conns: Math.round((knpCpu / Math.max(1, knpConns)) * 1000 * 100) / 100, knpPeakRssMB: knpHwm }),
      flipMs: flips,
    };
  } finally {
    api?.close();
    for (const p of procs.reverse()) await stopChild(p, 3000);
    await down(name, new ExecRunner(), (m) => o.log(`  [cluster] ${m}`)).catch((e: unknown) => o.log(`cluster ${name} down failed: ${String(e)}`));
    rmSync(dir, { recursive: true, force: true });
  }
}
