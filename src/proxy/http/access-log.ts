import { createWriteStream, type WriteStream } from 'node:fs';
import type { Logger } from '../../log/index.ts';
import { normaliseRequestPath } from '../../policy/index.ts';
import { Http2Sink, type ProxyRequest, type ResponseSink } from './exchange.ts';

/** Settings of the HTTP access log of a proxy. */
export interface AccessLogOptions {
  /** Share of requests written, 0 to 1. A response the proxy generated itself is always written. */
  sampleRate: number;
  /** Keeps the query string in `path`; off by default because query strings often carry secrets. */
  includeQuery?: boolean;
  /** File the lines are appended to; standard output when absent. */
  path?: string;
  /** Receives each line, newline included, in place of `path` or standard output. */
  write?: (line: string) => void;
}

/** Protocol of the client side of an exchange, as the access log names it. */
export type AccessProtocol = 'HTTP/1.1' | 'HTTP/2' | 'gRPC';

export function accessProtocol(request: Pick<ProxyRequest, 'grpc'>, sink: ResponseSink): AccessProtocol {
  if (request.grpc) return 'gRPC';
  return sink instanceof Http2Sink ? 'HTTP/2' : 'HTTP/1.1';
}

/**
 * One line of the access log. Field names are snake_case, as in Envoy's JSON access logs. Only
 * these fields are written: no header value, body or query string (unless `includeQuery`).
 */
export interface AccessEntry {
  /** Time the proxy received the request, ISO 8601 in UTC. */
  timestamp: string;
  direction: 'inbound' | 'outbound';
  source: string;
  destination: string;
  /** SPIFFE ID of the verified caller; inbound only. */
  source_spiffe_id?: string;
  method: string;
  path: string;
  protocol: AccessProtocol;
  /** Status sent to the client; 0 when the stream was reset before a response. */
  status: number;
  grpc_status?: number;
  /** Request body bytes read from the client. */
  bytes_received: number;
  /** Response body bytes written to the client. */
  bytes_sent: number;
  duration_ms: number;
  /** Instance that served the last try; outbound only. */
  upstream_instance?: string;
  upstream_address?: string;
  /** Tries after the first; outbound only. */
  retries?: number;
  /** Error code of a response the proxy generated itself, or of a stream it reset. */
  response_flag?: string;
  trace_id: string;
  span_id: string;
  parent_span_id?: string;
}

/** Returns the milliseconds since `started` (from process.hrtime.bigint), to the microsecond. */
export function elapsedMs(started: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - started) / 1e3) / 1e3;
}

/** Returns an error message for a sampling rate outside 0..1, naming the value `name`. */
export function checkSampleRate(value: number, name: string): string | undefined {
  if (!Number.isFinite(value) || value < 0 || value > 1) return `${name} ${JSON.stringify(value)} is not a sampling rate; use a number from 0 to 1, such as 0.1`;
  return undefined;
}

/**
 * Writes one JSON line per HTTP request. The line has `type: "access"`, which distinguishes it
 * from the operational log when both go to one collector.
 */
export class AccessLog {
  readonly #sampleRate: number;
  readonly #includeQuery: boolean;
  readonly #write: (line: string) => void;
  #file: WriteStream | undefined;

  /** `log` receives a failure to write the file at `options.path`. */
  constructor(options: AccessLogOptions, log?: Logger) {
    const problem = checkSampleRate(options.sampleRate, 'access log sampling rate');
    if (problem !== undefined) throw new RangeError(problem);
    this.#sampleRate = options.sampleRate;
    this.#includeQuery = options.includeQuery === true;
    if (options.write !== undefined) {
      this.#write = options.write;
    } else if (options.path !== undefined) {
      const file = createWriteStream(options.path, { flags: 'a', mode: 0o640 });
      file.on('error', (error) => log?.error({ path: options.path, reason: error.message }, 'access log file cannot be written'));
      this.#file = file;
      this.#write = (line) => file.write(line);
    } else {
      this.#write = (line) => process.stdout.write(line);
    }
  }

  /** Decides whether a request is written when the proxy does not generate its response itself. */
  sample(): boolean {
    if (this.#sampleRate >= 1) return true;
    return this.#sampleRate > 0 && Math.random() < this.#sampleRate;
  }

  /** Returns the path as logged: normalised when it can be, and without its query unless configured. */
  loggedPath(target: string): string {
    const queryAt = target.indexOf('?');
    const raw = queryAt < 0 ? target : target.slice(0, queryAt);
    const normalised = normaliseRequestPath(raw);
    const path = normalised.ok ? normalised.path : raw;
    return this.#includeQuery && queryAt >= 0 ? `${path}${target.slice(queryAt)}` : path;
  }

  /** Writes `entry` when it was sampled or carries a response flag. */
  record(entry: AccessEntry, sampled: boolean): void {
    if (!sampled && entry.response_flag === undefined) return;
    this.#write(`${JSON.stringify({ type: 'access', ...entry })}\n`);
  }

  close(): void {
    this.#file?.end();
  }
}
