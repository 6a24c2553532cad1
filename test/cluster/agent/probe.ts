// Readiness checks the agent runs from the node's netns against the pod IP.
import http from 'node:http';
import net from 'node:net';
import type { ProbeSpec } from './spec.ts';

/** true = success. HTTP: any status in [200, 400) like the kubelet; TCP: the connection opens. */
export function runProbe(p: ProbeSpec, timeoutMs: number, processRunning: boolean): Promise<boolean> {
  if (!processRunning) return Promise.resolve(false);
  if (p.kind === 'process') return Promise.resolve(true);
  if (p.kind === 'tcp') {
    return new Promise((resolve) => {
      const s = net.connect({ host: p.host, port: p.port, timeout: timeoutMs });
      const done = (ok: boolean): void => {
        s.destroy();
        resolve(ok);
      };
      s.on('connect', () => done(true));
      s.on('timeout', () => done(false));
      s.on('error', () => done(false));
    });
  }
  if (p.scheme.toUpperCase() !== 'HTTP') return Promise.resolve(false);
  return new Promise((resolve) => {
    const req = http.get(
      { host: p.host, port: p.port, path: p.path, headers: { 'user-agent': 'kube-probe/flatnet', ...p.headers }, timeout: timeoutMs, agent: false },
      (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        resolve(code >= 200 && code < 400);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}
