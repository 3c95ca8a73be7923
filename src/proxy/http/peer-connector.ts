import { connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../../errors/index.ts';
import { spiffeIdFromPeerCertificate } from '../../pki/index.ts';
import type { Endpoint } from '../../server/index.ts';

/** Most TLS sessions kept for resumption, one per peer instance. */
const MAX_CACHED_SESSIONS = 1024;

export interface PeerTarget {
  endpoint: Endpoint;
  /** The service whose SPIFFE ID the peer must present. */
  expected: { namespace: string; service: string };
  trustDomain: string;
  secureContext: SecureContext;
  alpn: string[];
  connectTimeoutMs: number;
}

/** A TLS session ticket with the identity that the full handshake behind it verified. */
export interface CachedSession {
  ticket: Buffer;
  /** The service whose SPIFFE ID the peer's certificate carried when the session was established. */
  peer: { namespace: string; service: string };
  /** End of the peer certificate's validity; the session is not resumed after it. */
  notAfter: number;
}

/**
 * Keeps one TLS session ticket per peer instance so that later connections resume instead of
 * running a full handshake. A ticket is stored only after the handshake that produced it verified
 * the peer, and it is only ever offered to the instance that issued it. The cache is cleared when
 * this proxy's SVID changes.
 */
export class TlsSessionCache {
  readonly #sessions = new Map<string, CachedSession>();

  get(key: string): CachedSession | undefined {
    return this.#sessions.get(key);
  }

  set(key: string, session: CachedSession): void {
    this.#sessions.delete(key);
    this.#sessions.set(key, session);
    if (this.#sessions.size > MAX_CACHED_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value!);
  }

  delete(key: string): void {
    this.#sessions.delete(key);
  }

  clear(): void {
    this.#sessions.clear();
  }
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

/**
 * Checks the peer of a resumed session. The server sends no certificate on resumption (and Node
 * skips `checkServerIdentity`), so the identity is the one the original full handshake verified,
 * recorded with the ticket. Only the server that issued the ticket can resume it, because only it
 * has the ticket key. The recorded identity must still be the expected one and its certificate
 * still valid.
 */
export function verifyResumedPeer(session: CachedSession, target: Pick<PeerTarget, 'endpoint' | 'expected'>): void {
  if (Date.now() >= session.notAfter) {
    throw new SealmeshError('SEALMESH_ERR_PEER_CERT_UNTRUSTED', `instance ${target.endpoint.instanceId} resumed a session whose SVID expired at ${new Date(session.notAfter).toISOString()}`);
  }
  checkExpectedPeer(session.peer, target);
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
 * Opens an mTLS connection to a peer proxy, resuming a cached session when one exists, and resolves
 * only after the peer's identity has been verified. ALPN offers `target.alpn`.
 */
export function connectPeer(target: PeerTarget, sessions: TlsSessionCache): Promise<TLSSocket> {
  const key = sessionCacheKey(target);
  return new Promise((resolve, reject) => {
    const cached = sessions.get(key);
    const offered = cached !== undefined && Date.now() < cached.notAfter ? cached : undefined;
    const socket = tlsConnect({
      host: target.endpoint.address,
      port: target.endpoint.port,
      secureContext: target.secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: target.alpn,
      ...(offered !== undefined ? { session: offered.ticket } : {}),
      // Replaces hostname verification on a full handshake; verifyPeerIdentity repeats the check
      // after it, and verifyResumedPeer covers resumed sessions, where Node does not call this.
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
    let verified: { peer: { namespace: string; service: string }; notAfter: number } | undefined;
    let pendingTicket: Buffer | undefined;
    socket.on('session', (ticket: Buffer) => {
      if (verified !== undefined) sessions.set(key, { ticket, ...verified });
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
          verifyResumedPeer(offered, target);
          verified = { peer: offered.peer, notAfter: offered.notAfter };
        } else {
          verified = { peer: target.expected, notAfter: verifyPeerIdentity(socket, target) };
        }
      } catch (error) {
        onError(error as Error);
        return;
      }
      if (pendingTicket !== undefined) sessions.set(key, { ticket: pendingTicket, ...verified });
      // The owner of the socket (an HTTP/2 session or an HTTP agent) adds its own error handling.
      // This listener keeps an error between hand-over and that point from being unhandled.
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}
