import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { RejectionLog, type Logger } from '../log/index.ts';
import { spiffeIdFromPeerCertificate } from '../pki/index.ts';
import type { Endpoint } from '../server/index.ts';
import type { Counter, Gauge } from 'prom-client';
import type { ProxyMetrics } from './metrics.ts';
import { DEFAULT_SOCKET_MODE, listenUnix, type SocketPermissions, type UnixSocketListener } from '../perimeter/unix-socket.ts';
import { isUnixAddress, type SocketAddress, type UpstreamSpec } from './address.ts';
import { relay } from './relay.ts';
import { PeerSessionCache } from './tls-sessions.ts';

/** A dial to an upstream instance that has not completed its TLS handshake by then fails. */
const CONNECT_TIMEOUT_MS = 5_000;
/** Instances tried for one connection before the client's connection is closed. */
const MAX_CONNECT_ATTEMPTS = 3;

export interface OutboundOptions {
  upstream: UpstreamSpec;
  trustDomain: () => string;
  /** Healthy endpoints of the upstream from the current snapshot. */
  endpoints: () => readonly Endpoint[];
  /** TLS context with this proxy's current SVID and the trust bundle. */
  secureContext: () => SecureContext | undefined;
  /** Owner, group and mode of the listener's socket file when it listens on a Unix socket; mode 0600 when absent. */
  socketPermissions?: SocketPermissions;
  log: Logger;
  metrics: ProxyMetrics;
}

/**
 * A loopback TCP or Unix socket listener for one upstream service. Each plaintext connection from
 * the app is carried over mTLS to a healthy instance of the upstream, chosen round robin, and only
 * after the instance has proven that its SVID carries the upstream's SPIFFE ID.
 */
export class OutboundListener {
  readonly #options: OutboundOptions;
  readonly #connections = new Set<Socket>();
  readonly #rejections: RejectionLog;
  #server: NetServer | undefined;
  #unixSocket: UnixSocketListener | undefined;
  #next = 0;
  /** Sessions of verified upstream instances, resumed to skip the certificate exchange. */
  readonly #sessions = new PeerSessionCache();

  /** Labelled metric children, resolved once instead of on every connection. */
  readonly #activeCount: Gauge.Internal<'direction'>;
  readonly #connectedCount: Counter.Internal;
  readonly #resumedCount: Counter.Internal;

  constructor(options: OutboundOptions) {
    this.#options = options;
    this.#activeCount = options.metrics.activeConnections.labels('outbound');
    this.#connectedCount = options.metrics.outboundConnections.labels(options.upstream.service, 'connected');
    this.#resumedCount = options.metrics.resumedSessions.labels(options.upstream.service);
    this.#rejections = new RejectionLog(options.log);
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  /** Starts a TCP listener and returns its port; `listen` also takes a Unix socket. */
  async start(): Promise<number> {
    const address = await this.listen();
    if (isUnixAddress(address)) throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `upstream ${this.#options.upstream.service} listens on a Unix socket, which has no port`);
    return address.port;
  }

  /** Starts listening and returns the bound address: the real port for TCP port 0, the resolved path for a Unix socket. */
  async listen(): Promise<SocketAddress> {
    const server = createNetServer({ noDelay: true, pauseOnConnect: true }, (client) => this.#accept(client));
    this.#server = server;
    const listen = this.#options.upstream.listen;
    if (isUnixAddress(listen)) {
      this.#unixSocket = await listenUnix(server, listen.path, this.#options.socketPermissions ?? { mode: DEFAULT_SOCKET_MODE });
      return { path: this.#unixSocket.path };
    }
    const { host, port } = listen;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    return { host, port: typeof address === 'object' && address !== null ? address.port : port };
  }

  /** Stops accepting new connections; established ones continue. */
  stopAccepting(): void {
    this.#server?.close();
  }

  /**
   * Removes the Unix socket file after `stopAccepting`. Closing the server already unlinks it
   * (libuv does so for a listening pipe), so this covers a server that failed before closing.
   */
  async removeSocket(): Promise<void> {
    await this.#unixSocket?.remove();
  }

  destroyAll(): void {
    for (const socket of this.#connections) socket.destroy();
  }

  #accept(client: Socket): void {
    this.#connections.add(client);
    this.#activeCount.inc();
    client.once('close', () => {
      this.#connections.delete(client);
      this.#activeCount.dec();
    });
    client.on('error', () => client.destroy());
    this.#dial(client, 1);
  }

  /** Returns the next endpoint in round-robin order, or undefined when the upstream has none. */
  #pick(): Endpoint | undefined {
    const endpoints = this.#options.endpoints();
    if (endpoints.length === 0) return undefined;
    const endpoint = endpoints[this.#next % endpoints.length];
    this.#next = (this.#next + 1) % 1_000_000_007;
    return endpoint;
  }

  #dial(client: Socket, attempt: number): void {
    const upstream = this.#options.upstream.service;
    const endpoint = this.#pick();
    const secureContext = this.#options.secureContext();
    if (endpoint === undefined || secureContext === undefined) {
      const code = endpoint === undefined ? 'SEALMESH_ERR_NO_HEALTHY_ENDPOINT' : 'SEALMESH_ERR_ENROLLMENT_FAILED';
      this.#options.metrics.outboundConnections.inc({ upstream, result: 'no_endpoint' });
      this.#options.metrics.rejections.inc({ code });
      this.#rejections.warn(code, { code, upstream }, endpoint === undefined ? 'upstream has no healthy instance; connection closed' : 'no SVID yet; connection closed');
      client.destroy();
      return;
    }
    const expected = { namespace: this.#options.upstream.namespace, service: this.#options.upstream.name };
    const trustDomain = this.#options.trustDomain();
    const sessionKey = `${endpoint.instanceId}@${endpoint.address}:${endpoint.port}`;
    const session = this.#sessions.get(sessionKey, secureContext, upstream);
    /** notAfter of the certificate that passed the identity check; unknown on a resumed connection. */
    let verifiedNotAfter: number | undefined;
    const remote: TLSSocket = tlsConnect({
      host: endpoint.address,
      port: endpoint.port,
      secureContext,
      rejectUnauthorized: true,
      ...(session !== undefined ? { session } : {}),
      // Replaces hostname verification: the server must present the upstream's SPIFFE ID, so no
      // other mesh member can stand in for it even with a valid SVID of its own.
      checkServerIdentity: (_host: string, certificate: PeerCertificate): Error | undefined => {
        try {
          const peer = spiffeIdFromPeerCertificate(certificate, trustDomain);
          if (peer.namespace === expected.namespace && peer.service === expected.service) {
            verifiedNotAfter = Date.parse(certificate.valid_to);
            return undefined;
          }
          return new SealmeshError('SEALMESH_ERR_PEER_IDENTITY_MISMATCH', `instance ${endpoint.instanceId} presented an SVID for ${peer.namespace}/${peer.service}, expected ${upstream}`);
        } catch (error) {
          return error as Error;
        }
      },
    });
    remote.setNoDelay(true);
    // Node calls checkServerIdentity only in a full handshake, so a session is stored only from a
    // connection that passed it or resumed a session that had.
    remote.on('session', (ticket: Buffer) => {
      if (remote.authorized && (verifiedNotAfter !== undefined || remote.isSessionReused())) {
        this.#sessions.set(sessionKey, secureContext, upstream, ticket, verifiedNotAfter);
      }
    });
    remote.setTimeout(CONNECT_TIMEOUT_MS, () => remote.destroy(new Error(`no TLS handshake within ${CONNECT_TIMEOUT_MS} ms`)));
    const onConnectError = (error: Error & { code?: string }): void => {
      const code = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_SERVER_UNREACHABLE';
      this.#options.metrics.outboundConnections.inc({ upstream, result: 'failed' });
      if (isSealmeshError(error)) this.#options.metrics.rejections.inc({ code });
      this.#rejections.warn(`dial:${code}`, { upstream, instance: endpoint.instanceId, attempt, reason: error.code ?? error.message }, 'connection to an upstream instance failed');
      remote.destroy();
      this.#sessions.delete(sessionKey);
      if (attempt < MAX_CONNECT_ATTEMPTS && !client.destroyed) this.#dial(client, attempt + 1);
      else client.destroy();
    };
    remote.once('error', onConnectError);
    remote.once('secureConnect', () => {
      remote.setTimeout(0);
      remote.off('error', onConnectError);
      if (client.destroyed) {
        remote.destroy();
        return;
      }
      this.#connectedCount.inc();
      if (remote.isSessionReused()) this.#resumedCount.inc();
      remote.once('error', () => client.destroy());
      remote.once('close', () => client.destroy());
      client.once('close', () => remote.destroy());
      relay(client, remote);
      client.resume();
    });
  }
}
