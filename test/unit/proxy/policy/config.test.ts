import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../../proxy/config/config.ts';

const root = join(import.meta.dirname, '../../../..');
const file = (extra: string) => (p: string): string => {
  expect(p).toBe('/cfg.yaml');
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${extra}`;
};

describe('networkPolicy switch', () => {
  it('on by default; the file section and the flag turn it off (the flag wins)', () => {
    expect(loadConfig([]).config.networkPolicy).toBe(true);
    expect(loadConfig(['--config', '/cfg.yaml'], file('networkPolicy:\n  enabled: false\n')).config.networkPolicy).toBe(false);
    expect(loadConfig(['--config', '/cfg.yaml', '--network-policy=true'], file('networkPolicy:\n  enabled: false\n')).config.networkPolicy).toBe(true);
    expect(loadConfig(['--network-policy=false']).config.networkPolicy).toBe(false);
    expect(loadConfig(['--network-policy']).config.networkPolicy).toBe(true);
    expect(loadConfig(['--config', '/cfg.yaml'], file('networkPolicy:\n  table: t1\n')).config.networkPolicyConfig).toEqual({ table: 't1' });
  });

  it('bad values are config errors', () => {
    expect(() => loadConfig(['--network-policy=maybe'])).toThrow(ConfigError);
    expect(() => loadConfig(['--config', '/cfg.yaml'], file('networkPolicy:\n  enabled: "yes"\n'))).toThrow(ConfigError);
  });

  it('the shipped ConfigMap (and the rendered manifest) turn it on, and RBAC lets the daemon watch what it needs', () => {
    for (const rel of ['deploy/manifests/config.yaml', 'deploy/flatnet.yaml']) {
      const docs = parseAllDocuments(readFileSync(join(root, rel), 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
      const cm = docs.find((d) => d?.kind === 'ConfigMap') as { data: Record<string, string> };
      const cfg = loadConfig(['--config', '/cfg.yaml'], () => cm.data['config.yaml']!).config;
      expect(cfg.networkPolicy, rel).toBe(true);
    }
    for (const rel of ['deploy/manifests/rbac.yaml', 'deploy/flatnet.yaml']) {
      const docs = parseAllDocuments(readFileSync(join(root, rel), 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
      const role = docs.find((d) => d?.kind === 'ClusterRole') as { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] };
      const can = (group: string, res: string, verb: string): boolean =>
        role.rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(res) && r.verbs.includes(verb));
      for (const [g, r] of [['', 'pods'], ['', 'namespaces'], ['networking.k8s.io', 'networkpolicies']] as const)
        for (const v of ['list', 'watch']) expect(can(g, r, v), `${rel}: ${v} ${r}`).toBe(true);
    }
  });
});
