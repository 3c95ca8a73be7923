/**
 * The in-memory state an open sealed store shares between its reads, writes and watchers.
 */
import type { SealmeshError } from '../errors/index.ts';
import {
  type ChainHead,
  type StoredChainEntry,
  chainKey,
  entryHash,
  entryMac,
  macMatches,
  parseEntry,
} from './integrity-chain.ts';
import { callBackend, recordError, storeError } from './integrity-errors.ts';
import { type LiveRecord, checkStoredRecord } from './integrity-verify.ts';
import type { Keyring } from './sealed-format.ts';
import type { Store, StoreRecord } from './types.ts';

/** Chain entries kept in memory for watchers; older ones are read back from the backend. */
const ENTRY_CACHE_SIZE = 256;

export interface SealedState {
  /** The backend, or a `StagingBackend` over it when it is a `SqliteStore`. */
  backend: Store;
  readonly storeId: Buffer;
  keyring: Keyring;
  /** The head as last written: the backend's chain entry of the store revision must still be this one. */
  head: ChainHead;
  /** Expected state of every chained backend record by backend key, kept in step with each write. */
  readonly live: Map<string, LiveRecord>;
  /**
   * Plaintext key by backend key for every user key seen since open, including deleted ones, so a
   * watcher can name a delete without reading the chain.
   */
  readonly names: Map<string, string>;
  readonly entries: EntryCache;
  /** Records opened since open, served again while the chain still names their revision. */
  readonly opened: OpenedRecordCache;
  /** Set when a write found another writer; every later operation throws it. */
  failure: SealmeshError | undefined;
}

/**
 * Decrypted records by backend key. A record is served from here only while the chain's live state
 * still names the revision it was opened at, so a later write through this store is never hidden.
 * Records under `ca/keys/` are never kept: private keys stay in plaintext only as long as a read needs them.
 * The on-disk copy of a cached record is checked again at the next open or verify, not on each read.
 */
export class OpenedRecordCache {
  private readonly records = new Map<string, StoreRecord>();
  private static readonly MAX_ENTRIES = 10_000;
  private static readonly UNCACHED_PREFIX = 'ca/keys/';

  get(name: string, live: LiveRecord | undefined): StoreRecord | undefined {
    const record = this.records.get(name);
    if (record === undefined || live === undefined || record.modRevision !== live.modRevision) return undefined;
    return { ...record, value: new Uint8Array(record.value) };
  }

  set(name: string, record: StoreRecord): void {
    if (record.key.startsWith(OpenedRecordCache.UNCACHED_PREFIX)) return;
    if (this.records.size >= OpenedRecordCache.MAX_ENTRIES) this.records.clear();
    this.records.set(name, { ...record, value: new Uint8Array(record.value) });
  }

  clear(): void {
    this.records.clear();
  }
}

/** A bounded map of authenticated chain entries by revision, which drops the oldest insertion first. */
export class EntryCache {
  private readonly entries = new Map<number, StoredChainEntry>();

  get(revision: number): StoredChainEntry | undefined {
    return this.entries.get(revision);
  }

  set(revision: number, entry: StoredChainEntry): void {
    this.entries.set(revision, entry);
    if (this.entries.size > ENTRY_CACHE_SIZE) this.entries.delete(this.entries.keys().next().value as number);
  }

  clear(): void {
    this.entries.clear();
  }
}

/**
 * Returns the chain entry of `revision` after checking its key, its stored revision and its MAC.
 * Throws SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN when the entry is missing or fails a check.
 */
export async function readChainEntry(state: SealedState, revision: number): Promise<StoredChainEntry> {
  const cached = state.entries.get(revision);
  if (cached !== undefined) return cached;
  const key = chainKey(revision);
  const record = await callBackend('chain entry read', () => state.backend.get(key));
  const broken = (check: string) => storeError('SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN', check);
  if (record === undefined) throw broken(`the chain entry for revision ${revision} is missing`);
  const entry = parseEntry(key, record.value);
  if (entry.revision !== revision || record.modRevision !== revision) {
    throw broken(`chain entry ${key} names revision ${entry.revision} and was stored at revision ${record.modRevision}`);
  }
  if (!macMatches(entryMac(state.keyring.macKey, state.storeId, entryHash(entry)), entry.mac)) {
    throw broken(`chain entry for revision ${revision} fails its MAC check`);
  }
  state.entries.set(revision, entry);
  return entry;
}

/**
 * Checks a backend user record against the in-memory chain state, decrypts it and returns it with
 * its plaintext key. Returns undefined when neither the backend nor the chain has the record.
 */
export function openLiveRecord(state: SealedState, name: string, record: StoreRecord | undefined): StoreRecord | undefined {
  const expected = state.live.get(name);
  if (record === undefined) {
    if (expected !== undefined) throw missingRecord(name, expected);
    return undefined;
  }
  // Only the live state is in memory, so a stale version is recognised by its lower revision.
  const older = (): boolean => expected !== undefined && record.modRevision < expected.modRevision;
  const opened = checkStoredRecord(state.storeId, state.keyring, record, expected, older);
  if (opened === undefined) throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_UNEXPECTED', name, record.modRevision, 'it is not a user record');
  const { createRevision, modRevision, version } = record;
  return { key: opened.key, value: opened.value, createRevision, modRevision, version };
}

/** Returns the error for a record that the chain lists as live but the backend lacks. */
export function missingRecord(name: string, expected: LiveRecord): SealmeshError {
  const check = `the chain lists it as written at revision ${expected.modRevision}, but the backend has no such record`;
  return recordError('SEALMESH_ERR_INTEGRITY_RECORD_MISSING', name, expected.modRevision, check);
}
