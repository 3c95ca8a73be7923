import { createHash } from 'node:crypto';
import type { IncomingMessage, Server as Http1Server, ServerResponse } from 'node:http';
import { Agent, createServer as createHttp1Server } from '../../node/http.ts';
import {
  connect as http2Connect,
  performServerHandshake,
  type ClientHttp2Session,
  type IncomingHttpHeaders as Http2IncomingHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { RejectionLog, type Logger } from '../../log/index.ts';
import { decideRequest, normaliseRequestPath, type Decision } from '../../policy/index.ts';
import { formatServiceRef, formatSpiffeId, type SpiffeId } from '../../spiffe/index.ts';
import { isUnixAddress, type SocketAddress } from '../address.ts';
import type { ProxyMetrics } from '../metrics.ts';
import { GRPC_STATUS, http1Request, http2Request, Http1Sink, Http2Sink, sendLocalReply, type ProxyRequest, type ResponseSink } from './exchange.ts';
import { forwardOverHttp1, forwardOverHttp2, type ForwardResult } from './forward.ts';
import { endToEndHeaders, headerValue, XFCC_HEADER } from './headers.ts';
import { methodLabel, statusClass } from './metrics.ts';
import { HTTP2_SETTINGS, widenSessionWindow, type ServiceProtocol } from './protocol.ts';
import { accessProtocol, elapsedMs, type AccessEntry, type AccessLog } from './access-log.ts';
import { setTraceHeaders, traceRequest, type RequestTrace } from './trace-context.ts';

export interface InboundHttpOptions {
  protocol: Exclude<ServiceProtocol, 'tcp'>;
  app: SocketAddress;
  self: { namespace: string; service: string };
  /** This proxy's SPIFFE ID, the `By` element of x-forwarded-client-cert. */
  localSpiffeId: () => string | undefined;
  /** The connection-level decision for a peer, from the current snapshot's intentions. */
  authorize: (peer: SpiffeId) => Decision;
  log: Logger;
  metrics: ProxyMetrics;
  /** Writes a line per request when set. */
  accessLog?: AccessLog;
}

/** Verified peer of one inbound connection. */
interface PeerContext {
  peer: SpiffeId;
  source: string;
  uri: string;
  /** Hex SHA-256 of the peer's leaf certificate (DER). */
  certificateHash: string;
}

/** Outcome of the L7 check of one request. */
type RequestVerdict =
  | { allowed: true; path: string }
  | { allowed: false; status: number; grpcStatus: number; code: string; reason: string; message: string };

/**
 * The HTTP side of the inbound listener. Each verified connection that negotiated `h2` or
 * `http/1.1` is served here. Each request's path is normalised and checked against the L7
 * permissions of the intention that admits its source, and x-forwarded-client-cert is replaced.
 * The request then goes to the app over pooled connections: HTTP/1.1 keep-alive for `http`, one
 * cleartext HTTP/2 session for `http2` and `grpc`.
 */
export class InboundHttp {
  readonly #options: InboundHttpOptions;
  readonly #destination: string;
  readonly #rejections: RejectionLog;
  readonly #http1: Http1Server;
  readonly #peers = new WeakMap<Duplex, PeerContext>();
  readonly #sessions = new Set<ServerHttp2Session>();
  /** Exchanges in flight (requests, gRPC streams and upgraded connections) with their caller. */
  readonly #exchanges = new Map<{ abort: (denial?: string) => void }, PeerContext>();
  readonly #appAgent = new Agent({ keepAlive: true, maxSockets: 256 });
  #appSession: ClientHttp2Session | undefined;

  constructor(options: InboundHttpOptions) {
    this.#options = options;
    this.#destination = formatServiceRef(options.self);
    this.#rejections = new RejectionLog(options.log);
    this.#http1 = createHttp1Server({ keepAliveTimeout: 60_000 });
    this.#http1.on('request', (request: IncomingMessage, response: ServerResponse) => this.#onHttp1Request(request, response, false));
    // With a listener here Node does not send 100 Continue itself, so the app's response decides.
    this.#http1.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => this.#onHttp1Request(request, response, true));
    this.#http1.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(request, socket, head));
    this.#http1.on('clientError', (_error, socket: Duplex) => socket.destroy());
  }

  /** Serves one verified connection whose ALPN protocol is `h2` or `http/1.1`. */
  accept(socket: TLSSocket, peer: SpiffeId): void {
    const certificate = socket.getPeerX509Certificate();
    const context: PeerContext = {
      peer,
      source: formatServiceRef(peer),
      uri: formatSpiffeId(peer),
      certificateHash: createHash('sha256').update(certificate?.raw ?? Buffer.alloc(0)).digest('hex'),
    };
    if (socket.alpnProtocol === 'h2') {
      const session = performServerHandshake(socket, { settings: HTTP2_SETTINGS });
      widenSessionWindow(session);
      this.#sessions.add(session);
      session.on('stream', (stream: ServerHttp2Stream, headers: Http2IncomingHeaders) => this.#onHttp2Stream(stream, headers, context));
      session.on('error', () => session.destroy());
      session.once('close', () => this.#sessions.delete(session));
      return;
    }
    this.#peers.set(socket, context);
    this.#http1.emit('connection', socket);
  }

  /** Closes the connections to the app and every HTTP/2 session and upgraded connection. */
  close(): void {
    for (const session of this.#sessions) session.destroy();
    for (const exchange of this.#exchanges.keys()) exchange.abort();
    this.#appAgent.destroy();
    this.#appSession?.destroy();
  }

  /** Body of a 403: names the intention that denied the caller, or the default policy when none matched. */
  #denialMessage(decision: Decision, source: string): string {
    if (decision.intention !== undefined) return `request denied by intention ${decision.reason}`;
    return `request denied by the default policy (${source} -> ${this.#destination})`;
  }

  /**
   * Aborts the exchanges in flight whose caller the current intentions no longer admit, such as a
   * gRPC stream or a WebSocket opened before a deny. Returns how many it aborted.
   */
  reevaluate(): number {
    let aborted = 0;
    for (const [exchange, context] of this.#exchanges) {
      const decision = this.#options.authorize(context.peer);
      if (decision.allowed) continue;
      aborted += 1;
      this.#options.metrics.closedByPolicy.inc();
      this.#options.log.warn(
        { code: 'SEALMESH_ERR_INTENTION_DENIED', source: context.source, destination: this.#destination, intention: decision.reason },
        'aborting an HTTP exchange that an intention now denies',
      );
      exchange.abort(this.#denialMessage(decision, context.source));
    }
    return aborted;
  }

  #onHttp2Stream(stream: ServerHttp2Stream, headers: Http2IncomingHeaders, context: PeerContext): void {
    stream.on('error', () => undefined);
    void this.#handle(http2Request(stream, headers, ''), new Http2Sink(stream), context);
  }

  #onHttp1Request(incoming: IncomingMessage, response: ServerResponse, expectContinue: boolean): void {
    const context = this.#peers.get(incoming.socket);
    if (context === undefined) {
      incoming.socket.destroy();
      return;
    }
    void this.#handle(http1Request(incoming, expectContinue, ''), new Http1Sink(response), context);
  }

  /** Checks normalisation and the L7 permissions; see `normaliseRequestPath` and `decideRequest`. */
  #check(method: string, target: string, headers: ProxyRequest['headers'], authority: string, context: PeerContext): RequestVerdict {
    const queryAt = target.indexOf('?');
    const rawPath = queryAt < 0 ? target : target.slice(0, queryAt);
    const query = queryAt < 0 ? '' : target.slice(queryAt);
    const normalised = normaliseRequestPath(rawPath);
    if (!normalised.ok) {
      return { allowed: false, status: 400, grpcStatus: GRPC_STATUS.INVALID_ARGUMENT, code: 'SEALMESH_ERR_L7_PATH_INVALID', reason: 'invalid_path', message: `the request path is rejected: ${normalised.reason}` };
    }
    // The decision is taken afresh for each request, so an intention change applies at once.
    const decision = this.#options.authorize(context.peer);
    const denied = (reason: string): RequestVerdict => ({
      allowed: false,
      status: 403,
      grpcStatus: GRPC_STATUS.PERMISSION_DENIED,
      code: 'SEALMESH_ERR_L7_REQUEST_DENIED',
      reason,
      message: this.#denialMessage(decision, context.source),
    });
    if (!decision.allowed) return denied('intention');
    const permissions = decision.intention?.permissions;
    if (permissions !== undefined && permissions.length > 0) {
      try {
        const verdict = decideRequest(permissions, decision.intention!.action, {
          method,
          path: normalised.path,
          header: (name) => (name === 'host' ? authority : headerValue(headers, name)),
        });
        if (!verdict.allowed) return denied('intention');
      } catch {
        // Permissions that fail to compile deny every request: the check fails closed.
        return denied('permissions_invalid');
      }
    }
    return { allowed: true, path: `${normalised.path}${query}` };
  }

  async #handle(request: ProxyRequest, sink: ResponseSink, context: PeerContext): Promise<void> {
    const started = process.hrtime.bigint();
    const receivedAt = new Date();
    const sampled = this.#options.accessLog?.sample() ?? false;
    // The permissions are checked against the headers as the caller sent them.
    const trace = traceRequest(request.headers, sampled);
    const metrics = this.#options.metrics.http;
    metrics.activeRequests.inc({ direction: 'inbound' });
    let status = 0;
    try {
      const verdict = this.#check(request.method, request.path, request.headers, request.authority, context);
      if (!verdict.allowed) {
        status = verdict.status;
        this.#reject(verdict, request, context);
        sendLocalReply(sink, request, { status: verdict.status, code: verdict.code, message: verdict.message, grpcStatus: verdict.grpcStatus });
        return;
      }
      request.path = verdict.path;
      setTraceHeaders(request.headers, trace);
      this.#setClientCertHeader(request.headers, context);
      // A gRPC call ends with PERMISSION_DENIED in its trailers, which the calling proxy relays to
      // the client; any other exchange is reset.
      const exchange = {
        abort: (denial?: string): void => {
          if (denial === undefined) {
            sink.abort();
            return;
          }
          sink.errorCode = 'SEALMESH_ERR_L7_REQUEST_DENIED';
          if (request.grpc) sink.endWithTrailers({ 'grpc-status': String(GRPC_STATUS.PERMISSION_DENIED), 'grpc-message': encodeURIComponent(denial), 'x-sealmesh-error': 'SEALMESH_ERR_L7_REQUEST_DENIED' });
          // NOTE: this reset may reach an HTTP/2 caller late (see endWithTrailers), and HTTP has no
          // status to send after the response headers.
          else sink.abort();
        },
      };
      this.#exchanges.set(exchange, context);
      let result: ForwardResult;
      try {
        result = await this.#forward(request, sink);
      } finally {
        this.#exchanges.delete(exchange);
      }
      status = result.status;
      if (result.status === 0) {
        this.#options.log.warn({ source: context.source, destination: this.#destination, method: request.method, path: request.path, reason: result.error?.message }, 'request to the app failed');
        status = 502;
        sendLocalReply(sink, request, { status: 502, code: 'SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE', message: 'the app did not respond', grpcStatus: GRPC_STATUS.UNAVAILABLE });
      }
    } finally {
      metrics.activeRequests.dec({ direction: 'inbound' });
      metrics.requests.inc({ direction: 'inbound', source: context.source, destination: this.#destination, method: methodLabel(request.method), status: statusClass(status) });
      metrics.duration.observe({ direction: 'inbound', destination: this.#destination }, Number(process.hrtime.bigint() - started) / 1e9);
      this.#logAccess(
        {
          timestamp: receivedAt.toISOString(),
          method: request.method,
          path: request.path,
          protocol: accessProtocol(request, sink),
          status,
          ...(sink.grpcStatus !== undefined ? { grpc_status: sink.grpcStatus } : {}),
          bytes_received: request.bytesReceived,
          bytes_sent: sink.bytesSent,
          duration_ms: elapsedMs(started),
          ...(sink.errorCode !== undefined ? { response_flag: sink.errorCode } : {}),
        },
        { context, trace, sampled },
      );
    }
  }

  #logAccess(
    fields: Omit<AccessEntry, 'direction' | 'source' | 'destination' | 'source_spiffe_id' | 'trace_id' | 'span_id' | 'parent_span_id'>,
    request: { context: PeerContext; trace: RequestTrace; sampled: boolean },
  ): void {
    const accessLog = this.#options.accessLog;
    if (accessLog === undefined) return;
    const { context, trace } = request;
    const { timestamp, ...exchange } = fields;
    accessLog.record(
      {
        timestamp,
        direction: 'inbound',
        source: context.source,
        destination: this.#destination,
        source_spiffe_id: context.uri,
        ...exchange,
        path: accessLog.loggedPath(exchange.path),
        trace_id: trace.traceId,
        span_id: trace.spanId,
        ...(trace.parentSpanId !== undefined ? { parent_span_id: trace.parentSpanId } : {}),
      },
      request.sampled,
    );
  }

  #reject(verdict: Extract<RequestVerdict, { allowed: false }>, request: Pick<ProxyRequest, 'method' | 'path'>, context: PeerContext): void {
    this.#options.metrics.http.denials.inc({ source: context.source, destination: this.#destination, reason: verdict.reason });
    this.#options.metrics.rejections.inc({ code: verdict.code });
    this.#rejections.warn(
      `${verdict.code}:${context.source}`,
      { code: verdict.code, source: context.source, destination: this.#destination, method: request.method, path: request.path, reason: verdict.message },
      verdict.code === 'SEALMESH_ERR_L7_REQUEST_DENIED' ? 'HTTP request denied by intention' : 'HTTP request rejected',
    );
  }

  /**
   * Replaces x-forwarded-client-cert with the verified peer: `By` is this proxy's SPIFFE ID, `Hash`
   * the SHA-256 of the peer's certificate, `URI` the peer's SPIFFE ID. A value sent by the caller is
   * dropped, so the app can trust the header.
   */
  #setClientCertHeader(headers: ProxyRequest['headers'], context: PeerContext): void {
    delete headers[XFCC_HEADER];
    const local = this.#options.localSpiffeId();
    headers[XFCC_HEADER] = `${local !== undefined ? `By=${local};` : ''}Hash=${context.certificateHash};URI=${context.uri}`;
  }

  #forward(request: ProxyRequest, sink: ResponseSink): Promise<ForwardResult> {
    const app = this.#options.app;
    if (this.#options.protocol === 'http') {
      const target = isUnixAddress(app) ? { agent: this.#appAgent, socketPath: app.path } : { agent: this.#appAgent, host: app.host, port: app.port };
      return forwardOverHttp1(target, request, sink, { responseTimeoutMs: 0 });
    }
    return forwardOverHttp2(this.#appHttp2Session(), request, sink, { responseTimeoutMs: 0 });
  }

  /** Returns the cleartext HTTP/2 session to the app, opening a new one when the last has closed. */
  #appHttp2Session(): ClientHttp2Session {
    const current = this.#appSession;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const app = this.#options.app;
    const session = isUnixAddress(app)
      ? http2Connect('http://localhost', { createConnection: () => netConnect({ path: app.path }), settings: HTTP2_SETTINGS })
      : http2Connect(`http://${app.host.includes(':') ? `[${app.host}]` : app.host}:${app.port}`, { settings: HTTP2_SETTINGS });
    widenSessionWindow(session);
    session.on('error', (error: Error) => this.#options.log.warn({ reason: error.message }, 'HTTP/2 connection to the app failed'));
    session.once('close', () => {
      if (this.#appSession === session) this.#appSession = undefined;
    });
    session.unref();
    this.#appSession = session;
    return session;
  }

  /**
   * Passes an HTTP/1.1 Upgrade request (WebSocket and others) to the app after the same checks as
   * any request, then relays bytes in both directions until either side closes.
   */
  #onUpgrade(incoming: IncomingMessage, socket: Duplex, head: Buffer): void {
    const context = this.#peers.get(socket);
    if (context === undefined) {
      socket.destroy();
      return;
    }
    const headers = endToEndHeaders(incoming.headers);
    const method = incoming.method ?? '';
    const verdict = this.#check(method, incoming.url ?? '', headers, incoming.headers.host ?? '', context);
    const requestLabels = { direction: 'inbound', source: context.source, destination: this.#destination, method: methodLabel(method) };
    if (!verdict.allowed) {
      this.#reject(verdict, { method, path: incoming.url ?? '' }, context);
      this.#options.metrics.http.requests.inc({ ...requestLabels, status: statusClass(verdict.status) });
      const body = `${verdict.message}\n`;
      const trace = traceRequest(headers, false);
      const fields = { method, path: incoming.url ?? '', protocol: 'HTTP/1.1' as const, status: verdict.status, bytes_received: 0, bytes_sent: Buffer.byteLength(body), duration_ms: 0, response_flag: verdict.code };
      this.#logAccess({ timestamp: new Date().toISOString(), ...fields }, { context, trace, sampled: false });
      socket.end(`HTTP/1.1 ${verdict.status} ${verdict.status === 403 ? 'Forbidden' : 'Bad Request'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-sealmesh-error: ${verdict.code}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    this.#options.metrics.http.requests.inc({ ...requestLabels, status: '1xx' });
    this.#setClientCertHeader(headers, context);
    const app = this.#options.app;
    const upstream: Socket = isUnixAddress(app) ? netConnect({ path: app.path }) : netConnect({ host: app.host, port: app.port });
    const exchange = { abort: () => socket.destroy() };
    this.#exchanges.set(exchange, context);
    const finish = (): void => {
      this.#exchanges.delete(exchange);
      socket.destroy();
      upstream.destroy();
    };
    upstream.once('error', (error) => {
      this.#options.log.warn({ source: context.source, destination: this.#destination, reason: error.message }, 'upgraded connection to the app failed');
      finish();
    });
    socket.once('error', finish);
    socket.once('close', finish);
    upstream.once('close', finish);
    upstream.write(serialiseRequestHead(method, verdict.path, incoming.headers.host ?? '', incoming.headers.upgrade ?? '', headers));
    if (head.length > 0) upstream.write(head);
    socket.pipe(upstream);
    upstream.pipe(socket);
  }
}

/** Writes an HTTP/1.1 Upgrade request head with the end-to-end headers and the upgrade headers. */
export function serialiseRequestHead(method: string, path: string, host: string, upgrade: string, headers: ProxyRequest['headers']): string {
  const lines = [`${method} ${path} HTTP/1.1`, `host: ${host}`, 'connection: upgrade', `upgrade: ${upgrade}`];
  for (const [name, value] of Object.entries(headers)) {
    for (const item of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${item}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}
