// What a CNI plugin may print, per the spec's schemas (SPEC.md "Success", "Error", "Version" and the 0.3.x/0.4.0
// result shape): a checker that returns the list of violations, empty when the output is valid. Strict on purpose:
// unknown top-level keys, wrong types and dangling interface indexes are violations.
import { parseCidr, parseIP } from '../../lib/net/ip.ts';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isUint = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const isStrList = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** The spec's well-known error codes; 100 and above belong to the plugin. */
export const SPEC_ERROR_CODES: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 11, 50, 51];

function keysOnly(o: Obj, allowed: readonly string[], where: string, out: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) out.push(`${where}: unexpected key "${k}"`);
}

/** Violations of the ADD result schema for `version` (the config's cniVersion). */
export function resultViolations(r: unknown, version: string): string[] {
  const out: string[] = [];
  if (!isObj(r)) return ['result is not an object'];
  const legacy = ['0.3.0', '0.3.1', '0.4.0'].includes(version);
  keysOnly(r, ['cniVersion', 'interfaces', 'ips', 'routes', 'dns'], 'result', out);
  if (r['cniVersion'] !== version) out.push(`cniVersion ${JSON.stringify(r['cniVersion'])} is not the config's ${version}`);
  const ifs = r['interfaces'];
  let nIfs = 0;
  if (ifs !== undefined) {
    if (!Array.isArray(ifs)) out.push('interfaces is not a list');
    else {
      nIfs = ifs.length;
      ifs.forEach((i: unknown, n) => {
        const w = `interfaces[${n}]`;
        if (!isObj(i)) return void out.push(`${w} is not an object`);
        keysOnly(i, legacy ? ['name', 'mac', 'sandbox'] : ['name', 'mac', 'mtu', 'sandbox', 'socketPath', 'pciID'], w, out);
        if (typeof i['name'] !== 'string' || i['name'] === '') out.push(`${w}.name must be a non-empty string`);
        for (const k of ['mac', 'sandbox', 'socketPath', 'pciID']) if (i[k] !== undefined && typeof i[k] !== 'string') out.push(`${w}.${k} must be a string`);
        if (i['mtu'] !== undefined && !isUint(i['mtu'])) out.push(`${w}.mtu must be an unsigned integer`);
      });
    }
  }
  const ips = r['ips'];
  if (ips !== undefined) {
    if (!Array.isArray(ips)) out.push('ips is not a list');
    else
      ips.forEach((ip: unknown, n) => {
        const w = `ips[${n}]`;
        if (!isObj(ip)) return void out.push(`${w} is not an object`);
        keysOnly(ip, legacy ? ['version', 'address', 'gateway', 'interface'] : ['address', 'gateway', 'interface'], w, out);
        const c = typeof ip['address'] === 'string' ? parseCidr(ip['address']) : undefined;
        if (!c) out.push(`${w}.address ${JSON.stringify(ip['address'])} is not a CIDR`);
        if (ip['gateway'] !== undefined && (typeof ip['gateway'] !== 'string' || !parseIP(ip['gateway']))) out.push(`${w}.gateway is not an IP`);
        if (ip['interface'] !== undefined && (!isUint(ip['interface']) || (ip['interface'] as number) >= nIfs)) out.push(`${w}.interface is not an index into interfaces`);
        if (legacy) {
          if (ip['version'] !== '4' && ip['version'] !== '6') out.push(`${w}.version must be "4" or "6" in ${version}`);
          else if (c && ip['version'] !== String(c.ip.family)) out.push(`${w}.version ${String(ip['version'])} does not match the address`);
        }
      });
  }
  const routes = r['routes'];
  if (routes !== undefined) {
    if (!Array.isArray(routes)) out.push('routes is not a list');
    else
      routes.forEach((rt: unknown, n) => {
        const w = `routes[${n}]`;
        if (!isObj(rt)) return void out.push(`${w} is not an object`);
        keysOnly(rt, legacy ? ['dst', 'gw'] : ['dst', 'gw', 'mtu', 'advmss', 'priority', 'table', 'scope'], w, out);
        if (typeof rt['dst'] !== 'string' || !parseCidr(rt['dst'])) out.push(`${w}.dst is not a CIDR`);
        if (rt['gw'] !== undefined && (typeof rt['gw'] !== 'string' || !parseIP(rt['gw']))) out.push(`${w}.gw is not an IP`);
        for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope']) if (rt[k] !== undefined && !isUint(rt[k])) out.push(`${w}.${k} must be an unsigned integer`);
      });
  }
  const dns = r['dns'];
  if (dns !== undefined) {
    if (!isObj(dns)) out.push('dns is not an object');
    else {
      keysOnly(dns, ['nameservers', 'domain', 'search', 'options'], 'dns', out);
      for (const k of ['nameservers', 'search', 'options']) if (dns[k] !== undefined && !isStrList(dns[k])) out.push(`dns.${k} must be a list of strings`);
      if (dns['domain'] !== undefined && typeof dns['domain'] !== 'string') out.push('dns.domain must be a string');
    }
  }
  return out;
}

/** Violations of the error schema: {cniVersion, code, msg, details?} with a spec code or 100+. */
export function errorViolations(e: unknown): string[] {
  if (!isObj(e)) return ['error is not an object'];
  const out: string[] = [];
  keysOnly(e, ['cniVersion', 'code', 'msg', 'details'], 'error', out);
  if (typeof e['cniVersion'] !== 'string') out.push('error.cniVersion must be a string');
  const code = e['code'];
  if (!isUint(code) || !(SPEC_ERROR_CODES.includes(code as number) || (code as number) >= 100)) out.push(`error.code ${JSON.stringify(code)} is neither a spec code nor 100+`);
  if (typeof e['msg'] !== 'string' || e['msg'] === '') out.push('error.msg must be a non-empty string');
  if (e['details'] !== undefined && typeof e['details'] !== 'string') out.push('error.details must be a string');
  return out;
}

/** Violations of the VERSION reply. */
export function versionViolations(v: unknown): string[] {
  if (!isObj(v)) return ['version reply is not an object'];
  const out: string[] = [];
  keysOnly(v, ['cniVersion', 'supportedVersions'], 'version', out);
  if (typeof v['cniVersion'] !== 'string') out.push('cniVersion must be a string');
  if (!isStrList(v['supportedVersions']) || (v['supportedVersions'] as string[]).length === 0) out.push('supportedVersions must be a non-empty list of strings');
  return out;
}
