/**
 * The base of the providers that hold the KEK in process memory: passphrase, key file and Shamir.
 */
import { SealmeshError } from '../errors/index.ts';
import { AEAD_KEY_BYTES, openAead, sealAead } from './aead.ts';
import type { SealProvider, SealProviderName } from './types.ts';

/**
 * A seal provider that wraps with AES-256-GCM under a 32-byte KEK kept in a private buffer.
 *
 * NOTE: `close` overwrites that buffer with zeros, but JavaScript cannot guarantee that no other
 * copy of the key remains in memory (for example inside the KDF or a garbage-collected buffer).
 */
export class MemoryKekProvider implements SealProvider {
  readonly name: SealProviderName;
  readonly strength: string;
  #kek: Buffer | undefined;

  /** Copies `kek`, so the caller may wipe its own copy afterwards. */
  protected constructor(name: SealProviderName, strength: string, kek: Uint8Array) {
    if (kek.length !== AEAD_KEY_BYTES) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `${name} seal: the KEK is ${kek.length} bytes, expected ${AEAD_KEY_BYTES}`);
    }
    this.name = name;
    this.strength = strength;
    this.#kek = Buffer.from(kek);
  }

  async wrap(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    return sealAead(this.#requireKek(), plaintext, aad);
  }

  async unwrap(wrapped: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    return openAead(this.#requireKek(), wrapped, aad, this.name);
  }

  /** Overwrites the KEK with zeros. Later calls to `wrap` and `unwrap` fail. Idempotent. */
  async close(): Promise<void> {
    this.#kek?.fill(0);
    this.#kek = undefined;
  }

  /** Returns the KEK, or throws SEALMESH_ERR_SEAL_CLOSED after `close`. */
  #requireKek(): Buffer {
    if (this.#kek === undefined) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_CLOSED', `${this.name} seal: the provider was closed; open it again to wrap or unwrap`);
    }
    return this.#kek;
  }
}
