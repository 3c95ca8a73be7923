/**
 * The leaf horizon of each root: a stored upper bound on the notAfter of every leaf issued under
 * it. A root retired by a rotation leaves the trust bundle only after its horizon has passed, so no
 * SVID that a proxy still presents loses its trust anchor.
 */
import type { Store } from '../store/types.ts';
import { decodeRecord, encodeRecord, STORE_KEYS, type HorizonRecord } from './ca-records.ts';

/**
 * How far beyond a leaf's notAfter a reservation reaches. A CA that issues steadily writes the
 * horizon about once per step instead of once per leaf, and a retired root stays in the bundle at
 * most this much longer than needed.
 */
export const HORIZON_STEP_SECONDS = 15 * 60;

/** A stored horizon with the modRevision it was read at; `modRevision` 0 means no record. */
export interface StoredHorizon {
  notAfterMs: number;
  modRevision: number;
}

export class LeafHorizon {
  readonly #store: Store;
  /** The last horizon read or written, per root serial. */
  readonly #cache = new Map<string, StoredHorizon>();
  #writing: Promise<unknown> = Promise.resolve();

  constructor(store: Store) {
    this.#store = store;
  }

  /** Returns the stored horizon of the root, or undefined when the root has none. */
  async read(rootSerial: string): Promise<StoredHorizon | undefined> {
    const record = await this.#store.get(STORE_KEYS.horizonPrefix + rootSerial);
    if (record === undefined) {
      this.#cache.delete(rootSerial);
      return undefined;
    }
    const value = decodeRecord<HorizonRecord>(record, ['notAfter']);
    const stored = { notAfterMs: Date.parse(value.notAfter), modRevision: record.modRevision };
    this.#cache.set(rootSerial, stored);
    return stored;
  }

  /**
   * Makes sure that the stored horizon of the root is at least `leafNotAfter`, writing it before
   * the leaf is signed. Without a record, `untrackedUntil` is a bound on leaves issued before
   * tracking began (a root created by an older version), and the new record covers it too.
   */
  async reserve(rootSerial: string, leafNotAfter: Date, untrackedUntil: Date): Promise<void> {
    const cached = this.#cache.get(rootSerial);
    if (cached !== undefined && cached.notAfterMs >= leafNotAfter.getTime()) return;
    const write = this.#writing.then(() => this.#extend(rootSerial, leafNotAfter, untrackedUntil));
    this.#writing = write.catch(() => undefined);
    await write;
  }

  /** The write for `ca/leaf-horizon/<serial>` of a new root, for the transaction that creates it. */
  static initialRecord(rootSerial: string, notBefore: Date): { type: 'put'; key: string; value: Uint8Array } {
    return { type: 'put', key: STORE_KEYS.horizonPrefix + rootSerial, value: encodeRecord({ notAfter: notBefore.toISOString() }) };
  }

  /** Forgets the cached horizon of a root whose record a prune deleted. */
  forget(rootSerial: string): void {
    this.#cache.delete(rootSerial);
  }

  async #extend(rootSerial: string, leafNotAfter: Date, untrackedUntil: Date): Promise<void> {
    const key = STORE_KEYS.horizonPrefix + rootSerial;
    // Another CA object on the same store may extend the record at the same time, so the write is
    // a compare-and-swap that rereads and retries when it loses.
    for (;;) {
      const stored = await this.read(rootSerial);
      if (stored !== undefined && stored.notAfterMs >= leafNotAfter.getTime()) return;
      let target = leafNotAfter.getTime() + HORIZON_STEP_SECONDS * 1000;
      if (stored === undefined) target = Math.max(target, untrackedUntil.getTime());
      const notAfter = new Date(target).toISOString();
      const result = await this.#store.txn({
        compare: [{ key, modRevision: stored?.modRevision ?? 0 }],
        success: [{ type: 'put', key, value: encodeRecord({ notAfter }) }],
      });
      if (result.succeeded) {
        this.#cache.set(rootSerial, { notAfterMs: target, modRevision: result.revision });
        return;
      }
    }
  }
}
