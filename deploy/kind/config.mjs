#!/usr/bin/env node
// node deploy/kind/config.mjs FILE [--cgroupfs] [--cgroup-v1] : prints the kind config FILE with the patches this
// machine needs appended (the user's own patches stay first and untouched):
//   --cgroupfs   the engine's cgroup driver is cgroupfs: kubelet uses it too (kind configures systemd)
//   --cgroup-v1  the host runs cgroup v1, which kubelet 1.35 refuses unless failCgroupV1 is false
// Also prints nothing but an error (exit 2) for a config flatnet cannot serve.
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';

const [file, ...flags] = process.argv.slice(2);
if (!file) {
  console.error('usage: config.mjs FILE [--cgroupfs] [--cgroup-v1]');
  process.exit(2);
}
const cfg = parse(readFileSync(file, 'utf8')) ?? {};
if (cfg.kind !== 'Cluster') {
  console.error(`${file}: not a kind Cluster config`);
  process.exit(2);
}
const kubelet = { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration' };
if (flags.includes('--cgroupfs')) kubelet.cgroupDriver = 'cgroupfs';
if (flags.includes('--cgroup-v1')) kubelet.failCgroupV1 = false;
if (Object.keys(kubelet).length > 2) {
  // kind matches patches by kind (and apiVersion when given); one patch covers init and the joins' shared config
  const { apiVersion: _apiVersion, ...patch } = kubelet;
  cfg.kubeadmConfigPatches = [...(cfg.kubeadmConfigPatches ?? []), stringify(patch)];
}
process.stdout.write(stringify(cfg));
