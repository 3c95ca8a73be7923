import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { isErrorCode, SealmeshError } from '../errors/index.ts';
import { TLS_CLIENT_OPTIONS } from '../tls/index.ts';
import type { ApiResponse, ControlConnection } from './http2.ts';

export { ControlConnection } from './http2.ts';

export interface ApiClientOptions {
  /** Base URL of the control plane, such as `https://127.0.0.1:8501`. */
  url: string;
  /** PEM certificates that the server's certificate must chain to. */
  ca?: string | string[];
  /** ACL token sent as a bearer token. */
  token?: string;
  /** A TLS context with the caller's SVID, for the endpoints that proxies call over mTLS. */
  secureContext?: SecureContext;
  /**
   * A persistent HTTP/2 connection to send every request over, in place of a new HTTPS/1.1
   * connection per request. Its own TLS context applies, so `ca` and `secureContext` are not used.
   */
  connection?: ControlConnection;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** OpenSSL and Node codes of a server certificate that failed verification, as opposed to an unreachable server. */
const CERTIFICATE_ERRORS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/**
 * The HTTPS JSON client of the control-plane API, used by the CLI and the proxy. Without a
 * `connection` each request opens its own HTTP/1.1 connection. Errors returned by the server are
 * raised as SealmeshError with the server's code; a connection failure is raised as
 * SEALMESH_ERR_SERVER_UNREACHABLE.
 */
export class ApiClient {
  readonly options: ApiClientOptions;

  constructor(options: ApiClientOptions) {
    this.options = options;
  }

  /** Returns a client for the same server with another TLS context or token. */
  with(change: Partial<ApiClientOptions>): ApiClient {
    return new ApiClient({ ...this.options, ...change });
  }

  async get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  async put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  async delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.#send(method, path, body);
    const text = await readBody(response.body);
    let parsed: unknown;
    try {
      parsed = text.length === 0 ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const status = response.statusCode;
    if (status >= 200 && status < 300) {
      if (response.contentType?.startsWith('application/json') === true) return parsed as T;
      return text as T;
    }
    throw errorFromResponse(status, parsed, `${method} ${path}`);
  }

  /** Opens a streaming GET and resolves with the response body once its status is known. */
  async stream(path: string): Promise<Readable> {
    const response = await this.#send('GET', path, undefined, 0);
    const status = response.statusCode;
    if (status !== 200) {
      const text = await readBody(response.body);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      throw errorFromResponse(status, parsed, `GET ${path}`);
    }
    return response.body;
  }

  async #send(method: string, path: string, body: unknown, timeoutMs = this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS): Promise<ApiResponse> {
    const url = new URL(path, this.options.url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    const connection = this.options.connection;
    if (connection !== undefined) {
      try {
        return await connection.request(method, url.pathname + url.search, headers, payload, timeoutMs);
      } catch (error) {
        throw this.#connectionError(error as Error & { code?: string });
      }
    }
    return new Promise((resolve, reject) => {
      const req = httpsRequest(url, {
        method,
        headers,
        ...TLS_CLIENT_OPTIONS,
        ...(this.options.secureContext !== undefined ? { secureContext: this.options.secureContext } : { ca: this.options.ca }),
        agent: false,
        timeout: timeoutMs > 0 ? timeoutMs : undefined,
      });
      req.once('response', (response) => {
        const contentType = response.headers['content-type'];
        resolve({ statusCode: response.statusCode ?? 0, contentType, body: response });
      });
      req.once('timeout', () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
      req.once('error', (error: Error & { code?: string }) => reject(this.#connectionError(error)));
      req.end(payload);
    });
  }

  /** Maps a failure to reach or verify the server to a SealmeshError. */
  #connectionError(error: Error & { code?: string }): SealmeshError {
    if (error.code !== undefined && CERTIFICATE_ERRORS.has(error.code)) {
      return new SealmeshError(
        'SEALMESH_ERR_PEER_CERT_UNTRUSTED',
        `the server at ${this.options.url} presented a certificate that does not verify (${error.code}); check that --ca-file/SEALMESH_CACERT is this cluster's trust-bundle.pem`,
        { cause: error },
      );
    }
    return new SealmeshError(
      'SEALMESH_ERR_SERVER_UNREACHABLE',
      `cannot reach the sealmesh server at ${this.options.url}: ${error.code ?? error.message}; check --addr/SEALMESH_ADDR` +
        (error.code === 'ECONNREFUSED' ? ', and whether a Shamir-sealed server waits for key shares (`sealmesh operator seal-status`)' : ''),
      { cause: error },
    );
  }
}

async function readBody(response: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response) {
    size += (chunk as Buffer).length;
    if (size > MAX_RESPONSE_BYTES) {
      response.destroy();
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `the server response exceeds ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function errorFromResponse(status: number, body: unknown, what: string): SealmeshError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (error !== undefined && isErrorCode(error.code) && typeof error.message === 'string') {
    return new SealmeshError(error.code, error.message);
  }
  return new SealmeshError('SEALMESH_ERR_INTERNAL', `${what} failed with HTTP status ${status}`);
}
