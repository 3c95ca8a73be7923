import type { IncomingMessage, Server as Http1Server, ServerResponse } from 'node:http';
import { createServer as createHttp1Server } from '../../node/http.ts';
import { performServerHandshake, type IncomingHttpHeaders as Http2IncomingHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../../errors/index.ts';
import { RejectionLog, type Logger } from '../../log/index.ts';
import type { UpstreamSpec } from '../address.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { GRPC_STATUS, http1Request, http2Request, Http1Sink, Http2Sink, isIdempotent, sendLocalReply, type ProxyRequest, type ResponseSink } from './exchange.ts';
import { forwardOverHttp1, forwardOverHttp2, type ForwardResult } from './forward.ts';
import { endToEndHeaders } from './headers.ts';
import { serialiseRequestHead } from './inbound-http.ts';
import { methodLabel, statusClass } from './metrics.ts';
import { CircuitOpenError, PeerConnectError } from './peer-connector.ts';
import type { PeerChannel, PeerPool } from './peer-pool.ts';
import type { Admission, RetryCause, RetryDecision, TrafficRejection, UpstreamTraffic } from '../traffic/index.ts';
import { HTTP2_SETTINGS, widenSessionWindow } from './protocol.ts';

/** The client connection preface of HTTP/2 (RFC 9113 §3.4). */
const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
import { accessProtocol, elapsedMs, type AccessLog } from './access-log.ts';
import { continueTrace, type RequestTrace } from './trace-context.ts';

function isTimeout(error: Error | undefined): boolean {
  return (error as { code?: string } | undefined)?.code === 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT';
}

function timeoutError(timeoutMs: number): Error {
  return Object.assign(new Error(`no response within ${timeoutMs} ms`), { code: 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT' });
}

export interface OutboundHttpOptions {
  upstream: UpstreamSpec;
  /** This proxy's service, the source label of the request metrics. */
  source: string;
  /**
   * Traffic management of the upstream: circuit breaking, instance choice among the healthy
   * endpoints that speak its protocol, outlier detection and retries. The TCP path and the
   * connection pool share it.
   */
  traffic: UpstreamTraffic;
  pool: PeerPool;
  log: Logger;
  metrics: ProxyMetrics;
  /** Writes a line per request when set. */
  accessLog?: AccessLog;
}

/** The instance tries of one request, for the access log. */
interface TryRecord {
  retries: number;
  instanceId?: string;
  address?: string;
}

/**
 * The HTTP side of an upstream listener. The app speaks HTTP/1.1 (protocol `http`) or cleartext
 * HTTP/2 with prior knowledge (`http2`, `grpc`) to the loopback listener. Each request goes to an
 * instance of the upstream over a pooled, verified mTLS connection.
 */
export class OutboundHttp {
  readonly #options: OutboundHttpOptions;
  readonly #upstreamName: string;
  readonly #rejections: RejectionLog;
  readonly #http1: Http1Server;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #upgrades = new Set<Duplex>();
  readonly #traffic: UpstreamTraffic;

  constructor(options: OutboundHttpOptions) {
    this.#options = options;
    this.#upstreamName = options.upstream.service;
    this.#rejections = new RejectionLog(options.log);
    this.#traffic = options.traffic;
    this.#http1 = createHttp1Server({ keepAliveTimeout: 60_000 });
    this.#http1.on('request', (request: IncomingMessage, response: ServerResponse) => this.#onHttp1Request(request, response, false));
    this.#http1.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => this.#onHttp1Request(request, response, true));
    this.#http1.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => void this.#onUpgrade(request, socket, head));
    this.#http1.on('clientError', (_error, socket: Duplex) => socket.destroy());
  }

  /** Serves one connection from the app: HTTP/1.1 for `http`, cleartext HTTP/2 otherwise. */
  accept(socket: Socket, protocol: 'http' | 'http2' | 'grpc'): void {
    if (protocol === 'http') {
      this.#http1.emit('connection', socket);
      socket.resume();
      return;
    }
    // The first bytes tell an HTTP/2 client, which opens with the connection preface, from an
    // HTTP/1.1 client, which would otherwise get binary frames it cannot read and no reason.
    socket.once('data', (first: Buffer) => {
      socket.pause();
      const compared = Math.min(first.length, HTTP2_PREFACE.length);
      if (!first.subarray(0, compared).equals(HTTP2_PREFACE.subarray(0, compared))) {
        this.#refuseNonHttp2(socket, protocol);
        return;
      }
      socket.unshift(first);
      this.#serveHttp2(socket);
    });
    socket.resume();
  }

  /**
   * Serves an HTTP/2 connection whose first bytes were read and put back with `unshift`. The
   * session takes them from the socket's buffer when it starts and then reads the socket itself.
   * The socket is not resumed here, because that would emit those bytes to no listener.
   */
  #serveHttp2(socket: Socket): void {
    const session = performServerHandshake(socket, { settings: HTTP2_SETTINGS });
    widenSessionWindow(session);
    this.#sessions.add(session);
    session.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) => this.#onHttp2Stream(stream, headers));
    session.on('error', () => session.destroy());
    session.once('close', () => this.#sessions.delete(session));
  }

  /** Rejects a client that did not open with the HTTP/2 preface: sends a readable HTTP/1.1 505 and closes. */
  #refuseNonHttp2(socket: Socket, protocol: 'http2' | 'grpc'): void {
    const code = 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH';
    this.#options.metrics.rejections.inc({ code });
    this.#rejections.warn(`${code}:app`, { code, upstream: this.#upstreamName, protocol, remote: socket.remoteAddress }, 'the app did not speak HTTP/2 to the listener of an HTTP/2 upstream; connection refused');
    const body = `upstream ${this.#upstreamName} uses protocol ${protocol}: send cleartext HTTP/2 with prior knowledge (h2c) to this listener\n`;
    socket.end(`HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-sealmesh-error: ${code}\r\nconnection: close\r\n\r\n${body}`);
  }

  destroyAll(): void {
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#upgrades) socket.destroy();
  }

  #onHttp2Stream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders): void {
    stream.on('error', () => undefined);
    void this.#handle(http2Request(stream, headers, this.#upstreamName), new Http2Sink(stream));
  }

  #onHttp1Request(incoming: IncomingMessage, response: ServerResponse, expectContinue: boolean): void {
    void this.#handle(http1Request(incoming, expectContinue, this.#upstreamName), new Http1Sink(response));
  }

  async #handle(request: ProxyRequest, sink: ResponseSink): Promise<void> {
    const started = process.hrtime.bigint();
    const receivedAt = new Date();
    const sampled = this.#options.accessLog?.sample() ?? false;
    const trace = continueTrace(request.headers, sampled);
    const tries: TryRecord = { retries: 0 };
    const metrics = this.#options.metrics.http;
    metrics.activeRequests.inc({ direction: 'outbound' });
    let status = 0;
    try {
      const admission = this.#traffic.admitRequest();
      if (!admission.admitted) {
        status = this.#circuitOpen(request, sink, admission);
        return;
      }
      try {
        const result = await this.#send(request, sink, admission, tries);
        status = result.status;
        if (status === 0) status = this.#failed(request, sink, result);
      } finally {
        admission.release();
      }
    } finally {
      metrics.activeRequests.dec({ direction: 'outbound' });
      metrics.requests.inc({ direction: 'outbound', source: this.#options.source, destination: this.#upstreamName, method: methodLabel(request.method), status: statusClass(status) });
      metrics.duration.observe({ direction: 'outbound', destination: this.#upstreamName }, Number(process.hrtime.bigint() - started) / 1e9);
      this.#logAccess(request, sink, { status, sampled, trace, tries, receivedAt, started });
    }
  }

  #logAccess(request: ProxyRequest, sink: ResponseSink, outcome: { status: number; sampled: boolean; trace: RequestTrace; tries: TryRecord; receivedAt: Date; started: bigint }): void {
    const accessLog = this.#options.accessLog;
    if (accessLog === undefined) return;
    const { trace, tries } = outcome;
    accessLog.record(
      {
        timestamp: outcome.receivedAt.toISOString(),
        direction: 'outbound',
        source: this.#options.source,
        destination: this.#upstreamName,
        method: request.method,
        path: accessLog.loggedPath(request.path),
        protocol: accessProtocol(request, sink),
        status: outcome.status,
        ...(sink.grpcStatus !== undefined ? { grpc_status: sink.grpcStatus } : {}),
        bytes_received: request.bytesReceived,
        bytes_sent: sink.bytesSent,
        duration_ms: elapsedMs(outcome.started),
        ...(tries.instanceId !== undefined ? { upstream_instance: tries.instanceId, upstream_address: tries.address } : {}),
        retries: tries.retries,
        ...(sink.errorCode !== undefined ? { response_flag: sink.errorCode } : {}),
        trace_id: trace.traceId,
        span_id: trace.spanId,
        ...(trace.parentSpanId !== undefined ? { parent_span_id: trace.parentSpanId } : {}),
      },
      outcome.sampled,
    );
  }

  /**
   * Sends the request to an instance chosen by the upstream's traffic management, and tries again
   * on another instance when its retry policy and budget allow. Connect failures and refused
   * streams never reached the app. A reset, a per-try timeout or a gateway error (502, 503, 504)
   * may have reached it, so those are retried only for idempotent methods. A request with a body is sent
   * again only after a connect failure, because its body has been consumed by any later failure.
   */
  async #send(request: ProxyRequest, sink: ResponseSink, admission: Admission, tries: TryRecord): Promise<ForwardResult> {
    const traffic = this.#traffic;
    const startedAt = Date.now();
    const idempotent = isIdempotent(request.method);
    const tried = new Set<string>();
    let last: ForwardResult = { status: 0, refused: true };
    let retriesSoFar = 0;
    let releaseRetry: (() => void) | undefined;
    const retryAfter = async (decision: RetryDecision): Promise<boolean> => {
      if (!decision.retry) return false;
      retriesSoFar += 1;
      tries.retries = retriesSoFar;
      releaseRetry = decision.release;
      await new Promise((resolve) => setTimeout(resolve, decision.delayMs));
      if (!sink.closed) return true;
      decision.release();
      return false;
    };
    try {
      for (;;) {
        const endpoint = traffic.pick(tried);
        if (endpoint === undefined) return last;
        tried.add(endpoint.instanceId);
        tries.instanceId = endpoint.instanceId;
        tries.address = endpoint.address.includes(':') ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;
        const timeoutMs = traffic.tryTimeoutMs(Date.now() - startedAt);
        if (timeoutMs === 0) return { status: 0, refused: false, error: timeoutError(traffic.settings.requestTimeoutMs) };
        const perTry = traffic.settings.perTryTimeoutMs > 0 && timeoutMs === traffic.settings.perTryTimeoutMs;
        const attempt = traffic.startAttempt(endpoint);
        let channel: PeerChannel;
        try {
          channel = await this.#options.pool.channel(endpoint);
        } catch (error) {
          attempt.connectFailed();
          releaseRetry?.();
          releaseRetry = undefined;
          last = { status: 0, refused: true, error: error as Error };
          if (error instanceof CircuitOpenError) return last;
          const code = error instanceof PeerConnectError ? error.code : '';
          this.#rejections.warn(`connect:${endpoint.instanceId}`, { upstream: this.#upstreamName, instance: endpoint.instanceId, attempt: retriesSoFar + 1, reason: (error as Error).message }, 'connection to an upstream instance failed');
          if (code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH') return last;
          if (await retryAfter(traffic.decideRetry({ cause: 'connect_failure', retriesSoFar, reachedApp: false, idempotent, elapsedMs: Date.now() - startedAt }))) continue;
          return last;
        }
        attempt.connected();
        admission.established();
        let gatewayRetry: RetryDecision | undefined;
        const options = {
          responseTimeoutMs: timeoutMs ?? 0,
          retryGatewayError: (status: number): boolean => {
            if (!request.bodyless) return false;
            const decision = traffic.decideRetry({ cause: 'gateway_error', retriesSoFar, reachedApp: true, idempotent, elapsedMs: Date.now() - startedAt });
            if (!decision.retry) return false;
            attempt.responded(status);
            gatewayRetry = decision;
            return true;
          },
        };
        try {
          last =
            channel.kind === 'h2'
              ? await forwardOverHttp2(channel.session, request, sink, options)
              : await forwardOverHttp1({ agent: channel.agent, host: endpoint.address, port: endpoint.port }, request, sink, options);
        } finally {
          if (last.status > 0 && last.discarded !== true) attempt.responded(last.status);
          attempt.finish();
          releaseRetry?.();
          releaseRetry = undefined;
        }
        if (gatewayRetry !== undefined) {
          if (await retryAfter(gatewayRetry)) continue;
          // retryAfter returns false only when the client closed the request during the backoff.
          return { status: 0, refused: false, error: new Error(`the client closed the request while its retry after status ${last.status} from instance ${endpoint.instanceId} waited`) };
        }
        if (last.status !== 0 || sink.headersSent) return last;
        const cause: RetryCause = last.refused ? 'refused_stream' : isTimeout(last.error) ? 'per_try_timeout' : 'reset';
        // A request timeout ends the request; only a per-try timeout leaves time for another try.
        if (cause === 'per_try_timeout' && !perTry) return last;
        // A body already streamed to the instance cannot be sent again.
        if (!request.bodyless) return last;
        if (await retryAfter(traffic.decideRetry({ cause, retriesSoFar, reachedApp: cause !== 'refused_stream', idempotent, elapsedMs: Date.now() - startedAt }))) continue;
        return last;
      }
    } finally {
      releaseRetry?.();
    }
  }

  /** Replies to a request that the circuit breaker rejected; the traffic module has logged and counted the trip. */
  #circuitOpen(request: ProxyRequest, sink: ResponseSink, rejection: TrafficRejection): number {
    const code = rejection.error.code;
    sink.errorCode = code;
    this.#options.metrics.rejections.inc({ code });
    if (request.grpc || sink.headersSent || sink.closed) {
      sendLocalReply(sink, request, { status: 503, code, message: rejection.error.message, grpcStatus: GRPC_STATUS.UNAVAILABLE });
      return 503;
    }
    const { body, headers } = rejection.response;
    sink.bytesSent += Buffer.byteLength(body);
    sink.respond(503, { ...headers, 'content-length': String(Buffer.byteLength(body)), 'x-sealmesh-error': code }, false).end(body);
    return 503;
  }

  /** Sends the error response for a request that got no response from the upstream and returns its status. */
  #failed(request: ProxyRequest, sink: ResponseSink, result: ForwardResult): number {
    if (result.error instanceof CircuitOpenError) return this.#circuitOpen(request, sink, result.error.rejection);
    const code = result.error instanceof PeerConnectError ? result.error.code : '';
    const timedOut = isTimeout(result.error);
    const mismatch = code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH';
    let errorCode: ErrorCode = 'SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE';
    let status = 503;
    let message = `upstream ${this.#upstreamName} has no reachable healthy instance`;
    if (timedOut) {
      errorCode = 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT';
      status = 504;
      message = `upstream ${this.#upstreamName} did not respond in time`;
    } else if (mismatch) {
      errorCode = 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH';
      status = 502;
      message = `upstream ${this.#upstreamName} does not speak HTTP to this proxy`;
    }
    this.#options.metrics.rejections.inc({ code: errorCode });
    this.#rejections.warn(errorCode, { code: errorCode, upstream: this.#upstreamName, method: request.method, path: request.path, reason: result.error?.message }, 'request to the upstream failed');
    sendLocalReply(sink, request, { status, code: errorCode, message, grpcStatus: timedOut ? GRPC_STATUS.DEADLINE_EXCEEDED : GRPC_STATUS.UNAVAILABLE });
    return status;
  }

  /**
   * Carries an Upgrade request to an instance over a dedicated HTTP/1.1 connection, then relays
   * bytes. The exchange counts as one of the upstream's concurrent requests until it ends, and a
   * connect failure is retried on another instance as the retry policy allows.
   */
  async #onUpgrade(incoming: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const traffic = this.#traffic;
    const admission = traffic.admitRequest();
    if (!admission.admitted) {
      this.#options.metrics.rejections.inc({ code: admission.error.code });
      const { body, headers } = admission.response;
      const lines = Object.entries({ ...headers, 'content-length': String(Buffer.byteLength(body)), 'x-sealmesh-error': admission.error.code, connection: 'close' }).map(([name, value]) => `${name}: ${value}\r\n`);
      socket.end(`HTTP/1.1 503 Service Unavailable\r\n${lines.join('')}\r\n${body}`);
      return;
    }
    socket.once('close', () => admission.release());
    const startedAt = Date.now();
    const tried = new Set<string>();
    let retriesSoFar = 0;
    while (!socket.destroyed) {
      const endpoint = traffic.pick(tried);
      if (endpoint === undefined) break;
      tried.add(endpoint.instanceId);
      const attempt = traffic.startAttempt(endpoint);
      let remote: Duplex;
      try {
        remote = await this.#options.pool.dedicatedHttp1(endpoint);
      } catch (error) {
        attempt.connectFailed();
        this.#rejections.warn(`connect:${endpoint.instanceId}`, { upstream: this.#upstreamName, instance: endpoint.instanceId, attempt: retriesSoFar + 1, reason: (error as Error).message }, 'connection to an upstream instance failed');
        if (error instanceof CircuitOpenError) break;
        const decision = traffic.decideRetry({ cause: 'connect_failure', retriesSoFar, reachedApp: false, idempotent: false, elapsedMs: Date.now() - startedAt });
        if (!decision.retry) break;
        retriesSoFar += 1;
        await new Promise((resolve) => setTimeout(resolve, decision.delayMs));
        decision.release();
        continue;
      }
      attempt.connected();
      admission.established();
      this.#options.metrics.http.requests.inc({ direction: 'outbound', source: this.#options.source, destination: this.#upstreamName, method: methodLabel(incoming.method ?? ''), status: '1xx' });
      this.#upgrades.add(socket);
      const finish = (): void => {
        this.#upgrades.delete(socket);
        attempt.finish();
        socket.destroy();
        remote.destroy();
      };
      remote.once('error', finish);
      remote.once('close', finish);
      socket.once('close', finish);
      remote.write(serialiseRequestHead(incoming.method ?? 'GET', incoming.url ?? '/', incoming.headers.host ?? this.#upstreamName, incoming.headers.upgrade ?? '', endToEndHeaders(incoming.headers)));
      if (head.length > 0) remote.write(head);
      socket.pipe(remote);
      remote.pipe(socket);
      return;
    }
    const body = `upstream ${this.#upstreamName} has no reachable healthy instance\n`;
    socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-sealmesh-error: SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE\r\nconnection: close\r\n\r\n${body}`);
  }
}
