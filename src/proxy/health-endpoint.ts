import type { Server } from 'node:http';
import { createServer } from '../node/http.ts';
import type { Logger } from '../log/index.ts';
import type { HostPort } from './address.ts';
import type { HealthReport } from './app-monitor.ts';

export interface HealthEndpointOptions {
  listen: HostPort;
  /** Checks the app and returns the resulting health; the proxy passes AppMonitor.checkHealth. */
  check: () => Promise<HealthReport>;
  log: Logger;
}

/**
 * Plain HTTP endpoint for the orchestrator's prober: `GET /healthz` checks the app on the prober's
 * behalf and returns 200 `{"status":"passing"}` or 503 `{"status":"critical","reason":...}`. The
 * prober never needs a path into the app, so no intention is opened for it. Nothing else is
 * served, and the body carries only the status and, when the app is down, the reason.
 */
export class HealthEndpoint {
  readonly #options: HealthEndpointOptions;
  #server: Server | undefined;
  #port = 0;

  constructor(options: HealthEndpointOptions) {
    this.#options = options;
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<void> {
    const server = createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      if (path !== '/healthz') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      if (request.method !== 'GET') {
        response.writeHead(405, { allow: 'GET' }).end();
        return;
      }
      this.#options.check().then(
        (health) => {
          const body = health.status === 'passing' ? { status: 'passing' } : { status: 'critical', reason: health.output };
          response.writeHead(health.status === 'passing' ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`);
        },
        (error: unknown) => {
          this.#options.log.error({ err: error }, 'health check failed unexpectedly');
          response.writeHead(500, { 'content-type': 'application/json' }).end('{"status":"critical","reason":"internal error"}\n');
        },
      );
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#options.listen.port, this.#options.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    this.#port = typeof address === 'object' && address !== null ? address.port : this.#options.listen.port;
    this.#options.log.info({ port: this.#port }, 'health endpoint started');
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
