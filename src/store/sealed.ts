/**
 * The sealed store: a `Store` that encrypts, names and chains every record it writes to a backend
 * `Store`. A copy of the data directory reveals no key or value, and a change to it is detected
 * when the store opens.
 *
 * Formats are in sealed-format.ts and integrity-chain.ts, the checks in integrity-verify.ts.
 */
import { randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import type { MonotonicCounter, SealProvider } from '../seal/types.ts';
import { genesisHash } from './integrity-chain.ts';
import { callBackend, storeError } from './integrity-errors.ts';
import { type LiveRecord, type VerifyReport, verifyContents } from './integrity-verify.ts';
import {
  FORMAT_VERSION,
  KEYRING_KEY,
  META_KEY,
  STORE_ID_BYTES,
  createKeyring,
  hashPrefix,
  zeroKeyring,
} from './sealed-format.ts';
import { reencryptRecords, retireDataKeys, rewrapKeys, rotateDataKey } from './sealed-keys.ts';
import { type SealedMeta, encodeMeta, isJsonObject, loadKeys, readMeta, readMetaStrict, wrapKeyring } from './sealed-meta.ts';
import { EntryCache, OpenedRecordCache, type SealedState, missingRecord, openLiveRecord } from './sealed-state.ts';
import {
  DEFAULT_EPOCH_MS,
  DEFAULT_EPOCH_WRITES,
  type SealedInitializeOptions,
  type SealedOpenOptions,
  type SealedStoreMeta,
  type SealedStoreOptions,
  checkOptions,
  reportCounterError,
  reportIntegrityError,
  reportWatchError,
  toEpoch,
} from './sealed-options.ts';
import { PutBatch } from './sealed-batch.ts';
import { copyTxn, runTxn } from './sealed-txn.ts';
import { checkInteger, checkKey, checkTxn, checkValue, recordName } from './sealed-validate.ts';
import { SealedWatch, type WatchHandlers } from './sealed-watch.ts';
import { StagingBackend } from './sealed-staging.ts';
import { SealedWriter } from './sealed-writer.ts';
import { MAX_KEY_BYTES, SqliteStore } from './sqlite.ts';
import type { Store, StoreRecord, TxnRequest, TxnResult, WatchEvent, Watcher } from './types.ts';

/**
 * A `Store` that seals every record it writes to `backend`. Revisions are the backend's: the
 * initialisation and each key-management operation also take one revision, without events.
 *
 * Rollback protection with a `counter`: the head carries an epoch. The store raises it on the
 * first write after open, on the `epochWrites`-th write after the last rise, and on the first write
 * at least `epochMs` after the last rise, whichever comes first. That write commits the new epoch,
 * and after the commit the store advances the counter in the background. `open` rejects a head
 * whose epoch is below the counter.
 * What stays undetected is a copy whose epoch equals the counter, that is a copy taken after the
 * last rise. Restoring it loses the writes made since that rise: fewer than `epochWrites`, all
 * within `epochMs` of the rise by the system clock. Until the counter advance of a rise completes,
 * the window also covers the write that raised the epoch and a copy taken just before it. Without
 * a counter, any older copy opens without error.
 *
 * NOTE: the store must be the only writer of its backend. A write by anything else makes the next
 * sealed write fail with SEALMESH_ERR_CONFLICT, after which every operation fails until the store
 * is reopened, and it makes the next open fail verification.
 */
export class SealedStore implements Store {
  private readonly state: SealedState;
  private readonly writer: SealedWriter;
  private readonly counter: MonotonicCounter | undefined;
  private readonly handlers: WatchHandlers;
  private readonly watches = new Set<SealedWatch>();
  private provider: SealProvider;
  private meta: SealedMeta;
  // Every read and write runs after the previous one, so the in-memory chain state never lags a
  // record that a read returns.
  private queue: Promise<unknown> = Promise.resolve();
  // The newest queued batch of puts, which later puts join until another operation is queued.
  private putBatch: PutBatch | undefined;
  private closing: Promise<void> | undefined;

  /** Result of the full verification that `open` ran; undefined for a store just initialised. */
  openReport: VerifyReport | undefined;

  private constructor(state: SealedState, provider: SealProvider, meta: SealedMeta, options: SealedStoreOptions) {
    this.state = state;
    this.provider = provider;
    this.meta = meta;
    this.counter = options.counter;
    this.handlers = {
      onIntegrityError: options.onIntegrityError ?? reportIntegrityError,
      onWatchError: options.onWatchError ?? reportWatchError,
    };
    this.writer = new SealedWriter(state, {
      counter: options.counter,
      epochWrites: options.epochWrites ?? DEFAULT_EPOCH_WRITES,
      epochMs: options.epochMs ?? DEFAULT_EPOCH_MS,
      onCounterError: options.onCounterError ?? reportCounterError,
      durable: () => this.durable(),
    });
  }

  /**
   * Creates a sealed store in an empty backend: a random store id, a fresh keyring wrapped by
   * `provider`, the meta record and the first chain entry, in one write. Throws
   * SEALMESH_ERR_SEALED_STORE_EXISTS when the backend contains any record.
   */
  static async initialize(backend: Store, provider: SealProvider, options: SealedInitializeOptions = {}): Promise<SealedStore> {
    checkOptions(options);
    const providerName = options.providerName ?? provider.name;
    const providerParams = options.providerParams ?? {};
    if (typeof providerName !== 'string' || providerName === '') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'providerName is invalid: pass a non-empty string');
    }
    if (!isJsonObject(providerParams)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'providerParams is invalid: pass a plain object that JSON can encode');
    }
    const existing = await callBackend('record list', () => backend.list(''));
    if (existing.length > 0) {
      const contents = existing.some((record) => record.key === META_KEY) ? 'already contains a sealed store' : `contains ${existing.length} records`;
      throw new SealmeshError('SEALMESH_ERR_SEALED_STORE_EXISTS', `sealed store initialisation failed: the backend ${contents}. Open it, or use an empty backend`);
    }

    const storeId = randomBytes(STORE_ID_BYTES);
    const start = await callBackend('revision read', () => backend.revision());
    const epoch = options.counter === undefined ? 0 : toEpoch(await options.counter.read());
    const keyring = createKeyring(start + 1);
    const meta: SealedMeta = { format: FORMAT_VERSION, storeId: storeId.toString('hex'), providerName, providerParams };
    const state = newState(backend, storeId, keyring, { revision: start, hash: genesisHash(storeId), epoch, mac: '' }, new Map(), new Map());
    const store = new SealedStore(state, provider, meta, options);
    try {
      await store.writer.commit({
        ops: [],
        initial: true,
        epoch,
        internal: async () => [
          { name: META_KEY, value: encodeMeta(meta) },
          { name: KEYRING_KEY, value: await wrapKeyring(provider, storeId, keyring) },
        ],
      });
      await store.durable();
    } catch (error) {
      zeroKeyring(keyring);
      throw error;
    }
    return store;
  }

  /** Reads the clear meta record, or returns undefined when the backend contains no sealed store. Needs no KEK. */
  static async readMeta(backend: Store): Promise<SealedStoreMeta | undefined> {
    const meta = await readMeta(backend);
    return meta === undefined ? undefined : { storeId: meta.storeId, providerName: meta.providerName, providerParams: meta.providerParams };
  }

  /**
   * Reads the clear meta record like `readMeta`, but returns undefined only for an empty backend and
   * throws SEALMESH_ERR_INTEGRITY_RECORD_MISSING when other records remain without it. Needs no KEK.
   */
  static async readMetaStrict(backend: Store): Promise<SealedStoreMeta | undefined> {
    const meta = await readMetaStrict(backend);
    return meta === undefined ? undefined : { storeId: meta.storeId, providerName: meta.providerName, providerParams: meta.providerParams };
  }

  /**
   * Opens a sealed store: unwraps the keyring first (a wrong KEK fails with the provider's error
   * before any record is read or anything is written), verifies the whole store, then raises the
   * counter to the head epoch. On success the store owns `backend` and closes it in `close`. When
   * open fails, the caller still owns it.
   */
  static async open(backend: Store, provider: SealProvider, options: SealedOpenOptions = {}): Promise<SealedStore> {
    checkOptions(options);
    if (options.acceptRollback === true && options.counter === undefined) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'acceptRollback needs a counter to rebase');
    }
    const { meta, storeId, keyring } = await loadKeys(backend, provider);
    try {
      const acceptRollback = options.acceptRollback === true;
      const verified = await verifyContents(backend, storeId, keyring, { counter: options.counter, acceptRollback });
      const { head, live, names } = verified;
      const counter = options.counter;
      if (counter !== undefined && !acceptRollback && BigInt(head.epoch) > (await counter.read())) {
        // Covers a crash between a write that raised the epoch and its counter advance.
        await counter.advanceTo(BigInt(head.epoch));
      }
      const store = new SealedStore(newState(backend, storeId, keyring, head, live, names), provider, meta, options);
      store.openReport = verified.report;
      if (acceptRollback) await store.rebaseEpoch();
      return store;
    } catch (error) {
      zeroKeyring(keyring);
      throw error;
    }
  }

  /** Store id as 32 hex digits. */
  get storeId(): string {
    return this.state.storeId.toString('hex');
  }

  async revision(): Promise<number> {
    this.checkOpen('revision read');
    const revision = await callBackend('revision read', () => this.state.backend.revision());
    await this.durable();
    return revision;
  }

  async get(key: string): Promise<StoreRecord | undefined> {
    checkKey(key, 'key');
    return this.exclusive('get', async () => {
      const name = recordName(this.state.keyring.nameKey, key);
      const cached = this.state.opened.get(name, this.state.live.get(name));
      if (cached !== undefined) return cached;
      const record = await callBackend('get', () => this.state.backend.get(name));
      const opened = openLiveRecord(this.state, name, record);
      if (opened !== undefined) this.state.opened.set(name, opened);
      return opened;
    });
  }

  /** Lists records whose key starts with `prefix`, ordered by the UTF-8 bytes of the plaintext key. */
  async list(prefix: string): Promise<StoreRecord[]> {
    checkKey(prefix, 'prefix');
    return this.exclusive('list', async () => {
      const { backendPrefix, filter } = hashPrefix(this.state.keyring.nameKey, prefix);
      if (Buffer.byteLength(backendPrefix, 'utf8') > MAX_KEY_BYTES) return [];
      const records = await callBackend('list', () => this.state.backend.list(backendPrefix));
      const seen = new Set(records.map((record) => record.key));
      for (const [name, expected] of this.state.live) {
        if (name.startsWith(backendPrefix) && !seen.has(name)) throw missingRecord(name, expected);
      }
      const results: StoreRecord[] = [];
      for (const record of records) {
        const opened = openLiveRecord(this.state, record.key, record) as StoreRecord;
        if (!filter || opened.key.startsWith(prefix)) results.push(opened);
      }
      const sortKeys = new Map(results.map((record) => [record, Buffer.from(record.key, 'utf8')]));
      return results.sort((a, b) => Buffer.compare(sortKeys.get(a) as Buffer, sortKeys.get(b) as Buffer));
    });
  }

  /**
   * Seals and writes one record. Puts called while earlier operations are still queued share one
   * backend write and so one revision, up to 64 puts or 4 MiB of values. A repeated key starts a
   * new write.
   */
  async put(key: string, value: Uint8Array): Promise<number> {
    checkKey(key, 'key');
    checkValue(value, key);
    this.checkOpen('put');
    const copy = new Uint8Array(value);
    const open = this.putBatch;
    // A put is acknowledged only once its batch's run has ended, which waits until the write is durable.
    if (open !== undefined && open.accepts(copy)) return durableRevision(open.add(key, copy), open.run);

    const batch = new PutBatch();
    const revision = batch.add(key, copy);
    const run = this.exclusive('put', () => {
      if (this.putBatch === batch) this.putBatch = undefined;
      return batch.commit(this.state, this.writer);
    });
    run.catch((error: unknown) => {
      if (this.putBatch === batch) this.putBatch = undefined;
      batch.reject(error);
    });
    batch.run = run;
    this.putBatch = batch;
    return durableRevision(revision, run);
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key, 'key');
    return this.exclusive('delete', async () => {
      const name = recordName(this.state.keyring.nameKey, key);
      const record = await callBackend('get', () => this.state.backend.get(name));
      const existing = openLiveRecord(this.state, name, record);
      if (existing === undefined) return false;
      await this.writer.commit({ ops: [{ type: 'delete', name, key }], compares: [{ key: name, modRevision: existing.modRevision }] });
      return true;
    });
  }

  /**
   * Applies a compare-and-swap transaction. Compares run on decrypted records, and the write then
   * requires every record it read to be unchanged, so no other write can slip in between.
   */
  async txn(request: TxnRequest): Promise<TxnResult> {
    checkTxn(request);
    const copied = copyTxn(request);
    return this.exclusive('txn', () => runTxn(this.state, this.writer, copied));
  }

  /**
   * Watches plaintext keys under `prefix`. Each event is checked against the chain entry of its
   * revision before delivery, and one that fails goes to `onIntegrityError` instead. Internal
   * records never reach `onEvent`. A re-encryption by {@link reencryptBatch} shows as a put of the same value.
   */
  watch(prefix: string, afterRevision: number, onEvent: (event: WatchEvent) => void): Watcher {
    checkKey(prefix, 'prefix');
    checkInteger('afterRevision', afterRevision, 0);
    if (typeof onEvent !== 'function') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'watch callback is not a function');
    }
    this.checkOpen('watch');
    const watch = new SealedWatch(this.state, prefix, afterRevision, onEvent, this.handlers, (closed) => this.watches.delete(closed));
    this.watches.add(watch);
    return watch;
  }

  /** Runs the full verification of `open` again on the backend and returns its counts. */
  async verify(): Promise<VerifyReport> {
    return this.exclusive('verify', async () => {
      const state = this.state;
      const verified = await verifyContents(state.backend, state.storeId, state.keyring, { counter: this.counter });
      if (verified.head.hash !== state.head.hash) {
        throw storeError('SEALMESH_ERR_INTEGRITY_HEAD_INVALID', `the head for revision ${verified.head.revision} is not the head this store wrote`);
      }
      return verified.report;
    });
  }

  /** Adds a new data key, which seals every later write, and returns its id. Older records keep their key until re-encrypted. */
  async rotateDataKey(): Promise<number> {
    return this.exclusive('data key rotation', () => rotateDataKey(this.state, this.writer, this.provider));
  }

  /**
   * Re-encrypts up to `max` records still sealed under an older data key, each as its own write,
   * and returns how many remain. When none remain, drops the older keys from the keyring. The
   * remaining records are found by the data key id in their envelope, so progress survives a restart.
   */
  async reencryptBatch(max: number): Promise<number> {
    checkInteger('max', max, 0);
    this.checkOpen('re-encryption');
    const remaining = await reencryptRecords(this.state, this.writer, max, (action, body) => this.exclusive(action, body));
    if (remaining > 0) return remaining;
    return this.exclusive('data key retirement', () => retireDataKeys(this.state, this.writer, this.provider));
  }

  /**
   * Wraps the keyring under `provider`'s KEK and stores it with new meta fields in one write, then
   * uses `provider` from now on. The caller closes the old provider. `providerParams` default to `{}`,
   * so pass the new provider's parameters (for example its KDF salt) or the store will not reopen.
   */
  async rewrapKeyring(provider: SealProvider, options: { providerName?: string; providerParams?: Record<string, unknown> } = {}): Promise<void> {
    const providerParams = options.providerParams ?? {};
    if (!isJsonObject(providerParams)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'providerParams is invalid: pass a plain object that JSON can encode');
    }
    const meta: SealedMeta = { ...this.meta, providerName: options.providerName ?? provider.name, providerParams };
    await this.exclusive('keyring rewrap', () => rewrapKeys(this.state, this.writer, provider, meta));
    this.provider = provider;
    this.meta = meta;
  }

  /**
   * Sets the head epoch to max(head epoch, counter) + 1 in one write and waits until the counter
   * reaches it. An operator calls it after restoring an older copy on purpose (see `acceptRollback`).
   * Returns the new epoch.
   */
  async rebaseEpoch(): Promise<number> {
    const counter = this.counter;
    if (counter === undefined) throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'rebaseEpoch needs a store opened with a counter');
    return this.exclusive('epoch rebase', async () => {
      await this.writer.flushCounter();
      const epoch = Math.max(this.state.head.epoch, toEpoch(await counter.read())) + 1;
      await this.writer.commit({ ops: [], epoch });
      await this.durable();
      await this.writer.requestAdvance(epoch);
      return epoch;
    });
  }

  /**
   * Stops all watchers (dropping events not yet delivered), waits for queued operations and the
   * counter, closes the backend and zeroes the keys. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    for (const watch of [...this.watches]) watch.close();
    this.closing = (async () => {
      await this.queue;
      await this.writer.flushCounter();
      await this.state.backend.close();
      zeroKeyring(this.state.keyring);
      this.state.names.clear();
      this.state.entries.clear();
      this.state.opened.clear();
    })();
    return this.closing;
  }

  private checkOpen(action: string): void {
    if (this.closing !== undefined) {
      throw new SealmeshError('SEALMESH_ERR_STORE_CLOSED', `sealed store ${action} failed: the store is closed`);
    }
  }

  /** Resolves once every backend write made so far is durable; at once for a backend without group commit. */
  private async durable(): Promise<void> {
    await this.pendingDurable();
  }

  /** Resolves once every backend write made so far is durable; undefined when none is pending. */
  private pendingDurable(): Promise<void> | undefined {
    return this.state.backend instanceof StagingBackend ? this.state.backend.pendingDurable : undefined;
  }

  /**
   * Runs `body` after every earlier operation and resolves once the writes it made, and those it
   * read, are durable. The next operation starts without waiting for that, so concurrent writes
   * share a backend commit. Throws SEALMESH_ERR_STORE_CLOSED once `close` was called.
   */
  private exclusive<T>(action: string, body: () => Promise<T>): Promise<T> {
    this.checkOpen(action);
    // A put after this operation must not join a batch queued before it.
    this.putBatch = undefined;
    let durable: Promise<void> | undefined;
    const run = this.queue.then(async () => {
      if (this.state.failure !== undefined) throw this.state.failure;
      const value = await body();
      durable = this.pendingDurable();
      return value;
    });
    this.queue = run.catch(() => undefined);
    // When nothing is pending, as for reads on a store at rest, the caller gets the value without another wait.
    return run.then((value) => (durable === undefined ? value : durable.then(() => value)));
  }

}

function newState(
  backend: Store,
  storeId: Buffer,
  keyring: SealedState['keyring'],
  head: SealedState['head'],
  live: Map<string, LiveRecord>,
  names: Map<string, string>,
): SealedState {
  const state: SealedState = {
    backend,
    storeId,
    keyring,
    head,
    live,
    names,
    entries: new EntryCache(),
    opened: new OpenedRecordCache(),
    failure: undefined,
  };
  if (backend instanceof SqliteStore) {
    // A failed commit leaves the in-memory chain ahead of the file, so every later operation fails
    // until the store is reopened and verified.
    state.backend = new StagingBackend(backend, (error) => {
      state.failure ??= error;
    });
  }
  return state;
}

/** Resolves with a put's revision once the batch that carries it is durable, or rejects with its failure. */
async function durableRevision(revision: Promise<number>, run: Promise<void> | undefined): Promise<number> {
  const value = await revision;
  await run;
  return value;
}
