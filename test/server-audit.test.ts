import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import type { AuditEntry } from '../src/audit/index.ts';
import { ControlPlane } from '../src/server/index.ts';
import { restoreSnapshot } from '../src/server/offline.ts';
import { SqliteStore } from '../src/store/index.ts';
import { runCli, type CliResult } from './helpers/cli.ts';
import { startServer, tempDir, testLogger, type TestServer } from './helpers/mesh.ts';

const CLI_TIMEOUT_MS = 30_000;

function describeResult(result: CliResult): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** Flags that point a CLI command at a test server with its operator token. */
function connection(mesh: TestServer): string[] {
  return ['--addr', mesh.url, '--ca-file', join(mesh.dir, 'trust-bundle.pem'), '--token', mesh.operatorToken];
}

describe('audit log of a running server', () => {
  let mesh: TestServer;
  let callerAccessorId = '';
  let created: { token: string; accessorId: string };
  let entries: AuditEntry[] = [];

  before(async () => {
    mesh = await startServer();
    const tokens = await mesh.operator.get<{ tokens: Array<{ accessorId: string; description?: string }> }>('/v1/acl/tokens');
    callerAccessorId = tokens.tokens.find((record) => record.description === 'first operator token')?.accessorId ?? '';
    created = await mesh.operator.post<{ token: string; accessorId: string }>('/v1/acl/tokens', { kind: 'join', service: 'web' });
    await mesh.operator.delete(`/v1/acl/tokens/${created.accessorId}`);
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    await mesh.operator.delete(`/v1/intentions?${new URLSearchParams({ source: 'web', destination: 'api' }).toString()}`);
    await mesh.operator.post('/v1/operator/rotate-data-key', {});
    await mesh.operator.post('/v1/operator/rotate-kek', { keyFile: join(dirname(mesh.dir), 'rotated.seal-key') });
    ({ entries } = await mesh.operator.get<{ entries: AuditEntry[] }>('/v1/audit'));
  });

  after(async () => {
    await mesh?.stop();
  });

  test('records each operator action in order', () => {
    assert.deepEqual(
      entries.map((entry) => entry.action),
      ['operator.init', 'token.create', 'token.revoke', 'intention.create', 'intention.delete', 'seal.rotate-data-key', 'seal.rotate-kek'],
    );
  });

  test('names actors by accessor id', () => {
    assert.notEqual(callerAccessorId, '');
    assert.equal(entries[0]?.subject, callerAccessorId);
    for (const entry of entries.slice(1)) {
      assert.deepEqual(entry.actor, { kind: 'token', accessorId: callerAccessorId }, `actor of ${entry.action}`);
    }
    assert.equal(entries[1]?.subject, created.accessorId);
    assert.equal(entries[2]?.subject, created.accessorId);
    assert.equal(entries[3]?.subject, 'web -> api');
  });

  test('contains no token secret', () => {
    const text = JSON.stringify(entries);
    assert.equal(text.includes(mesh.operatorToken), false, 'the operator token appears in the audit log');
    assert.equal(text.includes(created.token), false, 'the created token appears in the audit log');
    assert.doesNotMatch(text, /smt_/);
  });

  test('since filters older entries', async () => {
    const since = entries[3]?.at ?? '';
    const { entries: recent } = await mesh.operator.get<{ entries: AuditEntry[] }>(`/v1/audit?${new URLSearchParams({ since }).toString()}`);
    assert.ok(recent.every((entry) => Date.parse(entry.at) >= Date.parse(since)));
    assert.ok(recent.some((entry) => entry.action === 'seal.rotate-data-key'));
  });

  test('needs an operator token', async () => {
    const read = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read' });
    await assert.rejects(mesh.anonymous.with({ token: read.token }).get('/v1/audit'), { code: 'SEALMESH_ERR_ACL_PERMISSION_DENIED' });
    await assert.rejects(mesh.anonymous.get('/v1/audit'), { code: 'SEALMESH_ERR_ACL_TOKEN_MISSING' });
  });

  test('audit list prints entries', async () => {
    // A rejection entry, whose code the text output shows in its own column.
    await assert.rejects(mesh.operator.post('/v1/manifest', { manifest: { version: 1 }, signatures: [] }));
    const result = await runCli(['audit', 'list', ...connection(mesh), '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeResult(result));
    const listed = JSON.parse(result.stdout) as { entries: AuditEntry[] };
    assert.ok(listed.entries.length >= entries.length);
    const text = await runCli(['audit', 'list', ...connection(mesh)], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(text.code, 0, describeResult(text));
    assert.match(text.stdout, /token\.revoke/);
    assert.match(text.stdout, /SUBJECT +CODE/);
    assert.match(text.stdout, /manifest\.reject .* SEALMESH_ERR_MANIFEST_[A-Z_]+/);
  });

  test('audit list rejects a bad time', async () => {
    const result = await runCli(['audit', 'list', ...connection(mesh), '--since', 'yesterday'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
  });

  test('audit verify passes', async () => {
    const result = await runCli(['audit', 'verify', ...connection(mesh), '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeResult(result));
    const verification = JSON.parse(result.stdout) as { ok: boolean; count: number };
    assert.equal(verification.ok, true);
    assert.ok(verification.count >= entries.length);
  });
});

/** Sends one JSON request to a Shamir-sealed server's control socket and returns the parsed body. */
function socketPost<T>(socketPath: string, path: string, body: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'POST', path, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode === 200) resolve(JSON.parse(text) as T);
        else reject(new Error(`POST ${path} returned ${res.statusCode}: ${text}`));
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('audit entries of a Shamir-sealed server', () => {
  const dir = tempDir('sealmesh-audit-shamir-');
  const dataDir = join(dir.path, 'data');
  const unsealSocket = join(dir.path, 'unseal.sock');

  after(() => dir.remove());

  test('records init and each unseal', async () => {
    const options = { dataDir, host: '127.0.0.1', port: 0, unsealSocket, seal: { provider: 'shamir' as const }, log: testLogger('server') };
    const first = new ControlPlane(options);
    await first.start();
    const init = await socketPost<{ shares: string[]; accessorId: string }>(unsealSocket, '/v1/operator/init', { keyShares: 3, keyThreshold: 2 });
    await first.stop();

    const second = new ControlPlane(options);
    await second.start();
    try {
      await socketPost(unsealSocket, '/v1/operator/unseal', { share: init.shares[0] });
      await socketPost(unsealSocket, '/v1/operator/unseal', { share: init.shares[2] });
      await second.whenOpen();
      const entries = await second.audit.list();
      assert.deepEqual(
        entries.map((entry) => entry.action),
        ['operator.init', 'seal.unseal'],
      );
      assert.equal(entries[0]?.subject, init.accessorId);
      assert.deepEqual(entries[1]?.actor, { kind: 'system', accessorId: 'unseal-socket' });
      const text = JSON.stringify(entries);
      for (const share of init.shares) assert.equal(text.includes(share), false, 'a key share appears in the audit log');
    } finally {
      await second.stop();
    }
  });
});

describe('audit verify on a tampered log', () => {
  const dir = tempDir('sealmesh-audit-test-');
  let mesh: TestServer;
  let store: SqliteStore;

  before(async () => {
    // A plain store without a seal, so that the test can rewrite an entry the way a disk
    // attacker would; the sealed store would reject the rewrite before the audit log reads it.
    store = SqliteStore.open(join(dir.path, 'plain.db'));
    mesh = await startServer({ dataDir: join(dir.path, 'data'), store });
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'db', action: 'deny' });
    const record = await store.get('audit/000000000002');
    assert.ok(record !== undefined);
    const entry = JSON.parse(new TextDecoder().decode(record.value)) as AuditEntry;
    await store.put('audit/000000000002', new TextEncoder().encode(JSON.stringify({ ...entry, subject: 'web -> elsewhere' })));
  });

  after(async () => {
    await mesh?.stop();
    dir.remove();
  });

  test('names the altered entry and exits 1', async () => {
    const result = await runCli(['audit', 'verify', ...connection(mesh)], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /audit entry 2 /);
    assert.match(result.stderr, /SEALMESH_ERR_AUDIT_ENTRY_ALTERED/);
  });
});

describe('audit entry of a snapshot restore', () => {
  const dir = tempDir('sealmesh-audit-restore-');
  const dataDir = join(dir.path, 'data');
  const snapshotFile = join(dir.path, 'snapshot.db');

  after(() => dir.remove());

  test('is written into the restored store', async () => {
    const first = await startServer({ dataDir });
    await first.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    await first.server.seal.snapshotTo(snapshotFile);
    // A write after the snapshot, which the restore discards.
    await first.operator.post('/v1/intentions', { source: 'web', destination: 'db', action: 'allow' });
    await first.stop();
    const replaced = SqliteStore.open(join(dataDir, 'sealmesh.db'));
    const replacedRevision = await replaced.revision();
    await replaced.close();

    await restoreSnapshot({ file: snapshotFile, dataDir, seal: { provider: 'keyfile' } });

    const server = new ControlPlane({ dataDir, host: '127.0.0.1', port: 0, log: testLogger('server') });
    await server.start();
    try {
      const entries = await server.audit.list();
      assert.deepEqual(
        entries.map((entry) => entry.action),
        ['operator.init', 'intention.create', 'snapshot.restore'],
      );
      assert.equal(entries[2]?.subject, 'snapshot.db');
      const details = entries[2]?.details as { revision: number; replacedRevision: number };
      assert.equal(details.replacedRevision, replacedRevision, 'the entry names the revision of the store it replaced');
      assert.ok(details.revision < details.replacedRevision);
      assert.deepEqual(await server.audit.verify(), { ok: true, count: 3, headHash: entries[2]?.hash });
    } finally {
      await server.stop();
    }
  });
});
