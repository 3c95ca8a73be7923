/**
 * A seal provider and a monotonic counter for tests. Both behave like the real ones: the provider
 * wraps with AES-256-GCM under a random 32-byte KEK held in memory and rejects a wrong key or
 * altered input, and the counter rejects any value below its current one.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { SealmeshError } from '../../src/errors/index.ts';
import type { MonotonicCounter, SealProvider, SealProviderName } from '../../src/seal/types.ts';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export class TestSealProvider implements SealProvider {
  readonly name: SealProviderName = 'keyfile';
  readonly strength = 'test KEK held in process memory';
  /** Number of successful unwraps, so a test can tell whether the provider was used. */
  unwrapCount = 0;
  #kek: Buffer | undefined;

  /** Uses a copy of `kek`, or a random 32-byte KEK. */
  constructor(kek: Uint8Array = randomBytes(32)) {
    if (kek.length !== 32) throw new Error(`test KEK must be 32 bytes, got ${kek.length}`);
    this.#kek = Buffer.from(kek);
  }

  /** Returns a copy of the KEK, for a second provider or a child process with the same key. */
  exportKek(): Buffer {
    return Buffer.from(this.#requireKek());
  }

  async wrap(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#requireKek(), nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    return new Uint8Array(Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]));
  }

  async unwrap(wrapped: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const bytes = Buffer.from(wrapped);
    if (bytes.length < NONCE_BYTES + TAG_BYTES) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_UNWRAP_FAILED', `test seal: wrapped value of ${bytes.length} bytes is too short`);
    }
    const decipher = createDecipheriv('aes-256-gcm', this.#requireKek(), bytes.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    try {
      const plaintext = Buffer.concat([decipher.update(bytes.subarray(NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
      this.unwrapCount += 1;
      return new Uint8Array(plaintext);
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_UNWRAP_FAILED', 'test seal: authentication failed, so the KEK is wrong or the input was altered', { cause: error });
    }
  }

  async close(): Promise<void> {
    this.#kek?.fill(0);
    this.#kek = undefined;
  }

  #requireKek(): Buffer {
    if (this.#kek === undefined) throw new SealmeshError('SEALMESH_ERR_SEAL_CLOSED', 'test seal: the provider was closed');
    return this.#kek;
  }
}

/** An in-memory monotonic counter. */
export class TestCounter implements MonotonicCounter {
  readonly name = 'test-counter';
  /** Every value passed to `advanceTo`, in call order. */
  readonly advances: bigint[] = [];
  #value: bigint;

  constructor(start = 0n) {
    this.#value = start;
  }

  async read(): Promise<bigint> {
    return this.#value;
  }

  async advanceTo(value: bigint): Promise<void> {
    this.advances.push(value);
    if (value < this.#value) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_COUNTER_REGRESSION', `test counter is at ${this.#value}, above the requested ${value}`);
    }
    this.#value = value;
  }

  async close(): Promise<void> {}
}
