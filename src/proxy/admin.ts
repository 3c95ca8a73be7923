import type { Server } from 'node:http';
import { createServer } from '../node/http.ts';
import type { Logger } from '../log/index.ts';
import { listenUnix, type SocketPermissions, type UnixSocketListener } from '../perimeter/unix-socket.ts';
import { isUnixAddress, type SocketAddress } from './address.ts';
import type { SidecarProxy } from './proxy.ts';
import type { TokenTlsKey } from './token-key.ts';

/** Returns where the proxy's TLS private key lives, for `/status`: labels only, never the PIN. */
function tlsKeyLocation(tokenKey: TokenTlsKey | undefined): { location: 'memory' } | { location: 'pkcs11'; tokenLabel: string; keyLabel: string } {
  return tokenKey === undefined ? { location: 'memory' } : { location: 'pkcs11', tokenLabel: tokenKey.tokenLabel, keyLabel: tokenKey.keyLabel };
}

export interface AdminOptions {
  listen: SocketAddress;
  /** Owner, group and mode of the socket file when the endpoint listens on a Unix socket. */
  socketPermissions: SocketPermissions;
  proxy: SidecarProxy;
  log: Logger;
}

/**
 * The proxy's admin endpoint: `/metrics` (Prometheus), `/ready` (200 once the proxy has an SVID
 * and a snapshot) and `/status` (JSON). It binds to the --admin address (loopback or a Unix socket in every documented setup) and serves no
 * secret: no key, token or private certificate part is reachable through it.
 */
export class AdminServer {
  readonly #options: AdminOptions;
  #server: Server | undefined;
  #unixSocket: UnixSocketListener | undefined;
  #port: number | undefined;

  constructor(options: AdminOptions) {
    this.#options = options;
  }

  /** The bound TCP port; undefined for a Unix socket. */
  get port(): number | undefined {
    return this.#port;
  }

  async start(): Promise<void> {
    const { proxy } = this.#options;
    const server = createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      if (request.method !== 'GET') {
        response.writeHead(405, { allow: 'GET' }).end();
        return;
      }
      if (path === '/metrics') {
        const svid = proxy.svid;
        if (svid !== undefined) proxy.metrics.svidExpirySeconds.set((svid.notAfter.getTime() - Date.now()) / 1000);
        proxy.metrics.registry.metrics().then(
          (text) => response.writeHead(200, { 'content-type': proxy.metrics.registry.contentType }).end(text),
          (error: unknown) => {
            this.#options.log.error({ err: error }, 'failed to render metrics');
            response.writeHead(500).end();
          },
        );
        return;
      }
      if (path === '/ready') {
        const ready = proxy.svid !== undefined && proxy.snapshotVersion !== undefined;
        response.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
        return;
      }
      if (path === '/status') {
        const svid = proxy.svid;
        const body = {
          service: `${proxy.identity.namespace}/${proxy.identity.service}`,
          instanceId: proxy.instanceId,
          spiffeId: svid?.spiffeId,
          svidSerial: svid?.serial,
          svidNotAfter: svid?.notAfter.toISOString(),
          snapshotVersion: proxy.snapshotVersion,
          controlPlane: proxy.controlPlane,
          appHealth: proxy.appHealth,
          attestation: proxy.attestation,
          tlsKey: tlsKeyLocation(proxy.options.tokenKey),
          manifest: proxy.enforcedManifest === undefined ? null : { version: proxy.enforcedManifest.version, digest: proxy.enforcedManifest.digest, genesisDigest: proxy.enforcedManifest.genesisDigest },
        };
        response.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(body)}\n`);
        return;
      }
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    });
    this.#server = server;
    const listen = this.#options.listen;
    if (isUnixAddress(listen)) {
      this.#unixSocket = await listenUnix(server, listen.path, this.#options.socketPermissions);
      this.#options.log.info({ path: this.#unixSocket.path }, 'admin endpoint started');
      return;
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen.port, listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    this.#port = typeof address === 'object' && address !== null ? address.port : listen.port;
    this.#options.log.info({ port: this.#port }, 'admin endpoint started');
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await this.#unixSocket?.remove();
  }
}
