import { createServer as createHttp1Server, type IncomingMessage, type Server as Http1Server, type ServerResponse } from 'node:http';
import { constants as h2, performServerHandshake, type IncomingHttpHeaders as Http2IncomingHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { RejectionLog, type Logger } from '../../log/index.ts';
import type { Endpoint } from '../../server/index.ts';
import type { UpstreamSpec } from '../address.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { GRPC_STATUS, Http1Sink, Http2Sink, sendLocalReply, type ProxyRequest, type ResponseSink } from './exchange.ts';
import { forwardOverHttp1, forwardOverHttp2, type ForwardResult } from './forward.ts';
import { endToEndHeaders } from './headers.ts';
import { serialiseRequestHead } from './inbound-http.ts';
import { methodLabel, statusClass } from './metrics.ts';
import { PeerConnectError } from './peer-connector.ts';
import type { PeerPool } from './peer-pool.ts';
import { HTTP2_SETTINGS, widenSessionWindow } from './protocol.ts';

/** Instances tried for one request when connecting fails. */
const MAX_CONNECT_ATTEMPTS = 3;

export interface OutboundHttpOptions {
  upstream: UpstreamSpec;
  /** This proxy's service, the source label of the request metrics. */
  source: string;
  /** Healthy endpoints of the upstream that speak the upstream's protocol. */
  endpoints: () => readonly Endpoint[];
  pool: PeerPool;
  /** Time from sending a request to its response headers; 0 for none. */
  requestTimeoutMs: number;
  log: Logger;
  metrics: ProxyMetrics;
}

/**
 * The HTTP side of an upstream listener. The app speaks HTTP/1.1 (protocol `http`) or cleartext
 * HTTP/2 with prior knowledge (`http2`, `grpc`) to the loopback listener; each request goes to an
 * instance of the upstream over a pooled, verified mTLS connection.
 */
export class OutboundHttp {
  readonly #options: OutboundHttpOptions;
  readonly #upstreamName: string;
  readonly #rejections: RejectionLog;
  readonly #http1: Http1Server;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #upgrades = new Set<Duplex>();
  #next = 0;

  constructor(options: OutboundHttpOptions) {
    this.#options = options;
    this.#upstreamName = options.upstream.service;
    this.#rejections = new RejectionLog(options.log);
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
    };
    delete request.headers.expect;
    void this.#handle(request, new Http1Sink(response));
  }

  /** Returns the next endpoint in round-robin order, skipping those already tried for this request. */
  #pick(tried: ReadonlySet<string>): Endpoint | undefined {
    const endpoints = this.#options.endpoints().filter((endpoint) => !tried.has(endpoint.instanceId));
    if (endpoints.length === 0) return undefined;
    const endpoint = endpoints[this.#next % endpoints.length];
    this.#next = (this.#next + 1) % 1_000_000_007;
    return endpoint;
  }

  async #handle(request: ProxyRequest, sink: ResponseSink): Promise<void> {
    const started = process.hrtime.bigint();
    const metrics = this.#options.metrics.http;
    metrics.activeRequests.inc({ direction: 'outbound' });
    let status = 0;
    try {
      const result = await this.#send(request, sink);
      status = result.status;
      if (status === 0) status = this.#failed(request, sink, result);
    } finally {
      metrics.activeRequests.dec({ direction: 'outbound' });
      metrics.requests.inc({ direction: 'outbound', source: this.#options.source, destination: this.#upstreamName, method: methodLabel(request.method), status: statusClass(status) });
      metrics.duration.observe({ direction: 'outbound', destination: this.#upstreamName }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /**
   * Sends the request to one instance after another until a connection is verified. Only a failed
   * connect is retried here: nothing of the request has left the proxy then.
   */
  async #send(request: ProxyRequest, sink: ResponseSink): Promise<ForwardResult> {
    const tried = new Set<string>();
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= MAX_CONNECT_ATTEMPTS; attempt += 1) {
      const endpoint = this.#pick(tried);
      if (endpoint === undefined) break;
      tried.add(endpoint.instanceId);
      let channel;
      try {
        channel = await this.#options.pool.channel(endpoint);
      } catch (error) {
        lastError = error as Error;
        this.#rejections.warn(`connect:${endpoint.instanceId}`, { upstream: this.#upstreamName, instance: endpoint.instanceId, attempt, reason: lastError.message }, 'connection to an upstream instance failed');
        if (error instanceof PeerConnectError && error.code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH') return { status: 0, refused: false, error: lastError };
        if (attempt < MAX_CONNECT_ATTEMPTS) this.#options.metrics.http.retries.inc({ upstream: this.#upstreamName, reason: 'connect_failure' });
        continue;
      }
      const timeouts = { responseTimeoutMs: this.#options.requestTimeoutMs };
      return channel.kind === 'h2' ? forwardOverHttp2(channel.session, request, sink, timeouts) : forwardOverHttp1({ agent: channel.agent, host: endpoint.address, port: endpoint.port }, request, sink, timeouts);
    }
    return { status: 0, refused: true, ...(lastError !== undefined ? { error: lastError } : {}) };
  }

  /** Answers a request that got no response from the upstream; returns the status sent. */
  #failed(request: ProxyRequest, sink: ResponseSink, result: ForwardResult): number {
    const timedOut = (result.error as { code?: string } | undefined)?.code === 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT';
    const mismatch = result.error instanceof PeerConnectError && result.error.code === 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH';
    const code = timedOut ? 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT' : mismatch ? 'SEALMESH_ERR_L7_PROTOCOL_MISMATCH' : 'SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE';
    const status = timedOut ? 504 : mismatch ? 502 : 503;
    const message = timedOut
      ? `upstream ${this.#upstreamName} did not respond within ${this.#options.requestTimeoutMs} ms`
      : mismatch
        ? `upstream ${this.#upstreamName} does not speak HTTP to this proxy`
        : `upstream ${this.#upstreamName} has no reachable healthy instance`;
    this.#options.metrics.rejections.inc({ code });
    this.#rejections.warn(code, { code, upstream: this.#upstreamName, method: request.method, path: request.path, reason: result.error?.message }, 'request to the upstream failed');
    sendLocalReply(sink, request, { status, code, message, grpcStatus: timedOut ? GRPC_STATUS.DEADLINE_EXCEEDED : GRPC_STATUS.UNAVAILABLE });
    return status;
  }

  /** Carries an Upgrade request to an instance over a dedicated HTTP/1.1 connection, then relays bytes. */
  async #onUpgrade(incoming: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const tried = new Set<string>();
    for (let attempt = 1; attempt <= MAX_CONNECT_ATTEMPTS && !socket.destroyed; attempt += 1) {
      const endpoint = this.#pick(tried);
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
