import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { SealmeshError } from '../../errors/index.ts';

/** Largest collateral response accepted; a PCK CRL of a large platform CA stays far below it. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;

export interface FetchOptions {
  /** PEM roots for an HTTPS caching service; the system roots when absent. */
  ca?: string[];
  timeoutMs?: number;
}

/** GETs `url` and returns the body and the lowercase response headers; any status but 200 fails. */
export function fetchDocument(url: string, options: FetchOptions = {}): Promise<{ body: Buffer; headers: Record<string, string> }> {
  const target = new URL(url);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const unavailable = (reason: string, cause?: unknown): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE', `cannot fetch collateral from ${url}: ${reason}`, { cause });
  return new Promise((resolve, reject) => {
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(target, { method: 'GET', agent: false, timeout: timeoutMs, ...(target.protocol === 'https:' && options.ca !== undefined ? { ca: options.ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          res.destroy();
          reject(unavailable(`the response exceeds ${MAX_RESPONSE_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (error) => reject(unavailable(error.message, error)));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(unavailable(`HTTP status ${res.statusCode ?? 0}`));
          return;
        }
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(res.headers)) {
          if (typeof value === 'string') headers[name.toLowerCase()] = value;
        }
        resolve({ body: Buffer.concat(chunks), headers });
      });
    });
    req.once('timeout', () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    req.once('error', (error: NodeJS.ErrnoException) => reject(unavailable(error.code ?? error.message, error)));
    req.end();
  });
}
