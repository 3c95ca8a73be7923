import type { Counter, Gauge } from 'prom-client';
import { connect as netConnect, type Socket } from 'node:net';
import { createServer as createTlsServer, type SecureContextOptions, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { isSealmeshError, type ErrorCode } from '../errors/index.ts';
import { RejectionLog, type Logger } from '../log/index.ts';
import { spiffeIdFromPeerCertificate } from '../pki/peer.ts';
import { formatServiceRef, type SpiffeId } from '../spiffe/index.ts';
import type { Decision } from '../policy/index.ts';
import type { ProxyMetrics } from './metrics.ts';
import { isUnixAddress, type HostPort, type SocketAddress } from './address.ts';
import type { InboundHttp } from './http/inbound-http.ts';
import { onPeerCertificateExpiry } from './cert-expiry.ts';
import { BufferedReader, closeAfterFlush, relay } from './relay.ts';

/** A TLS client that has not finished its handshake by then is disconnected. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface InboundOptions {
  listen: HostPort;
  app: SocketAddress;
  /** This proxy's own service, the destination of every inbound connection. */
  self: { namespace: string; service: string };
  trustDomain: () => string;
  /** Decides whether a peer may connect; reads the current snapshot's intentions. */
  authorize: (peer: SpiffeId) => Decision;
  /**
   * Serves connections of an HTTP, HTTP/2 or gRPC service; absent for a TCP service. When set, the
   * listener offers `alpn` and hands it every connection that negotiated one of them.
   */
  http?: { handler: InboundHttp; alpn: string[] };
  log: Logger;
  metrics: ProxyMetrics;
}

interface InboundConnection {
  downstream: TLSSocket;
  /** The connection to the app; absent for HTTP connections, whose requests share pooled ones. */
  app?: Socket;
  peer: SpiffeId;
}

/**
 * The inbound mTLS listener in front of the app. A connection reaches the app only after Node has
 * verified the client's chain against the trust bundle, the client's SVID carries exactly one
 * SPIFFE ID in this trust domain, and an intention allows that service to call this one.
 */
export class InboundListener {
  readonly #options: InboundOptions;
  readonly #connections = new Set<InboundConnection>();
  readonly #rejections: RejectionLog;
  #server: TlsServer | undefined;
  /** Set while inbound traffic is stopped, with the code and reason every new connection is rejected with. */
  #suspended: { code: ErrorCode; reason: string } | undefined;

  /** This proxy's service reference, the destination named in every log line. */
  readonly #destination: string;
  /** Labelled metric children, resolved once instead of on every connection. */
  readonly #allowedCount: Counter.Internal;
  readonly #activeCount: Gauge.Internal<"direction">;
  readonly #fullHandshakeCount: Counter.Internal;
  readonly #resumedHandshakeCount: Counter.Internal;

  constructor(options: InboundOptions) {
    this.#options = options;
    this.#rejections = new RejectionLog(options.log);
    this.#destination = formatServiceRef(options.self);
    this.#allowedCount = options.metrics.inboundConnections.labels('allowed');
    this.#activeCount = options.metrics.activeConnections.labels('inbound');
    this.#fullHandshakeCount = options.metrics.http.handshakes.labels({ direction: 'inbound', resumed: 'false' });
    this.#resumedHandshakeCount = options.metrics.http.handshakes.labels({ direction: 'inbound', resumed: 'true' });
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  /** Starts listening with the given TLS options and returns the bound port. */
  async start(tls: SecureContextOptions): Promise<number> {
    const server = createTlsServer({
      ...tls,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      ...(this.#options.http !== undefined ? { ALPNProtocols: this.#options.http.alpn } : {}),
    });
    this.#server = server;
    server.on('secureConnection', (socket) => this.#accept(socket));
    server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
      // When the client's chain fails verification (untrusted, expired), Node 24 closes the socket after
      // the handshake (onServerSocketSecure in lib/internal/tls/wrap.js), so `error` is only the hang-up.
      // The verification result is a code string such as CERT_HAS_EXPIRED in `authorizationError`,
      // although @types/node declares it as an Error.
      const verifyError: unknown = socket.authorizationError;
      const reason = typeof verifyError === 'string' ? verifyError : (error.code ?? error.message);
      this.#reject('SEALMESH_ERR_TLS_HANDSHAKE_FAILED', { reason, remote: socket.remoteAddress });
      // Node destroys the socket itself only when no 'tlsClientError' listener exists. With one, a
      // client that stalls its handshake would keep its connection open past the timeout.
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#options.listen.port, this.#options.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    return typeof address === 'object' && address !== null ? address.port : this.#options.listen.port;
  }

  /** Installs a new certificate; new handshakes use it, established connections are untouched. */
  setSecureContext(tls: SecureContextOptions): void {
    this.#server?.setSecureContext({ ...tls });
  }

  /**
   * Checks every established connection against the current intentions and closes the ones that are
   * now denied. Returns how many it closed.
   */
  reevaluate(): number {
    let closed = 0;
    for (const connection of this.#connections) {
      // HTTP connections carry requests that are each checked; their long-lived exchanges are
      // re-checked by the HTTP handler below.
      if (connection.app === undefined) continue;
      const decision = this.#options.authorize(connection.peer);
      if (decision.allowed) continue;
      closed += 1;
      this.#options.metrics.closedByPolicy.inc();
      this.#options.log.warn(
        { code: 'SEALMESH_ERR_INTENTION_DENIED', source: formatServiceRef(connection.peer), destination: this.#destination, intention: decision.reason },
        'closing an established connection that an intention now denies',
      );
      connection.downstream.destroy();
      connection.app?.destroy();
    }
    closed += this.#options.http?.handler.reevaluate() ?? 0;
    return closed;
  }

  /**
   * Closes every established connection and rejects new ones after their handshake with `code`,
   * until `resume`. The listener stays bound, so its registered port remains valid.
   */
  suspend(code: ErrorCode, reason: string): void {
    this.#suspended = { code, reason };
    this.destroyAll();
  }

  resume(): void {
    this.#suspended = undefined;
  }

  /** Stops accepting new connections; established ones continue. */
  stopAccepting(): void {
    this.#server?.close();
  }

  /** Destroys every established connection. */
  destroyAll(): void {
    for (const connection of this.#connections) {
      connection.downstream.destroy();
      connection.app?.destroy();
    }
  }

  #accept(downstream: TLSSocket): void {
    const destination = this.#destination;
    if (this.#suspended !== undefined) {
      this.#reject(this.#suspended.code, { destination, remote: downstream.remoteAddress, reason: this.#suspended.reason });
      downstream.destroy();
      return;
    }
    let peer: SpiffeId;
    let notAfter: number;
    try {
      // Node verified the chain (rejectUnauthorized); this applies the SPIFFE X509-SVID name rules.
      const certificate = downstream.getPeerX509Certificate()!;
      peer = spiffeIdFromPeerCertificate(certificate, this.#options.trustDomain());
      notAfter = Date.parse(certificate.validTo);
      // A resumed session skips chain verification, so a client certificate that expired since the
      // full handshake (at most the server's 300 s ticket lifetime ago) is rejected here.
      if (downstream.isSessionReused() && notAfter <= Date.now()) {
        this.#reject('SEALMESH_ERR_TLS_HANDSHAKE_FAILED', { destination, remote: downstream.remoteAddress, reason: 'resumed session of an expired client certificate' });
        downstream.destroy();
        return;
      }
    } catch (error) {
      const code: ErrorCode = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_PEER_SAN_INVALID';
      this.#reject(code, { destination, remote: downstream.remoteAddress, reason: (error as Error).message });
      downstream.destroy();
      return;
    }
    (downstream.isSessionReused() ? this.#resumedHandshakeCount : this.#fullHandshakeCount).inc();
    // An HTTP service decides each request, so that a denied caller gets a 403 (or gRPC status 7)
    // that names the intention instead of a closed connection.
    const decision = this.#options.authorize(peer);
    if (!decision.allowed && this.#options.http === undefined) {
      this.#options.metrics.inboundConnections.inc({ result: 'denied' });
      this.#reject('SEALMESH_ERR_INTENTION_DENIED', { source: formatServiceRef(peer), destination, intention: decision.reason, remote: downstream.remoteAddress }, false);
      downstream.destroy();
      return;
    }
    this.#allowedCount.inc();
    if (this.#options.http !== undefined) {
      this.#acceptHttp(downstream, peer, notAfter, this.#options.http.handler);
      return;
    }
    const target = this.#options.app;
    // A peer that finishes sending may still receive, so its end is passed on to the app instead
    // of ending our side too. This is set only now, because before the handshake an end must close
    // the socket.
    downstream.allowHalfOpen = true;
    const reader = new BufferedReader();
    const app = isUnixAddress(target)
      ? netConnect({ path: target.path, allowHalfOpen: true, onread: reader.onread })
      : netConnect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true, onread: reader.onread });
    downstream.setNoDelay(true);
    const connection: InboundConnection = { downstream, app, peer };
    this.#connections.add(connection);
    this.#activeCount.inc();
    this.#closeAtExpiry(connection, notAfter);
    // The connection counts as active until both sockets have closed.
    let open = 2;
    const closed = (): void => {
      open -= 1;
      if (open > 0) return;
      this.#connections.delete(connection);
      this.#activeCount.dec();
    };
    const destroyBoth = (): void => {
      downstream.destroy();
      app.destroy();
    };
    app.once('error', (error: Error & { code?: string }) => {
      this.#options.log.warn({ source: formatServiceRef(peer), destination, app: this.#options.app, reason: error.code ?? error.message }, 'connection to the app failed');
      destroyBoth();
    });
    downstream.once('error', destroyBoth);
    downstream.once('close', () => {
      closed();
      closeAfterFlush(app);
    });
    app.once('close', () => {
      closed();
      closeAfterFlush(downstream);
    });
    relay(downstream, app, { b: reader });
  }

  /**
   * Hands a verified connection of an HTTP service to the HTTP handler. A peer that negotiated no
   * HTTP protocol is rejected: relaying its bytes would bypass the L7 permissions.
   */
  #acceptHttp(downstream: TLSSocket, peer: SpiffeId, notAfter: number, handler: InboundHttp): void {
    const alpn = downstream.alpnProtocol;
    if (alpn !== 'h2' && alpn !== 'http/1.1') {
      this.#reject('SEALMESH_ERR_L7_PROTOCOL_MISMATCH', { source: formatServiceRef(peer), destination: this.#destination, remote: downstream.remoteAddress, reason: 'the peer negotiated no HTTP protocol (ALPN h2 or http/1.1) with an HTTP service' });
      downstream.destroy();
      return;
    }
    const connection: InboundConnection = { downstream, peer };
    this.#connections.add(connection);
    this.#activeCount.inc();
    this.#closeAtExpiry(connection, notAfter);
    downstream.once('close', () => {
      this.#connections.delete(connection);
      this.#activeCount.dec();
    });
    handler.accept(downstream, peer);
  }

  /**
   * Closes `connection` when the client certificate it was authenticated with expires, so that no
   * connection outlives the SVID behind it. Requests in flight on it fail. A client that renews
   * keeps working, because its next connection presents the new SVID.
   */
  #closeAtExpiry(connection: InboundConnection, notAfter: number): void {
    const { downstream } = connection;
    const expire = (): void => {
      this.#options.metrics.closedCertExpired.inc({ direction: 'inbound' });
      this.#rejections.info(
        'cert-expired',
        { source: formatServiceRef(connection.peer), destination: this.#destination, notAfter: new Date(notAfter).toISOString(), remote: downstream.remoteAddress },
        'closing an established connection whose client certificate expired',
      );
      downstream.destroy();
      connection.app?.destroy();
    };
    onPeerCertificateExpiry(downstream, notAfter, expire);
  }

  #reject(code: ErrorCode, fields: Record<string, unknown>, countInbound = true): void {
    if (countInbound) this.#options.metrics.inboundConnections.inc({ result: 'rejected' });
    this.#options.metrics.rejections.inc({ code });
    this.#rejections.warn(code, { code, ...fields }, code === 'SEALMESH_ERR_INTENTION_DENIED' ? 'inbound connection denied by intention' : 'inbound connection rejected');
  }
}
