/**
 * Group commit under the sealed store. The sealed store runs its operations one at a time, and a
 * write that waited for its backend commit inside that queue would hold every other operation for
 * an fsync. Over a `SqliteStore`, the sealed store therefore reads and writes through this view,
 * which applies each write in the backend's open batch at once and keeps the batch's durability
 * promise. The sealed store releases its queue after the write and resolves the caller only when
 * that promise resolves, so concurrent writes share one commit.
 */
import { SealmeshError } from '../errors/index.ts';
import type { SqliteStore } from './sqlite.ts';
import type { Store, StoreRecord, TxnRequest, TxnResult, WatchEvent, Watcher } from './types.ts';

export class StagingBackend implements Store {
  readonly #inner: SqliteStore;
  readonly #onCommitFailure: (error: SealmeshError) => void;
  #durable: Promise<void> = Promise.resolve();

  /**
   * `onCommitFailure` receives the error when a batch with a write of this view fails to commit.
   * The sealed store's in-memory chain already names those writes, so it must stop serving.
   */
  constructor(inner: SqliteStore, onCommitFailure: (error: SealmeshError) => void) {
    this.#inner = inner;
    this.#onCommitFailure = onCommitFailure;
  }

  /** True while a write made through this view is not durable yet. */
  #pending = false;

  /** Resolves once every write made through this view so far is durable. */
  get durable(): Promise<void> {
    return this.#durable;
  }

  /** The promise of `durable` while a write is not durable yet; undefined once all are. */
  get pendingDurable(): Promise<void> | undefined {
    return this.#pending ? this.#durable : undefined;
  }

  async revision(): Promise<number> {
    return this.#inner.stagedRevision();
  }

  async get(key: string): Promise<StoreRecord | undefined> {
    return this.#inner.stagedGet(key);
  }

  async list(prefix: string): Promise<StoreRecord[]> {
    return this.#inner.stagedList(prefix);
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    return (await this.txn({ compare: [], success: [{ type: 'put', key, value }] })).revision;
  }

  async delete(key: string): Promise<boolean> {
    const before = this.#inner.stagedRevision();
    return (await this.txn({ compare: [], success: [{ type: 'delete', key }] })).revision !== before;
  }

  /** Applies the transaction in the backend's open batch and returns its result before the commit. */
  async txn(request: TxnRequest): Promise<TxnResult> {
    return this.txnAtRevision(request, undefined);
  }

  /**
   * Applies the transaction as `txn` does, but its compares also fail unless the backend is still
   * at `revision` (see `SqliteStore.stagedTxn`).
   */
  async txnAtRevision(request: TxnRequest, revision: number | undefined): Promise<TxnResult> {
    const { result, durable } = this.#inner.stagedTxn(request, revision);
    const tracked = durable.catch((error: unknown) => {
      const failure = error instanceof SealmeshError ? error : new SealmeshError('SEALMESH_ERR_STORE_OPERATION_FAILED', `store commit failed: ${String(error)}`, { cause: error });
      this.#onCommitFailure(failure);
      throw failure;
    });
    // Later writes join the same batch or a later one, so waiting on the last is waiting on all.
    this.#durable = tracked;
    this.#pending = true;
    tracked.then(
      () => {
        if (this.#durable === tracked) this.#pending = false;
      },
      () => undefined,
    );
    return result;
  }

  watch(prefix: string, afterRevision: number, onEvent: (event: WatchEvent) => void): Watcher {
    return this.#inner.watch(prefix, afterRevision, onEvent);
  }

  async close(): Promise<void> {
    await this.#inner.close();
  }
}
