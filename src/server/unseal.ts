import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { z } from 'zod';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';
import { parseBody } from './request.ts';

/** State reported by the sealed-state control socket. */
export interface SealStatus {
  sealed: boolean;
  initialized: boolean;
  provider: string;
  /** Key shares accepted so far while sealed. */
  progress: number;
  threshold: number;
  shares: number;
}

export interface UnsealHandlers {
  status(): SealStatus;
  /** Creates the Shamir key and the store; returns the shares and the first operator token. */
  init(shares: number, threshold: number): Promise<{ shares: string[]; token: string; accessorId: string; trustDomain: string }>;
  /** Adds one key share; the server opens when the threshold is reached. */
  unseal(share: string): Promise<SealStatus>;
}

const MAX_BODY_BYTES = 16 * 1024;

const initBody = z.strictObject({
  keyShares: z.number().int().min(1).max(255),
  keyThreshold: z.number().int().min(1).max(255),
});
const unsealBody = z.strictObject({ share: z.string().min(1).max(1024) });

/**
 * The control socket of a Shamir-sealed server: a Unix domain socket, mode 0600, that serves only
 * `GET /v1/status`, `POST /v1/operator/init` and `POST /v1/operator/unseal`. It is local because
 * the server's TLS certificate is issued by the CA inside the sealed store, so no trusted HTTPS
 * listener exists until the server is unsealed, and key shares must not cross an unauthenticated
 * channel.
 */
export class UnsealSocket {
  readonly path: string;
  readonly #handlers: UnsealHandlers;
  readonly #log: Logger;
  #server: Server | undefined;

  constructor(path: string, handlers: UnsealHandlers, log: Logger) {
    this.path = path;
    this.#handlers = handlers;
    this.#log = log;
  }

  async start(): Promise<void> {
    removeStaleSocket(this.path);
    const server = createServer((request, response) => void this.#handle(request, response));
    this.#server = server;
    // The socket is created under a umask that leaves only the owner's bits, so it is never
    // reachable by other users, not even between bind and chmod.
    const previous = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.path, () => resolve());
      });
    } finally {
      process.umask(previous);
    }
    chmodSync(this.path, 0o600);
    this.#log.info({ socket: this.path }, 'sealed-state control socket listening');
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    removeStaleSocket(this.path);
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown): void => {
      response.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body)}\n`);
    };
    try {
      const path = (request.url ?? '/').split('?')[0];
      if (request.method === 'GET' && path === '/v1/status') return send(200, this.#handlers.status());
      if (request.method === 'POST' && path === '/v1/operator/init') {
        const body = parseBody(initBody, await readJson(request), 'request body');
        if (body.keyThreshold > body.keyShares) {
          throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `key threshold ${body.keyThreshold} exceeds the number of key shares ${body.keyShares}`);
        }
        const result = await this.#handlers.init(body.keyShares, body.keyThreshold);
        this.#log.info({ shares: body.keyShares, threshold: body.keyThreshold }, 'Shamir seal initialised; key shares issued');
        return send(200, result);
      }
      if (request.method === 'POST' && path === '/v1/operator/unseal') {
        const body = parseBody(unsealBody, await readJson(request), 'request body');
        return send(200, await this.#handlers.unseal(body.share));
      }
      throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `no route ${request.method} ${path} on the sealed-state socket`);
    } catch (error) {
      const failure = isSealmeshError(error) ? error : new SealmeshError('SEALMESH_ERR_INTERNAL', 'an internal error occurred; the server log has the details');
      if (failure.status >= 500) this.#log.error({ err: error, code: failure.code }, 'sealed-state request failed');
      else this.#log.warn({ code: failure.code, reason: failure.message }, 'sealed-state request rejected');
      send(failure.status, failure.toJSON());
    }
  }
}


async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new SealmeshError('SEALMESH_ERR_BODY_TOO_LARGE', `the request body exceeds ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', 'the request body is not valid JSON');
  }
}

/** Removes a leftover socket file at `path`; refuses to remove anything that is not a socket. */
function removeStaleSocket(path: string): void {
  let stats;
  try {
    stats = lstatSync(path);
  } catch {
    return;
  }
  if (!stats.isSocket()) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${path} exists and is not a socket; remove it or choose another --unseal-socket`);
  }
  unlinkSync(path);
}
