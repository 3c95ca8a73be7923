import { copyFileSync, existsSync, renameSync, rmSync, chmodSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AuditLog } from '../audit/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { ShamirSealProvider, type MonotonicCounter, type SealProvider } from '../seal/index.ts';
import { isIntegrityError, openSqliteBackend, SealedStore, snapshotIntegrityError, verifySealedStore, type SqliteStore, type VerifyReport } from '../store/index.ts';
import { assertServerStopped } from './seal-lifecycle.ts';
import { openCounter, openProvider, STORE_FILE, type CounterConfig, type SealConfig } from './seal-setup.ts';

export interface OfflineOptions {
  dataDir: string;
  seal: SealConfig;
  counter?: CounterConfig;
  /** Key shares, for a Shamir-sealed store. */
  shares?: string[];
}

/** Opens the store file at `path` read for verification, failing when it does not exist. */
function openExisting(path: string): SqliteStore {
  if (!existsSync(path)) {
    throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', `${path} does not exist; check --data-dir`);
  }
  return openSqliteBackend(path);
}

async function providerFor(backend: SqliteStore, options: OfflineOptions): Promise<{ provider: SealProvider; storeId: string }> {
  const meta = await SealedStore.readMetaStrict(backend);
  if (meta === undefined) {
    throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', `${options.dataDir} contains no sealed store; check --data-dir`);
  }
  if (meta.providerName !== options.seal.provider) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `the store is sealed with the ${meta.providerName} provider; pass --seal ${meta.providerName}`);
  }
  if (options.seal.provider === 'shamir') {
    const verification = Buffer.from(String((meta.providerParams as { verification?: unknown }).verification ?? ''), 'base64');
    return { provider: ShamirSealProvider.fromShares(options.shares ?? [], verification), storeId: meta.storeId };
  }
  return { provider: await openProvider(options.seal, options.dataDir, meta.providerParams), storeId: meta.storeId };
}

/**
 * Verifies a stopped server's data directory: the seal key, the chain, every record and, with a
 * counter, rollback. Throws the integrity error that names the first failed record and check.
 */
export async function verifyDataDirectory(options: OfflineOptions): Promise<VerifyReport> {
  // A running server may rotate keys or write while the check reads, so the check could report a
  // change that is not tampering. The server verifies its own store consistently through its API.
  assertServerStopped(options.dataDir, 'verify its store through the server instead (`sealmesh operator verify-data` without --data-dir), or stop it first');
  const backend = openExisting(join(options.dataDir, STORE_FILE));
  let provider: SealProvider | undefined;
  let counter: MonotonicCounter | undefined;
  try {
    provider = (await providerFor(backend, options)).provider;
    counter = await openCounter(options.counter);
    return await verifySealedStore(backend, provider, counter !== undefined ? { counter } : {});
  } finally {
    await backend.close();
    await provider?.close();
    await counter?.close();
  }
}

/**
 * Restores a sealed snapshot into a stopped server's data directory. The snapshot must open with
 * the seal key and verify in full, and must belong to the same cluster (same store id). With a
 * counter, restoring an older copy is accepted as the explicit operator act it is, and the counter
 * is advanced past it so that the copy being replaced cannot be restored silently afterwards.
 */
export async function restoreSnapshot(options: OfflineOptions & { file: string }): Promise<{ report: VerifyReport; storeId: string }> {
  assertServerStopped(options.dataDir);
  const target = join(options.dataDir, STORE_FILE);
  const staging = `${target}.restore`;
  // A write-ahead log left by an interrupted restore would be replayed into the new copy.
  const removeStaging = (): void => {
    for (const path of [staging, `${staging}-wal`, `${staging}-shm`]) rmSync(path, { force: true });
  };
  if (!existsSync(options.file) || !statSync(options.file).isFile()) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `snapshot file ${options.file} does not exist or is not a regular file; check the path`);
  }
  removeStaging();
  copyFileSync(options.file, staging);
  chmodSync(staging, 0o600);
  let currentStoreId: string | undefined;
  /** Revision of the store being replaced, which the audit entry records: the restore discards its later writes. */
  let replacedRevision: number | undefined;
  if (existsSync(target)) {
    const current = openSqliteBackend(target);
    try {
      currentStoreId = (await SealedStore.readMeta(current))?.storeId;
      if (currentStoreId !== undefined) replacedRevision = await current.revision();
    } finally {
      await current.close();
    }
  }
  let backend: SqliteStore;
  try {
    backend = openSqliteBackend(staging);
  } catch (error) {
    removeStaging();
    throw isIntegrityError(error) ? snapshotIntegrityError(error, options.file) : error;
  }
  let provider: SealProvider | undefined;
  let counter: MonotonicCounter | undefined;
  let store: SealedStore | undefined;
  try {
    // The store ids are compared before the seal key is needed, because the key of another
    // cluster is usually not on this host and its absence would hide the real mistake. The
    // snapshot's id is not yet authenticated here, but it is only used to reject.
    const snapshotStoreId = (await SealedStore.readMeta(backend))?.storeId;
    if (currentStoreId !== undefined && snapshotStoreId !== undefined && currentStoreId !== snapshotStoreId) {
      throw new SealmeshError(
        'SEALMESH_ERR_INTEGRITY_STORE_MISMATCH',
        `snapshot ${options.file} belongs to store ${snapshotStoreId}, but ${options.dataDir} holds store ${currentStoreId}; a snapshot restores only into its own cluster`,
      );
    }
    const opened = await providerFor(backend, options);
    provider = opened.provider;
    counter = await openCounter(options.counter);
    store = await SealedStore.open(backend, provider, counter !== undefined ? { counter, acceptRollback: true } : {});
    const report = await store.verify();
    // The entry goes into the restored copy itself, so the log that survives the restore records it.
    await new AuditLog(store).append({
      action: 'snapshot.restore',
      actor: { kind: 'system', accessorId: 'offline-restore' },
      subject: basename(options.file),
      details: { storeId: opened.storeId, revision: report.revision, ...(replacedRevision !== undefined ? { replacedRevision } : {}) },
    });
    await store.close();
    store = undefined;
    for (const suffix of ['-wal', '-shm']) rmSync(`${target}${suffix}`, { force: true });
    renameSync(staging, target);
    return { report, storeId: opened.storeId };
  } catch (error) {
    // SQLite removes the staging copy's -wal and -shm files only when it closes the copy, so the
    // copy is closed before the files are removed.
    if (store !== undefined) await store.close();
    else await backend.close();
    removeStaging();
    throw isIntegrityError(error) ? snapshotIntegrityError(error, options.file) : error;
  } finally {
    if (store !== undefined) await store.close();
    else await backend.close();
    await provider?.close();
    await counter?.close();
  }
}
