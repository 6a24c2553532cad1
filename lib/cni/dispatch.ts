// The verb-independent core of the skeleton: stdin -> validated NetConf -> handler call. Pure apart from the
// handlers themselves; shared by skel.ts (a real process) and delegate.ts (in-process delegation).
import { parseEnv } from './env.ts';
import { CniError, ErrorCode, SUPPORTED_VERSIONS, type Attachment, type CniEnv, type CniResult, type Delegator, type NetConf, type PluginHandlers } from './types.ts';
import type { Logger } from '../log/logger.ts';
import { isSupportedVersion, resultShapeProblem, upgradeResult, versionAtLeast } from './version.ts';

const NETWORK_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Code for failures that are not CniErrors (the reference's types.ErrInternal). */
export const INTERNAL_ERROR_CODE = 999;

export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new CniError(INTERNAL_ERROR_CODE, msg, '', { cause: e });
}

/** Best-effort cniVersion of a config text, for error replies written before it was validated. */
export function sniffVersion(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return isSupportedVersion(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function parseAttachments(v: unknown): Attachment[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: Attachment[] = [];
  for (const a of v) {
    if (typeof a !== 'object' || a === null) {
      throw new CniError(ErrorCode.InvalidConfig, 'cni.dev/valid-attachments: entries must be objects');
    }
    const { containerID, ifname } = a as Record<string, unknown>;
    if (typeof containerID !== 'string' || typeof ifname !== 'string') {
      throw new CniError(ErrorCode.InvalidConfig, 'cni.dev/valid-attachments: entries need string containerID and ifname');
    }
    out.push({ containerID, ifname });
  }
  return out;
}

export interface Prepared {
  conf: NetConf;
  validAttachments: Attachment[];
}

/**
 * Parses and validates the network config for `command`:
 * invalid JSON -> 6, missing/invalid name or type -> 7, unsupported cniVersion -> 1,
 * CHECK below 0.4.0 and STATUS/GC below 1.1.0 -> 1. prevResult is upgraded to the 1.x shape.
 */
export function parseConf(stdin: string, command: CniEnv['command']): Prepared {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(ErrorCode.DecodeFailure, `failed to decode network config: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CniError(ErrorCode.DecodeFailure, 'network config is not a JSON object');
  }
  const conf = raw as NetConf;
  if (typeof conf.name !== 'string' || conf.name === '') {
    throw new CniError(ErrorCode.InvalidConfig, 'missing network name', 'name');
  }
  if (!NETWORK_NAME_RE.test(conf.name)) {
    throw new CniError(ErrorCode.InvalidConfig, `invalid network name "${conf.name}"`, 'name');
  }
  if (typeof conf.type !== 'string' || conf.type === '') {
    throw new CniError(ErrorCode.InvalidConfig, 'missing plugin type', 'type');
  }
  const version = conf.cniVersion;
  if (!isSupportedVersion(version)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `incompatible CNI versions; config is "${String(version ?? '')}", plugin supports [${SUPPORTED_VERSIONS.join(' ')}]`,
      'cniVersion',
    );
  }
  if (command === 'CHECK' && !versionAtLeast(version, '0.4.0')) {
    throw new CniError(ErrorCode.IncompatibleVersion, `config version "${version}" does not allow CHECK`, 'cniVersion');
  }
  if ((command === 'STATUS' || command === 'GC') && !versionAtLeast(version, '1.1.0')) {
    throw new CniError(ErrorCode.IncompatibleVersion, `config version "${version}" does not allow ${command}`, 'cniVersion');
  }
  if (conf.prevResult !== undefined) {
    conf.prevResult = upgradeResult(conf.prevResult);
    const problem = resultShapeProblem(conf.prevResult);
    if (problem) throw new CniError(ErrorCode.DecodeFailure, `failed to decode prevResult: ${problem}`, 'prevResult');
  }
  let validAttachments: Attachment[] = [];
  if (command === 'GC') {
    validAttachments =
      parseAttachments(conf['cni.dev/valid-attachments']) ?? parseAttachments(conf['cni.dev/attachments']) ?? [];
  }
  return { conf, validAttachments };
}

/**
 * Runs one verb through `handlers` and returns the 1.x result for ADD, undefined otherwise.
 * VERSION is not handled here (the caller answers it).
 */
export async function callHandlers(
  handlers: PluginHandlers,
  env: CniEnv,
  stdin: string,
  log: Logger,
  delegator: Delegator,
): Promise<CniResult | undefined> {
  const { conf, validAttachments } = parseConf(stdin, env.command);
  const ctx = { env, conf, stdin, log, delegator, validAttachments };
  switch (env.command) {
    case 'ADD':
      return await handlers.add(ctx);
    case 'DEL':
      await handlers.del(ctx);
      return undefined;
    case 'CHECK':
      await handlers.check(ctx);
      return undefined;
    case 'STATUS':
      if (handlers.status) await handlers.status(ctx);
      return undefined;
    case 'GC':
      if (handlers.gc) await handlers.gc(ctx);
      return undefined;
    default:
      throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${env.command}`, 'CNI_COMMAND');
  }
}

export { parseEnv };
