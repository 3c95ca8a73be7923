import { randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';

/** Lifetime of an enrollment nonce: long enough to collect evidence, short enough to bound replay. */
export const NONCE_TTL_MS = 60_000;
/** Maximum number of unused nonces in memory. Past it, callers wait for older nonces to expire. */
export const MAX_OUTSTANDING_NONCES = 10_000;
/** Unused nonces one caller may hold; a further request replaces that caller's oldest nonce. */
export const MAX_NONCES_PER_HOLDER = 8;
const NONCE_BYTES = 32;

interface IssuedNonce {
  /** The caller the nonce was issued to, such as `token:<accessor id>` or `svid:<certificate serial>`. */
  holder: string;
  expiresAt: number;
}

/**
 * Single-use nonces that bind attestation evidence to one enrollment or renewal. Each nonce is
 * issued to one caller, expires after `ttlMs` and is consumed by its first successful use.
 *
 * NOTE: nonces live in this server's memory, so with several server replicas a proxy must send its
 * enrollment to the replica that issued the nonce.
 */
export class NonceStore {
  readonly ttlMs: number;
  readonly maxOutstanding: number;
  readonly #now: () => number;
  // A Map iterates in insertion order, and every nonce has the same lifetime, so the oldest
  // entries are also the first to expire.
  readonly #issued = new Map<string, IssuedNonce>();
  readonly #byHolder = new Map<string, string[]>();

  constructor(options: { ttlMs?: number; maxOutstanding?: number; now?: () => number } = {}) {
    this.ttlMs = options.ttlMs ?? NONCE_TTL_MS;
    this.maxOutstanding = options.maxOutstanding ?? MAX_OUTSTANDING_NONCES;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#issued.size;
  }

  /** Issues a fresh nonce to `holder`. Throws SEALMESH_ERR_ATTESTATION_NONCE_LIMIT when the store is full. */
  issue(holder: string): { nonce: string; expiresAt: Date } {
    this.#purgeExpired();
    if (this.#issued.size >= this.maxOutstanding) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_NONCE_LIMIT',
        `the server holds ${this.maxOutstanding} unused nonces, its maximum; retry in ${Math.ceil(this.ttlMs / 1000)} s when older nonces have expired`,
      );
    }
    // One caller cannot fill the store for everyone: past its share, its oldest nonce goes.
    const held = this.#byHolder.get(holder) ?? [];
    while (held.length >= MAX_NONCES_PER_HOLDER) this.#issued.delete(held.shift()!);
    const nonce = randomBytes(NONCE_BYTES).toString('base64url');
    const expiresAt = this.#now() + this.ttlMs;
    this.#issued.set(nonce, { holder, expiresAt });
    held.push(nonce);
    this.#byHolder.set(holder, held);
    return { nonce, expiresAt: new Date(expiresAt) };
  }

  /**
   * Returns the bytes of a nonce that `holder` may use now, without consuming it. Throws
   * SEALMESH_ERR_ATTESTATION_NONCE_INVALID for an unknown, expired or used nonce, or one issued to
   * another caller.
   */
  check(nonce: string, holder: string): Buffer {
    this.#purgeExpired();
    const issued = this.#issued.get(nonce);
    if (issued === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_NONCE_INVALID',
        `the nonce is unknown, expired or already used; request a new one from POST /v1/svid/nonce and collect evidence within ${Math.round(this.ttlMs / 1000)} s`,
      );
    }
    if (issued.holder !== holder) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_NONCE_INVALID', 'the nonce was issued to another caller; request one with the same credential that enrolls');
    }
    return Buffer.from(nonce, 'base64url');
  }

  /** Consumes a nonce that `check` accepted. Throws SEALMESH_ERR_ATTESTATION_NONCE_INVALID when a concurrent request consumed it first. */
  consume(nonce: string, holder: string): void {
    this.check(nonce, holder);
    this.#remove(nonce);
  }

  /** Forgets a nonce whatever its state, after a failed attempt, so that it cannot be tried again. */
  discard(nonce: string): void {
    this.#remove(nonce);
  }

  #remove(nonce: string): void {
    const issued = this.#issued.get(nonce);
    if (issued === undefined) return;
    this.#issued.delete(nonce);
    const held = (this.#byHolder.get(issued.holder) ?? []).filter((candidate) => candidate !== nonce);
    if (held.length === 0) this.#byHolder.delete(issued.holder);
    else this.#byHolder.set(issued.holder, held);
  }

  #purgeExpired(): void {
    const now = this.#now();
    for (const [nonce, issued] of this.#issued) {
      if (issued.expiresAt > now) break;
      this.#remove(nonce);
    }
  }
}
