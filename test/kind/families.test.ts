// The kind tier's IPv6-only and dual-stack clusters (deploy/kind/kind-config-ipv6.yaml, kind-config-dual.yaml, each
// under a per-run name): kind:up brings them up with flatnet's matching overlay, and a smaller matrix than the IPv4
// tier's runs in every family the cluster has: pod addresses from the node's podCIDRs, pod to pod across nodes without
// NAT, a ClusterIP of that family, and the Service name resolving to it. Then kind:down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cidrContainsText, familyOf } from '../../lib/net/ip.ts';
import { waitFor } from '../helpers/wait.ts';
import { KindCluster, type NodeView, type PodView } from './cluster.ts';

const NS = 'kind-families';

for (const variant of [
  { config: 'deploy/kind/kind-config-ipv6.yaml', suffix: 'v6', families: [6] as const },
  { config: 'deploy/kind/kind-config-dual.yaml', suffix: 'dual', families: [4, 6] as const },
]) {
  describe(`kind: ${variant.config}`, () => {
    const cluster = new KindCluster(variant.config, variant.suffix);
    let nodes: NodeView[] = [];
    let pods: PodView[] = [];

    beforeAll(() => {
      cluster.up();
      nodes = cluster.nodes();
      pods = cluster.netexecPods(NS);
      cluster.apply(`apiVersion: v1
kind: Service
metadata: { name: netexec, namespace: ${NS} }
spec:
  ipFamilyPolicy: ${variant.families.length === 2 ? 'RequireDualStack' : 'SingleStack'}
  selector: { app: netexec }
  ports: [{ port: 80, targetPort: 8080 }]
`);
    }, 1_200_000);

    afterAll(() => cluster.down(), 600_000);

    it('every node is Ready; each pod has one address per family, from its node podCIDRs', () => {
      expect(nodes).toHaveLength(3);
      const ready = cluster.k('get', 'nodes', '-o', 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}').trim().split('\n');
      expect(ready).toEqual(['True', 'True', 'True']);
      expect(pods).toHaveLength(3);
      for (const p of pods) {
        expect(p.ips.map(familyOf), p.name).toEqual([...variant.families]);
        const node = nodes.find((n) => n.name === p.node)!;
        for (const ip of p.ips) expect(node.podCIDRs.some((c) => cidrContainsText(c, ip)), `${ip} in ${node.podCIDRs.join(',')}`).toBe(true);
      }
    });

    for (const family of variant.families) {
      it(`IPv${family}: pods reach pods on every node and see the client's own address`, () => {
        for (const a of pods) {
          const src = a.ips.find((ip) => familyOf(ip) === family)!;
          for (const b of pods) {
            const dst = b.ips.find((ip) => familyOf(ip) === family)!;
            const url = family === 6 ? `http://[${dst}]:8080/clientip` : `http://${dst}:8080/clientip`;
            const seen = cluster.fromPod(NS, a.name, url);
            expect(seen.slice(0, seen.lastIndexOf(':')).replace(/^\[|\]$/g, ''), `${a.name} -> ${b.name}`).toBe(src);
          }
        }
      });

      it(`IPv${family}: the Service's ClusterIP of that family reaches the backends, and its name resolves to it`, async () => {
        const ips = cluster.k('-n', NS, 'get', 'svc', 'netexec', '-o', 'jsonpath={.spec.clusterIPs[*]}').trim().split(' ');
        const ip = ips.find((x) => familyOf(x) === family)!;
        expect(ip).toBeDefined();
        const url = family === 6 ? `http://[${ip}]/hostname` : `http://${ip}/hostname`;
        for (const a of pods) {
          const seen = new Set<string>();
          await waitFor(`${a.name} reaching every backend through ${ip}`, () => {
            seen.add(cluster.fromPod(NS, a.name, url));
            return seen.size === 3;
          }, 60_000, 50);
          const dns = cluster.k('-n', NS, 'exec', a.name, '--', 'dig', '+short', '+time=3', '+tries=2', family === 6 ? 'AAAA' : 'A', `netexec.${NS}.svc.cluster.local`);
          expect(dns.trim(), a.name).toBe(ip);
        }
      });
    }
  });
}
