/**
 * Seal providers: where the key-encryption key (KEK) comes from.
 *
 * The KEK never reaches the data directory. It wraps the data keys that encrypt stored records and
 * the key that authenticates the integrity chain. A provider either keeps the KEK in process memory
 * (passphrase, key file, Shamir shares) or performs wrap and unwrap inside an HSM (PKCS#11), in
 * which case the KEK never exists in this process at all.
 */
export type SealProviderName = 'passphrase' | 'keyfile' | 'pkcs11' | 'shamir';

export interface SealProvider {
  readonly name: SealProviderName;
  /**
   * One sentence for the start-up log on how strong this choice is, for example that a key file
   * on the same disk protects only against a copy of the data directory alone.
   */
  readonly strength: string;

  /**
   * Encrypts and authenticates `plaintext` (a data key or another small secret) under the KEK,
   * binding `aad`. The result is safe to store in the data directory.
   */
  wrap(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>;

  /**
   * Reverses `wrap`. Throws SEALMESH_ERR_SEAL_UNWRAP_FAILED when the KEK is wrong or the wrapped
   * bytes or `aad` were altered.
   */
  unwrap(wrapped: Uint8Array, aad: Uint8Array): Promise<Uint8Array>;

  /** Releases the KEK or the HSM session. */
  close(): Promise<void>;
}

/**
 * A monotonic counter kept outside the data directory, used to detect a rollback of the whole
 * directory to an older copy.
 */
export interface MonotonicCounter {
  readonly name: string;
  read(): Promise<bigint>;
  /** Raises the counter to `value`; fails when the counter is already higher. */
  advanceTo(value: bigint): Promise<void>;
  close(): Promise<void>;
}
