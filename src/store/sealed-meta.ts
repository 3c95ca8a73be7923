/**
 * The clear meta record `m/meta` and the wrapped keyring `m/keyring` of a sealed store.
 */
import { SealmeshError } from '../errors/index.ts';
import type { SealProvider } from '../seal/types.ts';
import { callBackend, recordError, storeError } from './integrity-errors.ts';
import { FORMAT_VERSION, INTERNAL_PREFIX, KEYRING_KEY, type Keyring, META_KEY, STORE_ID_BYTES, decodeKeyring, encodeKeyring } from './sealed-format.ts';
import type { Store } from './types.ts';

/** The meta record, readable without the KEK. */
export interface SealedMeta {
  /** Format version of the sealed store. */
  format: number;
  /** Random store id as 32 hex digits. */
  storeId: string;
  /** Name of the seal provider that wraps the keyring. */
  providerName: string;
  /** Public parameters the provider needs before it can unwrap, for example a KDF salt. Never secret. */
  providerParams: Record<string, unknown>;
}

export function encodeMeta(meta: SealedMeta): Uint8Array {
  const { format, storeId, providerName, providerParams } = meta;
  return Buffer.from(JSON.stringify({ format, storeId, providerName, providerParams }));
}

/**
 * Parses the meta record. Throws SEALMESH_ERR_INTEGRITY_RECORD_ALTERED when it is not a meta record
 * and SEALMESH_ERR_SEALED_FORMAT_UNSUPPORTED when it names another format version.
 */
export function parseMeta(bytes: Uint8Array, revision: number): SealedMeta {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    value = undefined;
  }
  const fields = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  const { format, storeId, providerName, providerParams } = fields;
  if (typeof format === 'number' && format !== FORMAT_VERSION) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEALED_FORMAT_UNSUPPORTED',
      `sealed store format ${format} is not the supported format ${FORMAT_VERSION}; open it with the sealmesh version that wrote it`,
    );
  }
  if (
    format !== FORMAT_VERSION ||
    typeof storeId !== 'string' ||
    !/^[0-9a-f]{32}$/.test(storeId) ||
    typeof providerName !== 'string' ||
    !isJsonObject(providerParams)
  ) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', META_KEY, revision, 'the meta record is not valid meta JSON');
  }
  return { format, storeId, providerName, providerParams };
}

/** Returns true when `value` is a plain object that survives a JSON round trip unchanged in shape. */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  try {
    const copy: unknown = JSON.parse(JSON.stringify(value));
    return typeof copy === 'object' && copy !== null && !Array.isArray(copy);
  } catch {
    return false;
  }
}

/** Reads the meta record without any key, or returns undefined when the backend has none. */
export async function readMeta(backend: Store): Promise<SealedMeta | undefined> {
  const record = await callBackend('meta read', () => backend.get(META_KEY));
  return record === undefined ? undefined : parseMeta(record.value, record.modRevision);
}

/**
 * Reads the meta record without any key, or returns undefined for an empty backend. Throws
 * SEALMESH_ERR_INTEGRITY_RECORD_MISSING when the meta record is missing but other internal records
 * of a sealed store remain, because only an edit outside the sealed store removes it, and
 * SEALMESH_ERR_INTEGRITY_STORE_MISMATCH when the backend contains records of no sealed store.
 */
export async function readMetaStrict(backend: Store): Promise<SealedMeta | undefined> {
  const meta = await readMeta(backend);
  if (meta !== undefined) return meta;
  const records = await callBackend('record list', () => backend.list(''));
  if (records.length === 0) return undefined;
  if (records.some((record) => record.key.startsWith(INTERNAL_PREFIX))) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_MISSING', META_KEY, undefined, `the meta record is missing, but the backend contains ${records.length} other records of a sealed store`);
  }
  throw storeError('SEALMESH_ERR_INTEGRITY_STORE_MISMATCH', `the meta record ${META_KEY} is missing and the backend contains ${records.length} records of no sealed store`);
}

/** Wraps `keyring` under the provider's KEK, binding `storeId`, and returns the value of `m/keyring`. */
export async function wrapKeyring(provider: SealProvider, storeId: Buffer, keyring: Keyring): Promise<Uint8Array> {
  const plaintext = encodeKeyring(keyring);
  try {
    const wrapped = await provider.wrap(plaintext, storeId);
    return new Uint8Array(Buffer.concat([storeId, wrapped]));
  } finally {
    plaintext.fill(0);
  }
}

/** The store id and unwrapped keyring of a sealed store. */
export interface LoadedKeys {
  meta: SealedMeta;
  storeId: Buffer;
  keyring: Keyring;
}

/**
 * Reads the meta record and unwraps the keyring, reading no user record. Throws
 * SEALMESH_ERR_NOT_INITIALIZED for an empty backend, the errors of `readMetaStrict` for a missing
 * meta record, SEALMESH_ERR_INTEGRITY_STORE_MISMATCH when the meta record names another store than
 * the keyring, and the provider's error (SEALMESH_ERR_SEAL_UNWRAP_FAILED for a wrong KEK) when
 * unwrapping fails.
 */
export async function loadKeys(backend: Store, provider: SealProvider): Promise<LoadedKeys> {
  const meta = await readMetaStrict(backend);
  if (meta === undefined) {
    throw new SealmeshError(
      'SEALMESH_ERR_NOT_INITIALIZED',
      'the backend holds no sealed store: initialise one with SealedStore.initialize',
    );
  }

  const record = await callBackend('keyring read', () => backend.get(KEYRING_KEY));
  if (record === undefined) throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_MISSING', KEYRING_KEY, undefined, 'the keyring is missing');
  const storeId = Buffer.from(meta.storeId, 'hex');
  const value = Buffer.from(record.value);
  if (value.length <= STORE_ID_BYTES) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', KEYRING_KEY, record.modRevision, `the keyring is only ${value.length} bytes`);
  }
  const keyringStoreId = value.subarray(0, STORE_ID_BYTES);
  if (!keyringStoreId.equals(storeId)) {
    const check = `the keyring belongs to store ${keyringStoreId.toString('hex')} but the meta record names store ${meta.storeId}`;
    throw storeError('SEALMESH_ERR_INTEGRITY_STORE_MISMATCH', check);
  }

  const plaintext = await provider.unwrap(value.subarray(STORE_ID_BYTES), storeId);
  try {
    return { meta, storeId, keyring: decodeKeyring(plaintext) };
  } finally {
    plaintext.fill(0);
  }
}
