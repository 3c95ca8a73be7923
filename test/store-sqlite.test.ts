import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { SqliteStore, type SqliteStoreOptions } from '../src/store/sqlite.ts';
import type { WatchEvent } from '../src/store/types.ts';

const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const decode = (value: Uint8Array): string => new TextDecoder().decode(value);

/** Resolves after every queued microtask, including watch deliveries, has run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: TestContext, options: SqliteStoreOptions = {}): SqliteStore {
  const store = SqliteStore.open(join(tempDir(t), 'store.db'), options);
  t.after(() => store.close());
  return store;
}

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  };
}

/** Formats events as `type key=value@revision` strings for readable comparisons. */
function summarize(events: WatchEvent[]): string[] {
  return events.map((event) => `${event.type} ${event.key}=${decode(event.value)}@${event.revision}`);
}

test('put, get and list by prefix in key order', async (t) => {
  const store = openStore(t);
  for (const key of ['b', 'a/2', 'a/10', 'a/1', 'a0', 'a/\u{10ffff}', 'a/\ufffd', 'a/\u{10000}', 'a']) {
    await store.put(key, text(`v-${key}`));
  }

  const record = await store.get('a/1');
  assert.equal(decode(record?.value ?? new Uint8Array()), 'v-a/1');
  assert.equal(await store.get('missing'), undefined);

  const listed = (await store.list('a/')).map((entry) => entry.key);
  assert.deepEqual(listed, ['a/1', 'a/10', 'a/2', 'a/\ufffd', 'a/\u{10000}', 'a/\u{10ffff}']);
  assert.equal((await store.list('')).length, 9);
  assert.deepEqual((await store.list('a/\u{10ffff}')).map((entry) => entry.key), ['a/\u{10ffff}']);
  assert.deepEqual(await store.list('z'), []);
});

test('byte views and empty values', async (t) => {
  const store = openStore(t);
  await store.put('empty', new Uint8Array(0));
  const record = await store.get('empty');
  assert.ok(record);
  assert.equal(record.value.byteLength, 0);

  await store.put('view', Buffer.from('0123456789').subarray(3, 5));
  assert.equal(decode((await store.get('view'))?.value ?? new Uint8Array()), '34');
});

test('watch events copy written values', async (t) => {
  const store = openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 0, (event) => events.push(event));
  const value = text('before');
  const written = store.put('k', value);
  value.set(text('after!'));
  await written;
  await settle();
  assert.deepEqual(summarize(events), ['put k=before@1']);
});

test('revision increments once per write', async (t) => {
  const store = openStore(t);
  assert.equal(await store.revision(), 0);
  assert.equal(await store.put('k', text('1')), 1);
  assert.equal(await store.put('k', text('2')), 2);
  assert.equal(await store.delete('k'), true);
  assert.equal(await store.revision(), 3);
  assert.equal(await store.delete('k'), false);
  assert.equal(await store.revision(), 3);
});

test('record revisions and version', async (t) => {
  const store = openStore(t);
  await store.put('other', text('x'));
  await store.put('k', text('1'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('1'), createRevision: 2, modRevision: 2, version: 1 });

  await store.put('k', text('2'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('2'), createRevision: 2, modRevision: 3, version: 2 });

  await store.delete('k');
  assert.equal(await store.get('k'), undefined);
  await store.put('k', text('3'));
  assert.deepEqual(await store.get('k'), { key: 'k', value: text('3'), createRevision: 5, modRevision: 5, version: 1 });
});

test('txn compare on modRevision', async (t) => {
  const store = openStore(t);

  const created = await store.txn({
    compare: [{ key: 'k', modRevision: 0 }],
    success: [{ type: 'put', key: 'k', value: text('first') }],
    failure: [{ type: 'put', key: 'conflict', value: text('x') }],
  });
  assert.deepEqual(created, { succeeded: true, revision: 1 });

  const again = await store.txn({
    compare: [{ key: 'k', modRevision: 0 }],
    success: [{ type: 'put', key: 'k', value: text('second') }],
    failure: [{ type: 'put', key: 'conflict', value: text('x') }],
  });
  assert.deepEqual(again, { succeeded: false, revision: 2 });
  assert.equal(decode((await store.get('k'))?.value ?? new Uint8Array()), 'first');
  assert.ok(await store.get('conflict'));

  const swapped = await store.txn({
    compare: [{ key: 'k', modRevision: 1 }],
    success: [{ type: 'put', key: 'k', value: text('third') }],
  });
  assert.deepEqual(swapped, { succeeded: true, revision: 3 });

  const stale = await store.txn({
    compare: [{ key: 'k', modRevision: 1 }],
    success: [{ type: 'put', key: 'k', value: text('lost') }],
  });
  assert.deepEqual(stale, { succeeded: false, revision: 3 });
  assert.equal(decode((await store.get('k'))?.value ?? new Uint8Array()), 'third');
});

test('txn compare on value', async (t) => {
  const store = openStore(t);
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
  assert.deepEqual(missing, { succeeded: false, revision: 2 });

  const match = await store.txn({
    compare: [{ key: 'k', value: text('old') }, { key: 'seen', modRevision: 2 }],
    success: [{ type: 'delete', key: 'k' }],
  });
  assert.deepEqual(match, { succeeded: true, revision: 3 });
  assert.equal(await store.get('k'), undefined);
});

test('txn uses one revision for all events', async (t) => {
  const store = openStore(t);
  await store.put('c', text('old'));
  const events: WatchEvent[] = [];
  store.watch('', 1, (event) => events.push(event));

  const result = await store.txn({
    compare: [],
    success: [
      { type: 'put', key: 'a', value: text('1') },
      { type: 'put', key: 'b', value: text('2') },
      { type: 'delete', key: 'c' },
      { type: 'delete', key: 'never-existed' },
    ],
  });
  assert.deepEqual(result, { succeeded: true, revision: 2 });
  assert.equal(await store.revision(), 2);
  assert.equal((await store.get('a'))?.modRevision, 2);
  assert.equal((await store.get('b'))?.modRevision, 2);

  await settle();
  assert.deepEqual(summarize(events), ['put a=1@2', 'put b=2@2', 'delete c=@2']);

  const noop = await store.txn({ compare: [], success: [{ type: 'delete', key: 'never-existed' }] });
  assert.deepEqual(noop, { succeeded: true, revision: 2 });
});

test('watch delivers history then live events', async (t) => {
  const store = openStore(t);
  await store.put('svc/a', text('1'));
  await store.put('other/x', text('skip'));
  await store.put('svc/b', text('2'));
  await store.delete('svc/a');

  const events: WatchEvent[] = [];
  const watcher = store.watch('svc/', 1, (event) => events.push(event));
  assert.deepEqual(events, [], 'history must not be delivered inside watch()');

  // This write lands before replay runs, so it must come after the history, once.
  await store.put('svc/c', text('3'));
  await settle();
  await store.put('other/y', text('skip'));
  await store.put('svc/b', text('4'));
  await settle();
  assert.deepEqual(summarize(events), ['put svc/b=2@3', 'delete svc/a=@4', 'put svc/c=3@5', 'put svc/b=4@7']);

  watcher.close();
  watcher.close();
  await store.put('svc/d', text('5'));
  await settle();
  assert.equal(events.length, 4);
});

test('watch from a future revision', async (t) => {
  const store = openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 2, (event) => events.push(event));
  await store.put('a', text('1'));
  await store.put('a', text('2'));
  await store.put('a', text('3'));
  await settle();
  assert.deepEqual(summarize(events), ['put a=3@3']);
});

test('watch replays long history without gaps', async (t) => {
  const store = openStore(t, { historyRevisions: 5 });
  for (let i = 1; i <= 40; i += 1) await store.put(`k/${i}`, text(String(i)));

  const events: WatchEvent[] = [];
  store.watch('k/', 35, (event) => events.push(event));
  // Writes before replay runs would compact revisions 36 to 45 unless the replaying watcher keeps them.
  const pending: Promise<number>[] = [];
  for (let i = 41; i <= 50; i += 1) pending.push(store.put(`k/${i}`, text(String(i))));
  await Promise.all(pending);
  await settle();
  assert.deepEqual(events.map((event) => event.revision), Array.from({ length: 15 }, (_, i) => 36 + i));

  await store.put('k/51', text('51'));
  assert.throws(() => store.watch('k/', 40, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));
});

test('watch replays more than one page', async (t) => {
  const store = openStore(t);
  for (let i = 1; i <= 100; i += 1) await store.put(`k/${String(i).padStart(3, '0')}`, text(String(i)));
  // One txn whose 40 events span a page boundary inside revision 101.
  const success = Array.from({ length: 40 }, (_, i) => ({ type: 'put' as const, key: `k/txn/${i}`, value: text(String(i)) }));
  await store.txn({ compare: [], success });

  const events: WatchEvent[] = [];
  store.watch('k/', 0, (event) => events.push(event));
  await settle();
  const expected = [...Array.from({ length: 100 }, (_, i) => i + 1), ...Array<number>(40).fill(101)];
  assert.deepEqual(events.map((event) => event.revision), expected);
  assert.deepEqual(events.slice(100).map((event) => event.key), success.map((operation) => operation.key));
});

test('watch after compaction throws', async (t) => {
  const store = openStore(t, { historyRevisions: 3 });
  for (let i = 1; i <= 10; i += 1) await store.put('k', text(String(i)));

  assert.throws(() => store.watch('', 0, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));
  assert.throws(() => store.watch('', 6, () => {}), hasCode('SEALMESH_ERR_STORE_COMPACTED'));

  const events: WatchEvent[] = [];
  store.watch('', 7, (event) => events.push(event));
  await settle();
  assert.deepEqual(events.map((event) => event.revision), [8, 9, 10]);
});

test('throwing watch callback spares others', async (t) => {
  const errors: unknown[] = [];
  const store = openStore(t, { onWatchError: (error) => errors.push(error) });
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
  assert.deepEqual(healthy, [1, 2]);
  assert.deepEqual(faulty, [1, 2]);
  assert.equal(errors.length, 2);
  assert.equal(await store.revision(), 2);
});

test('watch callback that writes keeps order', async (t) => {
  const store = openStore(t);
  const seen: string[] = [];
  store.watch('', 0, (event) => {
    seen.push(`${event.key}@${event.revision}`);
    if (event.key === 'a') void store.put('b', text('from callback'));
  });
  await store.put('a', text('1'));
  await store.put('c', text('3'));
  await settle();
  assert.deepEqual(seen, ['a@1', 'b@2', 'c@3']);
});

test('unlogged prefixes advance the revision without watch history', async (t) => {
  const store = openStore(t, { unloggedPrefixes: ['m/'] });
  const live: WatchEvent[] = [];
  const watcher = store.watch('', 0, (event) => live.push(event));
  t.after(() => watcher.close());
  await store.put('d/a', text('1'));
  const txn = await store.txn({ compare: [], success: [{ type: 'put', key: 'd/b', value: text('2') }, { type: 'put', key: 'm/chain/2', value: text('entry') }] });
  assert.equal(txn.revision, 2);
  assert.equal(await store.put('m/only', text('bookkeeping')), 3);
  assert.equal(await store.delete('m/only'), true);
  assert.equal(await store.revision(), 4);
  assert.equal(decode((await store.get('m/chain/2'))?.value ?? new Uint8Array()), 'entry');
  await settle();
  assert.deepEqual(summarize(live), ['put d/a=1@1', 'put d/b=2@2']);

  const replayed: WatchEvent[] = [];
  const replay = store.watch('', 0, (event) => replayed.push(event));
  t.after(() => replay.close());
  await settle();
  await settle();
  assert.deepEqual(summarize(replayed), ['put d/a=1@1', 'put d/b=2@2']);
});

test('invalid keys are rejected', async (t) => {
  const store = openStore(t);
  const code = hasCode('SEALMESH_ERR_STORE_KEY_INVALID');
  await assert.rejects(store.put('', text('x')), code);
  await assert.rejects(store.put(42 as unknown as string, text('x')), code);
  await assert.rejects(store.put('€'.repeat(342), text('x')), code);
  await assert.rejects(store.put('bad\ud800', text('x')), code);
  await assert.rejects(store.put('nul\0key', text('x')), code);
  await assert.rejects(store.get(''), code);
  await assert.rejects(store.list('p'.repeat(1025)), code);
  assert.throws(() => store.watch('p'.repeat(1025), 0, () => {}), code);

  await store.put('k'.repeat(1024), text('longest key'));
  assert.equal((await store.get('k'.repeat(1024)))?.version, 1);
});

test('invalid values are rejected', async (t) => {
  const store = openStore(t);
  await assert.rejects(store.put('k', 'text' as unknown as Uint8Array), hasCode('SEALMESH_ERR_STORE_VALUE_INVALID'));
  await assert.rejects(store.put('k', new Uint8Array(4 * 1024 * 1024 + 1)), hasCode('SEALMESH_ERR_STORE_VALUE_TOO_LARGE'));
  await store.put('k', new Uint8Array(4 * 1024 * 1024));
  assert.equal((await store.get('k'))?.value.byteLength, 4 * 1024 * 1024);
  assert.equal(await store.revision(), 1);
});

test('invalid txn and watch arguments are rejected', async (t) => {
  const store = openStore(t);
  const txnInvalid = hasCode('SEALMESH_ERR_STORE_TXN_INVALID');
  await assert.rejects(
    store.txn({ compare: [], success: [{ type: 'put', key: 'k', value: text('1') }, { type: 'delete', key: 'k' }] }),
    txnInvalid,
  );
  await assert.rejects(
    store.txn({ compare: [{ key: 'k', modRevision: 0, value: text('1') } as never], success: [] }),
    txnInvalid,
  );
  await assert.rejects(store.txn({ compare: [], success: [{ type: 'rename', key: 'k' } as never] }), txnInvalid);
  await assert.rejects(store.txn({ compare: [{ key: 'k', modRevision: -1 }], success: [] }), txnInvalid);
  await assert.rejects(
    store.txn({ compare: [], success: [], failure: [{ type: 'put', key: 'k', value: new Uint8Array(4 * 1024 * 1024 + 1) }] }),
    hasCode('SEALMESH_ERR_STORE_VALUE_TOO_LARGE'),
  );
  assert.throws(() => store.watch('', -1, () => {}), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.throws(() => store.watch('', 1.5, () => {}), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.equal(await store.revision(), 0);
});

test('reopen keeps data and revision', async (t) => {
  const path = join(tempDir(t), 'store.db');
  const first = SqliteStore.open(path);
  await first.put('a', text('1'));
  await first.txn({ compare: [], success: [{ type: 'put', key: 'b', value: text('2') }] });
  await first.close();

  const second = SqliteStore.open(path);
  t.after(() => second.close());
  assert.equal(await second.revision(), 2);
  assert.deepEqual(await second.get('b'), { key: 'b', value: text('2'), createRevision: 2, modRevision: 2, version: 1 });
  assert.equal(await second.put('a', text('3')), 3);

  const events: WatchEvent[] = [];
  second.watch('', 0, (event) => events.push(event));
  await settle();
  assert.deepEqual(summarize(events), ['put a=1@1', 'put b=2@2', 'put a=3@3']);
});

test('use after close throws', async (t) => {
  const store = openStore(t);
  const events: WatchEvent[] = [];
  store.watch('', 0, (event) => events.push(event));
  // Closing in the same tick as the write drops its event, which is still queued.
  const written = store.put('k', text('1'));
  const closing = store.close();
  assert.equal(await written, 1);
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
  assert.throws(() => store.watch('', 0, () => {}), closed);
});

test('store files have owner-only modes', async (t) => {
  const dir = join(tempDir(t), 'nested', 'data');
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(() => store.close());
  await store.put('k', text('1'));
  assert.equal(statSync(join(dir, 'store.db')).mode & 0o777, 0o600);
  assert.equal(statSync(`${join(dir, 'store.db')}-wal`).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
});

test('open tightens a loose file mode', async (t) => {
  const path = join(tempDir(t), 'store.db');
  writeFileSync(path, '', { mode: 0o644 });
  const store = SqliteStore.open(path);
  t.after(() => store.close());
  assert.equal(statSync(path).mode & 0o777, 0o600);
});

test('open rejects files that are not stores', (t) => {
  const dir = tempDir(t);
  const garbage = join(dir, 'garbage.db');
  writeFileSync(garbage, 'this is not a SQLite database, only text that is long enough to fill a header.\n'.repeat(20));
  assert.throws(
    () => SqliteStore.open(garbage),
    (error: unknown) => hasCode('SEALMESH_ERR_STORE_OPEN_FAILED')(error) && (error as Error).message.includes(garbage),
  );

  const foreign = join(dir, 'foreign.db');
  const db = new DatabaseSync(foreign);
  db.exec('CREATE TABLE things (id INTEGER PRIMARY KEY)');
  db.close();
  assert.throws(() => SqliteStore.open(foreign), hasCode('SEALMESH_ERR_STORE_OPEN_FAILED'));

  assert.throws(() => SqliteStore.open(dir), hasCode('SEALMESH_ERR_STORE_OPEN_FAILED'));
  assert.throws(() => SqliteStore.open(join(dir, 'x.db'), { historyRevisions: 0 }), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
});

test('acknowledged writes survive SIGKILL', { timeout: 60_000 }, async (t) => {
  const path = join(tempDir(t), 'store.db');
  const moduleUrl = pathToFileURL(join(import.meta.dirname, '..', 'src', 'store', 'sqlite.ts')).href;
  const script = `
    import { SqliteStore } from ${JSON.stringify(moduleUrl)};
    const store = SqliteStore.open(${JSON.stringify(path)});
    const value = new Uint8Array(512).fill(7);
    for (let i = 0; i < 100000; i += 1) {
      await store.put('k/' + i, value);
      process.stdout.write('k/' + i + '\\n');
    }
  `;
  const child = spawn(process.execPath, ['--input-type=module', '--eval', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let errors = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (errors += chunk));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  const killTimer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    // Kill while the loop is still writing, after enough acknowledged puts to be a real check.
    if (output.split('\n').length > 200) child.kill('SIGKILL');
  });
  const signal = await exited;
  clearTimeout(killTimer);
  assert.equal(signal, 'SIGKILL', `child ended without being killed; stderr: ${errors}`);

  // Only complete lines count, because a line cut short was not fully acknowledged.
  const acknowledged = output.split('\n').slice(0, -1);
  assert.ok(acknowledged.length >= 200, `only ${acknowledged.length} puts acknowledged; stderr: ${errors}`);

  const store = SqliteStore.open(path);
  t.after(() => store.close());
  const missing = [];
  for (const key of acknowledged) {
    if ((await store.get(key)) === undefined) missing.push(key);
  }
  assert.deepEqual(missing, []);
  assert.ok((await store.revision()) >= acknowledged.length);
});

test('concurrent writes share one commit', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'store.db');
  const store = SqliteStore.open(path);
  t.after(() => store.close());
  const reader = new DatabaseSync(path, { readOnly: true });
  t.after(() => reader.close());
  const committedRevision = (): number => Number(reader.prepare("SELECT value FROM meta WHERE name = 'revision'").get()?.value);

  const writes = [store.put('a', text('1')), store.put('b', text('2')), store.txn({ compare: [{ key: 'a', modRevision: 1 }], success: [{ type: 'put', key: 'c', value: text('3') }] })];
  // Until the check phase commits the batch, another connection sees none of the three writes.
  assert.equal(committedRevision(), 0);
  const [first, second, third] = await Promise.all(writes);

  assert.equal(first, 1);
  assert.equal(second, 2);
  assert.deepEqual(third, { succeeded: true, revision: 3 });
  assert.equal(committedRevision(), 3);
});

test('read during open batch resolves after commit', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'store.db');
  const store = SqliteStore.open(path);
  t.after(() => store.close());
  const reader = new DatabaseSync(path, { readOnly: true });
  t.after(() => reader.close());

  const written = store.put('k', text('v'));
  const read = store.get('k');
  const record = await read;
  // The value was returned only once it was committed, so another connection sees it too.
  assert.equal(decode(record?.value ?? new Uint8Array()), 'v');
  assert.equal(decode(reader.prepare("SELECT value FROM kv WHERE key = 'k'").get()?.value as Uint8Array), 'v');
  assert.equal(await written, 1);
});

test('close commits the open batch', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'store.db');
  const store = SqliteStore.open(path);
  const written = store.put('k', text('v'));
  await store.close();
  assert.equal(await written, 1);

  const reopened = SqliteStore.open(path);
  t.after(() => reopened.close());
  assert.equal(decode((await reopened.get('k'))?.value ?? new Uint8Array()), 'v');
});

test('snapshot waits for pending writes', async (t) => {
  const store = openStore(t);
  const order: string[] = [];
  const written = store.put('catalog/a', text('1')).then(() => order.push('put'));
  const snapshot = join(tempDir(t), 'snapshot.db');
  await store.snapshotTo(snapshot).then(() => order.push('snapshot'));
  await written;
  assert.deepEqual(order, ['put', 'snapshot'], 'the write is durable before the snapshot is taken');

  const copy = SqliteStore.open(snapshot);
  t.after(() => copy.close());
  const record = await copy.get('catalog/a');
  assert.ok(record !== undefined, 'the snapshot holds the write');
  assert.equal(decode(record.value), '1');
});
