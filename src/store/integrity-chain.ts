/**
 * The hash chain of the sealed store.
 *
 * Every write stores one entry under `m/chain/<revision>` in the same backend transaction as its
 * records. An entry lists the write's operations by backend key (hashed names and internal keys)
 * with the SHA-256 digest of each stored value, so it reveals no plaintext. Its hash is SHA-256 over
 * the previous entry's hash and a canonical encoding of the entry, and each entry carries an
 * HMAC-SHA-256 of its hash under the keyring's MAC key. The entry of the store's current revision
 * is the head: its MAC authenticates the whole chain, its revision and its epoch, so no separate
 * head record is written. A watcher can authenticate the entry of one revision without walking
 * the chain.
 */
import { createHash, createHmac, hash as oneShotHash, timingSafeEqual } from 'node:crypto';
import { secretKeyOf } from './secret-keys.ts';
import { CHAIN_PREFIX, DATA_PREFIX, INTERNAL_PREFIX } from './sealed-format.ts';
import { storeError } from './integrity-errors.ts';

/** Digits of the zero-padded revision in a chain key; 16 hold every safe integer. */
const REVISION_DIGITS = 16;
const HEX_HASH = /^[0-9a-f]{64}$/;
const MAC_LABEL_ENTRY = 'sealmesh chain entry v1';
const GENESIS_LABEL = 'sealmesh chain genesis v1';

export interface ChainOp {
  type: 'put' | 'delete';
  /** Backend key: `d/<hashed key>` or an internal `m/` key. */
  name: string;
  /** SHA-256 hex of the stored value for a put; null for a delete. */
  digest: string | null;
  /** Plaintext key of a deleted user record, sealed under the tombstone key, so a watcher can name it after a restart. */
  sealedKey?: string;
}

export interface ChainEntry {
  revision: number;
  /** Hash of the previous entry, or the genesis hash for the first. */
  prev: string;
  /** Rollback epoch in force after this write. */
  epoch: number;
  ops: ChainOp[];
}

/** A chain entry as stored, with its MAC. */
export interface StoredChainEntry extends ChainEntry {
  mac: string;
}

/** The last chain entry, as the store keeps it in memory: its revision, hash, epoch and MAC. */
export interface ChainHead {
  revision: number;
  hash: string;
  epoch: number;
  mac: string;
}

/** Returns the head that `entry` forms when it is the last entry of the chain. */
export function headOf(entry: StoredChainEntry): ChainHead {
  return { revision: entry.revision, hash: entryHash(entry), epoch: entry.epoch, mac: entry.mac };
}

/** Returns the backend key of the chain entry of `revision`. */
export function chainKey(revision: number): string {
  return CHAIN_PREFIX + String(revision).padStart(REVISION_DIGITS, '0');
}

/** Returns the revision a chain key names, or undefined when the key is not a well-formed chain key. */
export function chainKeyRevision(key: string): number | undefined {
  const digits = key.slice(CHAIN_PREFIX.length);
  if (!key.startsWith(CHAIN_PREFIX) || !/^[0-9]{16}$/.test(digits)) return undefined;
  const revision = Number(digits);
  return Number.isSafeInteger(revision) && revision > 0 ? revision : undefined;
}

/** Returns the `prev` of the first entry, which ties the chain to its store. */
export function genesisHash(storeId: Buffer): string {
  return createHash('sha256').update(GENESIS_LABEL).update(storeId).digest('hex');
}

/** Returns the entry hash: SHA-256 over the previous hash and the canonical encoding of the entry. */
export function entryHash(entry: ChainEntry): string {
  // A JSON array with a fixed field order: integers and strings have exactly one JSON encoding.
  const canonical = JSON.stringify([
    entry.revision,
    entry.prev,
    entry.epoch,
    entry.ops.map((op) => [op.type, op.name, op.digest, op.sealedKey ?? null]),
  ]);
  return oneShotHash('sha256', Buffer.concat([Buffer.from(entry.prev, 'hex'), Buffer.from(canonical, 'utf8')]), 'hex');
}

export function entryMac(macKey: Buffer, storeId: Buffer, hash: string): string {
  return createHmac('sha256', secretKeyOf(macKey)).update(MAC_LABEL_ENTRY).update(storeId).update(Buffer.from(hash, 'hex')).digest('hex');
}

/** Compares two hex MACs in constant time. */
export function macMatches(expected: string, actual: string): boolean {
  const a = Buffer.from(expected, 'hex');
  const b = Buffer.from(actual, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export function encodeEntry(entry: StoredChainEntry): Uint8Array {
  const ops = entry.ops.map((op) =>
    op.type === 'put' ? { type: op.type, name: op.name, digest: op.digest } : { type: op.type, name: op.name, digest: null, sealedKey: op.sealedKey },
  );
  return Buffer.from(JSON.stringify({ revision: entry.revision, prev: entry.prev, epoch: entry.epoch, ops, mac: entry.mac }));
}

/**
 * Parses a stored chain entry. Throws SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN, naming `key`, when it
 * is not JSON of exactly the stored shape.
 */
export function parseEntry(key: string, bytes: Uint8Array): StoredChainEntry {
  const broken = (problem: string) => storeError('SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN', `chain entry ${key} ${problem}`);
  const value = parseJson(bytes);
  if (!isPlainObject(value) || !hasExactly(value, ['revision', 'prev', 'epoch', 'ops', 'mac'])) throw broken('is not a chain entry');
  const { revision, prev, epoch, ops, mac } = value;
  if (!isCount(revision) || revision < 1) throw broken('has an invalid revision');
  if (!isHash(prev) || !isHash(mac)) throw broken('has an invalid prev hash or MAC');
  if (!isCount(epoch)) throw broken('has an invalid epoch');
  if (!Array.isArray(ops)) throw broken('has no operation list');
  return { revision, prev, epoch, ops: ops.map((op) => parseOp(op, broken)), mac };
}

function parseOp(op: unknown, broken: (problem: string) => Error): ChainOp {
  if (!isPlainObject(op)) throw broken('has an operation that is not an object');
  const { type, name, digest, sealedKey } = op;
  if (typeof name !== 'string' || !(name.startsWith(DATA_PREFIX) || name.startsWith(INTERNAL_PREFIX))) {
    throw broken('has an operation with an invalid name');
  }
  if (type === 'put' && hasExactly(op, ['type', 'name', 'digest']) && isHash(digest)) return { type, name, digest };
  if (type === 'delete' && hasExactly(op, ['type', 'name', 'digest', 'sealedKey']) && digest === null && typeof sealedKey === 'string') {
    return { type, name, digest, sealedKey };
  }
  throw broken(`has an invalid operation on ${name}`);
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function hasExactly(value: Record<string, unknown>, fields: string[]): boolean {
  const keys = Object.keys(value);
  return keys.length === fields.length && fields.every((field) => Object.hasOwn(value, field));
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isHash(value: unknown): value is string {
  return typeof value === 'string' && HEX_HASH.test(value);
}
