import { chmodSync, closeSync, constants, fsyncSync, mkdirSync, openSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLOutputValue } from 'node:sqlite';
import { type ErrorCode, SealmeshError, isSealmeshError } from '../errors/index.ts';
import type { Compare, Operation, Store, StoreRecord, TxnRequest, TxnResult, WatchEvent, Watcher } from './types.ts';

/** Maximum key or prefix length in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;
/** Maximum value size in bytes (4 MiB). */
export const MAX_VALUE_BYTES = 4 * 1024 * 1024;

/** Settings of {@link SqliteStore.open}. */
export interface SqliteStoreOptions {
  /** Number of most recent revisions whose changes stay in the log for `watch`. Default 10000. */
  historyRevisions?: number;
  /** Milliseconds a write waits for another connection's lock before it fails. Default 5000. */
  busyTimeoutMs?: number;
  /**
   * Handler for each exception thrown by a watch callback and each failed read of watch history,
   * which also closes that watcher. Default: `process.emitWarning`. It must not throw.
   */
  onWatchError?: (error: unknown, event: WatchEvent | undefined) => void;
  /**
   * Key prefixes kept out of watch history: writes under them advance the revision as any other,
   * but are neither logged nor delivered to watchers. A layer that stores bookkeeping records
   * beside its data, such as the sealed store's `m/` records, passes its prefix so that each write
   * logs only what a watcher can ask for. Default none.
   */
  unloggedPrefixes?: string[];
}

const SCHEMA_VERSION = 1;
// Log rows a replaying watcher reads per query, so replay keeps at most this many values in memory.
const HISTORY_PAGE_ROWS = 32;
const KV_COLUMNS = 'key, value, create_revision, mod_revision, version';

// A txn writes one log row per event, all with the same revision, so `seq` orders them.
const SCHEMA = `
  CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
  CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL, version INTEGER NOT NULL) STRICT;
  CREATE TABLE log (revision INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('put', 'delete')), key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (revision, seq)) STRICT;
  INSERT INTO meta (name, value) VALUES ('schema_version', ${SCHEMA_VERSION}), ('revision', 0), ('compacted', 0);
`;

type Statements = ReturnType<typeof prepareStatements>;

interface WatchState {
  prefix: string;
  onEvent: (event: WatchEvent) => void;
  /** Revision at or below which live events are skipped, because replay or `afterRevision` covers them. */
  liveAfter: number;
  /** Store revision when the watch started, which is the last revision replay reads from the log. */
  historyEnd: number;
  /** Position (revision, seq) after which replay reads the next log rows. It starts at (afterRevision + 1, -1). */
  cursor: [revision: number, seq: number];
  replaying: boolean;
  page: WatchEvent[];
  live: WatchEvent[];
  scheduled: boolean;
  closed: boolean;
}

/** Group commits a snapshot waits through for a moment with no write between commit and fsync. */
const SNAPSHOT_SYNC_ATTEMPTS = 20;

/** Writes applied inside the open SQLite transaction that the next group commit makes durable. */
interface Batch {
  durable: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
  /** Events of the batch's writes in revision order, delivered to watchers after the commit. */
  events: WatchEvent[];
}

/** A transaction applied in the open batch: its result now, and when it is on disk. */
export interface StagedTxn {
  result: TxnResult;
  /** Resolves once the batch that contains the transaction is committed and fsynced; rejects when either fails. */
  durable: Promise<void>;
}

/**
 * The `Store` backed by one SQLite file through `node:sqlite`.
 *
 * Writes use group commit. The first write opens a `BEGIN IMMEDIATE` transaction, and every write
 * made until the event loop's check phase (`setImmediate`) joins it in a savepoint of its own.
 * Then one `COMMIT` in WAL mode writes them all, and one fsync of the WAL file, which the store
 * runs on the thread pool for every batch committed since the last, makes them durable. Each write
 * keeps its own revision and atomicity: a write that fails rolls back to its savepoint and leaves
 * the others of the batch in place. No write's promise resolves before that fsync, and a read
 * made while writes are pending resolves only after it too, so no caller sees data that a crash
 * could still lose. Watchers live in this process and receive events on a microtask after the
 * fsync.
 * NOTE: watchers see only writes made through this `SqliteStore` object. Another process writing
 * to the same file advances the revision without notifying them, which leaves gaps.
 */
export class SqliteStore implements Store {
  private db: DatabaseSync | undefined;
  private readonly sql: Statements;
  private readonly historyRevisions: number;
  private readonly onWatchError: (error: unknown, event: WatchEvent | undefined) => void;
  private readonly watches = new Set<WatchState>();
  private readonly unloggedPrefixes: string[];
  private batch: Batch | undefined;
  /** Durability of the last batch opened; batches become durable in order, so this covers all. */
  private lastDurable: Promise<void> = Promise.resolve();
  /** Revision of the last durable write, which is where a new watcher starts live delivery. */
  private committedRevision: number;
  private readonly walPath: string;
  private wal: Promise<FileHandle> | undefined;
  /** Committed batches whose WAL frames wait for the next fsync, with the revision each ends at. */
  private unsynced: Array<{ batch: Batch; revision: number }> = [];
  private syncRun: Promise<void> | undefined;
  /** Set when an fsync of the WAL failed: SQLite counts those writes as committed, so nothing may continue. */
  private syncFailure: SealmeshError | undefined;

  private constructor(db: DatabaseSync, path: string, options: SqliteStoreOptions) {
    this.db = db;
    this.walPath = `${path}-wal`;
    this.sql = prepareStatements(db);
    this.committedRevision = this.readMeta('revision');
    this.historyRevisions = options.historyRevisions ?? 10_000;
    this.onWatchError = options.onWatchError ?? reportWatchError;
    this.unloggedPrefixes = [...(options.unloggedPrefixes ?? [])];
  }

  /**
   * Opens the store at `path`, creating it when missing. A new file gets mode 0600 and a new parent
   * directory 0700; an existing file, `-wal` or `-shm` readable by group or others is set to 0600.
   * Throws SEALMESH_ERR_STORE_OPEN_FAILED when the file is not a sealmesh store or cannot be opened.
   */
  static open(path: string, options: SqliteStoreOptions = {}): SqliteStore {
    if (options.historyRevisions !== undefined) checkInteger('historyRevisions', options.historyRevisions, 1);
    if (options.busyTimeoutMs !== undefined) checkInteger('busyTimeoutMs', options.busyTimeoutMs, 0);
    for (const prefix of options.unloggedPrefixes ?? []) checkKey(prefix, 'prefix');
    if (typeof path !== 'string' || path === '' || path === ':memory:') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `store path ${JSON.stringify(path)} is invalid: pass a file path`);
    }
    let db: DatabaseSync | undefined;
    try {
      prepareFile(path);
      db = new DatabaseSync(path, { timeout: options.busyTimeoutMs ?? 5_000 });
      const mode = db.prepare('PRAGMA journal_mode = WAL').get()?.journal_mode;
      if (mode !== 'wal') throw new Error(`SQLite kept journal mode ${String(mode)} instead of switching to WAL`);
      db.exec('PRAGMA synchronous = FULL');
      initializeSchema(db);
      // From here on each commit only writes the WAL, and the store itself fsyncs the WAL file off
      // the event loop before it resolves the commit's writes, which is the sync that FULL would make
      // inside COMMIT. SQLite still syncs the WAL before and the database file after a checkpoint.
      db.exec('PRAGMA synchronous = NORMAL');
      return new SqliteStore(db, path, options);
    } catch (error) {
      if (db?.isOpen) db.close();
      throw new SealmeshError(
        'SEALMESH_ERR_STORE_OPEN_FAILED',
        `opening store ${path} failed: ${errorMessage(error)}. ` +
          'Pass the path of a sealmesh store file, or of a new file in a writable directory',
        { cause: error },
      );
    }
  }

  async revision(): Promise<number> {
    const revision = this.stagedRevision();
    await this.lastDurable;
    return revision;
  }

  async get(key: string): Promise<StoreRecord | undefined> {
    const record = this.stagedGet(key);
    await this.lastDurable;
    return record;
  }

  async list(prefix: string): Promise<StoreRecord[]> {
    const records = this.stagedList(prefix);
    await this.lastDurable;
    return records;
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    checkKey(key, 'key');
    checkValue(value);
    const { revision, durable } = this.stage('put', (next) => [this.apply({ type: 'put', key, value }, next)]);
    await durable;
    return revision;
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key, 'key');
    const { changed, durable } = this.stage('delete', (next) => [this.apply({ type: 'delete', key }, next)]);
    await durable;
    return changed > 0;
  }

  async txn(request: TxnRequest): Promise<TxnResult> {
    const { result, durable } = this.stagedTxn(request);
    await durable;
    return result;
  }

  /**
   * Returns the revision including writes of the open batch, which are not durable yet. For a layer
   * such as the sealed store that acknowledges its own writes only after `durable` resolves.
   */
  stagedRevision(): number {
    return this.run('revision read', () => this.readMeta('revision'));
  }

  /** Reads one record including writes of the open batch; see `stagedRevision`. */
  stagedGet(key: string): StoreRecord | undefined {
    checkKey(key, 'key');
    return this.run('get', () => {
      const row = this.sql.get.get(key);
      return row === undefined ? undefined : toRecord(row);
    });
  }

  /** Lists records including writes of the open batch; see `stagedRevision`. */
  stagedList(prefix: string): StoreRecord[] {
    checkKey(prefix, 'prefix');
    return this.run('list', () => {
      const end = prefixEnd(prefix);
      const rows = end === undefined ? this.sql.listFrom.all(prefix) : this.sql.listRange.all(prefix, end);
      return rows.map(toRecord);
    });
  }

  /**
   * Applies a transaction in the open batch and returns its result at once, with a promise for its
   * durability. The caller must not report the write as done before `durable` resolves. With
   * `expectedRevision`, the compares fail unless the store is still at that revision. A single
   * writer passes the revision of its own last write, so a write by anyone else since then makes
   * its transaction fail instead of applying at another revision.
   */
  stagedTxn(request: TxnRequest, expectedRevision?: number): StagedTxn {
    checkTxn(request);
    if (expectedRevision !== undefined) checkInteger('expectedRevision', expectedRevision, 0);
    let succeeded = false;
    const { revision, durable } = this.stage('txn', (next) => {
      succeeded = (expectedRevision === undefined || next - 1 === expectedRevision) && request.compare.every((compare) => this.compareMatches(compare));
      const operations = succeeded ? request.success : (request.failure ?? []);
      return operations.map((operation) => this.apply(operation, next));
    });
    return { result: { succeeded, revision }, durable };
  }

  /**
   * Replays logged changes after `afterRevision` and then delivers live ones, each on a microtask,
   * never inside this call. Throws SEALMESH_ERR_STORE_COMPACTED when `afterRevision` is below the
   * compacted revision. An exception from `onEvent` goes to `onWatchError` and delivery continues.
   */
  watch(prefix: string, afterRevision: number, onEvent: (event: WatchEvent) => void): Watcher {
    checkKey(prefix, 'prefix');
    checkInteger('afterRevision', afterRevision, 0);
    if (typeof onEvent !== 'function') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'watch callback is not a function');
    }
    // Writes of the open batch reach the watcher live after their commit, so history ends at the
    // last committed revision.
    const current = this.committedRevision;
    const compacted = this.run('watch', () => this.readMeta('compacted'));
    if (afterRevision < compacted) {
      throw new SealmeshError(
        'SEALMESH_ERR_STORE_COMPACTED',
        `watch after revision ${afterRevision} failed: history up to revision ${compacted} is compacted. ` +
          'Read the current state with list() and watch from revision() instead',
      );
    }
    const state: WatchState = {
      prefix,
      onEvent,
      liveAfter: Math.max(afterRevision, current),
      historyEnd: current,
      cursor: [afterRevision + 1, -1],
      replaying: afterRevision < current,
      page: [],
      live: [],
      scheduled: false,
      closed: false,
    };
    this.watches.add(state);
    if (state.replaying) this.schedule(state);
    return { close: () => this.stopWatch(state) };
  }

  /**
   * Writes a consistent copy of the whole database to `path` (SQLite `VACUUM INTO`), taken at a
   * transaction boundary while writers continue. The copy contains the same bytes as the store, so
   * a sealed store's copy stays sealed. Fails when `path` exists.
   */
  async snapshotTo(path: string): Promise<void> {
    // VACUUM cannot run inside a transaction, so the open batch commits first. The copy waits until
    // every committed write is also synced, so it contains no write that a crash could still undo.
    for (let attempt = 0; ; attempt += 1) {
      this.commitBatch();
      // A failed batch rejected its own writes, and a failed fsync makes `run` below throw.
      await this.lastDurable.catch(() => undefined);
      const quiet = this.batch === undefined && this.committedRevision === this.run('snapshot', () => this.readMeta('revision'));
      if (quiet) break;
      if (attempt >= SNAPSHOT_SYNC_ATTEMPTS) {
        throw new SealmeshError('SEALMESH_ERR_STORE_OPERATION_FAILED', `store snapshot failed: writes kept arriving through ${SNAPSHOT_SYNC_ATTEMPTS} fsyncs of the WAL; retry when the store is less busy`);
      }
    }
    this.run('snapshot', () => {
      (this.db as DatabaseSync).prepare('VACUUM INTO ?').run(path);
    });
  }

  /** Stops all watchers, dropping events they have not received yet, and closes the file. Idempotent. */
  async close(): Promise<void> {
    this.commitBatch();
    for (const state of this.watches) this.stopWatch(state);
    while (this.syncRun !== undefined) await this.syncRun;
    const db = this.db;
    this.db = undefined;
    if (db?.isOpen) db.close();
    const wal = this.wal;
    this.wal = undefined;
    await wal?.then((handle) => handle.close()).catch(() => undefined);
  }

  private run<T>(action: string, body: () => T): T {
    if (this.db === undefined) {
      throw new SealmeshError('SEALMESH_ERR_STORE_CLOSED', `store ${action} failed: the store is closed`);
    }
    if (this.syncFailure !== undefined) throw this.syncFailure;
    try {
      return body();
    } catch (error) {
      if (isSealmeshError(error)) throw error;
      const message = `store ${action} failed: ${errorMessage(error)}`;
      throw new SealmeshError('SEALMESH_ERR_STORE_OPERATION_FAILED', message, { cause: error });
    }
  }

  /**
   * Runs `change` at the next revision inside a savepoint of the open batch, opening one when none
   * is open. A change that returns no events keeps the revision. When the change fails, only its
   * savepoint is rolled back, unless SQLite ended the whole transaction, which fails the batch.
   */
  private stage(
    action: string,
    change: (revision: number) => (WatchEvent | undefined)[],
  ): { revision: number; changed: number; durable: Promise<void> } {
    let batch: Batch | undefined;
    const result = this.run(action, () => {
      const db = this.db as DatabaseSync;
      batch = this.openBatch(db);
      db.exec('SAVEPOINT sealmesh_write');
      try {
        const current = this.readMeta('revision');
        const changes = change(current + 1).filter((event) => event !== undefined);
        const revision = changes.length > 0 ? current + 1 : current;
        const events = this.unloggedPrefixes.length === 0 ? changes : changes.filter((event) => !this.unloggedPrefixes.some((prefix) => event.key.startsWith(prefix)));
        events.forEach((event, seq) => this.sql.appendLog.run(revision, seq, event.type, event.key, event.value));
        if (changes.length > 0) {
          this.sql.writeMeta.run(revision, 'revision');
          this.compact(revision);
        }
        db.exec('RELEASE sealmesh_write');
        return { revision, events, changed: changes.length };
      } catch (error) {
        if (db.isTransaction) {
          db.exec('ROLLBACK TO sealmesh_write');
          db.exec('RELEASE sealmesh_write');
        } else {
          this.failBatch(error);
        }
        throw error;
      }
    });
    const open = batch as Batch;
    // The caller may reuse its buffers once the call returns, before the commit delivers the events.
    for (const event of result.events) open.events.push({ ...event, value: new Uint8Array(event.value) });
    return { revision: result.revision, changed: result.changed, durable: open.durable };
  }

  /** Returns the open batch, beginning its transaction and scheduling its commit when none is open. */
  private openBatch(db: DatabaseSync): Batch {
    if (this.batch !== undefined) return this.batch;
    db.exec('BEGIN IMMEDIATE');
    let resolve!: () => void;
    let reject!: (error: unknown) => void;
    const durable = new Promise<void>((done, fail) => {
      resolve = done;
      reject = fail;
    });
    // A batch whose every write failed has no waiter; its failure must not become unhandled.
    durable.catch(() => undefined);
    const batch: Batch = { durable, resolve, reject, events: [] };
    this.batch = batch;
    this.lastDurable = durable;
    setImmediate(() => {
      if (this.batch === batch) this.commitBatch();
    });
    return batch;
  }

  /** Commits the open batch and queues it for the next fsync of the WAL; rejects its writes when the commit fails. */
  private commitBatch(): void {
    const batch = this.batch;
    if (batch === undefined) return;
    this.batch = undefined;
    const db = this.db;
    let revision: number;
    try {
      if (db === undefined || !db.isOpen) throw new Error('the store was closed before the batch was committed');
      db.exec('COMMIT');
      revision = this.readMeta('revision');
    } catch (error) {
      if (db?.isOpen === true && db.isTransaction) db.exec('ROLLBACK');
      batch.reject(new SealmeshError('SEALMESH_ERR_STORE_OPERATION_FAILED', `store commit failed: ${errorMessage(error)}. None of the batch's writes was saved; check the disk and retry them`, { cause: error }));
      return;
    }
    this.unsynced.push({ batch, revision });
    this.startSync();
  }

  /**
   * Starts one fsync of the WAL for every committed batch not yet synced, unless one is running;
   * batches committed meanwhile wait for the next. After the fsync it delivers their events and
   * resolves their writes in commit order.
   */
  private startSync(): void {
    if (this.syncRun !== undefined || this.unsynced.length === 0) return;
    const group = this.unsynced.splice(0);
    this.syncRun = this.syncWal()
      .then(
        () => {
          this.committedRevision = (group.at(-1) as { revision: number }).revision;
          for (const { batch } of group) {
            this.notify(batch.events);
            batch.resolve();
          }
        },
        (error: unknown) => {
          const failure = new SealmeshError(
            'SEALMESH_ERR_STORE_OPERATION_FAILED',
            `store fsync of ${this.walPath} failed: ${errorMessage(error)}. Writes since the last fsync may be lost; check the disk and restart the server, which verifies the store`,
            { cause: error },
          );
          this.syncFailure = failure;
          for (const { batch } of group) batch.reject(failure);
        },
      )
      .finally(() => {
        this.syncRun = undefined;
        this.startSync();
      });
  }

  /**
   * Flushes the WAL file to disk through a file handle, which Node's permission model allows. The
   * first call also flushes the directory, so that the WAL file's entry is durable, as SQLite does
   * on its first sync of a new WAL file.
   */
  private async syncWal(): Promise<void> {
    if (this.wal === undefined) {
      this.wal = open(this.walPath, 'r');
      const directory = await open(dirname(this.walPath), 'r');
      try {
        await directory.sync();
      } finally {
        await directory.close();
      }
    }
    const handle = await this.wal;
    await handle.sync();
  }

  /** Rejects the open batch after SQLite rolled its transaction back on an error. */
  private failBatch(error: unknown): void {
    const batch = this.batch;
    if (batch === undefined) return;
    this.batch = undefined;
    batch.reject(new SealmeshError('SEALMESH_ERR_STORE_OPERATION_FAILED', `store write failed and SQLite rolled back its batch: ${errorMessage(error)}. None of the batch's writes was saved; check the disk and retry them`, { cause: error }));
  }

  /** Applies one operation at `revision` and returns its event, or undefined when it deletes a missing key. */
  private apply(operation: Operation, revision: number): WatchEvent | undefined {
    if (operation.type === 'put') {
      this.sql.put.run(operation.key, operation.value, revision);
      return { type: 'put', key: operation.key, value: operation.value, revision };
    }
    const { changes } = this.sql.delete.run(operation.key);
    return changes > 0 ? { type: 'delete', key: operation.key, value: new Uint8Array(0), revision } : undefined;
  }

  private compareMatches(compare: Compare): boolean {
    if ('modRevision' in compare) {
      const row = this.sql.getModRevision.get(compare.key);
      return (row === undefined ? 0 : Number(row.mod_revision)) === compare.modRevision;
    }
    const row = this.sql.get.get(compare.key);
    return row !== undefined && Buffer.compare(row.value as Uint8Array, compare.value) === 0;
  }

  /** Drops log rows older than the retained window, but none that a replaying watcher still needs. */
  private compact(revision: number): void {
    let floor = revision - this.historyRevisions;
    for (const state of this.watches) {
      if (state.replaying) floor = Math.min(floor, state.cursor[0] - 1);
    }
    if (floor <= this.readMeta('compacted')) return;
    this.sql.compactLog.run(floor);
    this.sql.writeMeta.run(floor, 'compacted');
  }

  private readMeta(name: 'revision' | 'compacted'): number {
    const row = this.sql.readMeta.get(name);
    if (row === undefined) throw new Error(`meta row ${name} is missing`);
    return Number(row.value);
  }

  private notify(events: WatchEvent[]): void {
    for (const state of this.watches) {
      for (const event of events) {
        if (event.revision <= state.liveAfter || !event.key.startsWith(state.prefix)) continue;
        // Each watcher gets its own copy, so neither the writer nor another watcher can change it.
        state.live.push({ ...event, value: new Uint8Array(event.value) });
      }
      if (state.live.length > 0) this.schedule(state);
    }
  }

  private schedule(state: WatchState): void {
    if (state.scheduled || state.closed) return;
    state.scheduled = true;
    queueMicrotask(() => this.drain(state));
  }

  /** Delivers queued events until none are left. A callback that writes only appends to the queue. */
  private drain(state: WatchState): void {
    while (!state.closed) {
      let event: WatchEvent | undefined;
      try {
        event = this.nextEvent(state);
      } catch (error) {
        this.stopWatch(state);
        this.onWatchError(error, undefined);
        return;
      }
      if (event === undefined) break;
      try {
        state.onEvent(event);
      } catch (error) {
        this.onWatchError(error, event);
      }
    }
    state.scheduled = false;
  }

  private nextEvent(state: WatchState): WatchEvent | undefined {
    if (state.replaying && state.page.length === 0) {
      const end = prefixEnd(state.prefix) ?? null;
      const rows = this.run('watch history read', () =>
        this.sql.readLog.all(state.cursor[0], state.cursor[1], state.historyEnd, state.prefix, end, HISTORY_PAGE_ROWS),
      );
      const last = rows.at(-1);
      if (last === undefined) state.replaying = false;
      else state.cursor = [Number(last.revision), Number(last.seq)];
      state.page = rows.map((row) => ({
        type: row.type === 'put' ? 'put' : 'delete',
        key: String(row.key),
        value: row.value as Uint8Array,
        revision: Number(row.revision),
      }));
    }
    return state.page.shift() ?? state.live.shift();
  }

  private stopWatch(state: WatchState): void {
    state.closed = true;
    state.replaying = false;
    state.page = [];
    state.live = [];
    this.watches.delete(state);
  }
}

function prepareStatements(db: DatabaseSync) {
  return {
    readMeta: db.prepare('SELECT value FROM meta WHERE name = ?'),
    writeMeta: db.prepare('UPDATE meta SET value = ? WHERE name = ?'),
    get: db.prepare(`SELECT ${KV_COLUMNS} FROM kv WHERE key = ?`),
    getModRevision: db.prepare('SELECT mod_revision FROM kv WHERE key = ?'),
    listFrom: db.prepare(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ? ORDER BY key`),
    listRange: db.prepare(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ? AND key < ? ORDER BY key`),
    put: db.prepare(`INSERT INTO kv (${KV_COLUMNS}) VALUES (?1, ?2, ?3, ?3, 1) ON CONFLICT (key) DO UPDATE
      SET value = excluded.value, mod_revision = excluded.mod_revision, version = kv.version + 1`),
    delete: db.prepare('DELETE FROM kv WHERE key = ?'),
    appendLog: db.prepare('INSERT INTO log (revision, seq, type, key, value) VALUES (?, ?, ?, ?, ?)'),
    compactLog: db.prepare('DELETE FROM log WHERE revision <= ?'),
    readLog: db.prepare(`SELECT revision, seq, type, key, value FROM log WHERE (revision, seq) > (?1, ?2)
      AND revision <= ?3 AND key >= ?4 AND (?5 IS NULL OR key < ?5) ORDER BY revision, seq LIMIT ?6`),
  };
}

/**
 * Flushes a directory's entries to disk. Node.js 24's permission model rejects `fsyncSync` on any
 * descriptor but allows `FileHandle#sync`, so a sandboxed process syncs through a file handle,
 * which finishes shortly after this function returns.
 */
function syncDirectory(directory: string): void {
  if (process.permission === undefined) {
    const fd = openSync(directory, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return;
  }
  // NOTE: under the permission model the new file's directory entry is durable a moment after the
  // store opens, not before. A power failure in that window loses only the empty new file.
  void open(directory, 'r')
    .then((handle) => handle.sync().finally(() => handle.close()))
    .catch(() => undefined);
}

/** Creates the parent directory and an empty 0600 file when missing, and tightens loose modes. */
function prepareFile(path: string): void {
  const directory = dirname(path);
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600));
    // Sync the directory so that the new file's entry survives a power failure.
    syncDirectory(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    const stats = statSync(file, { throwIfNoEntry: false });
    if (stats?.isFile() && (stats.mode & 0o077) !== 0) chmodSync(file, 0o600);
  }
}

/** Creates the tables in an empty database, or checks that an existing one is a sealmesh store. */
function initializeSchema(db: DatabaseSync): void {
  db.exec('BEGIN IMMEDIATE');
  try {
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all().map((row) => row.name);
    if (tables.length === 0) {
      db.exec(SCHEMA);
    } else {
      if (!['meta', 'kv', 'log'].every((name) => tables.includes(name))) {
        throw new Error('the file is a SQLite database without the sealmesh tables');
      }
      const rows = db.prepare("SELECT name, value FROM meta WHERE name IN ('schema_version', 'revision', 'compacted')").all();
      const version = rows.find((row) => row.name === 'schema_version')?.value;
      if (version !== SCHEMA_VERSION) {
        throw new Error(`schema version ${String(version)} is not the supported version ${SCHEMA_VERSION}`);
      }
      if (rows.length !== 3) throw new Error('the meta table lacks the revision or compacted row');
    }
    db.exec('COMMIT');
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}

/**
 * Returns the smallest string above every string that starts with `prefix`, or undefined when no
 * such string exists. SQLite compares TEXT as UTF-8 bytes, which matches code point order.
 */
function prefixEnd(prefix: string): string | undefined {
  const codePoints = Array.from(prefix, (character) => character.codePointAt(0) as number);
  while (codePoints.length > 0) {
    const last = codePoints.pop() as number;
    if (last < 0x10ffff) {
      codePoints.push(last + 1 === 0xd800 ? 0xe000 : last + 1);
      return String.fromCodePoint(...codePoints);
    }
  }
  return undefined;
}

function toRecord(row: Record<string, SQLOutputValue>): StoreRecord {
  return {
    key: String(row.key),
    value: row.value as Uint8Array,
    createRevision: Number(row.create_revision),
    modRevision: Number(row.mod_revision),
    version: Number(row.version),
  };
}

/**
 * Throws SEALMESH_ERR_STORE_KEY_INVALID unless `key` is a valid key, or a valid prefix, which may be
 * empty. The sealed store applies the same rule to plaintext keys, so both report the same code.
 */
export function checkKey(key: unknown, kind: 'key' | 'prefix'): asserts key is string {
  let problem: string | undefined;
  if (typeof key !== 'string') problem = `has type ${typeof key}, not string`;
  else if (kind === 'key' && key === '') problem = 'is empty';
  else if (!key.isWellFormed()) problem = 'contains an unpaired UTF-16 surrogate';
  else if (key.includes('\0')) problem = 'contains a NUL character';
  else if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) problem = `is ${Buffer.byteLength(key, 'utf8')} bytes long`;
  if (problem === undefined) return;
  const quoted = typeof key === 'string' ? ` ${JSON.stringify(key.slice(0, 64))}` : '';
  throw new SealmeshError(
    'SEALMESH_ERR_STORE_KEY_INVALID',
    `store ${kind}${quoted} is invalid: it ${problem}. Use ${kind === 'key' ? '1' : '0'} to ${MAX_KEY_BYTES} UTF-8 bytes of text without NUL`,
  );
}

function checkValue(value: unknown, role = 'value'): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new SealmeshError('SEALMESH_ERR_STORE_VALUE_INVALID', `store ${role} is invalid: it is not a Uint8Array`);
  }
  if (value.byteLength > MAX_VALUE_BYTES) {
    throw new SealmeshError(
      'SEALMESH_ERR_STORE_VALUE_TOO_LARGE',
      `store ${role} is ${value.byteLength} bytes, above the maximum of ${MAX_VALUE_BYTES} bytes`,
    );
  }
}

/** Throws `code` unless `value` is a safe integer of at least `min`. */
export function checkInteger(name: string, value: unknown, min: number, code: ErrorCode = 'SEALMESH_ERR_INVALID_ARGUMENT'): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    const message = `${name} ${String(value)} is invalid: use an integer of at least ${min}`;
    throw new SealmeshError(code, message);
  }
}

/**
 * Throws SEALMESH_ERR_STORE_TXN_INVALID (or a key or value code) unless `request` is a well-formed
 * transaction. `checkOperationValue` applies the value limit, which the sealed store narrows.
 */
export function checkTxn(
  request: TxnRequest,
  checkOperationValue: (value: unknown, key: string, role: string) => void = (value, _key, role) => checkValue(value, role),
): void {
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
    else checkOperationValue(compare.value, compare.key, 'compare value');
  }
  const branches: [string, Operation[]][] = [['success', request.success], ['failure', request.failure ?? []]];
  for (const [branch, operations] of branches) {
    if (!Array.isArray(operations)) throw invalid(`${branch} is not an array`);
    const keys = new Set<string>();
    for (const operation of operations) {
      checkKey(operation?.key, 'key');
      if (operation.type === 'put') checkOperationValue(operation.value, operation.key, 'value');
      else if (operation.type !== 'delete') {
        throw invalid(`operation type ${JSON.stringify((operation as { type: unknown }).type)} is not put or delete`);
      }
      if (keys.has(operation.key)) throw invalid(`the ${branch} branch writes ${JSON.stringify(operation.key)} more than once`);
      keys.add(operation.key);
    }
  }
}

function reportWatchError(error: unknown, event: WatchEvent | undefined): void {
  const where = event === undefined
    ? 'watch history read'
    : `watch callback for ${JSON.stringify(event.key)} at revision ${event.revision}`;
  process.emitWarning(`store ${where} failed: ${errorMessage(error)}`);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
