// Direct HTTPS calls to the apiserver with a client certificate, for the few calls kubectl cannot make with a node's
// narrow rights (kubectl patch --subresource=status first GETs nodes/status, which the Node authorizer denies).
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export interface ApiIdentity {
  server: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export function apiRequest(id: ApiIdentity, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
  const url = new URL(path, id.server);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca: readFileSync(id.caFile),
        cert: readFileSync(id.certFile),
        key: readFileSync(id.keyFile),
        headers: { accept: 'application/json', ...(payload ? { 'content-type': contentType } : {}) },
        timeout: 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 500) >= 300) reject(new Error(`${method} ${path}: HTTP ${res.statusCode}: ${text.slice(0, 500)}`));
          else resolve(text ? (JSON.parse(text) as unknown) : undefined);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', reject);
    req.end(payload);
  });
}
