// The reference host-local's on-disk store, byte for byte:
//   <dataDir>/<network>/<ip>                    "<containerID>\r\n<ifname>"   (one file per allocated address)
//   <dataDir>/<network>/last_reserved_ip.<N>    "<ip>"                        (round-robin cursor of range set N)
//   <dataDir>/<network>/lock                    empty; flock'ed for the whole operation
// Writes are atomic: an address file is written to a temp file and hard-linked into place (link fails when the
// address is taken, which makes the reservation exclusive); the cursor is written to a temp file and renamed.
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from '../../lib/cni/types.ts';
import { formatIP, parseIP, type IP } from '../../lib/net/ip.ts';
import type { Store } from './allocator.ts';
import { lockFile, type FileLock } from '../../lib/lock/flock.ts';

export const LINE_BREAK = '\r\n';
export const LAST_IP_PREFIX = 'last_reserved_ip.';
export const LOCK_FILE = 'lock';
const TMP_PREFIX = '.flatnet-tmp-';

function ioError(e: unknown, what: string): CniError {
  if (e instanceof CniError) return e;
  return new CniError(ErrorCode.IoFailure, `${what}: ${(e as Error).message}`, '', { cause: e });
}

let tmpCounter = 0;
function tmpName(dir: string): string {
  return join(dir, `${TMP_PREFIX}${process.pid}-${Date.now()}-${tmpCounter++}`);
}

function writeFileAtomicNew(dir: string, name: string, data: string): boolean {
  const tmp = tmpName(dir);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, join(dir, name));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(tmp);
  }
}

function writeFileAtomic(dir: string, name: string, data: string): void {
  const tmp = tmpName(dir);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, join(dir, name));
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** One allocation file as read from disk. */
export interface Allocation {
  ip: IP;
  /** file name */
  file: string;
  containerID: string;
  /** '' for files written by old versions that stored only the container ID */
  ifname: string;
}

export class DiskStore implements Store {
  readonly dir: string;
  private lock: FileLock | undefined;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Opens (creating when `create`) <dataDir>/<network> and takes its lock. Returns undefined when the directory
   * does not exist and `create` is false (nothing to do for DEL/GC/CHECK).
   */
  static open(dataDir: string, network: string, create: boolean): DiskStore | undefined {
    const dir = join(dataDir, network);
    try {
      if (create) mkdirSync(dir, { recursive: true, mode: 0o755 });
      else {
        try {
          readdirSync(dir);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw e;
        }
      }
      const s = new DiskStore(dir);
      s.lock = lockFile(join(dir, LOCK_FILE));
      return s;
    } catch (e) {
      throw ioError(e, `cannot open host-local store ${dir}`);
    }
  }

  /** how the store's lock was taken ('native' flock(2) addon or util-linux 'flock1') */
  get lockMechanism(): string | undefined {
    return this.lock?.mechanism;
  }

  close(): void {
    this.lock?.unlock();
    this.lock = undefined;
  }

  reserve(id: string, ifname: string, ip: IP, rangeSetIndex: number): boolean {
    try {
      const name = formatIP(ip);
      if (!writeFileAtomicNew(this.dir, name, id + LINE_BREAK + ifname)) return false;
      writeFileAtomic(this.dir, LAST_IP_PREFIX + rangeSetIndex, name);
      return true;
    } catch (e) {
      throw ioError(e, `cannot reserve ${formatIP(ip)} in ${this.dir}`);
    }
  }

  lastReservedIP(rangeSetIndex: number): IP | undefined {
    try {
      return parseIP(readFileSync(join(this.dir, LAST_IP_PREFIX + rangeSetIndex), 'utf8').trim());
    } catch {
      return undefined;
    }
  }

  release(ip: IP): void {
    try {
      rmSync(join(this.dir, formatIP(ip)), { force: true });
    } catch (e) {
      throw ioError(e, `cannot release ${formatIP(ip)}`);
    }
  }

  /** Every allocation file in the store. */
  list(): Allocation[] {
    const out: Allocation[] = [];
    for (const file of readdirSync(this.dir)) {
      if (file === LOCK_FILE || file.startsWith(LAST_IP_PREFIX) || file.startsWith('.')) continue;
      const ip = parseIP(file);
      if (!ip) continue;
      let data: string;
      try {
        data = readFileSync(join(this.dir, file), 'utf8');
      } catch {
        continue;
      }
      const text = data.trim();
      const nl = text.indexOf(LINE_BREAK);
      const containerID = (nl >= 0 ? text.slice(0, nl) : text).trim();
      const ifname = nl >= 0 ? text.slice(nl + LINE_BREAK.length).trim() : '';
      out.push({ ip, file, containerID, ifname });
    }
    return out;
  }

  private matching(id: string, ifname: string): Allocation[] {
    const all = this.list();
    const exact = all.filter((a) => a.containerID === id && a.ifname === ifname);
    // files from old versions hold only the container ID
    return exact.length > 0 ? exact : all.filter((a) => a.containerID === id && a.ifname === '');
  }

  getByID(id: string, ifname: string): IP[] {
    try {
      return this.matching(id, ifname).map((a) => a.ip);
    } catch (e) {
      throw ioError(e, `cannot read ${this.dir}`);
    }
  }

  releaseByID(id: string, ifname: string): IP[] {
    try {
      const found = this.matching(id, ifname);
      for (const a of found) rmSync(join(this.dir, a.file), { force: true });
      return found.map((a) => a.ip);
    } catch (e) {
      throw ioError(e, `cannot release addresses of ${id}/${ifname}`);
    }
  }
}
