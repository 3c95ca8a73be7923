import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { isSealmeshError } from '../src/errors/index.ts';
import { startServer, type TestServer } from './helpers/mesh.ts';

let mesh: TestServer;

before(async () => {
  mesh = await startServer();
});

after(async () => {
  await mesh?.stop();
});

test('rejected manifest apply is audited', async () => {
  await assert.rejects(mesh.operator.post('/v1/manifest', { manifest: { version: 1 }, signatures: [] }), (error: unknown) => isSealmeshError(error));
  const { entries } = await mesh.operator.get<{ entries: Array<{ action: string; details: { code?: string; version?: number; digest?: string } | null; actor: { accessorId?: string } }> }>('/v1/audit');
  const rejected = entries.find((entry) => entry.action === 'manifest.reject');
  assert.ok(rejected !== undefined, 'a manifest.reject entry exists');
  assert.match(rejected.details?.code ?? '', /^SEALMESH_ERR_MANIFEST_/);
  assert.equal(rejected.details?.version, 1, 'the version the invalid body claims is recorded');
  assert.equal(rejected.details?.digest, undefined, 'an invalid manifest has no digest');
  assert.ok(!JSON.stringify(entries).includes(mesh.operatorToken), 'no token secret in the audit log');
});
