import type { ServerResponse } from 'node:http';
import { constants as h2, type ServerHttp2Stream } from 'node:http2';
import type { Readable, Writable } from 'node:stream';
import { endToEndHeaders, type HeaderMap } from './headers.ts';

/** One request as the proxy forwards it, whichever HTTP version carried it in. */
export interface ProxyRequest {
  method: string;
  /** Path and query as they are forwarded. */
  path: string;
  authority: string;
  /** End-to-end headers; see `endToEndHeaders`. */
  headers: HeaderMap;
  body: Readable;
  /** True when the client sent `expect: 100-continue` and waits for a 100 before its body. */
  expectContinue: boolean;
  /** True for a gRPC call (content type application/grpc), whose errors travel as grpc-status. */
  grpc: boolean;
  /** True when the request has no body, so it can be sent again without having been buffered. */
  bodyless: boolean;
  /** Request body bytes read from the client so far, for the access log. */
  bytesReceived: number;
}

/** Methods that RFC 9110 §9.2.2 defines as idempotent. */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT_METHODS.has(method);
}

/** True when an HTTP/1.1 request announces no body: no transfer-encoding and no or a zero content-length. */
export function http1Bodyless(headers: import('node:http').IncomingHttpHeaders): boolean {
  return headers['transfer-encoding'] === undefined && (headers['content-length'] === undefined || headers['content-length'] === '0');
}

/** Reads a request that arrived as an HTTP/2 stream, with `fallbackAuthority` when it names no authority. */
export function http2Request(stream: ServerHttp2Stream, headers: import('node:http2').IncomingHttpHeaders, fallbackAuthority: string): ProxyRequest {
  return {
    method: String(headers[h2.HTTP2_HEADER_METHOD] ?? ''),
    path: String(headers[h2.HTTP2_HEADER_PATH] ?? ''),
    authority: String(headers[h2.HTTP2_HEADER_AUTHORITY] ?? headers.host ?? fallbackAuthority),
    headers: endToEndHeaders(headers),
    body: stream,
    expectContinue: String(headers.expect ?? '').toLowerCase() === '100-continue',
    grpc: String(headers['content-type'] ?? '').startsWith('application/grpc'),
    bodyless: stream.endAfterHeaders,
    bytesReceived: 0,
  };
}

/**
 * Reads a request that arrived over HTTP/1.1, with `fallbackAuthority` when it has no host header.
 * `expect` is removed from the headers, because `expectContinue` carries it.
 */
export function http1Request(incoming: import('node:http').IncomingMessage, expectContinue: boolean, fallbackAuthority: string): ProxyRequest {
  const request: ProxyRequest = {
    method: incoming.method ?? '',
    path: incoming.url ?? '',
    authority: incoming.headers.host ?? fallbackAuthority,
    headers: endToEndHeaders(incoming.headers),
    body: incoming,
    expectContinue,
    grpc: false,
    bodyless: http1Bodyless(incoming.headers),
    bytesReceived: 0,
  };
  delete request.headers.expect;
  return request;
}

/**
 * The response side of an exchange, written by the forwarder. It hides whether the client speaks
 * HTTP/1.1 (a ServerResponse) or HTTP/2 (a server stream).
 */
export interface ResponseSink {
  readonly headersSent: boolean;
  readonly closed: boolean;
  /** Response body bytes written to the client, counted by the forwarder and local replies. */
  bytesSent: number;
  /** grpc-status of the response headers or trailers sent, when there was one. */
  readonly grpcStatus: number | undefined;
  /** Error code of a response the proxy generated, or of a stream it reset. */
  errorCode: string | undefined;
  /** Passes an upstream 100 Continue on to the client. */
  writeContinue(): void;
  /** Sends the status and headers; with `endStream` the response has no body and no trailers. */
  respond(status: number, headers: HeaderMap, endStream: boolean): Writable;
  /** Trailers to send once the body ends; HTTP/1.1 sends them only in a chunked response. */
  setTrailers(trailers: HeaderMap): void;
  /** Aborts the response: resets the stream or destroys the connection. */
  abort(): void;
  /**
   * Ends a gRPC response early with `trailers` (grpc-status and grpc-message) and stops relaying
   * the upstream body: a trailers-only response before the headers, or trailers after the body
   * sent so far. HTTP/1.1 cannot end a response that way, so there it aborts.
   */
  endWithTrailers(trailers: HeaderMap): void;
  /** True once `endWithTrailers` has ended the response. */
  readonly terminated: boolean;
  /** Registers a listener that `endWithTrailers` calls before it ends the response. */
  onTerminate(listener: () => void): void;
  onClose(listener: () => void): void;
}

/** Reads grpc-status from response headers or trailers. */
function grpcStatusOf(headers: HeaderMap): number | undefined {
  const value = headers['grpc-status'];
  if (typeof value !== 'string' || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

export class Http1Sink implements ResponseSink {
  readonly #response: ServerResponse;
  bytesSent = 0;
  errorCode: string | undefined;
  grpcStatus: number | undefined;

  constructor(response: ServerResponse) {
    this.#response = response;
  }

  get headersSent(): boolean {
    return this.#response.headersSent;
  }

  get closed(): boolean {
    return this.#response.destroyed || this.#response.writableEnded;
  }

  writeContinue(): void {
    this.#response.writeContinue();
  }

  respond(status: number, headers: HeaderMap, endStream: boolean): Writable {
    this.grpcStatus = grpcStatusOf(headers) ?? this.grpcStatus;
    this.#response.writeHead(status, headers);
    if (endStream) this.#response.end();
    return this.#response;
  }

  setTrailers(trailers: HeaderMap): void {
    this.grpcStatus = grpcStatusOf(trailers) ?? this.grpcStatus;
    if (Object.keys(trailers).length > 0 && !this.#response.writableEnded) this.#response.addTrailers(trailers);
  }

  abort(): void {
    this.#response.destroy();
  }

  readonly terminated = false;

  endWithTrailers(): void {
    this.abort();
  }

  onTerminate(): void {
    // An HTTP/1.1 response is only ever aborted, which the forwarder already watches.
  }

  onClose(listener: () => void): void {
    this.#response.once('close', listener);
  }
}

export class Http2Sink implements ResponseSink {
  readonly #stream: ServerHttp2Stream;
  #trailers: HeaderMap = {};
  #terminated = false;
  readonly #terminateListeners: Array<() => void> = [];
  bytesSent = 0;
  errorCode: string | undefined;
  grpcStatus: number | undefined;

  constructor(stream: ServerHttp2Stream) {
    this.#stream = stream;
    stream.on('wantTrailers', () => {
      // An empty trailer block is still a valid HEADERS frame that ends the stream.
      stream.sendTrailers(this.#trailers);
    });
  }

  get headersSent(): boolean {
    return this.#stream.headersSent;
  }

  get closed(): boolean {
    return this.#stream.closed || this.#stream.destroyed;
  }

  writeContinue(): void {
    if (!this.#stream.headersSent && !this.closed) this.#stream.additionalHeaders({ [h2.HTTP2_HEADER_STATUS]: 100 });
  }

  respond(status: number, headers: HeaderMap, endStream: boolean): Writable {
    this.grpcStatus = grpcStatusOf(headers) ?? this.grpcStatus;
    this.#stream.respond({ ...headers, [h2.HTTP2_HEADER_STATUS]: status }, endStream ? { endStream: true } : { waitForTrailers: true });
    return this.#stream;
  }

  setTrailers(trailers: HeaderMap): void {
    if (this.#terminated) return;
    this.grpcStatus = grpcStatusOf(trailers) ?? this.grpcStatus;
    this.#trailers = trailers;
  }

  abort(): void {
    // A response ended with trailers must not be reset afterwards, or the client may lose them.
    if (!this.closed && !this.#terminated) this.#stream.close(h2.NGHTTP2_INTERNAL_ERROR);
  }

  get terminated(): boolean {
    return this.#terminated;
  }

  /**
   * Ends the stream with a HEADERS frame rather than RST_STREAM. In a test on Node 24.21 an
   * RST_STREAM on a proxy-to-proxy TLS session did not reach the peer until the session closed,
   * while trailers follow the body written so far.
   */
  endWithTrailers(trailers: HeaderMap): void {
    if (this.closed || this.#terminated) return;
    if (!this.headersSent) {
      this.respond(200, { 'content-type': 'application/grpc', ...trailers }, true);
      this.#terminated = true;
      for (const listener of this.#terminateListeners) listener();
      return;
    }
    this.#trailers = trailers;
    this.grpcStatus = grpcStatusOf(trailers) ?? this.grpcStatus;
    this.#terminated = true;
    for (const listener of this.#terminateListeners) listener();
    this.#stream.end();
  }

  onTerminate(listener: () => void): void {
    this.#terminateListeners.push(listener);
  }

  onClose(listener: () => void): void {
    this.#stream.once('close', listener);
  }
}

/** gRPC status codes the proxy sends itself (grpc/doc/statuscodes.md). */
export const GRPC_STATUS = { PERMISSION_DENIED: 7, UNAVAILABLE: 14, DEADLINE_EXCEEDED: 4, INVALID_ARGUMENT: 3, INTERNAL: 13, RESOURCE_EXHAUSTED: 8 } as const;

/**
 * Sends a response generated by the proxy: a plain-text body with the error code, or for gRPC a
 * trailers-only response with grpc-status and grpc-message.
 */
export function sendLocalReply(sink: ResponseSink, request: Pick<ProxyRequest, 'grpc'>, reply: { status: number; code: string; message: string; grpcStatus: number }): void {
  sink.errorCode = reply.code;
  if (sink.headersSent || sink.closed) {
    sink.abort();
    return;
  }
  if (request.grpc) {
    sink.respond(200, { 'content-type': 'application/grpc', 'grpc-status': String(reply.grpcStatus), 'grpc-message': encodeURIComponent(reply.message), 'x-sealmesh-error': reply.code }, true);
    return;
  }
  const body = `${reply.message}\n`;
  sink.bytesSent += Buffer.byteLength(body);
  const out = sink.respond(reply.status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'x-sealmesh-error': reply.code }, false);
  out.end(body);
}
