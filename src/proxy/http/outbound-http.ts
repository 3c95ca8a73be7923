import { createServer as createHttp1Server, type IncomingMessage, type Server as Http1Server, type ServerResponse } from 'node:http';
import { constants as h2, performServerHandshake, type IncomingHttpHeaders as Http2IncomingHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { RejectionLog, type Logger } from '../../log/index.ts';
import type { Endpoint } from '../../server/index.ts';
import type { UpstreamSpec } from '../address.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { GRPC_STATUS, http1Bodyless, Http1Sink, Http2Sink, isIdempotent, sendLocalReply, type ProxyRequest, type ResponseSink } from './exchange.ts';
import { forwardOverHttp1, forwardOverHttp2, type ForwardResult } from './forward.ts';
import { endToEndHeaders } from './headers.ts';
import { serialiseRequestHead } from './inbound-http.ts';
import { methodLabel, statusClass } from './metrics.ts';
import { PeerConnectError } from './peer-connector.ts';
import type { PeerChannel, PeerPool } from './peer-pool.ts';
import type { EndpointBalancer } from '../traffic/balancer.ts';
import type { CircuitBreaker } from '../traffic/circuit-breaker.ts';
import { OutlierDetector } from '../traffic/outlier.ts';
import { RetryBudget } from '../traffic/retry-budget.ts';
import type { TrafficSettings } from '../traffic/settings.ts';
import { HTTP2_SETTINGS, widenSessionWindow } from './protocol.ts';

/** Instances tried for an Upgrade request when connecting fails. */
const MAX_CONNECT_ATTEMPTS = 3;

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
  /** Healthy endpoints of the upstream that speak the upstream's protocol. */
  endpoints: () => readonly Endpoint[];
  pool: PeerPool;
  settings: TrafficSettings;
  balancer: EndpointBalancer;
  /** Limits shared with the connection pool of the same upstream. */
  breaker: CircuitBreaker;
  log: Logger;
  metrics: ProxyMetrics;
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
  readonly #budget: RetryBudget;
  readonly #outliers: OutlierDetector;
  readonly #breaker: CircuitBreaker;

  constructor(options: OutboundHttpOptions) {
    this.#options = options;
    this.#upstreamName = options.upstream.service;
    this.#rejections = new RejectionLog(options.log);
    this.#budget = new RetryBudget(options.settings.retries);
    this.#breaker = options.breaker;
    const ejected = options.metrics.http.ejected.labels(options.upstream.service);
    this.#outliers = new OutlierDetector(options.settings.outlierDetection, (instanceId, durationMs) => {
      options.metrics.http.ejections.inc({ upstream: options.upstream.service });
      ejected.inc();
      setTimeout(() => ejected.dec(), durationMs).unref();
      options.log.warn({ upstream: options.upstream.service, instance: instanceId, ejectionMs: durationMs }, 'upstream instance ejected by outlier detection');
    });
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
    const session = performServerHandshake(socket, { settings: HTTP2_SETTINGS });
    widenSessionWindow(session);
    socket.resume();
    this.#sessions.add(session);
    session.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) => this.#onHttp2Stream(stream, headers));
    session.on('error', () => session.destroy());
    session.once('close', () => this.#sessions.delete(session));
  }

  destroyAll(): void {
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#upgrades) socket.destroy();
  }

  #onHttp2Stream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders): void {
    stream.on('error', () => undefined);
    const request: ProxyRequest = {
      method: String(headers[h2.HTTP2_HEADER_METHOD] ?? ''),
      path: String(headers[h2.HTTP2_HEADER_PATH] ?? ''),
      authority: String(headers[h2.HTTP2_HEADER_AUTHORITY] ?? headers.host ?? this.#upstreamName),
      headers: endToEndHeaders(headers),
      body: stream,
      expectContinue: String(headers.expect ?? '').toLowerCase() === '100-continue',
      grpc: String(headers['content-type'] ?? '').startsWith('application/grpc'),
      bodyless: stream.endAfterHeaders,
    };
    void this.#handle(request, new Http2Sink(stream));
  }

  #onHttp1Request(incoming: IncomingMessage, response: ServerResponse, expectContinue: boolean): void {
    const request: ProxyRequest = {
      method: incoming.method ?? '',
      path: incoming.url ?? '',
      authority: incoming.headers.host ?? this.#upstreamName,
      headers: endToEndHeaders(incoming.headers),
      body: incoming,
      expectContinue,
      grpc: false,
      bodyless: http1Bodyless(incoming.headers),
    };
    delete request.headers.expect;
    void this.#handle(request, new Http1Sink(response));
  }

  /**
   * Returns the instances a try may use: the catalog's healthy instances less those that outlier
   * detection has ejected and those already tried for this request. When that leaves none, tried
   * instances are allowed again, and when every instance is ejected the ejections are ignored, so
   * that passive health checking alone never empties an upstream.
   */
  #candidates(tried: ReadonlySet<string>): Endpoint[] {
    const healthy = [...this.#options.endpoints()];
    const inService = healthy.filter((endpoint) => !this.#outliers.isEjected(endpoint.instanceId));
    const pool = inService.length > 0 ? inService : healthy;
    const untried = pool.filter((endpoint) => !tried.has(endpoint.instanceId));
    return untried.length > 0 ? untried : pool;
  }

  async #handle(request: ProxyRequest, sink: ResponseSink): Promise<void> {
    const started = process.hrtime.bigint();
    const metrics = this.#options.metrics.http;
    metrics.activeRequests.inc({ direction: 'outbound' });
    let status = 0;
    try {
      const admitted = this.#breaker.admitRequest();
      if ('limit' in admitted) {
        status = this.#circuitOpen(request, sink, admitted.limit);
        return;
      }
      try {
        const result = await this.#send(request, sink);
        status = result.status;
        if (status === 0) status = this.#failed(request, sink, result);
      } finally {
        admitted.release();
      }
    } finally {
      metrics.activeRequests.dec({ direction: 'outbound' });
      metrics.requests.inc({ direction: 'outbound', source: this.#options.source, destination: this.#upstreamName, method: methodLabel(request.method), status: statusClass(status) });
      metrics.duration.observe({ direction: 'outbound', destination: this.#upstreamName }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /**
   * Sends the request, trying another instance after a failed connect, a refused stream or a
   * per-try timeout while the retry budget lasts. A request is sent again only when that is safe.
   * After a failed connect nothing has left the proxy, and a refused stream was not processed. A
   * try that timed out is repeated only for an idempotent method without a body.
   */
  async #send(request: ProxyRequest, sink: ResponseSink): Promise<ForwardResult> {
    const settings = this.#options.settings;
    const deadline = settings.requestTimeoutMs > 0 ? Date.now() + settings.requestTimeoutMs : Infinity;
    const tried = new Set<string>();
    let last: ForwardResult = { status: 0, refused: true };
    this.#budget.recordRequest();
    for (let attempt = 1; attempt <= settings.retries.maxAttempts; attempt += 1) {
      if (attempt > 1) {
        const reason = last.error instanceof PeerConnectError ? 'connect_failure' : last.refused ? 'refused_stream' : 'per_try_timeout';
        if (!this.#budget.tryAcquire()) {
          this.#rejections.warn('retry-budget', { upstream: this.#upstreamName, reason }, 'retry budget spent; not retrying');
          return last;
        }
        this.#options.metrics.http.retries.inc({ upstream: this.#upstreamName, reason });
        await new Promise((resolve) => setTimeout(resolve, this.#budget.backoffMs(attempt - 1)));
        if (sink.closed) return last;
      }
      const endpoint = this.#options.balancer.pick(this.#candidates(tried));
      if (endpoint === undefined) return last;
      tried.add(endpoint.instanceId);
      const instanceIds = this.#options.endpoints().map((candidate) => candidate.instanceId);

      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) return { status: 0, refused: false, error: timeoutError(settings.requestTimeoutMs) };
      const perTry = settings.perTryTimeoutMs > 0 && settings.perTryTimeoutMs < remainingMs;
      const timeoutMs = perTry ? settings.perTryTimeoutMs : Number.isFinite(remainingMs) ? remainingMs : 0;

      const done = this.#options.balancer.track(endpoint.instanceId);
      try {
        let channel: PeerChannel;
        try {
          channel = await this.#channel(endpoint);
        } catch (error) {
          last = { status: 0, refused: true, error: error as Error };
          this.#rejections.warn(`connect:${endpoint.instanceId}`, { upstream: this.#upstreamName, instance: endpoint.instanceId, attempt, reason: (error as Error).message }, 'connection to an upstream instance failed');
          const code = error instanceof PeerConnectError ? error.code : '';
          if (code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH' || code === 'SEALMESH_ERR_L7_CIRCUIT_OPEN') return last;
          this.#outliers.record(endpoint.instanceId, 'connect_failure', instanceIds);
          continue;
        }
        const timeouts = { responseTimeoutMs: timeoutMs };
        last =
          channel.kind === 'h2'
            ? await forwardOverHttp2(channel.session, request, sink, timeouts)
            : await forwardOverHttp1({ agent: channel.agent, host: endpoint.address, port: endpoint.port }, request, sink, timeouts);
      } finally {
        done();
      }
      if (last.status >= 500) this.#outliers.record(endpoint.instanceId, 'server_error', instanceIds);
      else if (last.status > 0) this.#outliers.record(endpoint.instanceId, 'success', instanceIds);
      if (last.status !== 0 || sink.headersSent) return last;
      const timedOut = isTimeout(last.error);
      const retryable = request.bodyless && ((last.refused && !timedOut) || (timedOut && perTry && isIdempotent(request.method)));
      if (!retryable) return last;
    }
    return last;
  }

  /** Returns a channel to the instance; a wait for a new connection counts against the pending limit. */
  async #channel(endpoint: Endpoint): Promise<PeerChannel> {
    if (this.#options.pool.isReady(endpoint)) return this.#options.pool.channel(endpoint);
    const pending = this.#breaker.admitPending();
    if ('limit' in pending) throw new PeerConnectError('SEALMESH_ERR_L7_CIRCUIT_OPEN', `the circuit breaker limit on pending requests of upstream ${this.#upstreamName} is reached`);
    try {
      return await this.#options.pool.channel(endpoint);
    } finally {
      pending.release();
    }
  }

  #circuitOpen(request: ProxyRequest, sink: ResponseSink, limit: string): number {
    this.#options.metrics.http.circuitBreakerTrips.inc({ upstream: this.#upstreamName, limit });
    this.#options.metrics.rejections.inc({ code: 'SEALMESH_ERR_L7_CIRCUIT_OPEN' });
    this.#rejections.warn(`circuit:${limit}`, { code: 'SEALMESH_ERR_L7_CIRCUIT_OPEN', upstream: this.#upstreamName, limit, method: request.method, path: request.path }, 'request rejected by the circuit breaker');
    sendLocalReply(sink, request, {
      status: 503,
      code: 'SEALMESH_ERR_L7_CIRCUIT_OPEN',
      message: `upstream ${this.#upstreamName} is over its circuit breaker limit on ${limit === 'requests' ? 'active requests' : limit === 'pending' ? 'pending requests' : 'connections'}; retry later`,
      grpcStatus: GRPC_STATUS.UNAVAILABLE,
    });
    return 503;
  }

  /** Sends the error response for a request that got no response from the upstream and returns its status. */
  #failed(request: ProxyRequest, sink: ResponseSink, result: ForwardResult): number {
    const code = result.error instanceof PeerConnectError ? result.error.code : '';
    if (code === 'SEALMESH_ERR_L7_CIRCUIT_OPEN') {
      const limit = /limit on (\w+)/.exec(result.error?.message ?? '')?.[1] ?? 'connections';
      return this.#circuitOpen(request, sink, limit);
    }
    const timedOut = isTimeout(result.error);
    const mismatch = code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH';
    const errorCode = timedOut ? 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT' : mismatch ? 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH' : 'SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE';
    const status = timedOut ? 504 : mismatch ? 502 : 503;
    const message = timedOut
      ? `upstream ${this.#upstreamName} did not respond in time`
      : mismatch
        ? `upstream ${this.#upstreamName} does not speak HTTP to this proxy`
        : `upstream ${this.#upstreamName} has no reachable healthy instance`;
    this.#options.metrics.rejections.inc({ code: errorCode });
    this.#rejections.warn(errorCode, { code: errorCode, upstream: this.#upstreamName, method: request.method, path: request.path, reason: result.error?.message }, 'request to the upstream failed');
    sendLocalReply(sink, request, { status, code: errorCode, message, grpcStatus: timedOut ? GRPC_STATUS.DEADLINE_EXCEEDED : GRPC_STATUS.UNAVAILABLE });
    return status;
  }

  /** Carries an Upgrade request to an instance over a dedicated HTTP/1.1 connection, then relays bytes. */
  async #onUpgrade(incoming: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const tried = new Set<string>();
    for (let attempt = 1; attempt <= MAX_CONNECT_ATTEMPTS && !socket.destroyed; attempt += 1) {
      const endpoint = this.#options.balancer.pick(this.#candidates(tried));
      if (endpoint === undefined) break;
      tried.add(endpoint.instanceId);
      let remote: Duplex;
      try {
        remote = await this.#options.pool.dedicatedHttp1(endpoint);
      } catch (error) {
        this.#rejections.warn(`connect:${endpoint.instanceId}`, { upstream: this.#upstreamName, instance: endpoint.instanceId, attempt, reason: (error as Error).message }, 'connection to an upstream instance failed');
        continue;
      }
      this.#options.metrics.http.requests.inc({ direction: 'outbound', source: this.#options.source, destination: this.#upstreamName, method: methodLabel(incoming.method ?? ''), status: '1xx' });
      this.#upgrades.add(socket);
      const finish = (): void => {
        this.#upgrades.delete(socket);
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
