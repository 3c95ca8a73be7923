import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { type SealedFileOptions, type SealedOpenOptions, initializeSealedFile, openSealedFile, verifySealedFile } from '../src/store/sealed-api.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { TestCounter, TestSealProvider } from './helpers/test-seal.ts';

const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const decode = (value: Uint8Array): string => new TextDecoder().decode(value);

interface Fixture {
  dir: string;
  path: string;
  provider: TestSealProvider;
}

interface Row {
  key: string;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-tamper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Writes a small closed sealed store: three live services, a key written and deleted, and a txn.
 * Revisions: 1 initialisation, 2 to 4 the services, 5 and 6 the scratch key, 7 the txn.
 */
async function createFixture(t: TestContext, options: SealedOpenOptions = {}, provider = new TestSealProvider()): Promise<Fixture> {
  const dir = tempDir(t);
  const path = join(dir, 'store.db');
  const store = await initializeSealedFile(path, provider, options);
  await store.put('svc/payments', text('payments-v1'));
  await store.put('svc/checkout', text('checkout-v1'));
  await store.put('svc/ledger', text('ledger-v1'));
  await store.put('tmp/scratch', text('x'));
  await store.delete('tmp/scratch');
  await store.txn({ compare: [], success: [{ type: 'put', key: 'cfg/mesh', value: text('{"mtls":true}') }] });
  await store.close();
  assert.equal((await verifySealedFile(path, provider, options)).records, 4, 'the untouched fixture verifies');
  return { dir, path, provider };
}

function withDb<T>(path: string, body: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path);
  try {
    return body(db);
  } finally {
    db.close();
  }
}

/** Returns the backend rows whose key starts with `prefix`, in key order. */
function rows(path: string, prefix: string): Row[] {
  return withDb(path, (db) =>
    db
      .prepare('SELECT key, value, create_revision, mod_revision, version FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key')
      .all(prefix.length, prefix)
      .map((row) => ({
        key: String(row.key),
        value: Buffer.from(row.value as Uint8Array),
        createRevision: Number(row.create_revision),
        modRevision: Number(row.mod_revision),
        version: Number(row.version),
      })),
  );
}

function writeRow(path: string, row: Row): void {
  withDb(path, (db) =>
    db
      .prepare(`INSERT INTO kv (key, value, create_revision, mod_revision, version) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, create_revision = excluded.create_revision,
        mod_revision = excluded.mod_revision, version = excluded.version`)
      .run(row.key, row.value, row.createRevision, row.modRevision, row.version),
  );
}

/**
 * Flips the lowest bit of the byte at `offset` in every copy of `needle` in the file (the live row
 * and any copy in the watch log), skipping copies that `accept` rejects. Returns the copies changed.
 */
function flipInFile(path: string, needle: Uint8Array, offset: number, accept: (bytes: Buffer, at: number) => boolean = () => true): number {
  const bytes = readFileSync(path);
  let changed = 0;
  for (let at = bytes.indexOf(needle); at !== -1; at = bytes.indexOf(needle, at + 1)) {
    if (!accept(bytes, at)) continue;
    bytes[at + offset] = (bytes[at + offset] as number) ^ 0x01;
    changed += 1;
  }
  writeFileSync(path, bytes);
  return changed;
}

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${error instanceof Error ? error.stack : String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

/** Asserts that open and verify both reject the store with `code`, so it serves nothing. */
async function assertRejected(fixture: Fixture, code: ErrorCode, options: SealedOpenOptions & SealedFileOptions = {}): Promise<void> {
  await assert.rejects(openSealedFile(fixture.path, fixture.provider, options), hasCode(code));
  await assert.rejects(verifySealedFile(fixture.path, fixture.provider, options), hasCode(code));
}

test('flipped envelope byte', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  // A byte inside the ciphertext, before the 16-byte tag.
  assert.ok(flipInFile(fixture.path, target.value, target.value.length - 20) >= 1);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED');
});

test('flipped key column byte', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  const name = Buffer.from(target.key);
  // Chain entries quote the name in JSON; only the key column copies (table, index, log) change.
  const changed = flipInFile(fixture.path, name, name.length - 1, (bytes, at) => bytes[at - 1] !== 0x22);
  assert.ok(changed >= 2, `flipped ${changed} copies`);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_UNEXPECTED');
});

test('key byte flipped in kv row', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  const name = Buffer.from(target.key);
  const valueStart = target.value.subarray(0, 16);
  // The kv row stores the name followed by the value. Its copy in the primary key index and the
  // chain entries stay intact, so lookups through the index still find the original name.
  const changed = flipInFile(fixture.path, name, name.length - 1, (bytes, at) => {
    const followedByValue = bytes.subarray(at + name.length, at + name.length + valueStart.length).equals(valueStart);
    const inWatchLog = bytes.subarray(at - 3, at).toString('latin1') === 'put';
    return followedByValue && !inWatchLog;
  });
  assert.equal(changed, 1);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT');
});

test('flipped revision column', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  writeRow(fixture.path, { ...target, modRevision: target.modRevision ^ 1 });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED');
});

test('flipped chain head byte', async (t) => {
  const fixture = await createFixture(t);
  const head = rows(fixture.path, 'm/chain/').at(-1);
  assert.ok(head);
  // A byte inside the MAC, which is the last field of the entry.
  assert.ok(flipInFile(fixture.path, head.value, head.value.length - 10) >= 1);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_HEAD_INVALID');
});

test('flipped chain entry byte', async (t) => {
  const fixture = await createFixture(t);
  const [entry] = rows(fixture.path, 'm/chain/0000000000000003');
  assert.ok(entry);
  const digestAt = entry.value.indexOf('"digest":"') + '"digest":"'.length;
  assert.ok(flipInFile(fixture.path, entry.value, digestAt + 5) >= 1);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN');
});

test('flipped SQLite header byte', async (t) => {
  const fixture = await createFixture(t);
  const bytes = readFileSync(fixture.path);
  bytes[0] = (bytes[0] as number) ^ 0x01;
  writeFileSync(fixture.path, bytes);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT');
});

test('any header byte flip fails cleanly', async (t) => {
  const fixture = await createFixture(t);
  const original = readFileSync(fixture.path);
  const outcomes = new Map<string, number>();
  for (let offset = 0; offset < 100; offset += 1) {
    const bytes = Buffer.from(original);
    bytes[offset] = (bytes[offset] as number) ^ 0x01;
    writeFileSync(fixture.path, bytes);
    let outcome = 'verified';
    try {
      // A flip in a field SQLite ignores leaves the data intact, so the store must verify fully.
      const report = await verifySealedFile(fixture.path, fixture.provider);
      assert.equal(report.records, 4);
    } catch (error) {
      assert.ok(isSealmeshError(error), `offset ${offset}: expected a SealmeshError, got ${String(error)}`);
      outcome = error.code;
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  assert.deepEqual([...outcomes.keys()].sort(), ['SEALMESH_ERR_INTEGRITY_FILE_CORRUPT', 'verified']);
});

test('file truncated to half', async (t) => {
  const fixture = await createFixture(t);
  truncateSync(fixture.path, Math.floor(readFileSync(fixture.path).length / 2));
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT');
  // Without the file check, the failed reads of the open itself report the damage.
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT', { fileCheck: false });
});

test('file truncated off a page boundary', async (t) => {
  const fixture = await createFixture(t);
  const size = readFileSync(fixture.path).length;
  const length = Math.floor(size * 0.75) + 123;
  assert.notEqual(length % 4096, 0);
  truncateSync(fixture.path, length);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT');
});

test('deleted data row', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  withDb(fixture.path, (db) => db.prepare('DELETE FROM kv WHERE key = ?').run(target.key));
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_MISSING');
});

test('row duplicated under another name', async (t) => {
  const fixture = await createFixture(t);
  const [target] = rows(fixture.path, 'd/');
  assert.ok(target);
  writeRow(fixture.path, { ...target, key: 'd/AAAAAAAAAAAAAAAAAAAAAA' });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_UNEXPECTED');
});

test('older value of a key replayed', async (t) => {
  const fixture = await createFixture(t);
  const before = rows(fixture.path, 'd/');
  const store = await openSealedFile(fixture.path, fixture.provider);
  await store.put('svc/payments', text('payments-v2'));
  await store.close();

  const changed = rows(fixture.path, 'd/').find((row) => !before.some((old) => old.key === row.key && old.value.equals(row.value)));
  const old = before.find((row) => row.key === changed?.key);
  assert.ok(old);
  writeRow(fixture.path, old);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_REPLAYED');
});

test('values of two keys swapped', async (t) => {
  const fixture = await createFixture(t);
  const [first, second] = rows(fixture.path, 'd/');
  assert.ok(first);
  assert.ok(second);
  writeRow(fixture.path, { ...first, value: second.value });
  writeRow(fixture.path, { ...second, value: first.value });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED');
});

test('record spliced from another cluster', async (t) => {
  const fixture = await createFixture(t);
  // Another cluster sealed with the same KEK.
  const other = await createFixture(t, {}, new TestSealProvider(fixture.provider.exportKek()));
  const [foreign] = rows(other.path, 'd/');
  const [target] = rows(fixture.path, 'd/');
  assert.ok(foreign);
  assert.ok(target);
  writeRow(fixture.path, { ...target, value: foreign.value });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_FOREIGN_RECORD');
});

test('keyring from another cluster', async (t) => {
  const fixture = await createFixture(t);
  const other = await createFixture(t, {}, new TestSealProvider(fixture.provider.exportKek()));
  const [keyring] = rows(other.path, 'm/keyring');
  const [target] = rows(fixture.path, 'm/keyring');
  assert.ok(keyring);
  assert.ok(target);
  writeRow(fixture.path, { ...target, value: keyring.value });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_STORE_MISMATCH');
});

test('older keyring replayed after rotation', async (t) => {
  const fixture = await createFixture(t);
  const [oldKeyring] = rows(fixture.path, 'm/keyring');
  assert.ok(oldKeyring);
  const store = await openSealedFile(fixture.path, fixture.provider);
  await store.rotateDataKey();
  assert.equal(await store.reencryptBatch(10), 0);
  await store.close();

  writeRow(fixture.path, oldKeyring);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_REPLAYED');
});

test('meta record edited', async (t) => {
  const fixture = await createFixture(t);
  const [meta] = rows(fixture.path, 'm/meta');
  assert.ok(meta);
  const edited = { ...JSON.parse(meta.value.toString('utf8')), providerParams: { salt: 'attacker-chosen' } };
  writeRow(fixture.path, { ...meta, value: Buffer.from(JSON.stringify(edited)) });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED');
});

test('deleted meta record', async (t) => {
  const fixture = await createFixture(t);
  withDb(fixture.path, (db) => db.prepare('DELETE FROM kv WHERE key = ?').run('m/meta'));
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_RECORD_MISSING');
});

test('older head entry in place of the head', async (t) => {
  const fixture = await createFixture(t);
  const [previous, head] = rows(fixture.path, 'm/chain/').slice(-2);
  assert.ok(previous);
  assert.ok(head);
  writeRow(fixture.path, { ...head, value: previous.value });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_HEAD_INVALID');
});

test('last write removed', async (t) => {
  const fixture = await createFixture(t);
  const head = rows(fixture.path, 'm/chain/').at(-1);
  assert.ok(head);
  withDb(fixture.path, (db) => db.prepare('DELETE FROM kv WHERE key = ?').run(head.key));
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_HEAD_INVALID');
});

test('write that bypassed the sealed store', async (t) => {
  const fixture = await createFixture(t);
  const backend = SqliteStore.open(fixture.path);
  await backend.put('d/injected', text('plaintext'));
  await backend.close();
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_HEAD_INVALID');
});

test('older copy with counter is a rollback', async (t) => {
  const counter = new TestCounter();
  const options = { counter, epochWrites: 1 };
  const fixture = await createFixture(t, options);
  const copy = readFileSync(fixture.path);
  const store = await openSealedFile(fixture.path, fixture.provider, options);
  await store.put('svc/payments', text('payments-v2'));
  await store.put('svc/checkout', text('checkout-v2'));
  await store.close();

  writeFileSync(fixture.path, copy);
  assert.equal(existsSync(`${fixture.path}-wal`), false);
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_ROLLBACK', options);

  // An operator who restores the copy on purpose opens it with acceptRollback, which rebases the epoch.
  const counterBefore = await counter.read();
  const restored = await openSealedFile(fixture.path, fixture.provider, { ...options, acceptRollback: true });
  assert.equal(decode((await restored.get('svc/payments'))?.value ?? new Uint8Array()), 'payments-v1');
  await restored.close();
  assert.equal(await counter.read(), counterBefore + 1n);
  const reopened = await openSealedFile(fixture.path, fixture.provider, options);
  await reopened.close();
});

test('older copy without counter is accepted (known limit)', async (t) => {
  const fixture = await createFixture(t);
  const copy = readFileSync(fixture.path);
  const store = await openSealedFile(fixture.path, fixture.provider);
  await store.put('svc/payments', text('payments-v2'));
  await store.close();

  writeFileSync(fixture.path, copy);
  const restored = await openSealedFile(fixture.path, fixture.provider);
  t.after(() => restored.close());
  assert.equal(decode((await restored.get('svc/payments'))?.value ?? new Uint8Array()), 'payments-v1');
});

test('deleted chain entry', async (t) => {
  const fixture = await createFixture(t);
  withDb(fixture.path, (db) => db.prepare("DELETE FROM kv WHERE key = 'm/chain/0000000000000004'").run());
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN');
});

test('reordered chain entries', async (t) => {
  const fixture = await createFixture(t);
  const [third, fourth] = rows(fixture.path, 'm/chain/').filter((row) => row.modRevision === 3 || row.modRevision === 4);
  assert.ok(third);
  assert.ok(fourth);
  writeRow(fixture.path, { ...third, value: fourth.value });
  writeRow(fixture.path, { ...fourth, value: third.value });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN');
});

test('chain entry appended after the head', async (t) => {
  const fixture = await createFixture(t);
  const last = rows(fixture.path, 'm/chain/').at(-1);
  assert.ok(last);
  writeRow(fixture.path, { ...last, key: 'm/chain/0000000000000008', modRevision: 8 });
  await assertRejected(fixture, 'SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN');
});
