import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import {
  AUDIT_HEAD_KEY,
  AuditLog,
  auditEntryHash,
  auditEntryKey,
  type AuditEntry,
  type AuditEvent,
  type AuditVerification,
} from '../src/audit/index.ts';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { SqliteStore } from '../src/store/index.ts';

function hasCode(code: ErrorCode, pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

interface Fixture {
  path: string;
  store: SqliteStore;
}

function openStore(t: TestContext): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-audit-'));
  const path = join(dir, 'store.db');
  const store = SqliteStore.open(path);
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, store };
}

/** Returns a clock that starts at 2030-01-01T00:00:00Z and advances one minute per reading. */
function steppingClock(): () => Date {
  let minutes = 0;
  return () => new Date(Date.UTC(2030, 0, 1, 0, minutes++));
}

const operator = { kind: 'token', accessorId: '1b4e28ba-2fa1-11d2-883f-0016d3cca427' } as const;

function event(index: number): AuditEvent {
  return { action: 'intention.create', actor: operator, subject: `web-${index} -> api`, details: { action: 'allow', index } };
}

async function appendMany(log: AuditLog, count: number): Promise<AuditEntry[]> {
  const entries: AuditEntry[] = [];
  for (let index = 1; index <= count; index++) {
    entries.push(await log.append(event(index)));
  }
  return entries;
}

/** Runs one statement on the store file through a second SQLite connection, as an attacker with file access could. */
function editBackend(path: string, sql: string, ...parameters: Array<string | Uint8Array>): void {
  const db = new DatabaseSync(path);
  try {
    db.prepare(sql).run(...parameters);
  } finally {
    db.close();
  }
}

function assertFailure(result: AuditVerification, code: ErrorCode, seq: number): void {
  assert.equal(result.ok, false, 'verification fails');
  if (result.ok) return;
  assert.equal(result.code, code, result.message);
  assert.equal(result.seq, seq, result.message);
}

test('append chains entries by hash', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store, { clock: steppingClock() });

  const entries = await appendMany(log, 3);

  assert.deepEqual(entries.map((entry) => entry.seq), [1, 2, 3]);
  assert.equal(entries[0]?.prev, '0'.repeat(64));
  assert.equal(entries[1]?.prev, entries[0]?.hash);
  assert.equal(entries[2]?.prev, entries[1]?.hash);
  for (const entry of entries) {
    const { hash, ...body } = entry;
    assert.equal(hash, auditEntryHash(body));
  }
  assert.deepEqual(await log.head(), { seq: 3, hash: entries[2]?.hash });
  assert.ok((await store.get(auditEntryKey(2))) !== undefined);
  assert.equal(auditEntryKey(2), 'audit/000000000002');
});

test('append records actor, subject and details', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store, { clock: steppingClock() });

  const withDetails = await log.append({ action: 'manifest.apply', actor: { kind: 'operator', accessorId: 'ops-1' }, subject: 'manifest v2', details: { digest: 'ab'.repeat(32), approvedBy: ['ops-1', 'ops-2'] } });
  const bare = await log.append({ action: 'ca.intermediate-renewed', actor: { kind: 'system', accessorId: 'server' } });

  assert.equal(withDetails.at, '2030-01-01T00:00:00.000Z');
  assert.deepEqual(withDetails.actor, { kind: 'operator', accessorId: 'ops-1' });
  assert.equal(withDetails.subject, 'manifest v2');
  assert.deepEqual(withDetails.details, { digest: 'ab'.repeat(32), approvedBy: ['ops-1', 'ops-2'] });
  assert.equal(bare.subject, null);
  assert.equal(bare.details, null);
  assert.deepEqual(await log.list(), [withDetails, bare]);
});

test('list filters by time and limit', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store, { clock: steppingClock() });
  await appendMany(log, 5);

  const all = await log.list();
  const since = await log.list({ since: new Date('2030-01-01T00:02:00Z') });
  const limited = await log.list({ since: new Date('2030-01-01T00:01:30Z'), limit: 2 });

  assert.equal(all.length, 5);
  assert.deepEqual(since.map((entry) => entry.seq), [3, 4, 5]);
  assert.deepEqual(limited.map((entry) => entry.seq), [3, 4]);
  assert.deepEqual(await log.list({ since: new Date('2031-01-01T00:00:00Z') }), []);
  await assert.rejects(log.list({ limit: 0 }), hasCode('SEALMESH_ERR_INVALID_ARGUMENT'));
});

test('verify accepts an intact log', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  assert.deepEqual(await log.verify(), { ok: true, count: 0, headHash: null });

  const entries = await appendMany(log, 4);

  assert.deepEqual(await log.verify(), { ok: true, count: 4, headHash: entries[3]?.hash });
});

test('concurrent appends keep one chain', async (t) => {
  const { store } = openStore(t);
  // Two logs on one store have separate queues, so their appends race on the head.
  const first = new AuditLog(store);
  const second = new AuditLog(store);

  const entries = await Promise.all(Array.from({ length: 20 }, (_, index) => (index % 2 === 0 ? first : second).append(event(index))));

  assert.deepEqual(
    entries.map((entry) => entry.seq).sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, index) => index + 1),
  );
  assert.deepEqual(await first.verify(), { ok: true, count: 20, headHash: (await first.head())?.hash });
});

test('removed entry detected', async (t) => {
  const { path, store } = openStore(t);
  const log = new AuditLog(store);
  await appendMany(log, 5);

  editBackend(path, 'DELETE FROM kv WHERE key = ?', auditEntryKey(3));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_MISSING', 3);
});

test('removed last entry detected', async (t) => {
  const { path, store } = openStore(t);
  const log = new AuditLog(store);
  await appendMany(log, 5);

  editBackend(path, 'DELETE FROM kv WHERE key = ?', auditEntryKey(5));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_MISSING', 5);
});

test('removed entry with later entries moved down detected', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  await appendMany(log, 4);

  // Entry 2 is dropped and entries 3 and 4 take the keys of 2 and 3.
  const third = await store.get(auditEntryKey(3));
  const fourth = await store.get(auditEntryKey(4));
  await store.put(auditEntryKey(2), third!.value);
  await store.put(auditEntryKey(3), fourth!.value);
  await store.delete(auditEntryKey(4));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_MISSING', 2);
});

test('altered entry detected', async (t) => {
  const { path, store } = openStore(t);
  const log = new AuditLog(store);
  const entries = await appendMany(log, 4);

  const altered = { ...entries[1]!, details: { action: 'deny', index: 2 } };
  editBackend(path, 'UPDATE kv SET value = ? WHERE key = ?', new TextEncoder().encode(JSON.stringify(altered)), auditEntryKey(2));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_ALTERED', 2);
});

test('altered and rehashed entry detected', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  const entries = await appendMany(log, 4);

  const { hash: _hash, ...body } = { ...entries[1]!, subject: 'nothing happened' };
  await store.put(auditEntryKey(2), new TextEncoder().encode(JSON.stringify({ ...body, hash: auditEntryHash(body) })));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_ALTERED', 2);
});

test('malformed entry detected', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  await appendMany(log, 2);

  await store.put(auditEntryKey(1), new TextEncoder().encode('{"seq": 1'));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_ALTERED', 1);
  await assert.rejects(log.list(), hasCode('SEALMESH_ERR_AUDIT_ENTRY_ALTERED'));
});

test('reordered entries detected', async (t) => {
  const { path, store } = openStore(t);
  const log = new AuditLog(store);
  await appendMany(log, 4);

  const second = await store.get(auditEntryKey(2));
  const third = await store.get(auditEntryKey(3));
  editBackend(path, 'UPDATE kv SET value = ? WHERE key = ?', third!.value, auditEntryKey(2));
  editBackend(path, 'UPDATE kv SET value = ? WHERE key = ?', second!.value, auditEntryKey(3));

  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_ENTRY_REORDERED', 2);
});

test('head mismatch detected', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  const entries = await appendMany(log, 3);

  await store.put(AUDIT_HEAD_KEY, new TextEncoder().encode(JSON.stringify({ seq: 2, hash: entries[1]!.hash })));
  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_HEAD_MISMATCH', 3);

  await store.put(AUDIT_HEAD_KEY, new TextEncoder().encode(JSON.stringify({ seq: 3, hash: 'ff'.repeat(32) })));
  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_HEAD_MISMATCH', 3);

  await store.delete(AUDIT_HEAD_KEY);
  assertFailure(await log.verify(), 'SEALMESH_ERR_AUDIT_HEAD_MISMATCH', 3);
});

test('append never overwrites an entry', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  const entries = await appendMany(log, 3);

  // A head rolled back to entry 1 would make the next append reuse seq 2.
  await store.put(AUDIT_HEAD_KEY, new TextEncoder().encode(JSON.stringify({ seq: 1, hash: entries[0]!.hash })));

  await assert.rejects(log.append(event(9)), hasCode('SEALMESH_ERR_AUDIT_HEAD_MISMATCH', /already exists/));
  assert.deepEqual((await log.list())[1], entries[1]);
});

test('append rejects invalid events', async (t) => {
  const { store } = openStore(t);
  const log = new AuditLog(store);
  const cases: Array<[string, AuditEvent, RegExp]> = [
    ['unknown action', { ...event(1), action: 'token.steal' as AuditEvent['action'] }, /action "token\.steal"/],
    ['unknown actor kind', { ...event(1), actor: { kind: 'root' as 'token', accessorId: 'x' } }, /actor kind/],
    ['empty accessor id', { ...event(1), actor: { kind: 'token', accessorId: '' } }, /accessorId/],
    ['secret detail', { ...event(1), details: { token: 'abc' } }, /"token" looks like a secret/],
    ['nested secret detail', { ...event(1), details: { seal: { Pass_Phrase: 'abc' } } }, /"seal\.Pass_Phrase" looks like a secret/],
    ['non-finite detail', { ...event(1), details: { ratio: Number.NaN } }, /JSON/],
    ['long subject', { ...event(1), subject: 'x'.repeat(1025) }, /subject/],
  ];
  for (const [name, invalid, pattern] of cases) {
    await assert.rejects(log.append(invalid), hasCode('SEALMESH_ERR_INVALID_ARGUMENT', pattern), name);
  }
  assert.deepEqual(await log.verify(), { ok: true, count: 0, headHash: null });
});
