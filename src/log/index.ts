import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/**
 * Field paths that must never reach a log line. pino replaces them with `[redacted]`; callers still
 * must not put secrets in messages, because redaction covers fields only.
 */
const REDACTED_PATHS = [
  'token',
  '*.token',
  'joinToken',
  '*.joinToken',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers["x-sealmesh-token"]',
  'privateKey',
  '*.privateKey',
  'key',
  '*.key',
];

export interface LogOptions {
  level?: string;
  /** Component name added to every line, such as `server` or `proxy`. */
  component: string;
  /** Destination file descriptor or path; standard error when absent. */
  destination?: number | string;
}

/** Creates the JSON logger of one program. */
export function createLogger(options: LogOptions): Logger {
  const pinoOptions: LoggerOptions = {
    level: options.level ?? process.env.SEALMESH_LOG_LEVEL ?? 'info',
    base: { component: options.component, pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const destination = pino.destination({ dest: options.destination ?? 2, sync: false });
  return pino(pinoOptions, destination);
}

/** Creates a logger that discards everything, for library use and tests that do not inspect logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Logs repeated rejections at most `perSecond` times a second per key, and reports how many lines
 * it suppressed in the next line it writes for that key. Metrics still count every rejection.
 */
export class RejectionLog {
  readonly #log: Logger;
  readonly #perSecond: number;
  readonly #windows = new Map<string, { start: number; written: number; suppressed: number }>();

  constructor(log: Logger, perSecond = 10) {
    this.#log = log;
    this.#perSecond = perSecond;
  }

  warn(key: string, fields: Record<string, unknown>, message: string): void {
    this.#write('warn', key, fields, message);
  }

  info(key: string, fields: Record<string, unknown>, message: string): void {
    this.#write('info', key, fields, message);
  }

  #write(level: 'info' | 'warn', key: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    let window = this.#windows.get(key);
    if (window === undefined || now - window.start >= 1000) {
      const suppressed = window?.suppressed ?? 0;
      window = { start: now, written: 0, suppressed: 0 };
      this.#windows.set(key, window);
      if (suppressed > 0) fields = { ...fields, suppressed };
    }
    if (window.written >= this.#perSecond) {
      window.suppressed += 1;
      return;
    }
    window.written += 1;
    this.#log[level](fields, message);
  }
}
