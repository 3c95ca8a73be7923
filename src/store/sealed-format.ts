/**
 * Byte formats of the sealed store: the backend key layout, hashed record names, record envelopes,
 * the keyring and the sealed keys of deleted records.
 *
 * Backend layout:
 * - `d/<hashed key>`: one user record, its value an envelope.
 * - `m/meta`: JSON in the clear (format version, store id, provider name and parameters).
 * - `m/keyring`: the store id (16 bytes) followed by the keyring wrapped by the seal provider.
 * - `m/chain/<revision, 16 digits>`: one hash-chain entry per write (see integrity-chain.ts); the
 *   entry of the backend's current revision is the head.
 *
 * Envelope: `format (1) | storeId (16) | dataKeyId (4, big-endian) | nonce (12) | ciphertext | tag (16)`,
 * AES-256-GCM under the data key. The plaintext is `key length (2, big-endian) | key | value` and the
 * AAD is `format | storeId | dataKeyId | revision (8, big-endian) | backend key`, so a record
 * decrypts only under its own name at the revision of the write that stored it.
 */
import { createCipheriv, createDecipheriv, createHmac, hash, randomBytes, randomFillSync } from 'node:crypto';
import { secretKeyOf } from './secret-keys.ts';
import { SealmeshError } from '../errors/index.ts';
import { recordError } from './integrity-errors.ts';

// Format 2 drops format 1's separate `m/head` record: the entry of the store revision is the head.
export const FORMAT_VERSION = 2;
export const STORE_ID_BYTES = 16;
export const SECRET_KEY_BYTES = 32;
export const KEY_LENGTH_BYTES = 2;
const KEY_ID_BYTES = 4;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + STORE_ID_BYTES + KEY_ID_BYTES;
export const ENVELOPE_OVERHEAD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
const NAME_HASH_BYTES = 16;
const CIPHER = 'aes-256-gcm';
// The AAD of a deleted record's sealed key starts with this byte, which no envelope format uses.
const DELETED_KEY_DOMAIN = 0xd0;

export const DATA_PREFIX = 'd/';
export const INTERNAL_PREFIX = 'm/';
export const META_KEY = 'm/meta';
export const KEYRING_KEY = 'm/keyring';
export const CHAIN_PREFIX = 'm/chain/';

/** The secret keys of one store, wrapped together by the seal provider. */
export interface Keyring {
  /** Id of the data key that seals new records. */
  activeKeyId: number;
  /** Revision of the write that made the active data key active. */
  activeSince: number;
  /** Watch history below this revision may hold envelopes under dropped data keys. 0 when none was dropped. */
  historyFloor: number;
  dataKeys: Map<number, Buffer>;
  /** HMAC key of hashed record names. */
  nameKey: Buffer;
  /** HMAC key of chain entries and the chain head. */
  macKey: Buffer;
  /** AES-256-GCM key of the plaintext keys that chain entries keep for deleted records. */
  tombstoneKey: Buffer;
}

/** Returns SHA-256 of `bytes` as lowercase hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return hash('sha256', bytes, 'hex');
}

/** Returns `value` as 8 big-endian bytes. */
export function uint64(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(value));
  return bytes;
}

/** Returns a keyring of fresh random keys whose first data key (id 1) is active from `revision`. */
export function createKeyring(revision: number): Keyring {
  return {
    activeKeyId: 1,
    activeSince: revision,
    historyFloor: 0,
    dataKeys: new Map([[1, randomBytes(SECRET_KEY_BYTES)]]),
    nameKey: randomBytes(SECRET_KEY_BYTES),
    macKey: randomBytes(SECRET_KEY_BYTES),
    tombstoneKey: randomBytes(SECRET_KEY_BYTES),
  };
}

/**
 * Encodes a keyring as `version (1) | activeKeyId (4) | activeSince (8) | historyFloor (8) |
 * nameKey | macKey | tombstoneKey | count (2) | count × (id (4) | key (32))`. The caller zeroes the result.
 */
export function encodeKeyring(keyring: Keyring): Buffer {
  const fixed = 1 + 4 + 8 + 8 + 3 * SECRET_KEY_BYTES + 2;
  const bytes = Buffer.alloc(fixed + keyring.dataKeys.size * (4 + SECRET_KEY_BYTES));
  let offset = bytes.writeUInt8(FORMAT_VERSION, 0);
  offset = bytes.writeUInt32BE(keyring.activeKeyId, offset);
  offset = bytes.writeBigUInt64BE(BigInt(keyring.activeSince), offset);
  offset = bytes.writeBigUInt64BE(BigInt(keyring.historyFloor), offset);
  for (const key of [keyring.nameKey, keyring.macKey, keyring.tombstoneKey]) offset += key.copy(bytes, offset);
  offset = bytes.writeUInt16BE(keyring.dataKeys.size, offset);
  for (const [id, key] of keyring.dataKeys) {
    offset = bytes.writeUInt32BE(id, offset);
    offset += key.copy(bytes, offset);
  }
  return bytes;
}

/** Decodes an unwrapped keyring into fresh buffers. The caller zeroes `bytes`. */
export function decodeKeyring(bytes: Uint8Array): Keyring {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const unsupported = (problem: string): SealmeshError =>
    new SealmeshError(
      'SEALMESH_ERR_SEALED_FORMAT_UNSUPPORTED',
      `sealed store keyring ${problem}; open the store with the sealmesh version that wrote it`,
    );
  const fixed = 1 + 4 + 8 + 8 + 3 * SECRET_KEY_BYTES + 2;

  if (view.length < fixed) throw unsupported(`is ${view.length} bytes, shorter than the ${fixed}-byte minimum`);
  if (view[0] !== FORMAT_VERSION) throw unsupported(`has format version ${view[0]}, expected ${FORMAT_VERSION}`);
  const count = view.readUInt16BE(fixed - 2);
  if (view.length !== fixed + count * (4 + SECRET_KEY_BYTES)) {
    throw unsupported(`is ${view.length} bytes, which does not match its ${count} data keys`);
  }

  const secret = (offset: number): Buffer => Buffer.from(view.subarray(offset, offset + SECRET_KEY_BYTES));
  const dataKeys = new Map<number, Buffer>();
  for (let offset = fixed; offset < view.length; offset += 4 + SECRET_KEY_BYTES) {
    dataKeys.set(view.readUInt32BE(offset), secret(offset + 4));
  }

  const keyring: Keyring = {
    activeKeyId: view.readUInt32BE(1),
    activeSince: Number(view.readBigUInt64BE(5)),
    historyFloor: Number(view.readBigUInt64BE(13)),
    dataKeys,
    nameKey: secret(21),
    macKey: secret(21 + SECRET_KEY_BYTES),
    tombstoneKey: secret(21 + 2 * SECRET_KEY_BYTES),
  };

  if (!dataKeys.has(keyring.activeKeyId)) {
    zeroKeyring(keyring);
    throw unsupported(`names active data key ${view.readUInt32BE(1)}, which it does not hold`);
  }
  return keyring;
}

/** Overwrites every key of `keyring` with zeros. */
export function zeroKeyring(keyring: Keyring): void {
  for (const key of keyring.dataKeys.values()) key.fill(0);
  keyring.nameKey.fill(0);
  keyring.macKey.fill(0);
  keyring.tombstoneKey.fill(0);
}

/**
 * Returns the backend key of a user key, or of a prefix that ends with `/`. It is `d/` followed by
 * the key's segments, with each non-empty segment replaced by a name hash. The name hash is the
 * base64url of the first 16 bytes of HMAC-SHA-256 over the key up to and including that segment.
 * Empty segments stay empty, so every `/` is kept and the hashed form of a prefix is a prefix of
 * the hashed form of each key under it. Because each hash covers the segments before it, equal
 * segments under different parents differ.
 */
export function hashKey(nameKey: Buffer, key: string): string {
  let cache = nameHashCaches.get(nameKey);
  if (cache === undefined) {
    cache = { names: new Map(), segments: new Map() };
    nameHashCaches.set(nameKey, cache);
  }
  const cached = cache.names.get(key);
  if (cached !== undefined) return cached;
  // Keys share their leading segments (`catalog/instances/<namespace>/<service>/`), so the hash of
  // each segment is cached by the plaintext path that ends with it, and a new key under a known
  // parent costs one HMAC.
  if (cache.segments.size >= NAME_HASH_CACHE_ENTRIES) cache.segments.clear();
  let name = DATA_PREFIX;
  let start = 0;
  while (start <= key.length) {
    const slash = key.indexOf('/', start);
    const end = slash === -1 ? key.length : slash;
    if (end > start) {
      const path = key.slice(0, end);
      let segmentHash = cache.segments.get(path);
      if (segmentHash === undefined) {
        segmentHash = createHmac('sha256', secretKeyOf(nameKey)).update(path, 'utf8').digest().toString('base64url', 0, NAME_HASH_BYTES);
        cache.segments.set(path, segmentHash);
      }
      name += segmentHash;
    }
    if (slash === -1) break;
    name += '/';
    start = slash + 1;
  }
  // A full cache is emptied rather than evicted entry by entry: simple, and misses only cost HMACs.
  if (cache.names.size >= NAME_HASH_CACHE_ENTRIES) cache.names.clear();
  cache.names.set(key, name);
  return name;
}

/**
 * Hashed names by plaintext key, and segment hashes by the plaintext path that ends with the
 * segment, per name key. Record names repeat, and each segment costs one HMAC.
 */
const nameHashCaches = new WeakMap<Buffer, { names: Map<string, string>; segments: Map<string, string> }>();
const NAME_HASH_CACHE_ENTRIES = 100_000;

/**
 * Returns how to list or watch `prefix` in the backend: the hashed form of its longest part that
 * ends at a `/` (or `d/` for none), and whether the plaintext keys found there still need to be
 * filtered by `prefix`.
 */
export function hashPrefix(nameKey: Buffer, prefix: string): { backendPrefix: string; filter: boolean } {
  const boundary = prefix.slice(0, prefix.lastIndexOf('/') + 1);
  return {
    backendPrefix: boundary === '' ? DATA_PREFIX : hashKey(nameKey, boundary),
    filter: boundary !== prefix,
  };
}

/** The clear header of an envelope. */
export interface EnvelopeHeader {
  format: number;
  storeId: Buffer;
  dataKeyId: number;
}

/** Returns the header of `envelope`, or undefined when it is too short to be one. */
export function readEnvelopeHeader(envelope: Uint8Array): EnvelopeHeader | undefined {
  if (envelope.byteLength < ENVELOPE_OVERHEAD_BYTES) return undefined;
  const view = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  return {
    format: view[0] as number,
    storeId: view.subarray(1, 1 + STORE_ID_BYTES),
    dataKeyId: view.readUInt32BE(1 + STORE_ID_BYTES),
  };
}

/** Returns the AAD of a record envelope: its header, then `revision` as 8 big-endian bytes, then `name`. */
function recordAad(header: Uint8Array, revision: number, name: string): Buffer {
  const aad = Buffer.allocUnsafe(HEADER_BYTES + 8 + Buffer.byteLength(name, 'utf8'));
  aad.set(header.subarray(0, HEADER_BYTES), 0);
  aad.writeUInt32BE(Math.floor(revision / 2 ** 32), HEADER_BYTES);
  aad.writeUInt32BE(revision >>> 0, HEADER_BYTES + 4);
  aad.write(name, HEADER_BYTES + 8, 'utf8');
  return aad;
}

// Nonces come from a pool filled by one CSPRNG call for many records, because in the write profile
// a CSPRNG call per 12-byte nonce cost about as much as the AES-GCM encryption of a 1 KiB record.
// Each pool byte is used once.
const NONCE_POOL_BYTES = 256 * NONCE_BYTES;
const noncePool = Buffer.alloc(NONCE_POOL_BYTES);
let noncePoolOffset = NONCE_POOL_BYTES;

/** Copies a fresh random nonce into `target` at `offset`. */
function writeNonce(target: Buffer, offset: number): void {
  if (noncePoolOffset === NONCE_POOL_BYTES) {
    randomFillSync(noncePool);
    noncePoolOffset = 0;
  }
  noncePool.copy(target, offset, noncePoolOffset, noncePoolOffset + NONCE_BYTES);
  noncePoolOffset += NONCE_BYTES;
}

/** Encrypts `key` and `value` into an envelope for backend key `name` written at `revision`. */
export function sealRecord(
  storeId: Buffer,
  keyring: Keyring,
  name: string,
  revision: number,
  key: string,
  value: Uint8Array,
): Uint8Array {
  // The plaintext is laid out in place of the ciphertext and encrypted into a second buffer, which
  // is copied back: two copies of the value in all, and no concatenation.
  const keyBytes = Buffer.byteLength(key, 'utf8');
  const plaintextBytes = KEY_LENGTH_BYTES + keyBytes + value.byteLength;
  const envelope = Buffer.allocUnsafeSlow(ENVELOPE_OVERHEAD_BYTES + plaintextBytes);
  envelope.writeUInt8(FORMAT_VERSION, 0);
  storeId.copy(envelope, 1);
  envelope.writeUInt32BE(keyring.activeKeyId, 1 + STORE_ID_BYTES);
  writeNonce(envelope, HEADER_BYTES);
  const body = HEADER_BYTES + NONCE_BYTES;
  envelope.writeUInt16BE(keyBytes, body);
  envelope.write(key, body + KEY_LENGTH_BYTES, 'utf8');
  envelope.set(value, body + KEY_LENGTH_BYTES + keyBytes);

  const nonce = envelope.subarray(HEADER_BYTES, body);
  const cipher = createCipheriv(CIPHER, secretKeyOf(keyring.dataKeys.get(keyring.activeKeyId) as Buffer), nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(recordAad(envelope, revision, name));
  const plaintext = envelope.subarray(body, body + plaintextBytes);
  const ciphertext = cipher.update(plaintext);
  const rest = cipher.final();
  ciphertext.copy(envelope, body);
  rest.copy(envelope, body + ciphertext.length);
  cipher.getAuthTag().copy(envelope, body + plaintextBytes);
  return envelope;
}

/**
 * Decrypts the envelope of backend key `name` stored at `revision` and checks that the key inside
 * hashes to `name`. Throws SEALMESH_ERR_INTEGRITY_FOREIGN_RECORD when another store sealed it and
 * SEALMESH_ERR_INTEGRITY_RECORD_ALTERED for every other failure.
 */
export function openRecord(
  storeId: Buffer,
  keyring: Keyring,
  name: string,
  revision: number,
  envelope: Uint8Array,
): { key: string; value: Uint8Array } {
  const altered = (check: string): SealmeshError => recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, check);
  const header = checkEnvelopeHeader(storeId, name, revision, envelope);
  const dataKey = keyring.dataKeys.get(header.dataKeyId);
  if (dataKey === undefined) throw altered(`the envelope names data key ${header.dataKeyId}, which the keyring does not hold`);

  const bytes = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  const nonce = bytes.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES);
  const decipher = createDecipheriv(CIPHER, secretKeyOf(dataKey), nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(recordAad(bytes.subarray(0, HEADER_BYTES), revision, name));
  decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
  let plaintext: Buffer;
  try {
    plaintext = Buffer.concat([decipher.update(bytes.subarray(HEADER_BYTES + NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw altered('authenticated decryption failed, so the envelope, its key or its revision was changed');
  }

  const keyLength = plaintext.length >= KEY_LENGTH_BYTES ? plaintext.readUInt16BE(0) : -1;
  if (keyLength < 1 || plaintext.length < KEY_LENGTH_BYTES + keyLength) throw altered('the decrypted envelope has no valid key');
  const key = plaintext.toString('utf8', KEY_LENGTH_BYTES, KEY_LENGTH_BYTES + keyLength);
  if (hashKey(keyring.nameKey, key) !== name) throw altered('the key inside the envelope does not hash to the record name');
  return { key, value: new Uint8Array(plaintext.subarray(KEY_LENGTH_BYTES + keyLength)) };
}

/** Returns the header of `envelope` after checking its length, format and store id. */
export function checkEnvelopeHeader(storeId: Buffer, name: string, revision: number | undefined, envelope: Uint8Array): EnvelopeHeader {
  const header = readEnvelopeHeader(envelope);
  if (header === undefined) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, `the envelope is ${envelope.byteLength} bytes, shorter than any envelope`);
  }
  if (header.format !== FORMAT_VERSION) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, `the envelope has format ${header.format}, expected ${FORMAT_VERSION}`);
  }
  if (!header.storeId.equals(storeId)) {
    const check = `the envelope belongs to store ${header.storeId.toString('hex')}, not to this store ${storeId.toString('hex')}`;
    throw recordError('SEALMESH_ERR_INTEGRITY_FOREIGN_RECORD', name, revision, check);
  }
  return header;
}

function deletedKeyAad(storeId: Buffer, revision: number, name: string): Buffer {
  return Buffer.concat([Buffer.of(DELETED_KEY_DOMAIN), storeId, uint64(revision), Buffer.from(name, 'utf8')]);
}

/** Returns the plaintext key of a record deleted at `revision`, sealed for its chain entry (base64 `nonce | ciphertext | tag`). */
export function sealDeletedKey(storeId: Buffer, keyring: Keyring, name: string, revision: number, key: string): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(CIPHER, secretKeyOf(keyring.tombstoneKey), nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(deletedKeyAad(storeId, revision, name));
  return Buffer.concat([nonce, cipher.update(key, 'utf8'), cipher.final(), cipher.getAuthTag()]).toString('base64');
}

/** Reverses `sealDeletedKey`. Throws SEALMESH_ERR_INTEGRITY_RECORD_ALTERED when the sealed key fails to open. */
export function openDeletedKey(storeId: Buffer, keyring: Keyring, name: string, revision: number, sealed: string): string {
  const bytes = Buffer.from(sealed, 'base64');
  const failed = recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, 'the sealed key of the deleted record does not decrypt');
  if (bytes.length < NONCE_BYTES + TAG_BYTES) throw failed;
  const decipher = createDecipheriv(CIPHER, secretKeyOf(keyring.tombstoneKey), bytes.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(deletedKeyAad(storeId, revision, name));
  decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
  let key: string;
  try {
    key = Buffer.concat([decipher.update(bytes.subarray(NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    throw failed;
  }
  if (hashKey(keyring.nameKey, key) !== name) throw failed;
  return key;
}
