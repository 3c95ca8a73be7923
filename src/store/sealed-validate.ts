/**
 * Argument checks of the sealed store.
 *
 * They apply the rules of `SqliteStore` to the plaintext keys and values before hashing and
 * encryption, so a caller gets the same codes from both stores. Two limits are tighter because the
 * backend stores the hashed key and the envelope: a key's hashed form must fit the backend's key
 * limit, and a value must leave room for the envelope and the plaintext key inside it.
 */
import { type ErrorCode, SealmeshError } from '../errors/index.ts';
import { ENVELOPE_OVERHEAD_BYTES, KEY_LENGTH_BYTES, hashKey } from './sealed-format.ts';
import { checkKey, MAX_KEY_BYTES, MAX_VALUE_BYTES } from './sqlite.ts';

export { checkKey };
import type { Operation, TxnRequest } from './types.ts';

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

export function checkInteger(name: string, value: unknown, min: number, code: ErrorCode = 'SEALMESH_ERR_INVALID_ARGUMENT'): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new SealmeshError(code, `${name} ${String(value)} is invalid: use an integer of at least ${min}`);
  }
}

/** Throws SEALMESH_ERR_STORE_TXN_INVALID (or a key or value code) unless `request` is a well-formed transaction. */
export function checkTxn(request: TxnRequest): void {
  const invalid = (problem: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_STORE_TXN_INVALID', `store transaction is invalid: ${problem}`);
  if (typeof request !== 'object' || request === null) throw invalid('the request is not an object');
  if (!Array.isArray(request.compare)) throw invalid('compare is not an array');
  for (const compare of request.compare) {
    checkKey(compare?.key, 'key');
    const hasRevision = 'modRevision' in compare;
    if (hasRevision === 'value' in compare) {
      throw invalid(`the compare on ${JSON.stringify(compare.key)} needs exactly one of modRevision and value`);
    }
    if (hasRevision) checkInteger('compare modRevision', compare.modRevision, 0, 'SEALMESH_ERR_STORE_TXN_INVALID');
    else checkValue(compare.value, compare.key, 'compare value');
  }
  const branches: [string, Operation[]][] = [['success', request.success], ['failure', request.failure ?? []]];
  for (const [branch, operations] of branches) {
    if (!Array.isArray(operations)) throw invalid(`${branch} is not an array`);
    const keys = new Set<string>();
    for (const operation of operations) {
      checkKey(operation?.key, 'key');
      if (operation.type === 'put') checkValue(operation.value, operation.key);
      else if (operation.type !== 'delete') {
        throw invalid(`operation type ${JSON.stringify((operation as { type: unknown }).type)} is not put or delete`);
      }
      if (keys.has(operation.key)) throw invalid(`the ${branch} branch writes ${JSON.stringify(operation.key)} more than once`);
      keys.add(operation.key);
    }
  }
}

/**
 * Returns the backend key of a checked user key. Throws SEALMESH_ERR_STORE_KEY_INVALID when the
 * hashed form exceeds the backend key limit, which happens above 44 non-empty segments.
 */
export function recordName(nameKey: Buffer, key: string): string {
  const name = hashKey(nameKey, key);
  const bytes = Buffer.byteLength(name, 'utf8');
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
