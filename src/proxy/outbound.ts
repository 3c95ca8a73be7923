import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { RejectionLog, type Logger } from '../log/index.ts';
import { spiffeIdFromPeerCertificate } from '../pki/peer.ts';
import type { Endpoint } from '../server/index.ts';
import type { Counter, Gauge } from 'prom-client';
import type { ProxyMetrics } from './metrics.ts';
import { DEFAULT_SOCKET_MODE, listenUnix, type SocketPermissions, type UnixSocketListener } from '../perimeter/unix-socket.ts';
import { isUnixAddress, type SocketAddress, type UpstreamSpec } from './address.ts';
import type { OutboundHttp } from './http/outbound-http.ts';
import type { ServiceProtocol } from './http/protocol.ts';
import { BufferedReader, closeAfterFlush, relay } from './relay.ts';
import { onPeerCertificateExpiry } from './cert-expiry.ts';
import { PeerSessionCache } from './tls-sessions.ts';
import { DEFAULT_TRAFFIC_SETTINGS, UpstreamTraffic, type Admission } from './traffic/index.ts';

/** One client connection on its way to an upstream instance, across its retries. */
interface TcpDial {
  client: Socket;
  admission: Admission;
  /** Try number, from 1. */
  attempt: number;
  /** Instances tried so far; a retry prefers another. */
  tried: Set<string>;
  /** Ends the retry's hold on the retry budget once this try ends; absent on the first try. */
  releaseRetry?: () => void;
}

export interface OutboundOptions {
  upstream: UpstreamSpec;
  trustDomain: () => string;
  /** Healthy endpoints of the upstream from the current snapshot. */
  endpoints: () => readonly Endpoint[];
  /**
   * Circuit breaking, instance choice, outlier detection and retries of the upstream, over
   * `endpoints`; one with the default settings when absent.
   */
  traffic?: UpstreamTraffic;
  /** TLS context with this proxy's current SVID and the trust bundle. */
  secureContext: () => SecureContext | undefined;
  /** Owner, group and mode of the listener's socket file when it listens on a Unix socket; mode 0600 when absent. */
  socketPermissions?: SocketPermissions;
  /**
   * The upstream's protocol from the catalog and the handler of HTTP protocols. Each connection is
   * dispatched by the protocol in force when it arrives; without these every connection is TCP.
   */
  http?: { protocol: () => ServiceProtocol | undefined; handler: OutboundHttp };
  log: Logger;
  metrics: ProxyMetrics;
}

/**
 * A loopback TCP or Unix socket listener for one upstream service. Each plaintext connection from
 * the app is admitted by the upstream's circuit breaker and carried over mTLS to a healthy instance
 * of the upstream, chosen by its load-balancing policy, and only after the instance has proven that
 * its SVID carries the upstream's SPIFFE ID.
 */
export class OutboundListener {
  readonly #options: OutboundOptions;
  readonly #connections = new Set<Socket>();
  readonly #rejections: RejectionLog;
  #server: NetServer | undefined;
  #unixSocket: UnixSocketListener | undefined;
  /** Sessions of verified upstream instances, resumed to skip the certificate exchange. */
  readonly #sessions = new PeerSessionCache();
  readonly #traffic: UpstreamTraffic;

  /** Labelled metric children, resolved once instead of on every connection. */
  readonly #activeCount: Gauge.Internal<'direction'>;
  readonly #connectedCount: Counter.Internal;
  readonly #resumedCount: Counter.Internal;
  readonly #fullHandshakeCount: Counter.Internal;
  readonly #resumedHandshakeCount: Counter.Internal;

  constructor(options: OutboundOptions) {
    this.#options = options;
    this.#traffic =
      options.traffic ??
      new UpstreamTraffic({ upstream: options.upstream.service, settings: DEFAULT_TRAFFIC_SETTINGS, endpoints: options.endpoints, metrics: options.metrics.traffic, log: options.log });
    this.#activeCount = options.metrics.activeConnections.labels('outbound');
    this.#connectedCount = options.metrics.outboundConnections.labels(options.upstream.service, 'connected');
    this.#resumedCount = options.metrics.resumedSessions.labels(options.upstream.service);
    this.#fullHandshakeCount = options.metrics.http.handshakes.labels({ direction: 'outbound', resumed: 'false' });
    this.#resumedHandshakeCount = options.metrics.http.handshakes.labels({ direction: 'outbound', resumed: 'true' });
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
    // Half-open connections let the app finish sending and still read the upstream's response.
    const server = createNetServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (client) => this.#accept(client));
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
    const protocol = this.#options.http?.protocol();
    if (protocol !== undefined && protocol !== 'tcp') {
      this.#options.http!.handler.accept(client, protocol);
      return;
    }
    this.#admit(client);
  }

  /** Closes the connection at once when the upstream's circuit breaker has no room; dials otherwise. */
  #admit(client: Socket): void {
    const admission = this.#traffic.admitConnection();
    if (!admission.admitted) {
      // The traffic module has logged and counted the trip with its reason.
      this.#options.metrics.outboundConnections.inc({ upstream: this.#options.upstream.service, result: 'circuit_open' });
      this.#options.metrics.rejections.inc({ code: admission.error.code });
      client.destroy();
      return;
    }
    client.once('close', () => admission.release());
    this.#dial({ client, admission, attempt: 1, tried: new Set() });
  }

  #dial(dial: TcpDial): void {
    const { client, attempt } = dial;
    const upstream = this.#options.upstream.service;
    const traffic = this.#traffic;
    const endpoint = traffic.pick(dial.tried);
    const secureContext = this.#options.secureContext();
    if (endpoint === undefined || secureContext === undefined) {
      const code = endpoint === undefined ? 'SEALMESH_ERR_NO_HEALTHY_ENDPOINT' : 'SEALMESH_ERR_ENROLLMENT_FAILED';
      this.#options.metrics.outboundConnections.inc({ upstream, result: 'no_endpoint' });
      this.#options.metrics.rejections.inc({ code });
      this.#rejections.warn(code, { code, upstream }, endpoint === undefined ? 'upstream has no healthy instance; connection closed' : 'no SVID yet; connection closed');
      dial.releaseRetry?.();
      client.destroy();
      return;
    }
    dial.tried.add(endpoint.instanceId);
    const instanceAttempt = traffic.startAttempt(endpoint);
    const expected = { namespace: this.#options.upstream.namespace, service: this.#options.upstream.name };
    const trustDomain = this.#options.trustDomain();
    // tls.connect passes allowHalfOpen and onread on to the TLSSocket, although @types/node declares neither.
    const reader = new BufferedReader();
    const socketOptions = { allowHalfOpen: true, onread: reader.onread } as object;
    const sessionKey = `${endpoint.instanceId}@${endpoint.address}:${endpoint.port}`;
    const session = this.#sessions.get(sessionKey, secureContext, upstream);
    /** notAfter of the certificate that passed the identity check; unknown on a resumed connection. */
    let verifiedNotAfter: number | undefined;
    const remote: TLSSocket = tlsConnect({
      ...socketOptions,
      host: endpoint.address,
      port: endpoint.port,
      secureContext,
      rejectUnauthorized: true,
      ...(session !== undefined ? { session: session.session } : {}),
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
    // connection that passed it. A resumed connection stores none: its tickets would keep the
    // expiry of the session it resumed, and a Node.js server accepts a TLS 1.3 ticket more than
    // once, so the cached one serves until that expiry. Without a 'session' listener Node does not
    // serialize the tickets that the server sends.
    const storeSession = (ticket: Buffer): void => {
      if (remote.authorized && verifiedNotAfter !== undefined) {
        this.#sessions.set(sessionKey, secureContext, upstream, ticket, verifiedNotAfter);
      }
    };
    if (session === undefined) remote.on('session', storeSession);
    const connectTimeoutMs = traffic.settings.connectTimeoutMs;
    remote.setTimeout(connectTimeoutMs, () => remote.destroy(new Error(`no TLS handshake within ${connectTimeoutMs} ms`)));
    const onConnectError = (error: Error & { code?: string }): void => {
      const code = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_SERVER_UNREACHABLE';
      this.#options.metrics.outboundConnections.inc({ upstream, result: 'failed' });
      if (isSealmeshError(error)) this.#options.metrics.rejections.inc({ code });
      this.#rejections.warn(`dial:${code}`, { upstream, instance: endpoint.instanceId, attempt, reason: error.code ?? error.message }, 'connection to an upstream instance failed');
      remote.destroy();
      this.#sessions.delete(sessionKey);
      instanceAttempt.connectFailed();
      dial.releaseRetry?.();
      this.#retryOrClose(dial);
    };
    remote.once('error', onConnectError);
    remote.once('secureConnect', () => {
      remote.setTimeout(0);
      remote.off('error', onConnectError);
      instanceAttempt.connected();
      dial.releaseRetry?.();
      remote.once('close', () => instanceAttempt.finish());
      if (session !== undefined && !remote.isSessionReused()) {
        // The server declined the offered session (its ticket keys changed, or the ticket expired
        // there), so the tickets of this full handshake replace it. They arrive only after the
        // client's Finished, so a listener added now receives them.
        this.#sessions.delete(sessionKey);
        remote.on('session', storeSession);
      }
      if (client.destroyed) {
        remote.destroy();
        return;
      }
      dial.admission.established();
      this.#connectedCount.inc();
      if (remote.isSessionReused()) this.#resumedCount.inc();
      (remote.isSessionReused() ? this.#resumedHandshakeCount : this.#fullHandshakeCount).inc();
      remote.once('error', () => client.destroy());
      remote.once('close', () => closeAfterFlush(client));
      client.once('close', () => closeAfterFlush(remote));
      // The server's certificate is the one this handshake verified or, for a resumed session, the
      // one that the full handshake behind it verified.
      const notAfter = verifiedNotAfter ?? session?.peerNotAfter;
      if (notAfter === undefined) {
        // Unreachable while Node calls checkServerIdentity on every full handshake; fails closed otherwise.
        remote.destroy();
        client.destroy();
        return;
      }
      onPeerCertificateExpiry(remote, notAfter, () => {
        this.#options.metrics.closedCertExpired.inc({ direction: 'outbound' });
        this.#rejections.info('cert-expired', { upstream, instance: endpoint.instanceId, notAfter: new Date(notAfter).toISOString() }, 'closing an established connection whose server certificate expired');
        remote.destroy();
        client.destroy();
      });
      relay(client, remote, { b: reader });
      client.resume();
    });
  }

  /**
   * Retries a failed dial on another instance after a backoff when the upstream's retry policy and
   * budget allow it, and closes the client's connection otherwise. A connect failure never reached
   * the app, so the retry rule for non-idempotent requests does not stop it.
   */
  #retryOrClose(dial: TcpDial): void {
    const { client } = dial;
    if (client.destroyed) return;
    const decision = this.#traffic.decideRetry({ cause: 'connect_failure', retriesSoFar: dial.attempt - 1, reachedApp: false, idempotent: false });
    if (!decision.retry) {
      this.#rejections.warn(`give-up:${decision.reason}`, { upstream: this.#options.upstream.service, attempts: dial.attempt, reason: decision.reason }, 'no upstream instance could be reached; connection closed');
      client.destroy();
      return;
    }
    const timer = setTimeout(() => {
      client.off('close', cancel);
      this.#dial({ ...dial, attempt: dial.attempt + 1, releaseRetry: decision.release });
    }, decision.delayMs);
    const cancel = (): void => {
      clearTimeout(timer);
      decision.release();
    };
    client.once('close', cancel);
  }
}
