import type { SecureContext } from 'node:tls';

/**
 * Longest time a session is resumed after the full handshake that verified the peer. It equals the
 * ticket lifetime of a Node.js TLS server (`sessionTimeout`, 300 s by default), so that at least
 * every five minutes the peer's certificate chain and SPIFFE ID are verified again in full.
 */
export const MAX_SESSION_AGE_MS = 300_000;
/** Sessions kept per upstream listener; the oldest is dropped beyond it. */
const MAX_SESSIONS = 1024;

interface Entry {
  session: Buffer;
  /** SPIFFE service reference that the full handshake verified. */
  peer: string;
  /** notAfter of the certificate that the full handshake verified, in milliseconds since the epoch. */
  peerNotAfter: number;
  expiresAt: number;
}

/** A session to offer, with the notAfter of the peer certificate that its full handshake verified. */
export interface OfferedSession {
  session: Buffer;
  peerNotAfter: number;
}

/**
 * TLS sessions of upstream instances whose SVID this proxy verified in a full handshake, for
 * TLS 1.3 resumption. Node.js neither calls `checkServerIdentity` nor exposes the peer's
 * certificate on a resumed connection, so the identity check is carried by the cache instead: a
 * session is stored only after its connection passed the SPIFFE ID check, it is offered again only
 * to the same instance address for the same expected service, and only until the earlier of
 * MAX_SESSION_AGE_MS and the peer certificate's notAfter. Resumption succeeds only when the server
 * holds the secret of the original handshake, so the peer is the one that was verified.
 * A new client context (SVID rotation or a new trust bundle) drops every session.
 */
export class PeerSessionCache {
  #context: SecureContext | undefined;
  readonly #entries = new Map<string, Entry>();

  /** Returns a session to resume for `key` when it was verified as `peer` under `context`. */
  get(key: string, context: SecureContext, peer: string, now = Date.now()): OfferedSession | undefined {
    if (context !== this.#context) {
      this.#entries.clear();
      this.#context = context;
      return undefined;
    }
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.peer !== peer || now >= entry.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    return { session: entry.session, peerNotAfter: entry.peerNotAfter };
  }

  /**
   * Stores a session ticket of a connection to `key` whose peer was verified as `peer`.
   * `peerNotAfter` is known after a full handshake; a ticket received on a resumed connection keeps
   * the expiry of the session it resumed and is dropped when there is none.
   */
  set(key: string, context: SecureContext, peer: string, session: Buffer, peerNotAfter: number | undefined, now = Date.now()): void {
    if (context !== this.#context) return;
    const previous = this.#entries.get(key);
    let entry: Entry;
    if (peerNotAfter !== undefined) entry = { session, peer, peerNotAfter, expiresAt: Math.min(now + MAX_SESSION_AGE_MS, peerNotAfter) };
    else if (previous !== undefined && previous.peer === peer) entry = { ...previous, session };
    else return;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    if (this.#entries.size > MAX_SESSIONS) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  get size(): number {
    return this.#entries.size;
  }
}
