import assert from 'node:assert/strict';
import { createPrivateKey, type webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { StoreKeyCustody } from '../src/pki/index.ts';
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
const ecdsaSha256 = { name: 'ECDSA', hash: 'SHA-256' };

test('custody generate stores PKCS#8 P-256 key', async (t) => {
  const store = openStore(t);
  const custody = new StoreKeyCustody(store);

  const key = await custody.generate('root-1');

  assert.equal(custody.name, 'store');
  assert.equal(key.label, 'root-1');
  const record = await store.get('ca/keys/root-1');
  assert.ok(record, 'key record exists under ca/keys/<label>');
  const stored = createPrivateKey({ key: Buffer.from(record.value), format: 'der', type: 'pkcs8' });
  assert.equal(stored.asymmetricKeyType, 'ec');
  assert.equal(stored.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

test('custody generate returns non-extractable signing key', async (t) => {
  const custody = new StoreKeyCustody(openStore(t));

  const key = await custody.generate('root-1');

  assert.equal(key.privateKey.extractable, false);
  assert.deepEqual(key.privateKey.usages, ['sign']);
  await assert.rejects(nodeCrypto.subtle.exportKey('pkcs8', key.privateKey));
  const signature = await key.crypto.subtle.sign(ecdsaSha256, key.privateKey, data);
  assert.equal(await nodeCrypto.subtle.verify(ecdsaSha256, key.publicKey, signature, data), true);
});

test('custody generate rejects existing label', async (t) => {
  const custody = new StoreKeyCustody(openStore(t));
  await custody.generate('root-1');

  await assert.rejects(custody.generate('root-1'), (error) => isSealmeshError(error, 'SEALMESH_ERR_CONFLICT'));
});

test('custody rejects invalid label', async (t) => {
  const custody = new StoreKeyCustody(openStore(t));

  for (const label of ['', 'Root', '../root', 'a/b', 'x'.repeat(129)]) {
    await assert.rejects(custody.generate(label), (error) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'), `label ${JSON.stringify(label)}`);
  }
});

test('custody load returns undefined for unknown label', async (t) => {
  const custody = new StoreKeyCustody(openStore(t));

  assert.equal(await custody.load('missing'), undefined);
});

test('custody load returns the generated key pair', async (t) => {
  const store = openStore(t);
  const generated = await new StoreKeyCustody(store).generate('intermediate-1');

  const loaded = await new StoreKeyCustody(store).load('intermediate-1');

  assert.ok(loaded);
  assert.equal(loaded.label, 'intermediate-1');
  assert.equal(loaded.privateKey.extractable, false);
  await assert.rejects(nodeCrypto.subtle.exportKey('pkcs8', loaded.privateKey));
  const generatedSpki = Buffer.from(await nodeCrypto.subtle.exportKey('spki', generated.publicKey));
  const loadedSpki = Buffer.from(await nodeCrypto.subtle.exportKey('spki', loaded.publicKey));
  assert.ok(generatedSpki.equals(loadedSpki), 'derived public key equals the generated one');
  const signature = await loaded.crypto.subtle.sign(ecdsaSha256, loaded.privateKey, data);
  assert.equal(await nodeCrypto.subtle.verify(ecdsaSha256, generated.publicKey, signature, data), true);
});

test('custody load rejects corrupted key', async (t) => {
  const store = openStore(t);
  await store.put('ca/keys/broken', new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]));

  await assert.rejects(new StoreKeyCustody(store).load('broken'), (error) => isSealmeshError(error, 'SEALMESH_ERR_INTERNAL'));
});

test('custody load rejects non-P-256 key', async (t) => {
  const store = openStore(t);
  const p384 = (await nodeCrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  await store.put('ca/keys/p384', new Uint8Array(await nodeCrypto.subtle.exportKey('pkcs8', p384.privateKey)));

  await assert.rejects(new StoreKeyCustody(store).load('p384'), (error) => isSealmeshError(error, 'SEALMESH_ERR_INTERNAL'));
});
