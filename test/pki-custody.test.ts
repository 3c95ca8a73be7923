import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, verify, type webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { SealedKeyCustody } from '../src/pki/index.ts';
import { nodeCrypto } from '../src/pki/x509.ts';
import { SqliteStore } from '../src/store/sqlite.ts';

function openStore(t: TestContext): SqliteStore {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-pki-custody-'));
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

const data = new TextEncoder().encode('signed by a CA key');

/** Verifies an r || s ECDSA P-256 SHA-256 signature against a DER SubjectPublicKeyInfo. */
function verifies(spki: Uint8Array, signature: Uint8Array): boolean {
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  return verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
}

test('custody generate stores PKCS#8 P-256 key', async (t) => {
  const store = openStore(t);
  const custody = new SealedKeyCustody(store);

  const key = await custody.generate('root-1');

  assert.equal(custody.name, 'sealed');
  assert.equal(key.label, 'root-1');
  const record = await store.get('ca/keys/root-1');
  assert.ok(record, 'key record exists under ca/keys/<label>');
  const stored = createPrivateKey({ key: Buffer.from(record.value), format: 'der', type: 'pkcs8' });
  assert.equal(stored.asymmetricKeyType, 'ec');
  assert.equal(stored.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

test('custody generate returns key that signs', async (t) => {
  const store = openStore(t);
  const custody = new SealedKeyCustody(store);

  const key = await custody.generate('root-1');

  assert.deepEqual(Object.keys(key).sort(), ['label', 'sign', 'spki'], 'no private key material is exposed');
  const signature = await key.sign(data);
  assert.equal(signature.length, 64);
  assert.equal(verifies(key.spki, signature), true);
  const record = await store.get('ca/keys/root-1');
  assert.ok(record);
  const storedPublic = createPublicKey(createPrivateKey({ key: Buffer.from(record.value), format: 'der', type: 'pkcs8' }));
  assert.ok(Buffer.from(storedPublic.export({ format: 'der', type: 'spki' })).equals(Buffer.from(key.spki)), 'SPKI matches the stored key');
});

test('custody destroy removes the stored key', async (t) => {
  const store = openStore(t);
  const custody = new SealedKeyCustody(store);
  await custody.generate('root-1');

  assert.equal(await custody.destroy('root-1'), true);

  assert.equal(await store.get('ca/keys/root-1'), undefined);
  assert.equal(await custody.load('root-1'), undefined);
  assert.equal(await custody.destroy('root-1'), false);
});

test('custody load zeroes the DER it read', async (t) => {
  const store = openStore(t);
  await new SealedKeyCustody(store).generate('root-1');
  const record = await store.get('ca/keys/root-1');
  assert.ok(record);
  const reader = { ...store, get: async () => record } as unknown as SqliteStore;

  const loaded = await new SealedKeyCustody(reader).load('root-1');

  assert.ok(loaded);
  assert.ok(record.value.every((byte) => byte === 0), 'the PKCS#8 bytes were wiped after parsing');
  assert.equal(verifies(loaded.spki, await loaded.sign(data)), true);
});

test('custody generate rejects existing label', async (t) => {
  const custody = new SealedKeyCustody(openStore(t));
  await custody.generate('root-1');

  await assert.rejects(custody.generate('root-1'), (error) => isSealmeshError(error, 'SEALMESH_ERR_CONFLICT'));
});

test('custody rejects invalid label', async (t) => {
  const custody = new SealedKeyCustody(openStore(t));

  for (const label of ['', 'Root', '../root', 'a/b', 'x'.repeat(129)]) {
    await assert.rejects(custody.generate(label), (error) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'), `label ${JSON.stringify(label)}`);
  }
});

test('custody load returns undefined for unknown label', async (t) => {
  const custody = new SealedKeyCustody(openStore(t));

  assert.equal(await custody.load('missing'), undefined);
});

test('custody load returns the generated key pair', async (t) => {
  const store = openStore(t);
  const generated = await new SealedKeyCustody(store).generate('intermediate-1');

  const loaded = await new SealedKeyCustody(store).load('intermediate-1');

  assert.ok(loaded);
  assert.equal(loaded.label, 'intermediate-1');
  assert.ok(Buffer.from(generated.spki).equals(Buffer.from(loaded.spki)), 'derived public key equals the generated one');
  assert.equal(verifies(generated.spki, await loaded.sign(data)), true);
});

test('custody load rejects corrupted key', async (t) => {
  const store = openStore(t);
  await store.put('ca/keys/broken', new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]));

  await assert.rejects(new SealedKeyCustody(store).load('broken'), (error) => isSealmeshError(error, 'SEALMESH_ERR_INTERNAL'));
});

test('custody load rejects non-P-256 key', async (t) => {
  const store = openStore(t);
  const p384 = (await nodeCrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  await store.put('ca/keys/p384', new Uint8Array(await nodeCrypto.subtle.exportKey('pkcs8', p384.privateKey)));

  await assert.rejects(new SealedKeyCustody(store).load('p384'), (error) => isSealmeshError(error, 'SEALMESH_ERR_INTERNAL'));
});
