/**
 * The Shamir seal: the KEK is split into key shares held by several operators, and the server
 * stays sealed after every start until enough of them submit their shares.
 *
 * At init the caller stores a verification blob (the KEK's AES-GCM wrap of a fixed constant) next
 * to the data. Unsealing combines the submitted shares and accepts the result only when it
 * unwraps that blob, so a wrong, forged or mixed-up share never yields a wrong KEK.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { SealmeshError, isSealmeshError } from '../../errors/index.ts';
import { openAead, sealAead } from '../aead.ts';
import { MemoryKekProvider } from '../memory-kek.ts';
import { assertCompatible, combine, interpolate, parseShare, split, type ParsedShare } from './shares.ts';

export { combine, split, MAX_SECRET_BYTES, MAX_SHARES, SHARE_PREFIX } from './shares.ts';

const KEK_BYTES = 32;
const VERIFICATION_PLAINTEXT = new TextEncoder().encode('sealmesh Shamir seal verification');
const VERIFICATION_AAD = new TextEncoder().encode('sealmesh/seal/shamir/verification/v1');

const STRENGTH =
  'Shamir seal: strong against one operator or one disk, because the KEK needs the threshold number of shares; the server starts sealed after every restart';

/** A seal provider whose KEK was combined from key shares. */
export class ShamirSealProvider extends MemoryKekProvider {
  private constructor(kek: Uint8Array) {
    super('shamir', STRENGTH, kek);
  }

  /**
   * Generates a random 32-byte KEK and splits it into `shares` key shares with the given
   * `threshold`. Returns the provider, the share texts to hand to the operators, and the
   * verification blob that the caller must store for unsealing. Throws
   * SEALMESH_ERR_INVALID_ARGUMENT for counts outside the bounds of `split`.
   */
  static create(options: { shares: number; threshold: number }): { provider: ShamirSealProvider; shares: string[]; verification: Uint8Array } {
    const kek = randomBytes(KEK_BYTES);
    try {
      const shares = split(kek, options.shares, options.threshold);
      const verification = sealAead(kek, VERIFICATION_PLAINTEXT, VERIFICATION_AAD);
      return { provider: new ShamirSealProvider(kek), shares, verification };
    } finally {
      kek.fill(0);
    }
  }

  /**
   * Combines `shares` and checks the result against `verification`. Throws the errors of `combine`
   * for bad or too few shares, and SEALMESH_ERR_SEAL_UNWRAP_FAILED when the combined key does not
   * unwrap the verification blob.
   */
  static fromShares(shares: string[], verification: Uint8Array): ShamirSealProvider {
    const kek = combine(shares);
    try {
      return ShamirSealProvider.verifiedFromKey(kek, verification);
    } finally {
      kek.fill(0);
    }
  }

  /** Wraps the verification constant under this provider's KEK, for a caller that lost the blob. */
  async createVerification(): Promise<Uint8Array> {
    return this.wrap(VERIFICATION_PLAINTEXT, VERIFICATION_AAD);
  }

  /**
   * Returns a provider for `candidate` when it unwraps `verification` to the expected constant.
   * Throws SEALMESH_ERR_SEAL_UNWRAP_FAILED otherwise, including for a candidate of the wrong
   * length, which means the shares came from a split of some other secret.
   */
  static verifiedFromKey(candidate: Uint8Array, verification: Uint8Array): ShamirSealProvider {
    const mismatch = (cause?: unknown): SealmeshError =>
      new SealmeshError(
        'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
        'Shamir seal: the combined key does not match the stored verification value, so at least one share is wrong or from another cluster',
        { cause },
      );
    if (candidate.length !== KEK_BYTES) {
      throw mismatch();
    }
    let plaintext: Uint8Array;
    try {
      plaintext = openAead(candidate, verification, VERIFICATION_AAD, 'shamir');
    } catch (error) {
      throw mismatch(error);
    }
    if (plaintext.length !== VERIFICATION_PLAINTEXT.length || !timingSafeEqual(plaintext, VERIFICATION_PLAINTEXT)) {
      throw mismatch();
    }
    return new ShamirSealProvider(candidate);
  }
}

/** Unseal progress after a submitted share. */
export interface UnsealProgress {
  /** Accepted shares so far; 0 after a reset. */
  progress: number;
  /** Shares needed, read from the first accepted share; 0 before any share was accepted. */
  threshold: number;
  unsealed: boolean;
}

/**
 * Collects key shares one at a time, for example from operators calling an unseal endpoint, and
 * produces the provider once the threshold is reached and the combined key passes verification.
 */
export class ShamirUnsealer {
  readonly #verification: Uint8Array;
  #shares: ParsedShare[] = [];
  #provider: ShamirSealProvider | undefined;
  /** Threshold of the split that unsealed, kept for `status` after the shares are discarded. */
  #unsealedThreshold = 0;

  /** `verification` is the blob returned by `ShamirSealProvider.create` and stored by the caller. */
  constructor(verification: Uint8Array) {
    this.#verification = Uint8Array.from(verification);
  }

  /**
   * Adds one share. Throws SEALMESH_ERR_SEAL_SHARE_INVALID, keeping the shares accepted so far, for
   * a malformed or mistyped share, a repeated index, or a share from another split than the first
   * accepted one (call `reset` if that first share was the wrong one). When the threshold is
   * reached, it combines the shares. If the result fails verification, it discards every share and
   * throws SEALMESH_ERR_SEAL_UNWRAP_FAILED, because it cannot tell which share was wrong. After
   * unsealing, further shares are ignored.
   */
  submit(share: string): UnsealProgress {
    if (this.#provider !== undefined) {
      return this.status();
    }
    const parsed = parseShare(share, 'submitted share');
    const first = this.#shares[0];
    if (first !== undefined) {
      try {
        assertCompatible(first, parsed, this.#shares);
      } catch (error) {
        parsed.bytes.fill(0);
        throw error;
      }
    }
    this.#shares.push(parsed);

    const threshold = this.#shares[0]!.threshold;
    if (this.#shares.length < threshold) {
      return this.status();
    }

    const candidate = interpolate(this.#shares);
    try {
      this.#provider = ShamirSealProvider.verifiedFromKey(candidate, this.#verification);
      this.#unsealedThreshold = threshold;
    } catch (error) {
      if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_UNWRAP_FAILED')) {
        throw new SealmeshError(
          'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
          `Shamir seal: the ${threshold} submitted shares combine to a key that fails verification; all shares were discarded, submit them again and check each one`,
          { cause: error },
        );
      }
      throw error;
    } finally {
      candidate.fill(0);
      this.#discardShares();
    }
    return this.status();
  }

  /** Returns the current progress without changing it. */
  status(): UnsealProgress {
    if (this.#provider !== undefined) {
      return { progress: this.#unsealedThreshold, threshold: this.#unsealedThreshold, unsealed: true };
    }
    return { progress: this.#shares.length, threshold: this.#shares[0]?.threshold ?? 0, unsealed: false };
  }

  /** Discards the accepted shares, for example after a share from the wrong cluster. */
  reset(): void {
    this.#discardShares();
  }

  /**
   * The unsealed provider. Throws SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT while fewer shares than
   * the threshold have been accepted.
   */
  get provider(): ShamirSealProvider {
    if (this.#provider === undefined) {
      const { progress, threshold } = this.status();
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT',
        `Shamir seal: still sealed with ${progress} of ${threshold === 0 ? 'the required' : threshold} shares; submit more shares`,
      );
    }
    return this.#provider;
  }

  #discardShares(): void {
    for (const share of this.#shares) {
      share.bytes.fill(0);
    }
    this.#shares = [];
  }
}
