import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import type { Store } from '../store/types.ts';
import { assertKeyLabel, type CaSigningKey, type KeyCustody } from './custody.ts';

/** Store key prefix under which `SealedKeyCustody` keeps PKCS#8 DER private keys. */
export const CA_KEY_PREFIX = 'ca/keys/';

/**
 * The default key custody: ECDSA P-256 CA keys kept as PKCS#8 DER records under `ca/keys/<label>`
 * in the store, and in memory only as node:crypto KeyObjects.
 *
 * The server passes its `SealedStore`, so on disk a key exists only encrypted under a data key,
 * and the sealed store never caches records under `ca/keys/`. The DER bytes exist in the
 * JavaScript heap only between the store read or write and the `fill(0)` that follows it. No PEM
 * string of a private key is ever made, because a string cannot be wiped. The KeyObject keeps its
 * own copy outside the heap, which OpenSSL clears when the KeyObject is collected.
 * NOTE: with a plain `SqliteStore`, as some tests pass, the keys are stored in the clear.
 */
export class SealedKeyCustody implements KeyCustody {
  readonly name = 'sealed';
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Generates an ECDSA P-256 key pair and stores its PKCS#8 DER under `ca/keys/<label>`.
   * Throws SEALMESH_ERR_CONFLICT when the label is already taken and SEALMESH_ERR_INVALID_ARGUMENT
   * when it is not a valid label.
   */
  async generate(label: string): Promise<CaSigningKey> {
    const key = storeKey(label);
    const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pkcs8 = pair.privateKey.export({ format: 'der', type: 'pkcs8' });
    let stored: boolean;
    try {
      const result = await this.#store.txn({
        compare: [{ key, modRevision: 0 }],
        success: [{ type: 'put', key, value: pkcs8 }],
      });
      stored = result.succeeded;
    } finally {
      pkcs8.fill(0);
    }
    if (!stored) {
      throw new SealmeshError('SEALMESH_ERR_CONFLICT', `CA key label ${JSON.stringify(label)} already exists: choose another label`);
    }
    return signingKey(label, pair.privateKey, pair.publicKey);
  }

  /**
   * Loads the key pair stored under `ca/keys/<label>`, or returns undefined when there is none.
   * Throws SEALMESH_ERR_INTERNAL when the stored bytes are not a PKCS#8 ECDSA P-256 private key.
   */
  async load(label: string): Promise<CaSigningKey | undefined> {
    const key = storeKey(label);
    const record = await this.#store.get(key);
    if (record === undefined) return undefined;

    let privateKey: KeyObject;
    // A view over the record's bytes, so parsing makes no further copy of the key in this module,
    // and the one copy is zeroed whether or not it parses.
    const der = Buffer.from(record.value.buffer, record.value.byteOffset, record.value.byteLength);
    try {
      privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `CA key ${key} in the store is not valid PKCS#8 DER: restore the store from a backup`, {
        cause: error,
      });
    } finally {
      der.fill(0);
    }
    if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `CA key ${key} in the store is not an ECDSA P-256 key: restore the store from a backup`);
    }
    // PKCS#8 EC keys carry the public point, so the public key is derived rather than stored twice.
    return signingKey(label, privateKey, createPublicKey(privateKey));
  }

  /** Deletes `ca/keys/<label>`. Returns false when there was no such key. */
  async destroy(label: string): Promise<boolean> {
    return this.#store.delete(storeKey(label));
  }

  /** Nothing to release: the keys live in the store, which the caller closes. */
  async close(): Promise<void> {}
}

/** Wraps a KeyObject pair. The private KeyObject stays inside the closure and is never exported. */
function signingKey(label: string, privateKey: KeyObject, publicKey: KeyObject): CaSigningKey {
  const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
  return {
    label,
    spki,
    // The callback form of crypto.sign runs in the libuv thread pool, off the event loop.
    sign: (data) =>
      new Promise((resolve, reject) => {
        sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' }, (error, signature) => {
          if (error !== null) reject(error);
          else resolve(new Uint8Array(signature));
        });
      }),
  };
}

function storeKey(label: string): string {
  assertKeyLabel(label);
  return `${CA_KEY_PREFIX}${label}`;
}
