// A lazily loaded pino logger for short-lived plugin processes. Never writes to stdout.
//
// Loading pino costs tens of milliseconds, so nothing is imported until a record at an enabled level is logged.
// Records are queued until pino is loaded; call flush() before the process exits.
//   FLATNET_LOG_LEVEL  debug | info | warn | error | silent (default warn)
//   FLATNET_LOG_FILE   append records to this file instead of stderr
/** Minimal logger surface (pino-compatible); never writes to stdout. */
export interface Logger {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}


const LEVELS = { debug: 20, info: 30, warn: 40, error: 50, silent: Infinity } as const;
type Level = Exclude<keyof typeof LEVELS, 'silent'>;

interface PinoLike {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
  flush?(): void;
}

export interface FlushableLogger extends Logger {
  flush(): Promise<void>;
  child(bindings: Record<string, unknown>): FlushableLogger;
}

export interface LoggerOptions {
  level?: string;
  file?: string;
  /** extra fields on every record */
  bindings?: Record<string, unknown>;
}

function levelOf(s: string | undefined): number {
  if (s && s in LEVELS) return LEVELS[s as keyof typeof LEVELS];
  return LEVELS.warn;
}

class LazyPinoLogger implements FlushableLogger {
  private readonly min: number;
  private readonly opts: LoggerOptions;
  private readonly shared: { pino?: Promise<PinoLike>; queue: Array<() => void>; loaded?: PinoLike };
  private readonly bindings: Record<string, unknown>;

  constructor(opts: LoggerOptions, shared?: LazyPinoLogger['shared'], bindings?: Record<string, unknown>) {
    this.opts = opts;
    this.min = levelOf(opts.level);
    this.shared = shared ?? { queue: [] };
    this.bindings = bindings ?? opts.bindings ?? {};
  }

  private load(): Promise<PinoLike> {
    if (!this.shared.pino) {
      this.shared.pino = import('pino').then((m) => {
        const pino = m.default;
        const dest = pino.destination({ dest: this.opts.file ?? 2, sync: true, append: true, mkdir: true });
        const levelName = Object.keys(LEVELS).find((k) => LEVELS[k as keyof typeof LEVELS] === this.min) ?? 'warn';
        const p = pino({ level: levelName, base: { pid: process.pid } }, dest) as unknown as PinoLike;
        this.shared.loaded = p;
        for (const fn of this.shared.queue.splice(0)) fn();
        return p;
      });
    }
    return this.shared.pino;
  }

  private emit(level: Level, obj: unknown, msg?: string): void {
    if (LEVELS[level] < this.min) return;
    const rec = obj instanceof Error ? { err: { message: obj.message, stack: obj.stack } } : obj;
    const merged = typeof rec === 'object' && rec !== null ? { ...this.bindings, ...(rec as object) } : { ...this.bindings, value: rec };
    const write = (): void => {
      this.shared.loaded?.[level](merged, msg);
    };
    if (this.shared.loaded) write();
    else {
      this.shared.queue.push(write);
      this.load().catch(() => {
        /* a logger must never fail the plugin */
      });
    }
  }

  debug(obj: unknown, msg?: string): void {
    this.emit('debug', obj, msg);
  }
  info(obj: unknown, msg?: string): void {
    this.emit('info', obj, msg);
  }
  warn(obj: unknown, msg?: string): void {
    this.emit('warn', obj, msg);
  }
  error(obj: unknown, msg?: string): void {
    this.emit('error', obj, msg);
  }

  child(bindings: Record<string, unknown>): FlushableLogger {
    return new LazyPinoLogger(this.opts, this.shared, { ...this.bindings, ...bindings });
  }

  async flush(): Promise<void> {
    if (!this.shared.pino) return;
    try {
      const p = await this.shared.pino;
      p.flush?.();
    } catch {
      /* ignore */
    }
  }
}

/** A logger configured from the environment (FLATNET_LOG_LEVEL, FLATNET_LOG_FILE). */
export function createLogger(env: Record<string, string | undefined>, bindings?: Record<string, unknown>): FlushableLogger {
  return new LazyPinoLogger({ level: env.FLATNET_LOG_LEVEL, file: env.FLATNET_LOG_FILE || undefined, bindings });
}

/** A logger that drops everything (unit tests). */
export const silentLogger: FlushableLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
  async flush() {},
};
