import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import { type ErrorCode, type SealmeshError, isSealmeshError } from '../src/errors/index.ts';
import { silentLogger } from '../src/log/index.ts';
import { ServerMetrics } from '../src/server/metrics.ts';
import { storeHandlers } from '../src/server/seal-lifecycle.ts';
import {
  SealedStore,
  type SealedFileOptions,
  type SealedInitializeOptions,
  initializeSealedFile,
  openSealedFile,
  openSqliteBackend,
  readSealedFileMeta,
  verifySealedFile,
} from '../src/store/sealed-api.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import type { WatchEvent } from '../src/store/types.ts';
import { TestCounter, TestSealProvider } from './helpers/test-seal.ts';

const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const decode = (value: Uint8Array): string => new TextDecoder().decode(value);

/** Resolves after every queued microtask, including watch deliveries, has run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-sealed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Opened {
  store: SealedStore;
  path: string;
  provider: TestSealProvider;
}

/** Initialises a sealed store in a new file. Its first write (revision 1) is the initialisation. */
async function openStore(t: TestContext, options: SealedInitializeOptions & SealedFileOptions = {}): Promise<Opened> {
  const path = join(tempDir(t), 'store.db');
  const provider = new TestSealProvider();
  const store = await initializeSealedFile(path, provider, options);
  t.after(() => store.close());
  return { store, path, provider };
}

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

/** Formats events as `type key=value@revision` strings for readable comparisons. */
function summarize(events: WatchEvent[]): string[] {
  return events.map((event) => `${event.type} ${event.key}=${decode(event.value)}@${event.revision}`);
}

test('put, get and list by prefix in key order', async (t) => {
  const { store } = await openStore(t);
  for (const key of ['b', 'a/2', 'a/10', 'a/1', 'a0', 'a/\u{10ffff}', 'a/\ufffd', 'a/\u{10000}', 'a', 'a/1/x', 'a//z', 'a/']) {
    await store.put(key, text(`v-${key}`));
  }

  const record = await store.get('a/1');
  assert.equal(decode(record?.value ?? new Uint8Array()), 'v-a/1');
  assert.equal(await store.get('missing'), undefined);
  assert.equal(await store.get('a/missing/deeper'), undefined);

  const listed = (await store.list('a/')).map((entry) => entry.key);
  assert.deepEqual(listed, ['a/', 'a//z', 'a/1', 'a/1/x', 'a/10', 'a/2', 'a/\ufffd', 'a/\u{10000}', 'a/\u{10ffff}']);
  assert.equal((await store.list('')).length, 12);
  assert.deepEqual((await store.list('a/\u{10ffff}')).map((entry) => entry.key), ['a/\u{10ffff}']);
  assert.deepEqual((await store.list('a/1')).map((entry) => entry.key), ['a/1', 'a/1/x', 'a/10']);
  assert.deepEqual((await store.list('a/1/')).map((entry) => entry.key), ['a/1/x']);
  assert.deepEqual((await store.list('a')).map((entry) => entry.key), ['a', ...listed, 'a0']);
  assert.deepEqual(await store.list('z'), []);
  assert.deepEqual(await store.list('z/'), []);
});

test('byte views and empty values', async (t) => {
  const { store } = await openStore(t);
  await store.put('empty', new Uint8Array(0));
  const record = await store.get('empty');
  assert.ok(record);
  assert.equal(record.value.byteLength, 0);

  await store.put('view', Buffer.from('0123456789').subarray(3, 5));
  assert.equal(decode((await store.get('view'))?.value ?? new Uint8Array()), '34');
});

test('watch events copy written values', async (t) => {
  const { store } = await openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 0, (event) => events.push(event));
  const value = text('before');
  const written = store.put('k', value);
  value.set(text('after!'));
  await written;
  await settle();
  assert.deepEqual(summarize(events), ['put k=before@2']);
});

test('revision increments once per write', async (t) => {
  const { store } = await openStore(t);
  assert.equal(await store.revision(), 1, 'initialisation is the first write');
  assert.equal(await store.put('k', text('1')), 2);
  assert.equal(await store.put('k', text('2')), 3);
  assert.equal(await store.delete('k'), true);
  assert.equal(await store.revision(), 4);
  assert.equal(await store.delete('k'), false);
  assert.equal(await store.revision(), 4);
});

test('record revisions and version', async (t) => {
  const { store } = await openStore(t);
  await store.put('other', text('x'));
  await store.put('k', text('1'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('1'), createRevision: 3, modRevision: 3, version: 1 });

  await store.put('k', text('2'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('2'), createRevision: 3, modRevision: 4, version: 2 });

  await store.delete('k');
  assert.equal(await store.get('k'), undefined);
  await store.put('k', text('3'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('3'), createRevision: 6, modRevision: 6, version: 1 });
});

test('txn compare on modRevision', async (t) => {
  const { store } = await openStore(t);

  const created = await store.txn({
    compare: [{ key: 'k', modRevision: 0 }],
    success: [{ type: 'put', key: 'k', value: text('first') }],
    failure: [{ type: 'put', key: 'conflict', value: text('x') }],
  });
  assert.deepEqual(created, { succeeded: true, revision: 2 });

  const again = await store.txn({
    compare: [{ key: 'k', modRevision: 0 }],
    success: [{ type: 'put', key: 'k', value: text('second') }],
    failure: [{ type: 'put', key: 'conflict', value: text('x') }],
  });
  assert.deepEqual(again, { succeeded: false, revision: 3 });
  assert.equal(decode((await store.get('k'))?.value ?? new Uint8Array()), 'first');
  assert.ok(await store.get('conflict'));

  const swapped = await store.txn({
    compare: [{ key: 'k', modRevision: 2 }],
    success: [{ type: 'put', key: 'k', value: text('third') }],
  });
  assert.deepEqual(swapped, { succeeded: true, revision: 4 });

  const stale = await store.txn({
    compare: [{ key: 'k', modRevision: 2 }],
    success: [{ type: 'put', key: 'k', value: text('lost') }],
  });
  assert.deepEqual(stale, { succeeded: false, revision: 4 });
  assert.equal(decode((await store.get('k'))?.value ?? new Uint8Array()), 'third');
});

test('txn compare on value', async (t) => {
  const { store } = await openStore(t);
  await store.put('k', text('old'));

  const mismatch = await store.txn({
    compare: [{ key: 'k', value: text('other') }],
    success: [{ type: 'delete', key: 'k' }],
    failure: [{ type: 'put', key: 'seen', value: text('mismatch') }],
  });
  assert.equal(mismatch.succeeded, false);
  assert.ok(await store.get('k'));
  assert.ok(await store.get('seen'));

  const missing = await store.txn({ compare: [{ key: 'absent', value: new Uint8Array(0) }], success: [] });
  assert.deepEqual(missing, { succeeded: false, revision: 3 });

  const match = await store.txn({
    compare: [{ key: 'k', value: text('old') }, { key: 'seen', modRevision: 3 }],
    success: [{ type: 'delete', key: 'k' }],
  });
  assert.deepEqual(match, { succeeded: true, revision: 4 });
  assert.equal(await store.get('k'), undefined);
});

test('txn uses one revision for all events', async (t) => {
  const { store } = await openStore(t);
  await store.put('c', text('old'));
  const events: WatchEvent[] = [];
  store.watch('', 2, (event) => events.push(event));

  const result = await store.txn({
    compare: [],
    success: [
      { type: 'put', key: 'a', value: text('1') },
      { type: 'put', key: 'b', value: text('2') },
      { type: 'delete', key: 'c' },
      { type: 'delete', key: 'never-existed' },
    ],
  });
  assert.deepEqual(result, { succeeded: true, revision: 3 });
  assert.equal(await store.revision(), 3);
  assert.equal((await store.get('a'))?.modRevision, 3);
  assert.equal((await store.get('b'))?.modRevision, 3);

  await settle();
  assert.deepEqual(summarize(events), ['put a=1@3', 'put b=2@3', 'delete c=@3']);

  const noop = await store.txn({ compare: [], success: [{ type: 'delete', key: 'never-existed' }] });
  assert.deepEqual(noop, { succeeded: true, revision: 3 });
});

test('watch delivers history then live events', async (t) => {
  const { store } = await openStore(t);
  await store.put('svc/a', text('1'));
  await store.put('other/x', text('skip'));
  await store.put('svc/b', text('2'));
  await store.delete('svc/a');

  const events: WatchEvent[] = [];
  const watcher = store.watch('svc/', 2, (event) => events.push(event));
  assert.deepEqual(events, [], 'history must not be delivered inside watch()');

  await store.put('svc/c', text('3'));
  await settle();
  await store.put('other/y', text('skip'));
  await store.put('svc/b', text('4'));
  await settle();
  assert.deepEqual(summarize(events), ['put svc/b=2@4', 'delete svc/a=@5', 'put svc/c=3@6', 'put svc/b=4@8']);

  watcher.close();
  watcher.close();
  await store.put('svc/d', text('5'));
  await settle();
  assert.equal(events.length, 4);
});

test('watch filters a partial prefix', async (t) => {
  const { store } = await openStore(t);
  const events: WatchEvent[] = [];
  store.watch('svc/we', 0, (event) => events.push(event));
  await store.put('svc/web', text('1'));
  await store.put('svc/api', text('2'));
  await store.put('svc/web/extra', text('3'));
  await store.put('svc/webhook', text('4'));
  await store.put('svcx/web', text('5'));
  await settle();
  assert.deepEqual(summarize(events), ['put svc/web=1@2', 'put svc/web/extra=3@4', 'put svc/webhook=4@5']);
});

test('watch from a future revision', async (t) => {
  const { store } = await openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 3, (event) => events.push(event));
  await store.put('a', text('1'));
  await store.put('a', text('2'));
  await store.put('a', text('3'));
  await settle();
  assert.deepEqual(summarize(events), ['put a=3@4']);
});

test('watch replays more than one page', async (t) => {
  const { store } = await openStore(t);
  for (let i = 1; i <= 100; i += 1) await store.put(`k/${String(i).padStart(3, '0')}`, text(String(i)));
  // One txn whose 40 events span a page boundary of the backend's history reads.
  const success = Array.from({ length: 40 }, (_, i) => ({ type: 'put' as const, key: `k/txn/${i}`, value: text(String(i)) }));
  await store.txn({ compare: [], success });

  const events: WatchEvent[] = [];
  store.watch('k/', 0, (event) => events.push(event));
  await settle();
  const expected = [...Array.from({ length: 100 }, (_, i) => i + 2), ...Array<number>(40).fill(102)];
  assert.deepEqual(events.map((event) => event.revision), expected);
  assert.deepEqual(events.slice(100).map((event) => event.key), success.map((operation) => operation.key));
});

test('watch after compaction throws', async (t) => {
  const { store } = await openStore(t, { sqlite: { historyRevisions: 3 } });
  for (let i = 1; i <= 10; i += 1) await store.put('k', text(String(i)));

  assert.throws(() => store.watch('', 0, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));
  assert.throws(() => store.watch('', 7, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));

  const events: WatchEvent[] = [];
  store.watch('', 8, (event) => events.push(event));
  await settle();
  assert.deepEqual(events.map((event) => event.revision), [9, 10, 11]);
});

test('throwing watch callback spares others', async (t) => {
  const errors: unknown[] = [];
  const { store } = await openStore(t, { onWatchError: (error) => errors.push(error) });
  const faulty: number[] = [];
  const healthy: number[] = [];
  store.watch('', 0, (event) => {
    faulty.push(event.revision);
    throw new Error('callback failure');
  });
  store.watch('', 0, (event) => healthy.push(event.revision));

  await store.put('a', text('1'));
  await store.put('b', text('2'));
  await settle();
  assert.deepEqual(healthy, [2, 3]);
  assert.deepEqual(faulty, [2, 3]);
  assert.equal(errors.length, 2);
  assert.equal(await store.revision(), 3);
});

test('watch callback that writes keeps order', async (t) => {
  const { store } = await openStore(t);
  const seen: string[] = [];
  store.watch('', 0, (event) => {
    seen.push(`${event.key}@${event.revision}`);
    if (event.key === 'a') void store.put('b', text('from callback'));
  });
  await store.put('a', text('1'));
  await store.put('c', text('3'));
  await settle();
  // The callback's put of `b` comes before `c`. They share one write only when `b`'s write has not
  // started by the time `c` is put, so `c` has either revision.
  assert.deepEqual(seen.slice(0, 2), ['a@2', 'b@3']);
  assert.ok(seen[2] === 'c@3' || seen[2] === 'c@4', `unexpected ${seen[2]}`);
  assert.equal(seen.length, 3);
});

test('concurrent puts share one write', async (t) => {
  const { store, path, provider } = await openStore(t);
  const revisions = await Promise.all(['a', 'b', 'c'].map((name) => store.put(`svc/${name}`, text(name))));
  assert.deepEqual(revisions, [2, 2, 2]);
  assert.equal(await store.revision(), 2);

  // A repeated key starts a new write, so the later value wins.
  const repeated = await Promise.all([store.put('svc/a', text('a2')), store.put('svc/a', text('a3')), store.put('svc/d', text('d'))]);
  assert.deepEqual(repeated, [3, 4, 4]);
  assert.deepEqual(await store.get('svc/a'), { key: 'svc/a', value: text('a3'), createRevision: 2, modRevision: 4, version: 3 });

  // A read queued between two puts sees the first and not the second.
  const first = store.put('svc/e', text('1'));
  const read = store.get('svc/e');
  const second = store.put('svc/e', text('2'));
  assert.equal(decode((await read)?.value ?? new Uint8Array()), '1');
  assert.deepEqual([await first, await second], [5, 6]);

  await store.close();
  const report = await verifySealedFile(path, provider);
  assert.equal(report.records, 5);
  assert.equal(report.chainEntries, 6);
});

test('put batches stop at 64 puts', async (t) => {
  const { store } = await openStore(t);
  const revisions = await Promise.all(Array.from({ length: 70 }, (_, index) => store.put(`svc/${index}`, text(String(index)))));
  assert.deepEqual(revisions.slice(0, 64), Array(64).fill(2));
  assert.deepEqual(revisions.slice(64), Array(6).fill(3));
});

test('batched put failures stay per write', async (t) => {
  const { store, path, provider } = await openStore(t);
  const tooDeep = Array(45).fill('s').join('/');
  const results = await Promise.allSettled([store.put('ok/1', text('1')), store.put(tooDeep, text('x')), store.put('ok/2', text('2'))]);
  assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled']);
  const invalid = results[1] as PromiseRejectedResult;
  assert.ok(hasCode('SEALMESH_ERR_STORE_KEY_INVALID')(invalid.reason));
  assert.deepEqual(results.map((result) => (result.status === 'fulfilled' ? result.value : 0)), [2, 0, 2]);

  const other = await openSealedFile(path, provider);
  await other.put('ok/1', text('from the other writer'));
  await other.close();
  const conflicted = await Promise.allSettled([store.put('ok/3', text('3')), store.put('ok/4', text('4'))]);
  for (const result of conflicted) {
    assert.equal(result.status, 'rejected', 'every put of the failed write rejects');
    assert.ok(hasCode('SEALMESH_ERR_CONFLICT')((result as PromiseRejectedResult).reason));
  }
});

test('invalid keys are rejected', async (t) => {
  const { store } = await openStore(t);
  const code = hasCode('SEALMESH_ERR_STORE_KEY_INVALID');
  await assert.rejects(store.put('', text('x')), code);
  await assert.rejects(store.put(42 as unknown as string, text('x')), code);
  await assert.rejects(store.put('€'.repeat(342), text('x')), code);
  await assert.rejects(store.put('bad\ud800', text('x')), code);
  await assert.rejects(store.put('nul\0key', text('x')), code);
  await assert.rejects(store.get(''), code);
  await assert.rejects(store.list('p'.repeat(1025)), code);
  assert.throws(() => store.watch('p'.repeat(1025), 0, () => {}), code);

  // Each non-empty segment hashes to 22 characters, so 45 segments exceed the backend key limit.
  await assert.rejects(store.put(Array(45).fill('s').join('/'), text('x')), code);
  await store.put(Array(44).fill('s').join('/'), text('most segments'));
  await store.put('k'.repeat(1024), text('longest key'));
  assert.equal((await store.get('k'.repeat(1024)))?.version, 1);
  assert.deepEqual(await store.list(`${Array(45).fill('s').join('/')}/`), []);
});

test('invalid values are rejected', async (t) => {
  const { store } = await openStore(t);
  await assert.rejects(store.put('k', 'text' as unknown as Uint8Array), hasCode('SEALMESH_ERR_STORE_VALUE_INVALID'));
  await assert.rejects(store.put('k', new Uint8Array(4 * 1024 * 1024)), hasCode('SEALMESH_ERR_STORE_VALUE_TOO_LARGE'));
  // The envelope adds 49 bytes and the sealed key 2 bytes plus the key itself.
  const largest = 4 * 1024 * 1024 - 49 - 2 - 1;
  await assert.rejects(store.put('k', new Uint8Array(largest + 1)), hasCode('SEALMESH_ERR_STORE_VALUE_TOO_LARGE'));
  await store.put('k', new Uint8Array(largest).fill(9));
  assert.equal((await store.get('k'))?.value.byteLength, largest);
  assert.equal(await store.revision(), 2);
});

test('invalid txn and watch arguments are rejected', async (t) => {
  const { store } = await openStore(t);
  const txnInvalid = hasCode('SEALMESH_ERR_STORE_TXN_INVALID');
  await assert.rejects(
    store.txn({ compare: [], success: [{ type: 'put', key: 'k', value: text('1') }, { type: 'delete', key: 'k' }] }),
    txnInvalid,
  );
  await assert.rejects(store.txn({ compare: [{ key: 'k', modRevision: 0, value: text('1') } as never], success: [] }), txnInvalid);
  await assert.rejects(store.txn({ compare: [], success: [{ type: 'rename', key: 'k' } as never] }), txnInvalid);
  await assert.rejects(store.txn({ compare: [{ key: 'k', modRevision: -1 }], success: [] }), txnInvalid);
  await assert.rejects(
    store.txn({ compare: [], success: [], failure: [{ type: 'put', key: 'k', value: new Uint8Array(4 * 1024 * 1024) }] }),
    hasCode('SEALMESH_ERR_STORE_VALUE_TOO_LARGE'),
  );
  assert.throws(() => store.watch('', -1, () => {}), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.throws(() => store.watch('', 1.5, () => {}), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.throws(() => store.watch('', 0, 'nope' as never), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.equal(await store.revision(), 1);
});

test('reopen keeps data, revision and history', async (t) => {
  const { store, path, provider } = await openStore(t);
  await store.put('svc/a', text('1'));
  await store.txn({ compare: [], success: [{ type: 'put', key: 'svc/b', value: text('2') }] });
  await store.put('svc/gone', text('x'));
  await store.delete('svc/gone');
  await store.close();

  const reopened = await openSealedFile(path, provider);
  t.after(() => reopened.close());
  assert.equal(await reopened.revision(), 5);
  assert.deepEqual(await reopened.get('svc/b'), { key: 'svc/b', value: text('2'), createRevision: 3, modRevision: 3, version: 1 });
  assert.equal(await reopened.put('svc/a', text('3')), 6);

  // The delete of svc/gone happened before the reopen, so its key comes from the chain entry.
  const events: WatchEvent[] = [];
  reopened.watch('svc/', 4, (event) => events.push(event));
  await settle();
  assert.deepEqual(summarize(events), ['delete svc/gone=@5', 'put svc/a=3@6']);

  const report = await reopened.verify();
  assert.equal(report.records, 2);
  assert.equal(report.chainEntries, 6);
  assert.equal(report.revision, 6);
});

test('use after close throws', async (t) => {
  const { store } = await openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 0, (event) => events.push(event));
  // Closing in the same tick as the write lets the write finish but drops its event.
  const written = store.put('k', text('1'));
  const closing = store.close();
  assert.equal(await written, 2);
  await closing;
  await store.close();
  await settle();
  assert.deepEqual(events, [], 'close drops events not yet delivered');

  const closed = hasCode('SEALMESH_ERR_STORE_CLOSED');
  await assert.rejects(store.revision(), closed);
  await assert.rejects(store.get('k'), closed);
  await assert.rejects(store.list(''), closed);
  await assert.rejects(store.put('k', text('2')), closed);
  await assert.rejects(store.delete('k'), closed);
  await assert.rejects(store.txn({ compare: [], success: [] }), closed);
  await assert.rejects(store.verify(), closed);
  assert.throws(() => store.watch('', 0, () => {}), closed);
});

test('initialize and open check the backend', async (t) => {
  const dir = tempDir(t);
  const provider = new TestSealProvider();

  const plain = SqliteStore.open(join(dir, 'plain.db'));
  await plain.put('x', text('not sealed'));
  await assert.rejects(SealedStore.initialize(plain, provider), hasCode('SEALMESH_ERR_SEALED_STORE_EXISTS'));
  await assert.rejects(SealedStore.open(plain, provider), hasCode('SEALMESH_ERR_INTEGRITY_STORE_MISMATCH'));
  await plain.close();

  const empty = SqliteStore.open(join(dir, 'empty.db'));
  await assert.rejects(SealedStore.open(empty, provider), hasCode('SEALMESH_ERR_NOT_INITIALIZED'));
  assert.equal(await SealedStore.readMeta(empty), undefined);
  await empty.close();
  await assert.rejects(openSealedFile(join(dir, 'absent.db'), provider), hasCode('SEALMESH_ERR_NOT_INITIALIZED'));
  assert.equal(existsSync(join(dir, 'absent.db')), false, 'open must not create a missing file');

  const path = join(dir, 'sealed.db');
  const store = await initializeSealedFile(path, provider, { providerName: 'passphrase', providerParams: { salt: 'c2FsdA' } });
  await store.close();
  await assert.rejects(initializeSealedFile(path, provider), hasCode('SEALMESH_ERR_SEALED_STORE_EXISTS'));
  const meta = await readSealedFileMeta(path);
  assert.deepEqual(meta, { storeId: store.storeId, providerName: 'passphrase', providerParams: { salt: 'c2FsdA' } });
  await assert.rejects(
    initializeSealedFile(join(dir, 'bad.db'), provider, { providerParams: [] as never }),
    hasCode('SEALMESH_ERR_INVALID_ARGUMENT'),
  );
});

test('wrong KEK fails and leaves file unchanged', async (t) => {
  const { store, path, provider } = await openStore(t);
  await store.put('svc/a', text('1'));
  await store.close();
  const before = readFileSync(path);
  const filesBefore = readdirSync(join(path, '..')).sort();

  const wrong = new TestSealProvider();
  await assert.rejects(openSealedFile(path, wrong), hasCode('SEALMESH_ERR_SEAL_UNWRAP_FAILED'));
  const backend = openSqliteBackend(path);
  await assert.rejects(SealedStore.open(backend, wrong), hasCode('SEALMESH_ERR_SEAL_UNWRAP_FAILED'));
  await backend.close();
  await assert.rejects(verifySealedFile(path, wrong), hasCode('SEALMESH_ERR_SEAL_UNWRAP_FAILED'));

  assert.ok(readFileSync(path).equals(before), 'the database file changed');
  assert.deepEqual(readdirSync(join(path, '..')).sort(), filesBefore);
  assert.equal(provider.unwrapCount, 0, 'the right provider was never asked');
  const report = await verifySealedFile(path, provider);
  assert.equal(report.records, 1);
});

test('database files hold no plaintext', async (t) => {
  const { store, path } = await openStore(t);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const spiffeId = 'spiffe://sealmesh.test/ns/prod/sa/payments-api';
  await store.put('services/payments-api', text(JSON.stringify({ name: 'payments-api', port: 8443 })));
  await store.put('services/checkout-frontend/instances/i-0042', text(JSON.stringify({ upstream: 'payments-api' })));
  await store.put(`svids/${spiffeId}`, text(spiffeId));
  await store.put('ca/keys/root-ca-private', text(pem));
  await store.put('acl/tokens/token-id-5c1f0d9e', text('token-secret-0f3b9a7d'));
  await store.txn({ compare: [], success: [{ type: 'put', key: 'intentions/checkout-frontend/payments-api', value: text('allow') }] });
  await store.delete('services/checkout-frontend/instances/i-0042');

  const pemBody = pem.split('\n')[1] as string;
  const needles = [
    'payments-api',
    'checkout-frontend',
    'i-0042',
    'sealmesh.test',
    'spiffe://',
    'root-ca-private',
    'BEGIN PRIVATE KEY',
    pemBody.slice(0, 32),
    'token-id-5c1f0d9e',
    'token-secret-0f3b9a7d',
    'intentions',
    'services',
  ];
  const scan = (when: string): void => {
    const files = [path, `${path}-wal`, `${path}-shm`].filter((file) => existsSync(file));
    assert.ok(files.length >= 1);
    for (const file of files) {
      const bytes = readFileSync(file);
      for (const needle of needles) {
        assert.equal(bytes.indexOf(Buffer.from(needle, 'utf8')), -1, `${when}: ${file} contains ${JSON.stringify(needle)}`);
      }
    }
  };
  assert.ok(existsSync(`${path}-wal`), 'the WAL holds the writes while the store is open');
  scan('while open');
  await store.close();
  scan('after close');
});

test('data key rotation survives a restart', async (t) => {
  const { store, path, provider } = await openStore(t);
  for (let i = 0; i < 30; i += 1) await store.put(`svc/${i}`, text(`value-${i}`));
  await store.delete('svc/29');
  assert.equal(await store.rotateDataKey(), 2);
  await store.put('svc/new', text('under key 2'));
  assert.equal(await store.reencryptBatch(10), 19);
  await store.close();

  const middle = await verifySealedFile(path, provider);
  assert.equal(middle.dataKeys, 2);
  assert.equal(middle.recordsUnderOldKeys, 19);

  const reopened = await openSealedFile(path, provider);
  t.after(() => reopened.close());
  const before = await reopened.revision();
  assert.equal(await reopened.reencryptBatch(0), 19);
  assert.equal(await reopened.reencryptBatch(100), 0);
  assert.equal(await reopened.revision(), before + 19 + 1, 'one write per record and one to drop the old key');
  const report = await reopened.verify();
  assert.equal(report.dataKeys, 1);
  assert.equal(report.recordsUnderOldKeys, 0);
  assert.equal(report.records, 30);
  for (let i = 0; i < 29; i += 1) assert.equal(decode((await reopened.get(`svc/${i}`))?.value ?? new Uint8Array()), `value-${i}`);
  assert.equal(await reopened.get('svc/29'), undefined);

  // History from before the rotation may hold envelopes under the dropped key.
  assert.throws(() => reopened.watch('', 0, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));
  const events: WatchEvent[] = [];
  reopened.watch('svc/', before, (event) => events.push(event));
  await settle();
  assert.equal(events.length, 19);
  assert.ok(events.every((event) => decode(event.value).startsWith('value-')));
  assert.equal(await reopened.reencryptBatch(5), 0);
});

test('keyring rewrap under another provider', async (t) => {
  const { store, path, provider } = await openStore(t);
  await store.put('svc/a', text('1'));
  const second = new TestSealProvider();
  await store.rewrapKeyring(second, { providerName: 'pkcs11', providerParams: { label: 'sealmesh-kek' } });
  await store.put('svc/b', text('2'));
  await store.close();

  await assert.rejects(openSealedFile(path, provider), hasCode('SEALMESH_ERR_SEAL_UNWRAP_FAILED'));
  assert.deepEqual(await readSealedFileMeta(path), { storeId: store.storeId, providerName: 'pkcs11', providerParams: { label: 'sealmesh-kek' } });
  const reopened = await openSealedFile(path, second);
  t.after(() => reopened.close());
  assert.equal(decode((await reopened.get('svc/a'))?.value ?? new Uint8Array()), '1');
  assert.equal(decode((await reopened.get('svc/b'))?.value ?? new Uint8Array()), '2');
  // The rewrap wrote meta and keyring in one chained write.
  assert.equal((await reopened.verify()).chainEntries, 4);
});

test('epoch rises and the counter follows', async (t) => {
  const counter = new TestCounter(5n);
  const { store, path, provider } = await openStore(t, { counter, epochWrites: 3, epochMs: 60_000 });
  assert.equal((await store.verify()).epoch, 5, 'a new store starts at the counter value');
  for (let i = 0; i < 7; i += 1) await store.put(`k/${i}`, text(String(i)));
  await store.close();
  // The first write after open raises the epoch, then every third write does.
  assert.deepEqual(counter.advances, [6n, 7n, 8n]);
  assert.equal(await counter.read(), 8n);

  const reopened = await openSealedFile(path, provider, { counter, epochWrites: 1000, epochMs: 60_000 });
  t.after(() => reopened.close());
  await reopened.put('k/7', text('7'));
  await reopened.put('k/8', text('8'));
  assert.equal((await reopened.verify()).epoch, 9);
  assert.equal(await reopened.rebaseEpoch(), 10);
  assert.equal(await counter.read(), 10n);
  await assert.rejects((async () => {
    const bare = await openSealedFile(path, provider, { acceptRollback: true });
    await bare.close();
  })(), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
});

test('epoch rises after epochMs', async (t) => {
  const counter = new TestCounter();
  const { store } = await openStore(t, { counter, epochWrites: 1000, epochMs: 200 });
  await store.put('k', text('1'));
  await store.put('k', text('2'));
  assert.equal((await store.verify()).epoch, 1, 'only the first write after open raises the epoch');
  await new Promise((resolve) => setTimeout(resolve, 250));
  await store.put('k', text('3'));
  await store.put('k', text('4'));
  assert.equal((await store.verify()).epoch, 2);
  await store.close();
  assert.equal(await counter.read(), 2n);
});

test('counter advance after a crash on open', async (t) => {
  const { store, path, provider } = await openStore(t, { counter: new TestCounter(), epochWrites: 1 });
  await store.put('k', text('1'));
  await store.put('k', text('2'));
  await store.close();

  // A fresh counter at 0 stands for a crash before the background advance ran.
  const behind = new TestCounter();
  const reopened = await openSealedFile(path, provider, { counter: behind });
  t.after(() => reopened.close());
  assert.equal(await behind.read(), 2n);
});

test('failed counter advance is reported', async (t) => {
  const counter = new TestCounter();
  const errors: unknown[] = [];
  const { store } = await openStore(t, { counter, epochWrites: 1, onCounterError: (error) => errors.push(error) });
  await counter.advanceTo(100n);
  await store.put('k', text('1'));
  await store.put('k', text('2'));
  await store.close();
  assert.equal(errors.length, 2);
  assert.ok(isSealmeshError(errors[0], 'SEALMESH_ERR_SEAL_COUNTER_REGRESSION'));
});

test('second writer causes a conflict', async (t) => {
  const { store, path, provider } = await openStore(t);
  await store.put('k', text('1'));
  const other = await openSealedFile(path, provider);
  await other.put('k', text('from the other writer'));
  await other.close();

  await assert.rejects(store.put('k', text('2')), hasCode('SEALMESH_ERR_CONFLICT'));
  await assert.rejects(store.get('k'), hasCode('SEALMESH_ERR_CONFLICT'), 'the store stays failed');
});

test('plain backend write causes a conflict', async (t) => {
  const { store, path } = await openStore(t);
  await store.put('k', text('1'));
  const plain = SqliteStore.open(path);
  const foreignRevision = await plain.put('x/foreign', text('written around the sealed store'));
  await plain.close();

  await assert.rejects(store.put('k', text('2')), hasCode('SEALMESH_ERR_CONFLICT'));
  await assert.rejects(store.get('k'), hasCode('SEALMESH_ERR_CONFLICT'), 'the store stays failed');
  // Closing commits the backend's open batch, so the file shows whatever the rejected write left.
  await store.close();
  const db = new DatabaseSync(path);
  t.after(() => db.close());
  const newest = db.prepare('SELECT max(mod_revision) AS revision FROM kv').get();
  assert.equal(newest?.revision, foreignRevision, 'the rejected sealed write left no row');
  const revision = db.prepare("SELECT value FROM meta WHERE name = 'revision'").get();
  assert.equal(revision?.value, foreignRevision, 'the rejected sealed write took no revision');
});

test('record altered while open fails reads', async (t) => {
  const { store, path } = await openStore(t);
  await store.put('svc/a', text('1'));
  await store.put('svc/b', text('2'));
  await store.put('svc/c', text('3'));

  const db = new DatabaseSync(path);
  const rows = db.prepare("SELECT key, value FROM kv WHERE key LIKE 'd/%'").all();
  const value = Buffer.from(rows[0]?.value as Uint8Array);
  value[value.length - 1] = (value[value.length - 1] as number) ^ 1;
  db.prepare('UPDATE kv SET value = ? WHERE key = ?').run(value, rows[0]?.key as string);
  db.prepare('DELETE FROM kv WHERE key = ?').run(rows[1]?.key as string);
  db.close();

  await assert.rejects(store.list('svc/'), hasCode('SEALMESH_ERR_INTEGRITY_RECORD_MISSING'));
  const results = await Promise.allSettled(['svc/a', 'svc/b', 'svc/c'].map((key) => store.get(key)));
  const codes = results.map((result) => (result.status === 'rejected' ? (result.reason as SealmeshError).code : 'ok')).sort();
  assert.deepEqual(codes, ['SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', 'SEALMESH_ERR_INTEGRITY_RECORD_MISSING', 'ok']);
  await assert.rejects(store.verify(), (error) => isSealmeshError(error) && error.code.startsWith('SEALMESH_ERR_INTEGRITY_'));
});

test('watch drops a tampered history event', async (t) => {
  const integrityErrors: SealmeshError[] = [];
  const { store, path } = await openStore(t, { onIntegrityError: (error) => integrityErrors.push(error) });
  await store.put('svc/a', text('1'));
  await store.put('svc/b', text('2'));
  await store.put('svc/c', text('3'));

  // Replace the logged value of revision 3 with the one of revision 2.
  const db = new DatabaseSync(path);
  const logged = db.prepare("SELECT value FROM log WHERE revision = 2 AND key LIKE 'd/%'").get();
  db.prepare("UPDATE log SET value = ? WHERE revision = 3 AND key LIKE 'd/%'").run(logged?.value as Uint8Array);
  db.close();

  const events: WatchEvent[] = [];
  store.watch('svc/', 0, (event) => events.push(event));
  await settle();
  assert.deepEqual(summarize(events), ['put svc/a=1@2', 'put svc/c=3@4']);
  assert.equal(integrityErrors.length, 1);
  assert.equal(integrityErrors[0]?.code, 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED');
  assert.match(integrityErrors[0]?.message ?? '', /revision 3/);
});

test('server store handlers count a tampered event', async (t) => {
  const metrics = new ServerMetrics();
  const { store, path } = await openStore(t, storeHandlers(silentLogger(), metrics));
  await store.put('svc/a', text('1'));
  await store.put('svc/b', text('2'));

  const db = new DatabaseSync(path);
  const logged = db.prepare("SELECT value FROM log WHERE revision = 2 AND key LIKE 'd/%'").get();
  db.prepare("UPDATE log SET value = ? WHERE revision = 3 AND key LIKE 'd/%'").run(logged?.value as Uint8Array);
  db.close();

  store.watch('svc/', 0, () => undefined);
  await settle();
  const rejections = await metrics.rejections.get();
  assert.equal(rejections.values.find((value) => value.labels.code === 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED')?.value, 1);
});
