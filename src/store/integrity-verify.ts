/**
 * Full verification of a sealed store: the head entry's MAC, the rollback counter, every chain entry, and
 * every backend record against the state the chain describes.
 */
import type { MonotonicCounter, SealProvider } from '../seal/types.ts';
import {
  type ChainHead,
  type StoredChainEntry,
  chainKey,
  chainKeyRevision,
  entryHash,
  entryMac,
  genesisHash,
  headOf,
  macMatches,
  parseEntry,
} from './integrity-chain.ts';
import { callBackend, recordError, storeError } from './integrity-errors.ts';
import {
  CHAIN_PREFIX,
  DATA_PREFIX,
  type Keyring,
  checkEnvelopeHeader,
  openRecord,
  sha256Hex,
  zeroKeyring,
} from './sealed-format.ts';
import { loadKeys } from './sealed-meta.ts';
import type { Store, StoreRecord } from './types.ts';

/** Expected state of one live backend record, rebuilt from the chain. */
export interface LiveRecord {
  digest: string;
  modRevision: number;
  createRevision: number;
  version: number;
}

/** Counts from a successful verification. */
export interface VerifyReport {
  /** Store id as 32 hex digits. */
  storeId: string;
  /** Store revision, which is also the head revision. */
  revision: number;
  /** Rollback epoch of the head. */
  epoch: number;
  /** User records checked and decrypted. */
  records: number;
  /** Chain entries walked, one per write since initialisation. */
  chainEntries: number;
  /** Data keys in the keyring. */
  dataKeys: number;
  /** User records still sealed under a data key other than the active one. */
  recordsUnderOldKeys: number;
}

/** The state a verification rebuilds, which an open store keeps in memory. */
export interface VerifiedState {
  head: ChainHead;
  /** Expected state of every chained backend record (user records, `m/meta` and `m/keyring`) by backend key. */
  live: Map<string, LiveRecord>;
  /** Plaintext key of every user record by backend key. */
  names: Map<string, string>;
  report: VerifyReport;
}

export interface VerifyOptions {
  /** Counter whose value the head epoch must reach; verification only reads it. */
  counter?: MonotonicCounter;
  /** Skips the rollback check, for an operator who restores an older copy on purpose. */
  acceptRollback?: boolean;
}

/**
 * Verifies the backend contents of the store `storeId` with its unwrapped keyring and returns the
 * rebuilt state. Each failure throws a SealmeshError with its own SEALMESH_ERR_INTEGRITY_* code
 * that names the backend key, the revision and the failed check.
 * NOTE: it lists the whole backend at once, so it keeps every record and chain entry in memory.
 */
export async function verifyContents(
  backend: Store,
  storeId: Buffer,
  keyring: Keyring,
  options: VerifyOptions = {},
): Promise<VerifiedState> {
  const head = await verifyHead(backend, storeId, keyring, options);
  const records = await callBackend('record list', () => backend.list(''));
  const chain = records.filter((record) => record.key.startsWith(CHAIN_PREFIX));
  const { entries, live } = walkChain(chain, storeId, keyring, head);

  const names = new Map<string, string>();
  let oldKeyRecords = 0;
  const seen = new Set<string>();
  const isPastDigest = (name: string, digest: string): boolean =>
    entries.some((entry) => entry.ops.some((op) => op.name === name && op.digest === digest));
  // Internal records come first, so an older keyring is reported as replayed rather than through
  // the records it cannot decrypt.
  const ordered = [...records.filter((record) => !record.key.startsWith(DATA_PREFIX)), ...records.filter((record) => record.key.startsWith(DATA_PREFIX))];
  for (const record of ordered) {
    if (record.key.startsWith(CHAIN_PREFIX)) continue;
    seen.add(record.key);
    const opened = checkStoredRecord(storeId, keyring, record, live.get(record.key), isPastDigest);
    if (opened === undefined) continue;
    names.set(record.key, opened.key);
    if (opened.dataKeyId !== keyring.activeKeyId) oldKeyRecords += 1;
  }
  for (const [name, expected] of live) {
    if (!seen.has(name)) {
      const check = `the chain lists it as written at revision ${expected.modRevision}, but the backend has no such record`;
      throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_MISSING', name, expected.modRevision, check);
    }
  }

  const report: VerifyReport = {
    storeId: storeId.toString('hex'),
    revision: head.revision,
    epoch: head.epoch,
    records: names.size,
    chainEntries: entries.length,
    dataKeys: keyring.dataKeys.size,
    recordsUnderOldKeys: oldKeyRecords,
  };
  return { head, live, names, report };
}

/**
 * Reads the head, the chain entry of the store revision, and checks its MAC, that it was stored at
 * that revision and the rollback counter. The chain walk then checks that it is the last entry.
 */
async function verifyHead(backend: Store, storeId: Buffer, keyring: Keyring, options: VerifyOptions): Promise<ChainHead> {
  const revision = await callBackend('revision read', () => backend.revision());
  const key = chainKey(revision);
  const record = revision > 0 ? await callBackend('head read', () => backend.get(key)) : undefined;
  if (record === undefined) {
    const check = `the store is at revision ${revision} but has no chain entry ${key}, so its last write was removed or a write bypassed the sealed store`;
    throw storeError('SEALMESH_ERR_INTEGRITY_HEAD_INVALID', check);
  }
  let head: ChainHead;
  try {
    head = headOf(parseEntry(key, record.value));
  } catch {
    throw storeError('SEALMESH_ERR_INTEGRITY_HEAD_INVALID', `the head entry ${key} is not a valid chain entry`);
  }
  if (head.revision !== revision || !macMatches(entryMac(keyring.macKey, storeId, head.hash), head.mac)) {
    throw storeError('SEALMESH_ERR_INTEGRITY_HEAD_INVALID', `the head entry ${key} for revision ${revision} fails its MAC check`);
  }
  if (record.modRevision !== revision) {
    const check = `the head entry names revision ${revision} but was stored at revision ${record.modRevision}, so a write bypassed the sealed store`;
    throw storeError('SEALMESH_ERR_INTEGRITY_HEAD_INVALID', check);
  }

  if (options.counter !== undefined && options.acceptRollback !== true) {
    const counter = options.counter;
    const value = await counter.read();
    if (BigInt(head.epoch) < value) {
      throw storeError(
        'SEALMESH_ERR_INTEGRITY_ROLLBACK',
        `the chain head for revision ${head.revision} has epoch ${head.epoch} but the monotonic counter ${counter.name} is at ${value}, ` +
          'so the data directory is an older copy. To restore a backup on purpose, open it with acceptRollback',
      );
    }
  }
  return head;
}

/** Walks the chain records (in key order) from the genesis hash to the head and replays their operations. */
function walkChain(
  chain: StoreRecord[],
  storeId: Buffer,
  keyring: Keyring,
  head: ChainHead,
): { entries: StoredChainEntry[]; live: Map<string, LiveRecord> } {
  const broken = (check: string) => storeError('SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN', check);
  const entries: StoredChainEntry[] = [];
  const live = new Map<string, LiveRecord>();
  let prevHash = genesisHash(storeId);
  let prevEpoch = 0;
  let prevRevision: number | undefined;

  for (const record of chain) {
    const keyRevision = chainKeyRevision(record.key);
    if (keyRevision === undefined) throw broken(`${record.key} is not a valid chain entry key`);
    const entry = parseEntry(record.key, record.value);
    const revision = entry.revision;
    if (revision !== keyRevision) throw broken(`chain entry ${record.key} contains the entry of revision ${revision}, so entries were moved or reordered`);
    if (record.modRevision !== revision) throw broken(`chain entry for revision ${revision} was stored at revision ${record.modRevision}`);
    if (prevRevision !== undefined && revision !== prevRevision + 1) {
      throw broken(`the chain entry for revision ${prevRevision + 1} is missing; the next entry is for revision ${revision}`);
    }
    if (entry.prev !== prevHash) {
      throw broken(
        prevRevision === undefined
          ? `the first chain entry (revision ${revision}) does not start at the genesis hash, so earlier entries were deleted`
          : `chain entry for revision ${revision} does not link to the entry for revision ${prevRevision}`,
      );
    }
    const hash = entryHash(entry);
    if (!macMatches(entryMac(keyring.macKey, storeId, hash), entry.mac)) throw broken(`chain entry for revision ${revision} fails its MAC check`);
    if (entry.epoch < prevEpoch) throw broken(`chain entry for revision ${revision} lowers the epoch from ${prevEpoch} to ${entry.epoch}`);

    const names = new Set<string>();
    for (const op of entry.ops) {
      if (names.has(op.name)) throw broken(`chain entry for revision ${revision} names ${op.name} twice`);
      names.add(op.name);
      const previous = live.get(op.name);
      if (op.type === 'delete') {
        if (previous === undefined) throw broken(`chain entry for revision ${revision} deletes ${op.name}, which is not live`);
        live.delete(op.name);
        continue;
      }
      live.set(op.name, {
        digest: op.digest as string,
        modRevision: revision,
        createRevision: previous?.createRevision ?? revision,
        version: (previous?.version ?? 0) + 1,
      });
    }
    entries.push(entry);
    prevHash = hash;
    prevEpoch = entry.epoch;
    prevRevision = revision;
  }

  if (prevRevision !== head.revision || prevHash !== head.hash || prevEpoch !== head.epoch) {
    const last = prevRevision === undefined ? 'the chain has no entries' : `the last chain entry is for revision ${prevRevision}`;
    throw broken(`${last}, which does not match the head for revision ${head.revision}`);
  }
  return { entries, live };
}

/**
 * Checks one backend record against the chain, then decrypts it when it is a user record.
 * The order of the checks decides the code: another store's envelope, a record the chain does not
 * list, an older version of the record (`isPastDigest`), any other difference, then decryption.
 */
export function checkStoredRecord(
  storeId: Buffer,
  keyring: Keyring,
  record: StoreRecord,
  expected: LiveRecord | undefined,
  isPastDigest: (name: string, digest: string) => boolean,
): { key: string; value: Uint8Array; dataKeyId: number } | undefined {
  const name = record.key;
  const revision = record.modRevision;
  const isUserRecord = name.startsWith(DATA_PREFIX);
  const header = isUserRecord ? checkEnvelopeHeader(storeId, name, revision, record.value) : undefined;
  if (expected === undefined) {
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_UNEXPECTED', name, revision, 'the chain lists no live record under this name');
  }

  const digest = sha256Hex(record.value);
  if (digest !== expected.digest) {
    if (isPastDigest(name, digest)) {
      const check = `the value is an older version of this record, but the chain expects the version written at revision ${expected.modRevision}`;
      throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_REPLAYED', name, revision, check);
    }
    const check = `the value digest differs from the chain entry for revision ${expected.modRevision}`;
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, check);
  }
  if (revision !== expected.modRevision || record.createRevision !== expected.createRevision || record.version !== expected.version) {
    const check =
      `its revisions (mod ${revision}, create ${record.createRevision}, version ${record.version}) differ from the chain ` +
      `(mod ${expected.modRevision}, create ${expected.createRevision}, version ${expected.version})`;
    throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, check);
  }
  if (header === undefined) return undefined;
  return { ...openRecord(storeId, keyring, name, revision, record.value), dataKeyId: header.dataKeyId };
}

/**
 * Verifies a sealed store without opening it for use, for example the data directory of a stopped
 * server: unwraps the keyring with `provider`, runs every check of `SealedStore.open`, writes
 * nothing (not even the counter) and zeroes the keys before it returns.
 */
export async function verifySealedStore(backend: Store, provider: SealProvider, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { storeId, keyring } = await loadKeys(backend, provider);
  try {
    return (await verifyContents(backend, storeId, keyring, options)).report;
  } finally {
    zeroKeyring(keyring);
  }
}
