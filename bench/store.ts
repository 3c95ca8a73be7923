import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyFileSealProvider } from '../src/seal/index.ts';
import { SealedStore, SqliteStore, type Store } from '../src/store/index.ts';
import { openSqliteBackend } from '../src/store/sealed-file.ts';

/** Writes and reads per second of one backend, for 1 KiB values. */
export interface StoreFigures {
  writesPerSecond: number;
  readsPerSecond: number;
}

const VALUE_BYTES = 1024;

async function measure(store: Store, writes: number, reads: number): Promise<StoreFigures> {
  const value = randomBytes(VALUE_BYTES);
  const keys = Array.from({ length: writes }, (_, index) => `catalog/instances/default/svc-${index % 50}/${index}`);
  const writeStart = process.hrtime.bigint();
  for (const key of keys) await store.put(key, value);
  const writeSeconds = Number(process.hrtime.bigint() - writeStart) / 1e9;
  const readStart = process.hrtime.bigint();
  for (let index = 0; index < reads; index += 1) {
    const record = await store.get(keys[(index * 7919) % keys.length] ?? '');
    if (record === undefined) throw new Error('benchmark read missed a key it wrote');
  }
  const readSeconds = Number(process.hrtime.bigint() - readStart) / 1e9;
  return { writesPerSecond: writes / writeSeconds, readsPerSecond: reads / readSeconds };
}

/** Runs one round on a fresh directory: unsealed SQLite or the sealed store over SQLite. */
export async function storeRound(kind: 'unsealed' | 'sealed', writes: number, reads: number): Promise<StoreFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-bench-store-'));
  try {
    // The sealed store gets its backend the way the server opens it.
    const path = join(dir, 'data', 'sealmesh.db');
    const backend = kind === 'unsealed' ? SqliteStore.open(path) : openSqliteBackend(path);
    if (kind === 'unsealed') {
      try {
        return await measure(backend, writes, reads);
      } finally {
        await backend.close();
      }
    }
    const provider = await KeyFileSealProvider.create(join(dir, 'seal-key'), { dataDir: join(dir, 'data') });
    const sealed = await SealedStore.initialize(backend, provider, { providerName: 'keyfile' });
    try {
      return await measure(sealed, writes, reads);
    } finally {
      await sealed.close();
      await provider.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
