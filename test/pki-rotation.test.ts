import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { CertificateAuthority, CLOCK_SKEW_SECONDS, SealedKeyCustody } from '../src/pki/index.ts';
import { STORE_KEYS } from '../src/pki/ca-records.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { issueTestSvid, mtlsHandshake } from './helpers/svid.ts';

const trustDomain = 'rotation.sealmesh';
const MINUTE_MS = 60_000;

/** Returns a clock that starts at the real time, so TLS accepts the certificates, and moves only when the test advances it. */
function testClock(): { now: () => Date; advance: (ms: number) => void } {
  let offsetMs = 0;
  return { now: () => new Date(Date.now() + offsetMs), advance: (ms) => (offsetMs += ms) };
}

function openStore(t: TestContext): SqliteStore {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-pki-rotation-'));
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

async function openCa(store: SqliteStore, now: () => Date): Promise<CertificateAuthority> {
  return CertificateAuthority.open({ store, custody: new SealedKeyCustody(store), trustDomain, now });
}

function certificates(chainPem: string): X509Certificate[] {
  return (chainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ?? []).map((pem) => new X509Certificate(pem));
}

test('rotation adds a cross-signed root', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  const [oldRootPem] = ca.bundle();
  assert.ok(oldRootPem);
  const oldRoot = new X509Certificate(oldRootPem);

  const result = await ca.rotateRoot();

  assert.equal(ca.bundle().length, 2);
  assert.ok(ca.bundle().includes(oldRootPem), 'the old root stays in the bundle');
  const newRoot = new X509Certificate(ca.bundle().find((pem) => pem !== oldRootPem) ?? '');
  assert.equal(newRoot.serialNumber.toLowerCase(), result.root.serialNumber);
  assert.equal(result.retiredRoot.serialNumber, oldRoot.serialNumber.toLowerCase());
  assert.notEqual(newRoot.subject, oldRoot.subject, 'the new root has a name of its own');
  assert.equal(newRoot.verify(newRoot.publicKey), true, 'the new root is self-signed');
  assert.equal(ca.rootFingerprintSha256(), newRoot.fingerprint256);

  const intermediate = new X509Certificate(ca.intermediatePem());
  assert.equal(intermediate.checkIssued(newRoot), true);
  assert.equal(intermediate.verify(newRoot.publicKey), true);

  const { svid } = await issueTestSvid(ca, 'api');
  const [leaf, chainIntermediate, cross, extra] = certificates(svid.chainPem);
  assert.ok(leaf, 'chain has a leaf');
  assert.ok(chainIntermediate, 'chain has the intermediate');
  assert.ok(cross, 'chain has the cross-signed root');
  assert.equal(extra, undefined);
  assert.equal(leaf.verify(intermediate.publicKey), true);
  assert.equal(cross.subject, newRoot.subject);
  assert.equal(cross.issuer, oldRoot.subject);
  assert.equal(cross.verify(oldRoot.publicKey), true, 'the old root signed the cross certificate');
  assert.equal(cross.publicKey.equals(newRoot.publicKey), true);
  assert.equal(cross.ca, true);

  const status = await ca.status();
  assert.equal(status.roots.length, 2);
  assert.equal(status.roots.find((root) => root.serialNumber === result.retiredRoot.serialNumber)?.state, 'retiring');
  assert.equal(status.roots.find((root) => root.serialNumber === result.root.serialNumber)?.state, 'signing');
  assert.equal(status.rotation?.retiredRootSerial, result.retiredRoot.serialNumber);
  assert.equal(status.rotation?.prunableAfter, result.prunableAfter);
});

test('rotation keeps mixed SVIDs talking', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  const oldBundle = ca.bundle();
  const web = await issueTestSvid(ca, 'web');
  await ca.rotateRoot();
  const api = await issueTestSvid(ca, 'api');

  // web has not seen the new bundle yet and trusts only the old root; api has both roots.
  const outcome = await mtlsHandshake({ ...api, ca: ca.bundle() }, { ...web, ca: oldBundle });
  assert.equal(outcome.clientError, null, 'a peer that trusts only the old root accepts the new chain');
  assert.equal(outcome.clientAuthorized, true);
  assert.equal(outcome.serverError, null, 'the new bundle accepts an SVID under the old root');
  assert.equal(outcome.serverAuthorized, true);

  const reverse = await mtlsHandshake({ ...web, ca: oldBundle }, { ...api, ca: ca.bundle() });
  assert.equal(reverse.serverAuthorized, true, String(reverse.serverError));
  assert.equal(reverse.clientAuthorized, true, String(reverse.clientError));
});

test('second rotation rejected while pending', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  await issueTestSvid(ca, 'web', 3600);
  await ca.rotateRoot();

  await assert.rejects(ca.rotateRoot(), (error) => isSealmeshError(error, 'SEALMESH_ERR_CA_ROTATION_PENDING'));
  assert.equal(ca.bundle().length, 2);
});

test('prune waits for the leaf horizon', async (t) => {
  const clock = testClock();
  const store = openStore(t);
  const ca = await openCa(store, clock.now);
  const oldBundle = ca.bundle();
  const web = await issueTestSvid(ca, 'web', 3600);
  const rootLabel = JSON.parse(Buffer.from((await store.get(STORE_KEYS.signingRoot))?.value ?? []).toString('utf8')) as { keyLabel: string };
  const intermediateLabel = JSON.parse(Buffer.from((await store.get(STORE_KEYS.intermediate))?.value ?? []).toString('utf8')) as { keyLabel: string };
  const rotation = await ca.rotateRoot();
  const api = await issueTestSvid(ca, 'api');

  const prunableAfter = Date.parse(rotation.prunableAfter);
  assert.ok(prunableAfter >= web.svid.notAfter.getTime() + CLOCK_SKEW_SECONDS * 1000, 'not before the old SVID expires, with skew');

  clock.advance(30 * MINUTE_MS);
  const early = await ca.pruneRetiredRoot();
  assert.equal(early.pruned, false);
  assert.equal(early.prunableAfter, rotation.prunableAfter);
  assert.equal(ca.bundle().length, 2);

  clock.advance(prunableAfter - clock.now().getTime() + 1000);
  const pruned = await ca.pruneRetiredRoot();
  assert.equal(pruned.pruned, true);
  assert.equal(pruned.retiredRootSerial, rotation.retiredRoot.serialNumber);
  assert.deepEqual(pruned.destroyedKeys, [rootLabel.keyLabel, intermediateLabel.keyLabel]);
  assert.equal(ca.bundle().length, 1);
  assert.equal(new X509Certificate(ca.bundle()[0] ?? '').serialNumber.toLowerCase(), rotation.root.serialNumber);
  assert.equal(await store.get(`ca/keys/${rootLabel.keyLabel}`), undefined, 'old root key destroyed');
  assert.equal(await store.get(`ca/keys/${intermediateLabel.keyLabel}`), undefined, 'old intermediate key destroyed');
  assert.equal((await ca.status()).rotation, null);
  assert.equal((await ca.pruneRetiredRoot()).pruned, false, 'nothing left to prune');

  // After the prune, an SVID under the old root no longer verifies against the bundle.
  const outcome = await mtlsHandshake({ ...api, ca: ca.bundle() }, { ...web, ca: oldBundle });
  assert.equal(outcome.serverAuthorized, false);
  assert.equal(outcome.serverError, 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY');
});

test('chain drops cross certificate after prune', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  await ca.rotateRoot();
  clock.advance(8 * 24 * 60 * MINUTE_MS);
  assert.equal((await ca.pruneRetiredRoot()).pruned, true);

  const { svid } = await issueTestSvid(ca, 'api');

  assert.equal(certificates(svid.chainPem).length, 2, 'leaf and intermediate only');
});

test('rotation state survives reopen', async (t) => {
  const clock = testClock();
  const store = openStore(t);
  const ca = await openCa(store, clock.now);
  await issueTestSvid(ca, 'web', 3600);
  const rotation = await ca.rotateRoot();

  const reopened = await openCa(store, clock.now);

  assert.deepEqual(reopened.bundle(), ca.bundle());
  assert.equal(reopened.rootFingerprintSha256(), rotation.root.fingerprintSha256);
  assert.deepEqual((await reopened.status()).rotation, (await ca.status()).rotation);
  const { svid } = await issueTestSvid(reopened, 'api');
  assert.equal(certificates(svid.chainPem).length, 3, 'the reopened CA still appends the cross certificate');
});

test('rotation after prune starts again', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  const first = await ca.rotateRoot();
  clock.advance(8 * 24 * 60 * MINUTE_MS);

  const second = await ca.rotateRoot();

  assert.equal(second.retiredRoot.serialNumber, first.root.serialNumber, 'the pending rotation was pruned first');
  assert.equal(ca.bundle().length, 2);
});

test('horizon moves with leaves issued later', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  await issueTestSvid(ca, 'web', 300);
  clock.advance(2 * 60 * MINUTE_MS);
  const late = await issueTestSvid(ca, 'web', 6 * 3600);
  const rotation = await ca.rotateRoot();

  assert.ok(Date.parse(rotation.prunableAfter) >= late.svid.notAfter.getTime() + CLOCK_SKEW_SECONDS * 1000);
});

test('retired root without leaves prunes at once', async (t) => {
  const clock = testClock();
  const ca = await openCa(openStore(t), clock.now);
  await ca.rotateRoot();

  const pruned = await ca.pruneRetiredRoot();

  assert.equal(pruned.pruned, true, 'no SVID was issued under the retired root');
  assert.equal(ca.bundle().length, 1);
});
