import { describe, expect, it } from 'vitest';
import { checkKnownArgs, ignoresUnknown, interfaceNameProblem, parseCniArgs, parseEnv } from '../../../../lib/cni/env.ts';
import { CniError } from '../../../../lib/cni/types.ts';

describe('CNI_ARGS', () => {
  it('parses K=V;K=V as containerd sends it', () => {
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1')).toEqual({
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: 'kube-system',
      K8S_POD_NAME: 'coredns-1',
      K8S_POD_INFRA_CONTAINER_ID: 'abc',
      K8S_POD_UID: 'u-1',
    });
  });
  it('keeps = inside values and tolerates empty segments', () => {
    expect(parseCniArgs('A=b=c;;B=')).toEqual({ A: 'b=c', B: '' });
    expect(parseCniArgs(undefined)).toEqual({});
    expect(parseCniArgs('')).toEqual({});
  });
  it.each(['A', 'A=1;B', '=x'])('rejects %j with code 4', (s) => {
    expect(() => parseCniArgs(s)).toThrow(CniError);
    try {
      parseCniArgs(s);
    } catch (e) {
      expect((e as CniError).code).toBe(4);
    }
  });
  it('IgnoreUnknown semantics', () => {
    expect(ignoresUnknown({ IgnoreUnknown: 'true' })).toBe(true);
    expect(ignoresUnknown({ IgnoreUnknown: '1' })).toBe(true);
    expect(ignoresUnknown({ IgnoreUnknown: '0' })).toBe(false);
    expect(() => checkKnownArgs({ IP: '1.2.3.4', FOO: 'x' }, ['IP'])).toThrow(/FOO/);
    expect(() => checkKnownArgs({ IP: '1.2.3.4', FOO: 'x', IgnoreUnknown: '1' }, ['IP'])).not.toThrow();
    expect(() => checkKnownArgs({ IP: '1.2.3.4' }, ['IP'])).not.toThrow();
  });
});

describe('environment', () => {
  it('splits CNI_PATH and keeps an empty netns for DEL', () => {
    const e = parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0', CNI_PATH: '/a::/b' });
    expect(e).toEqual({ command: 'DEL', containerId: 'c', netns: '', ifname: 'eth0', args: {}, path: ['/a', '/b'] });
  });
  it('validates interface names like the reference', () => {
    expect(interfaceNameProblem('eth0')).toBeUndefined();
    expect(interfaceNameProblem('a23456789012345')).toBeUndefined();
    for (const bad of ['', '.', '..', 'a b', 'a:b', 'a/b', 'a234567890123456']) expect(interfaceNameProblem(bad)).toBeDefined();
  });
});
