import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { isSealmeshError } from '../src/errors/index.ts';
import { FileManifestSigner, generateOperatorKey, initManifest, signManifest } from '../src/manifest/index.ts';
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

test('genesis of another trust domain is rejected', async () => {
  const signer = FileManifestSigner.fromPem(generateOperatorKey('ed25519').privateKeyPem);
  const foreign = await signManifest(
    initManifest({ trustDomain: 'other.sealmesh', operatorKeys: [{ publicKeyPem: signer.publicKeyPem }], threshold: 1 }),
    signer,
  );
  await assert.rejects(mesh.operator.post('/v1/manifest', foreign), (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, 'SEALMESH_ERR_MANIFEST_INVALID', error.message);
    assert.match(error.message, /other\.sealmesh/);
    assert.ok(error.message.includes(mesh.server.trustDomain), 'the message names the cluster trust domain');
    return true;
  });

  const current = await mesh.operator.get<{ manifest: unknown; genesisDigest: unknown }>('/v1/manifest');
  assert.equal(current.manifest, null, 'no manifest is applied');
  assert.equal(current.genesisDigest, null, 'no genesis is pinned');
  const { entries } = await mesh.operator.get<{ entries: Array<{ action: string; details: { code?: string; digest?: string } | null }> }>('/v1/audit');
  const rejected = entries.filter((entry) => entry.action === 'manifest.reject').at(-1);
  assert.equal(rejected?.details?.code, 'SEALMESH_ERR_MANIFEST_INVALID');
});
