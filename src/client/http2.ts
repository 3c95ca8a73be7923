import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { TLS_CLIENT_OPTIONS } from '../tls/index.ts';

/** A response whose body is still to be read. */
export interface ApiResponse {
  statusCode: number;
  contentType: string | undefined;
  body: Readable;
}

/** Interval of the HTTP/2 PING that checks an open session's peer. */
const PING_INTERVAL_MS = 15_000;
/** A session whose PING has no acknowledgement after this long is destroyed. */
const PING_TIMEOUT_MS = 10_000;

/** Raised when a request's stream has no activity for its timeout. */
export class RequestTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
}

/**
 * One persistent HTTP/2 connection to the control plane, authenticated with the client certificate
 * of a TLS context, that carries each request as a stream of its own. A proxy sends its watch
 * stream, renewals, health reports and registrations over it, so that they cost no TLS handshake
 * each.
 *
 * The session opens at the first request and again at the first request after it closed, with the
 * context that `secureContext` returns then. `rotate` moves later requests to a new session, which
 * a proxy does after a renewal so that its calls authenticate with the new SVID.
 */
export class ControlConnection {
  readonly url: string;
  readonly #secureContext: () => SecureContext;
  #session: ClientHttp2Session | undefined;
  #closed = false;
  #sessionsOpened = 0;

  readonly #ping: { intervalMs: number; timeoutMs: number };

  /** `ping` sets the PING interval and timeout for tests. Proxies use 15 s and 10 s. */
  constructor(url: string, secureContext: () => SecureContext, ping = { intervalMs: PING_INTERVAL_MS, timeoutMs: PING_TIMEOUT_MS }) {
    this.url = url;
    this.#secureContext = secureContext;
    this.#ping = ping;
  }

  /**
   * Number of HTTP/2 sessions opened so far, each with its own TLS handshake. An attempt that fails
   * before the handshake completes, such as one refused while the server is down, is not counted.
   */
  get sessionsOpened(): number {
    return this.#sessionsOpened;
  }

  /**
   * Sends one request and resolves once the response headers arrive. A connection failure rejects
   * with the error of the session, such as ECONNREFUSED or a certificate verification code.
   */
  request(method: string, path: string, headers: Record<string, string>, payload: Buffer | undefined, timeoutMs: number): Promise<ApiResponse> {
    if (this.#closed) return Promise.reject(new Error('the control-plane connection is closed'));
    const session = this.#currentSession();
    return new Promise((resolve, reject) => {
      let sessionError: Error | undefined;
      const onSessionError = (error: Error): void => {
        sessionError = error;
      };
      session.once('error', onSessionError);
      const stream = session.request({ ':method': method, ':path': path, ...headers }, { endStream: payload === undefined });
      let timedOut = false;
      if (timeoutMs > 0) {
        stream.setTimeout(timeoutMs, () => {
          timedOut = true;
          stream.close(constants.NGHTTP2_CANCEL);
          // A request without a response suggests a dead connection, and the PING would notice it
          // only later, so later requests go over a new one.
          if (this.#session === session) this.rotate();
        });
      }
      stream.once('response', (responseHeaders: IncomingHttpHeaders) => {
        session.off('error', onSessionError);
        const contentType = responseHeaders['content-type'];
        resolve({ statusCode: Number(responseHeaders[':status'] ?? 0), contentType: typeof contentType === 'string' ? contentType : undefined, body: stream });
      });
      stream.once('error', (error: Error & { code?: string }) => {
        session.off('error', onSessionError);
        // A stream that a failed session cancels carries a generic code. The session's error,
        // attached as its cause, names the reason.
        const cause = error.code === 'ERR_HTTP2_STREAM_CANCEL' && error.cause instanceof Error ? error.cause : undefined;
        reject(sessionError ?? cause ?? error);
      });
      stream.once('close', () => {
        session.off('error', onSessionError);
        if (timedOut) reject(new RequestTimeoutError(`no response within ${timeoutMs} ms`));
        else reject(sessionError ?? new Error(`the stream closed before a response (HTTP/2 code ${stream.rstCode ?? 'none'})`));
      });
      if (payload !== undefined) stream.end(payload);
    });
  }

  /**
   * Sends later requests over a new session. Streams open on the current one, such as a watch
   * stream, keep running until they end, and the session closes after the last.
   */
  rotate(): void {
    const session = this.#session;
    this.#session = undefined;
    session?.close();
  }

  /** Closes the connection for good; open streams finish first. */
  close(): void {
    this.#closed = true;
    this.rotate();
  }

  #currentSession(): ClientHttp2Session {
    const current = this.#session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const session = connect(this.url, { ...TLS_CLIENT_OPTIONS, secureContext: this.#secureContext() });
    session.once('connect', () => {
      this.#sessionsOpened += 1;
    });
    // A session without open streams must not keep the process running; a pending request keeps
    // it running with its own timer.
    session.unref();
    const forget = (): void => {
      if (this.#session === session) this.#session = undefined;
    };
    session.once('close', forget);
    session.once('goaway', forget);
    // A peer that vanished without closing the TCP connection leaves the session open with no
    // error, and the watch stream and every request on it would hang. A PING that is not
    // acknowledged in time destroys the session, so that its streams fail and the next request
    // opens a new one.
    const keepalive = setInterval(() => {
      if (session.destroyed || session.closed || session.connecting) return;
      const timer = setTimeout(() => {
        session.destroy(new Error(`the control plane did not acknowledge an HTTP/2 PING within ${this.#ping.timeoutMs} ms`));
      }, this.#ping.timeoutMs);
      timer.unref();
      const sent = session.ping((error) => {
        clearTimeout(timer);
        if (error !== null) session.destroy(error);
      });
      if (!sent) clearTimeout(timer);
    }, this.#ping.intervalMs);
    keepalive.unref();
    session.once('close', () => clearInterval(keepalive));
    // Errors reach the pending requests through their streams; this listener keeps an unhandled
    // session error from ending the process.
    session.on('error', forget);
    this.#session = session;
    return session;
  }
}
