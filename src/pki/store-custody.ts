import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import type { Store } from '../store/types.ts';
import type { CaSigningKey, KeyCustody } from './custody.ts';
import { P256_KEY_ALGORITHM } from './keys.ts';
import { nodeCrypto } from './x509.ts';

/** Store key prefix under which `StoreKeyCustody` keeps PKCS#8 DER private keys. */
export const CA_KEY_PREFIX = 'ca/keys/';

const LABEL_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/**
 * A key custody that keeps ECDSA P-256 CA keys as PKCS#8 DER in the control-plane store, under
 * `ca/keys/<label>`.
 *
 * The keys it returns are WebCrypto keys whose private half is not extractable, so no code that
 * has a `CaSigningKey` can export it. The key bytes are only as safe as the store that keeps
 * them: with a plain SQLite store, anyone who can read the data directory can read the CA keys.
 */
export class StoreKeyCustody implements KeyCustody {
  readonly name = 'store';
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
    // WebCrypto can export PKCS#8 only from an extractable key. The extractable private key is
    // used for that one export and then dropped; the returned key is a non-extractable re-import.
    const pair = (await nodeCrypto.subtle.generateKey(P256_KEY_ALGORITHM, true, ['sign', 'verify'])) as {
      publicKey: CryptoKeyType;
      privateKey: CryptoKeyType;
    };
    const pkcs8 = new Uint8Array(await nodeCrypto.subtle.exportKey('pkcs8', pair.privateKey));
    let privateKey: CryptoKeyType;
    let stored: boolean;
    try {
      privateKey = await nodeCrypto.subtle.importKey('pkcs8', pkcs8, P256_KEY_ALGORITHM, false, ['sign']);
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
    return { label, publicKey: pair.publicKey, privateKey, crypto: nodeCrypto };
  }

  /**
   * Loads the key pair stored under `ca/keys/<label>`, or returns undefined when there is none.
   * Throws SEALMESH_ERR_INTERNAL when the stored bytes are not a PKCS#8 ECDSA P-256 private key.
   */
  async load(label: string): Promise<CaSigningKey | undefined> {
    const key = storeKey(label);
    const record = await this.#store.get(key);
    if (record === undefined) return undefined;

    let privateObject: KeyObject;
    try {
      // A view over the record's bytes, so parsing makes no further copy of the key in this module.
      const der = Buffer.from(record.value.buffer, record.value.byteOffset, record.value.byteLength);
      privateObject = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `CA key ${key} in the store is not valid PKCS#8 DER: restore the store from a backup`, {
        cause: error,
      });
    }
    if (privateObject.asymmetricKeyType !== 'ec' || privateObject.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `CA key ${key} in the store is not an ECDSA P-256 key: restore the store from a backup`);
    }
    // PKCS#8 EC keys carry the public point, so the public key is derived rather than stored twice.
    const privateKey = privateObject.toCryptoKey(P256_KEY_ALGORITHM, false, ['sign']);
    const publicKey = createPublicKey(privateObject).toCryptoKey(P256_KEY_ALGORITHM, true, ['verify']);
    return { label, publicKey, privateKey, crypto: nodeCrypto };
  }
}

type CryptoKeyType = CaSigningKey['privateKey'];

function storeKey(label: string): string {
  if (!LABEL_PATTERN.test(label)) {
    throw new SealmeshError(
      'SEALMESH_ERR_INVALID_ARGUMENT',
      `CA key label ${JSON.stringify(label)} is invalid: use 1 to 128 lowercase letters, digits, '.', '-' and '_', starting with a letter or digit`,
    );
  }
  return `${CA_KEY_PREFIX}${label}`;
}
