/**
 * Sealed stores in one SQLite file: open, initialise and verify by path, with damaged files
 * reported as SEALMESH_ERR_INTEGRITY_FILE_CORRUPT.
 */
import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { SealmeshError } from '../errors/index.ts';
import type { SealProvider } from '../seal/types.ts';
import { isCorruptionError, mapBackendError } from './integrity-errors.ts';
import { INTERNAL_PREFIX } from './sealed-format.ts';
import { type VerifyOptions, type VerifyReport, verifySealedStore } from './integrity-verify.ts';
import type { SealedInitializeOptions, SealedOpenOptions, SealedStoreMeta } from './sealed-options.ts';
import { SealedStore } from './sealed.ts';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.ts';

export interface SealedFileOptions {
  /** Settings of the SQLite backend. */
  sqlite?: SqliteStoreOptions;
  /**
   * Runs SQLite's `PRAGMA integrity_check` over the whole file before opening it, so damage in
   * pages that no record read touches is found too, and so is an index entry that no longer
   * matches its table row. Its time grows with the file size. Default true.
   */
  fileCheck?: boolean;
}

const MAX_REPORTED_PROBLEMS = 3;

/**
 * Opens the SQLite backend at `path`, after an integrity check of an existing file. Throws
 * SEALMESH_ERR_INTEGRITY_FILE_CORRUPT when SQLite finds the file truncated or corrupted, and
 * SEALMESH_ERR_STORE_OPEN_FAILED for other open failures.
 */
export function openSqliteBackend(path: string, options: SealedFileOptions = {}): SqliteStore {
  if (options.fileCheck !== false && existsSync(path)) checkFile(path);
  try {
    // Watchers of a sealed store follow `d/` records only; the chain entries and other `m/`
    // records need no watch history.
    const unloggedPrefixes = [INTERNAL_PREFIX, ...(options.sqlite?.unloggedPrefixes ?? [])];
    return SqliteStore.open(path, { ...options.sqlite, unloggedPrefixes });
  } catch (error) {
    throw mapBackendError(error, `open of ${path}`);
  }
}

/** Creates a sealed store in a new or empty SQLite file at `path`. */
export async function initializeSealedFile(
  path: string,
  provider: SealProvider,
  options: SealedInitializeOptions & SealedFileOptions = {},
): Promise<SealedStore> {
  const backend = openSqliteBackend(path, options);
  try {
    return await SealedStore.initialize(backend, provider, options);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/** Opens and verifies the sealed store in the SQLite file at `path`, which must exist. */
export async function openSealedFile(path: string, provider: SealProvider, options: SealedOpenOptions & SealedFileOptions = {}): Promise<SealedStore> {
  const backend = openSqliteBackend(requireFile(path), options);
  try {
    return await SealedStore.open(backend, provider, options);
  } catch (error) {
    await backend.close();
    throw error;
  }
}

/**
 * Verifies the sealed store in the SQLite file at `path` without serving it, for example the data
 * directory of a stopped server. Writes no record and does not advance the counter. SQLite itself
 * may still checkpoint a leftover `-wal` file into the database when it opens.
 */
export async function verifySealedFile(path: string, provider: SealProvider, options: VerifyOptions & SealedFileOptions = {}): Promise<VerifyReport> {
  const backend = openSqliteBackend(requireFile(path), options);
  try {
    return await verifySealedStore(backend, provider, options);
  } finally {
    await backend.close();
  }
}

/** Reads the clear meta record of the SQLite file at `path` without any key. */
export async function readSealedFileMeta(path: string, options: SealedFileOptions = {}): Promise<SealedStoreMeta | undefined> {
  const backend = openSqliteBackend(requireFile(path), options);
  try {
    return await SealedStore.readMeta(backend);
  } finally {
    await backend.close();
  }
}

function requireFile(path: string): string {
  if (typeof path === 'string' && path !== '' && existsSync(path)) return path;
  throw new SealmeshError(
    'SEALMESH_ERR_NOT_INITIALIZED',
    `sealed store file ${JSON.stringify(path)} does not exist: initialise a store there first, or pass the path of an existing one`,
  );
}

/**
 * Runs `PRAGMA integrity_check` on a separate connection. Throws
 * SEALMESH_ERR_INTEGRITY_FILE_CORRUPT when SQLite reports a problem or fails with a corruption
 * error. Other failures are left to `SqliteStore.open`, which reports them with its own code.
 * `quick_check` is not enough: it skips the comparison of index entries with table rows, so a name
 * changed in the kv row alone would pass it while lookups through the index still see the old name.
 */
function checkFile(path: string): void {
  let db: DatabaseSync | undefined;
  let problems: string[] = [];
  try {
    db = new DatabaseSync(path);
    problems = db.prepare('PRAGMA integrity_check').all().map((row) => String(row.integrity_check)).filter((text) => text !== 'ok');
  } catch (error) {
    if (isCorruptionError(error)) throw mapBackendError(error, `integrity check of ${path}`);
  } finally {
    if (db?.isOpen) db.close();
  }
  if (problems.length === 0) return;
  const firstProblems = problems.slice(0, MAX_REPORTED_PROBLEMS).join('; ');
  throw new SealmeshError(
    'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT',
    `sealed store file ${path} failed the SQLite integrity check with ${problems.length} ${problems.length === 1 ? 'problem' : 'problems'} (${firstProblems}). ` +
      'The data directory was changed outside sealmesh: stop the server and restore it from a trusted backup',
  );
}
