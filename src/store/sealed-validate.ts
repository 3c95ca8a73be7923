/**
 * Argument checks of the sealed store.
 *
 * They apply the rules of `SqliteStore` to the plaintext keys and values before hashing and
 * encryption, so a caller gets the same codes from both stores. Two limits are tighter because the
 * backend stores the hashed key and the envelope: a key's hashed form must fit the backend's key
 * limit, and a value must leave room for the envelope and the plaintext key inside it.
 */
import { SealmeshError } from '../errors/index.ts';
import { ENVELOPE_OVERHEAD_BYTES, KEY_LENGTH_BYTES, hashKey } from './sealed-format.ts';
import { checkInteger, checkKey, checkTxn as checkBackendTxn, MAX_KEY_BYTES, MAX_VALUE_BYTES } from './sqlite.ts';
import type { TxnRequest } from './types.ts';

export { checkInteger, checkKey };

/** Returns the largest value a sealed record under `key` can hold. */
export function maxSealedValueBytes(key: string): number {
  return MAX_VALUE_BYTES - ENVELOPE_OVERHEAD_BYTES - KEY_LENGTH_BYTES - Buffer.byteLength(key, 'utf8');
}

/** Throws unless `value` is a byte array that fits a sealed record under `key`. */
export function checkValue(value: unknown, key: string, role = 'value'): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new SealmeshError('SEALMESH_ERR_STORE_VALUE_INVALID', `store ${role} is invalid: it is not a Uint8Array`);
  }
  const max = role === 'value' ? maxSealedValueBytes(key) : MAX_VALUE_BYTES;
  if (value.byteLength > max) {
    throw new SealmeshError(
      'SEALMESH_ERR_STORE_VALUE_TOO_LARGE',
      `store ${role} is ${value.byteLength} bytes, above the maximum of ${max} bytes` +
        (role === 'value' ? ' that a sealed record leaves after its envelope and key' : ''),
    );
  }
}

/** Throws SEALMESH_ERR_STORE_TXN_INVALID (or a key or value code) unless `request` is a well-formed transaction. */
export function checkTxn(request: TxnRequest): void {
  checkBackendTxn(request, (value, key, role) => checkValue(value, key, role));
}

/**
 * Returns the backend key of a checked user key. Throws SEALMESH_ERR_STORE_KEY_INVALID when the
 * hashed form exceeds the backend key limit, which happens above 44 non-empty segments.
 */
export function recordName(nameKey: Buffer, key: string): string {
  const name = hashKey(nameKey, key);
  // A hashed name is ASCII (`d/`, base64url and `/`), so its length is its size in bytes.
  const bytes = name.length;
  if (bytes > MAX_KEY_BYTES) {
    const segments = key.split('/').filter((segment) => segment !== '').length;
    throw new SealmeshError(
      'SEALMESH_ERR_STORE_KEY_INVALID',
      `store key ${JSON.stringify(key.slice(0, 64))} is invalid: its ${segments} non-empty segments hash to ${bytes} bytes, ` +
        `above the ${MAX_KEY_BYTES}-byte key limit. Use at most 44 non-empty segments`,
    );
  }
  return name;
}
