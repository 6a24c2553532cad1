// The node subnet file: written by the overlay controller, read by the vxlan CNI plugin (flannel's subnet.env).
//
//   FLATNET_NETWORK=10.244.0.0/16,fd00:10:244::/56   cluster CIDR(s)
//   FLATNET_SUBNET=10.244.1.0/24,fd00:10:244:1::/64  this node's podCIDR(s)
//   FLATNET_MTU=1450                                  overlay MTU for pod interfaces
//   FLATNET_IPMASQ=true                               the controller masquerades egress (the plugin must not)
import { canonicalNetwork } from '../net/ip.ts';

export const DEFAULT_SUBNET_FILE = '/run/flatnet/subnet.env';

export interface SubnetEnv {
  networks: string[];
  subnets: string[];
  mtu: number;
  ipMasq: boolean;
}

export function renderSubnetEnv(s: SubnetEnv): string {
  return (
    [
      `FLATNET_NETWORK=${s.networks.join(',')}`,
      `FLATNET_SUBNET=${s.subnets.join(',')}`,
      `FLATNET_MTU=${s.mtu}`,
      `FLATNET_IPMASQ=${s.ipMasq}`,
    ].join('\n') + '\n'
  );
}

/** Parses and validates the file's text; throws Error with a clear message on anything malformed. */
export function parseSubnetEnv(text: string): SubnetEnv {
  const kv = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`subnet file: malformed line ${JSON.stringify(line)}`);
    kv.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  const list = (key: string, required: boolean): string[] => {
    const v = kv.get(key);
    if (v === undefined || v === '') {
      if (required) throw new Error(`subnet file: ${key} missing`);
      return [];
    }
    return v.split(',').map(canonicalNetwork);
  };
  const subnets = list('FLATNET_SUBNET', true);
  const networks = list('FLATNET_NETWORK', false);
  const mtuText = kv.get('FLATNET_MTU');
  const mtu = Number(mtuText);
  if (!mtuText || !Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
    throw new Error(`subnet file: FLATNET_MTU ${JSON.stringify(mtuText ?? '')} is not a valid MTU`);
  }
  return { subnets, networks, mtu, ipMasq: kv.get('FLATNET_IPMASQ') === 'true' };
}
