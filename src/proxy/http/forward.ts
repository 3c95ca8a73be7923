import type { Agent, IncomingMessage } from 'node:http';
import { request as httpRequest } from '../../node/http.ts';
import { constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders as Http2IncomingHeaders } from 'node:http2';
import { finished } from 'node:stream';
import type { ProxyRequest, ResponseSink } from './exchange.ts';
import { responseHeaders, type HeaderMap } from './headers.ts';

/** Outcome of a forwarded request, for metrics, retries and outlier detection. */
export interface ForwardResult {
  /** Status sent to the client; 0 when the exchange failed before a response. */
  status: number;
  /** The upstream refused the stream before processing it (HTTP/2 REFUSED_STREAM), so a retry is safe. */
  refused: boolean;
  /** The exchange failed after it reached the upstream; the error, when there was one. */
  error?: Error;
  /** The gateway-error response was dropped for a retry and nothing was sent to the client. */
  discarded?: boolean;
}

/** Reads and drops a response body that is not relayed, so that its stream or socket is freed. */
function discard(body: NodeJS.ReadableStream, endStream: boolean, settle: (result: ForwardResult) => void, status: number): void {
  if (!endStream) body.resume();
  settle({ status, refused: false, discarded: true });
}

export interface ForwardOptions {
  /** Time from sending the request to the response headers; 0 for none. */
  responseTimeoutMs: number;
  /**
   * Called when the response status is 502, 503 or 504, before anything is sent to the client.
   * When it returns true the response is read and dropped, and the result has `discarded` set, so
   * that the caller can retry the request on another instance.
   */
  retryGatewayError?: (status: number) => boolean;
}

const GATEWAY_ERRORS = new Set([502, 503, 504]);

class UpstreamTimeoutError extends Error {
  readonly code = 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT';
}

/** Trailers that end a gRPC response whose upstream stream failed after its headers. */
const UPSTREAM_RESET_TRAILERS = { 'grpc-status': '14', 'grpc-message': encodeURIComponent('the upstream reset the stream') };

/**
 * Copies the upstream response into the sink and settles when both ends are done. A body that
 * fails after the headers aborts the client's response, or for gRPC over HTTP/2 ends it with
 * grpc-status 14 (UNAVAILABLE) so that the client gets a status without waiting on a reset.
 */
function relayResponse(
  sink: ResponseSink,
  status: number,
  headers: HeaderMap,
  endStream: boolean,
  body: NodeJS.ReadableStream & { destroy(error?: Error): void },
  readTrailers: () => HeaderMap,
  settle: (result: ForwardResult) => void,
  grpc: boolean,
  resetError: () => Error | undefined,
): void {
  if (sink.closed || sink.terminated) {
    // The response was ended while the upstream's headers were on their way.
    if (!endStream) body.destroy();
    settle({ status, refused: false });
    return;
  }
  const out = sink.respond(status, headers, endStream);
  if (endStream) {
    settle({ status, refused: false });
    return;
  }

  body.once('end', () => sink.setTrailers(readTrailers()));
  sink.onTerminate(() => body.unpipe(out));
  // pipe with own end-of-stream handling, unlike pipeline, never destroys `out` when the body
  // fails, so the response can still be ended with trailers. An end that comes with a reset code
  // (`resetError`) counts as a failure, not as a complete body.
  body.pipe(out, { end: false });
  // Added after pipe has attached its own listener, so that no chunk is read before it.
  body.on('data', (chunk: Buffer) => (sink.bytesSent += chunk.length));

  let bodyError: Error | undefined;
  finished(body, { writable: false }, (error) => {
    const failure = error ?? resetError();
    if (failure === undefined) {
      if (!sink.terminated) out.end();
      return;
    }
    bodyError = failure;
    body.unpipe(out);
    if (grpc) sink.endWithTrailers(UPSTREAM_RESET_TRAILERS);
    else sink.abort();
    settle({ status, refused: false, error: failure });
  });
  finished(out, { readable: false }, (error) => {
    if (error !== undefined && error !== null) {
      body.destroy();
      settle({ status, refused: false, error });
      return;
    }
    settle({ status, refused: false, ...(bodyError !== undefined ? { error: bodyError } : {}) });
  });
}

/** Pipes the request body to the upstream and counts its bytes. */
function sendBody(request: ProxyRequest, destination: NodeJS.WritableStream): void {
  request.body.pipe(destination);
  request.body.on('data', (chunk: Buffer) => (request.bytesReceived += chunk.length));
}

/**
 * Sends `request` as a stream of an HTTP/2 session and relays the response, its trailers included,
 * into `sink`. Bodies stream in both directions with back-pressure and are never buffered whole.
 */
export function forwardOverHttp2(session: ClientHttp2Session, request: ProxyRequest, sink: ResponseSink, options: ForwardOptions): Promise<ForwardResult> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: ForwardResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(
        {
          ...request.headers,
          [h2.HTTP2_HEADER_METHOD]: request.method,
          [h2.HTTP2_HEADER_PATH]: request.path,
          [h2.HTTP2_HEADER_AUTHORITY]: request.authority,
          [h2.HTTP2_HEADER_SCHEME]: 'https',
          ...(request.expectContinue ? { expect: '100-continue' } : {}),
        },
        { endStream: request.bodyless },
      );
    } catch (error) {
      settle({ status: 0, refused: true, error: error as Error });
      return;
    }
    const timer =
      options.responseTimeoutMs > 0
        ? setTimeout(() => {
            stream.close(h2.NGHTTP2_CANCEL);
            settle({ status: 0, refused: false, error: new UpstreamTimeoutError(`no response within ${options.responseTimeoutMs} ms`) });
          }, options.responseTimeoutMs)
        : undefined;
    let trailers: HeaderMap = {};
    stream.on('trailers', (received: Http2IncomingHeaders) => {
      trailers = responseHeaders(received);
    });
    stream.on('continue', () => sink.writeContinue());
    stream.once('response', (headers: Http2IncomingHeaders, flags: number) => {
      clearTimeout(timer);
      const status = Number(headers[h2.HTTP2_HEADER_STATUS] ?? 502);
      const ended = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0;
      if (GATEWAY_ERRORS.has(status) && options.retryGatewayError?.(status) === true) {
        discard(stream, ended, settle, status);
        return;
      }
      const resetError = (): Error | undefined =>
        stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR ? new Error(`upstream reset the stream with HTTP/2 error code ${stream.rstCode}`) : undefined;
      relayResponse(sink, status, responseHeaders(headers), ended, stream, () => trailers, settle, request.grpc, resetError);
    });
    stream.once('close', () => {
      if (settled || stream.rstCode === h2.NGHTTP2_NO_ERROR) return;
      // A stream reset before its response: REFUSED_STREAM means the peer did not process it.
      settle({ status: 0, refused: stream.rstCode === h2.NGHTTP2_REFUSED_STREAM, error: new Error(`upstream reset the stream with HTTP/2 error code ${stream.rstCode}`) });
    });
    stream.on('error', (error: Error) => {
      if (!settled) settle({ status: 0, refused: false, error });
    });
    sink.onClose(() => {
      if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    });
    sink.onTerminate(() => {
      if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    });
    // pipe, unlike pipeline, leaves the client's request stream open when the upstream stream
    // fails, so that the proxy can still send the client an error response.
    if (!request.bodyless) sendBody(request, stream);
  });
}

/**
 * Sends `request` over HTTP/1.1 through `agent`, which owns the keep-alive connections, and relays
 * the response into `sink`.
 */
export function forwardOverHttp1(
  target: { agent: Agent; host?: string; port?: number; socketPath?: string },
  request: ProxyRequest,
  sink: ResponseSink,
  options: ForwardOptions,
): Promise<ForwardResult> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: ForwardResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const outgoing = httpRequest({
      agent: target.agent,
      ...(target.socketPath !== undefined ? { socketPath: target.socketPath } : { host: target.host, port: target.port }),
      method: request.method,
      path: request.path,
      headers: { ...request.headers, host: request.authority, ...(request.expectContinue ? { expect: '100-continue' } : {}) },
    });
    const timer =
      options.responseTimeoutMs > 0
        ? setTimeout(() => {
            outgoing.destroy(new UpstreamTimeoutError(`no response within ${options.responseTimeoutMs} ms`));
          }, options.responseTimeoutMs)
        : undefined;
    let connected = false;
    outgoing.once('socket', (socket) => {
      if (!socket.connecting) connected = true;
      else socket.once('connect', () => (connected = true));
    });
    outgoing.on('continue', () => sink.writeContinue());
    outgoing.once('response', (response: IncomingMessage) => {
      clearTimeout(timer);
      const status = response.statusCode ?? 502;
      if (GATEWAY_ERRORS.has(status) && options.retryGatewayError?.(status) === true) {
        discard(response, false, settle, status);
        return;
      }
      relayResponse(sink, status, responseHeaders(response.headers), false, response, () => responseHeaders(response.trailers), settle, false, () => undefined);
    });
    outgoing.once('error', (error: Error) => {
      // A failed connect sent nothing; any later failure may have reached the app.
      settle({ status: 0, refused: !connected, error });
    });
    sink.onClose(() => {
      if (!outgoing.destroyed && !settled) outgoing.destroy();
    });
    if (request.bodyless) outgoing.end();
    else sendBody(request, outgoing);
  });
}
