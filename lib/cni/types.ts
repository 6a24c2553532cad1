// The CNI data model as flatnet uses it internally. Results are always held in the 1.1.0 shape and
// converted to the config's cniVersion only when written (see version.ts).

import type { Logger } from '../log/logger.ts';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** The spec's well-known error codes. 100+ are plugin-specific. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  PluginLimitedConnectivity: 51,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = '', options?: { cause?: unknown }) {
    super(msg, options);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }
}

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IpConfig {
  /** CIDR notation: address/prefix */
  address: string;
  gateway?: string;
  /** index into interfaces */
  interface?: number;
}

export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface Dns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the 1.x shape (no per-ip "version"). */
export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: IpConfig[];
  routes?: Route[];
  dns?: Dns;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: string;
  hostIP?: string;
}

export interface IpamConf {
  type: string;
  [key: string]: unknown;
}

/** A single plugin's network configuration as the runtime passes it on stdin. Unknown keys pass through. */
export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  ipam?: IpamConf;
  dns?: Dns;
  capabilities?: Record<string, boolean>;
  runtimeConfig?: Record<string, unknown>;
  args?: { cni?: { ips?: string[]; mac?: string; [k: string]: unknown }; [k: string]: unknown };
  prevResult?: CniResult;
  [key: string]: unknown;
}

/** One attachment named in GC's cni.dev/valid-attachments. */
export interface Attachment {
  containerID: string;
  ifname: string;
}

/** The parsed environment of one invocation. */
export interface CniEnv {
  command: CniCommand;
  containerId: string;
  /** '' when not given (allowed for DEL) */
  netns: string;
  ifname: string;
  /** CNI_ARGS as key/value pairs */
  args: Record<string, string>;
  /** CNI_PATH split on ':' */
  path: string[];
}

/**
 * Executes another plugin (IPAM or a delegated main plugin) the way the spec says: the binary named `type` is looked
 * up in CNI_PATH and run with the same environment (CNI_COMMAND replaced) and `conf` on stdin. flatnet's own
 * host-local may be run in-process. Returns the parsed result (converted to the 1.x shape) for ADD, undefined otherwise.
 * Throws CniError carrying the delegate's code and message when it fails.
 */
export interface Delegator {
  exec(type: string, command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC', conf: NetConf): Promise<CniResult | undefined>;
}

export interface InvocationContext {
  env: CniEnv;
  /** Parsed and validated config: supported cniVersion, `name` present, prevResult upgraded to the 1.x shape. */
  conf: NetConf;
  /** stdin exactly as received */
  stdin: string;
  log: Logger;
  delegator: Delegator;
  /** GC only: cni.dev/valid-attachments (falling back to cni.dev/attachments); [] otherwise */
  validAttachments: Attachment[];
}

/**
 * What a plugin implements. The skeleton (lib/cni/skel.ts) parses env and stdin, checks versions, dispatches,
 * converts the result to conf.cniVersion and writes it (or the error JSON) synchronously to fd 1.
 * VERSION is answered by the skeleton. STATUS/GC default to success when not implemented.
 */
export interface PluginHandlers {
  add(ctx: InvocationContext): Promise<CniResult>;
  del(ctx: InvocationContext): Promise<void>;
  check(ctx: InvocationContext): Promise<void>;
  status?(ctx: InvocationContext): Promise<void>;
  gc?(ctx: InvocationContext): Promise<void>;
}
