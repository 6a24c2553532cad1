// Parsing and validation of the CNI_* environment and of CNI_ARGS. Pure.
import { CniError, ErrorCode, type CniCommand, type CniEnv } from './types.ts';

export const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

/** Environment variables each verb requires (CNI spec 1.1.0, section "Parameters"). */
export const REQUIRED_ENV: Readonly<Record<CniCommand, readonly string[]>> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  VERSION: [],
  STATUS: [],
  GC: ['CNI_PATH'],
};

const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** The interface name rules of the reference (utils.ValidateInterfaceName). */
export function interfaceNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'interface name is empty';
  if (name.length > 15) return 'interface name is too long (max 15 characters)';
  if (name === '.' || name === '..') return 'interface name is . or ..';
  if (/[/:\s]/.test(name)) return 'interface name contains / or : or whitespace';
  return undefined;
}

/**
 * Parses CNI_ARGS ("K=V;K=V"). Empty input gives {}. A pair without '=' or with an empty key is code 4.
 */
export function parseCniArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS: invalid pair "${pair}"`, 'CNI_ARGS');
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** True when CNI_ARGS carries IgnoreUnknown=1|true (case-insensitive value). */
export function ignoresUnknown(args: Record<string, string>): boolean {
  const v = (args.IgnoreUnknown ?? '').toLowerCase();
  return v === '1' || v === 'true';
}

/**
 * Rejects CNI_ARGS keys a plugin does not know unless IgnoreUnknown is set (libcni's LoadArgs semantics).
 * IgnoreUnknown itself is always known.
 */
export function checkKnownArgs(args: Record<string, string>, known: readonly string[]): void {
  if (ignoresUnknown(args)) return;
  const unknown = Object.keys(args).filter((k) => k !== 'IgnoreUnknown' && !known.includes(k));
  if (unknown.length > 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS: unknown args ${JSON.stringify(unknown)}`, 'CNI_ARGS');
  }
}

/**
 * Reads and validates the environment of one invocation. Missing or invalid variables are code 4 and the
 * message names the variable.
 */
export function parseEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const raw = env.CNI_COMMAND;
  if (!raw) throw new CniError(ErrorCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing', 'CNI_COMMAND');
  if (!(COMMANDS as readonly string[]).includes(raw)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${raw}`, 'CNI_COMMAND');
  }
  const command = raw as CniCommand;
  const missing = REQUIRED_ENV[command].filter((k) => !env[k]);
  if (missing.length > 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, `required env variables [${missing.join(' ')}] missing`, missing.join(' '));
  }
  const containerId = env.CNI_CONTAINERID ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (command === 'ADD' || command === 'DEL' || command === 'CHECK') {
    if (!CONTAINER_ID_RE.test(containerId)) {
      throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_CONTAINERID: invalid characters in containerID', containerId);
    }
    const p = interfaceNameProblem(ifname);
    if (p) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_IFNAME: ${p}`, ifname);
  }
  return {
    command,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifname,
    args: parseCniArgs(env.CNI_ARGS),
    path: (env.CNI_PATH ?? '').split(':').filter((p) => p !== ''),
  };
}
