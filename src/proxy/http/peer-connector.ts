import { connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../../errors/index.ts';
import { spiffeIdFromPeerCertificate } from '../../pki/peer.ts';
import type { Endpoint } from '../../server/index.ts';
import { onPeerCertificateExpiry } from '../cert-expiry.ts';
import type { OfferedSession, PeerSessionCache } from '../tls-sessions.ts';
import type { TrafficRejection } from '../traffic/index.ts';

export interface PeerTarget {
  endpoint: Endpoint;
  /** The service whose SPIFFE ID the peer must present. */
  expected: { namespace: string; service: string };
  trustDomain: string;
  secureContext: SecureContext;
  alpn: string[];
  connectTimeoutMs: number;
}

export function endpointKey(endpoint: Endpoint): string {
  return `${endpoint.instanceId}@${endpoint.address}:${endpoint.port}`;
}

/** Key of a peer's session in the cache: the instance, its address and the identity expected of it. */
export function sessionCacheKey(target: Pick<PeerTarget, 'endpoint' | 'expected'>): string {
  return `${endpointKey(target.endpoint)}|${target.expected.namespace}/${target.expected.service}`;
}

/**
 * Checks the peer of a full handshake: its leaf certificate must carry the expected service's
 * SPIFFE ID in this trust domain and be within its validity period. Returns the certificate's end
 * of validity.
 */
export function verifyPeerIdentity(socket: TLSSocket, target: Pick<PeerTarget, 'endpoint' | 'expected' | 'trustDomain'>): number {
  const certificate = socket.getPeerX509Certificate();
  if (certificate === undefined) throw new SealmeshError('SEALMESH_ERR_PEER_NO_CERTIFICATE', `instance ${target.endpoint.instanceId} presented no certificate`);
  const now = Date.now();
  const notAfter = new Date(certificate.validTo).getTime();
  if (now >= notAfter || now < new Date(certificate.validFrom).getTime()) {
    throw new SealmeshError('SEALMESH_ERR_PEER_CERT_UNTRUSTED', `instance ${target.endpoint.instanceId} presented an SVID outside its validity period (${certificate.validFrom} to ${certificate.validTo})`);
  }
  const peer = spiffeIdFromPeerCertificate(certificate, target.trustDomain);
  checkExpectedPeer(peer, target);
  return notAfter;
}

function checkExpectedPeer(peer: { namespace: string; service: string }, target: Pick<PeerTarget, 'endpoint' | 'expected'>): void {
  if (peer.namespace !== target.expected.namespace || peer.service !== target.expected.service) {
    throw new SealmeshError(
      'SEALMESH_ERR_PEER_IDENTITY_MISMATCH',
      `instance ${target.endpoint.instanceId} presented an SVID for ${peer.namespace}/${peer.service}, expected ${target.expected.namespace}/${target.expected.service}`,
    );
  }
}

/** Error of a dial that never reached a verified peer; a request may always be retried after one. */
export class PeerConnectError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Error of a new peer connection that the upstream's circuit breaker rejected. The traffic module
 * has already counted and logged the trip, and `rejection.response` is the reply for the client.
 */
export class CircuitOpenError extends PeerConnectError {
  readonly rejection: TrafficRejection;

  constructor(rejection: TrafficRejection) {
    super(rejection.error.code, rejection.error.message);
    this.rejection = rejection;
  }
}

/**
 * Opens an mTLS connection to a peer proxy, resuming a cached session when one exists, and resolves
 * only after the peer's identity has been verified. ALPN offers `target.alpn`. The connection is
 * destroyed when the peer's certificate expires, after a call of `onPeerExpired`.
 *
 * On a resumed TLS 1.3 session the server sends no certificate and Node does not call
 * `checkServerIdentity`, so the identity is the one that the full handshake behind the session
 * verified. `sessions` offers a session only to the instance that issued it, for the same expected
 * service, under the same client context and before the verified certificate's notAfter. Only the
 * server that issued the ticket can resume it.
 */
export function connectPeer(target: PeerTarget, sessions: PeerSessionCache, onPeerExpired?: (socket: TLSSocket, notAfter: number) => void): Promise<TLSSocket> {
  const key = sessionCacheKey(target);
  const peerRef = `${target.expected.namespace}/${target.expected.service}`;
  return new Promise((resolve, reject) => {
    const offered = sessions.get(key, target.secureContext, peerRef);
    const socket = tlsConnect({
      host: target.endpoint.address,
      port: target.endpoint.port,
      secureContext: target.secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: target.alpn,
      ...(offered !== undefined ? { session: offered.session } : {}),
      // Replaces hostname verification on a full handshake, and verifyPeerIdentity repeats the check
      // after it. Node does not call this on a resumed session, which the session cache covers.
      checkServerIdentity: (_host: string, certificate: PeerCertificate): Error | undefined => {
        try {
          checkExpectedPeer(spiffeIdFromPeerCertificate(certificate, target.trustDomain), target);
          return undefined;
        } catch (error) {
          return error as Error;
        }
      },
    });
    socket.setNoDelay(true);
    // Tickets can arrive before or after the verification below; they are kept only once it passed.
    // notAfter is undefined for a resumed session, which keeps the expiry of the one it resumed.
    let verified: { notAfter: number | undefined } | undefined;
    let pendingTicket: Buffer | undefined;
    socket.on('session', (ticket: Buffer) => {
      if (verified !== undefined) sessions.set(key, target.secureContext, peerRef, ticket, verified.notAfter);
      else pendingTicket = ticket;
    });
    socket.setTimeout(target.connectTimeoutMs, () => socket.destroy(new PeerConnectError('SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE', `no TLS handshake within ${target.connectTimeoutMs} ms`)));
    const onError = (error: Error & { code?: string }): void => {
      sessions.delete(key);
      socket.destroy();
      reject(error instanceof PeerConnectError ? error : new PeerConnectError(isSealmeshError(error) ? error.code : (error.code ?? 'SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE'), error.message));
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.setTimeout(0);
      socket.off('error', onError);
      try {
        if (socket.isSessionReused()) {
          // A server that resumed must have issued the offered ticket.
          if (offered === undefined) throw new SealmeshError('SEALMESH_ERR_PEER_CERT_UNTRUSTED', `instance ${target.endpoint.instanceId} resumed a session this proxy did not offer`);
          verified = { notAfter: undefined };
        } else {
          verified = { notAfter: verifyPeerIdentity(socket, target) };
        }
      } catch (error) {
        onError(error as Error);
        return;
      }
      if (pendingTicket !== undefined) sessions.set(key, target.secureContext, peerRef, pendingTicket, verified.notAfter);
      // The connection closes when the server's certificate expires, the one this handshake verified
      // or, for a resumed session, the one that the full handshake behind it verified.
      const notAfter = verified.notAfter ?? (offered as OfferedSession).peerNotAfter;
      onPeerCertificateExpiry(socket, notAfter, () => {
        onPeerExpired?.(socket, notAfter);
        socket.destroy();
      });
      // The owner of the socket (an HTTP/2 session or an HTTP agent) adds its own error handling.
      // This listener keeps an error between hand-over and that point from being unhandled.
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}
