import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { caCustodyFromFlags } from '../src/cli/ca-flags.ts';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { CertificateAuthority, Pkcs11KeyCustody, SealedKeyCustody } from '../src/pki/index.ts';
import { ckrName, readBool, TokenSession } from '../src/seal/pkcs11/session.ts';
import { ControlPlane } from '../src/server/index.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { fileToken, softHsmSkipReason } from './helpers/softhsm.ts';
import { testLogger } from './helpers/mesh.ts';
import { issueTestSvid, mtlsHandshake } from './helpers/svid.ts';

const skip = softHsmSkipReason();

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

const sharedToken = fileToken('ca-custody');

function openCustody(t: TestContext, cluster: string, overrides: { pin?: string; tokenLabel?: string } = {}): Pkcs11KeyCustody {
  const hsm = sharedToken();
  const custody = Pkcs11KeyCustody.open({ module: hsm.module, tokenLabel: overrides.tokenLabel ?? hsm.tokenLabel, pin: overrides.pin ?? hsm.pin, cluster });
  t.after(() => custody.close());
  return custody;
}

function openStore(t: TestContext): { store: SqliteStore; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-pki-pkcs11-'));
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, dir };
}

/** Opens a second session on the token, as an attacker with the PIN would. */
function inspectorSession(t: TestContext): TokenSession {
  const hsm = sharedToken();
  const session = TokenSession.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin }, 'test inspector');
  t.after(() => session.close());
  return session;
}

test('PKCS#11 custody keys are not extractable', { skip }, async (t) => {
  const custody = openCustody(t, 'attributes.sealmesh');
  await custody.generate('root-1');
  const session = inspectorSession(t);
  const { api, library } = session;

  const [privateKey, other] = session.findObjects([
    { type: api.CKA_CLASS, value: api.CKO_PRIVATE_KEY },
    { type: api.CKA_LABEL, value: 'sealmesh-ca:attributes.sealmesh:root-1' },
  ]);
  assert.ok(privateKey, 'the private key is a token object, labelled per cluster');
  assert.equal(other, undefined);
  const attributes = library.C_GetAttributeValue(session.handle, privateKey, [
    { type: api.CKA_TOKEN },
    { type: api.CKA_SENSITIVE },
    { type: api.CKA_EXTRACTABLE },
    { type: api.CKA_ALWAYS_SENSITIVE },
    { type: api.CKA_NEVER_EXTRACTABLE },
  ]);
  const flag = (type: number): boolean => readBool(attributes.find((attribute) => attribute.type === type)?.value);
  assert.equal(flag(api.CKA_TOKEN), true);
  assert.equal(flag(api.CKA_SENSITIVE), true);
  assert.equal(flag(api.CKA_EXTRACTABLE), false);
  assert.equal(flag(api.CKA_ALWAYS_SENSITIVE), true);
  assert.equal(flag(api.CKA_NEVER_EXTRACTABLE), true);
  assert.throws(
    () => library.C_GetAttributeValue(session.handle, privateKey, [{ type: api.CKA_VALUE }]),
    (error: unknown) => ckrName(error) === 'CKR_ATTRIBUTE_SENSITIVE',
    'the token refuses to return the private value',
  );
});

test('PKCS#11 CA issues SVIDs for mTLS', { skip }, async (t) => {
  const { store } = openStore(t);
  const ca = await CertificateAuthority.open({ store, custody: openCustody(t, 'mtls.sealmesh'), trustDomain: 'mtls.sealmesh' });
  assert.equal(ca.custodyName, 'pkcs11');
  assert.equal((await store.list('ca/keys/')).length, 0, 'no CA key is in the store');

  const api = await issueTestSvid(ca, 'api');
  const web = await issueTestSvid(ca, 'web');
  const outcome = await mtlsHandshake({ ...api, ca: ca.bundle() }, { ...web, ca: ca.bundle() });

  assert.equal(outcome.serverAuthorized, true, String(outcome.serverError));
  assert.equal(outcome.clientAuthorized, true, String(outcome.clientError));
});

test('PKCS#11 CA finds its keys after restart', { skip }, async (t) => {
  const { store } = openStore(t);
  const trustDomain = 'restart.sealmesh';
  const first = openCustody(t, trustDomain);
  const ca = await CertificateAuthority.open({ store, custody: first, trustDomain });
  const before = await issueTestSvid(ca, 'api');
  await first.close();

  const reopened = await CertificateAuthority.open({ store, custody: openCustody(t, trustDomain), trustDomain });
  const after = await issueTestSvid(reopened, 'web');

  assert.equal(reopened.rootFingerprintSha256(), ca.rootFingerprintSha256());
  assert.equal(reopened.intermediatePem(), ca.intermediatePem());
  const outcome = await mtlsHandshake({ ...before, ca: reopened.bundle() }, { ...after, ca: ca.bundle() });
  assert.equal(outcome.serverAuthorized, true, String(outcome.serverError));
  assert.equal(outcome.clientAuthorized, true, String(outcome.clientError));
});

test('PKCS#11 custody rejects wrong PIN', { skip }, (t) => {
  assert.throws(() => openCustody(t, 'pin.sealmesh', { pin: '9999' }), hasCode('SEALMESH_ERR_CA_HSM_LOGIN_FAILED'));
});

test('PKCS#11 custody rejects unknown token', { skip }, (t) => {
  assert.throws(() => openCustody(t, 'token.sealmesh', { tokenLabel: 'no-such-token' }), hasCode('SEALMESH_ERR_CA_HSM_TOKEN_MISSING'));
});

test('PKCS#11 CA fails closed on missing key', { skip }, async (t) => {
  const { store } = openStore(t);
  const trustDomain = 'missing.sealmesh';
  const custody = openCustody(t, trustDomain);
  await CertificateAuthority.open({ store, custody, trustDomain });
  const { keyLabel } = JSON.parse(Buffer.from((await store.get('ca/root'))?.value ?? []).toString('utf8')) as { keyLabel: string };
  assert.equal(await custody.destroy(keyLabel), true);

  await assert.rejects(CertificateAuthority.open({ store, custody, trustDomain }), hasCode('SEALMESH_ERR_CA_KEY_MISSING'));
});

test('PKCS#11 custody rejects extractable key', { skip }, async (t) => {
  const custody = openCustody(t, 'weak.sealmesh');
  const session = inspectorSession(t);
  const { api, library } = session;
  const label = 'sealmesh-ca:weak.sealmesh:root-1';
  library.C_GenerateKeyPair(
    session.handle,
    { mechanism: api.CKM_EC_KEY_PAIR_GEN },
    [
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_VERIFY, value: true },
      { type: api.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
      { type: api.CKA_LABEL, value: label },
    ],
    [
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_PRIVATE, value: true },
      { type: api.CKA_SENSITIVE, value: false },
      { type: api.CKA_EXTRACTABLE, value: true },
      { type: api.CKA_SIGN, value: true },
      { type: api.CKA_LABEL, value: label },
    ],
  );

  await assert.rejects(custody.load('root-1'), hasCode('SEALMESH_ERR_CA_KEY_INVALID'));
});

test('CA rejects another custody than its own', { skip }, async (t) => {
  const { store } = openStore(t);
  const trustDomain = 'mismatch.sealmesh';
  await CertificateAuthority.open({ store, custody: openCustody(t, trustDomain), trustDomain });

  await assert.rejects(CertificateAuthority.open({ store, custody: new SealedKeyCustody(store), trustDomain }), hasCode('SEALMESH_ERR_CA_CUSTODY_MISMATCH'));
});

test('PKCS#11 root rotation keeps keys in the token', { skip }, async (t) => {
  const { store } = openStore(t);
  const trustDomain = 'rotate.sealmesh';
  let offsetMs = 0;
  const custody = openCustody(t, trustDomain);
  const ca = await CertificateAuthority.open({ store, custody, trustDomain, now: () => new Date(Date.now() + offsetMs) });
  const session = inspectorSession(t);
  const privateKeys = (): number => session.findObjects([{ type: session.api.CKA_CLASS, value: session.api.CKO_PRIVATE_KEY }]).filter((handle) => {
    const [attribute] = session.library.C_GetAttributeValue(session.handle, handle, [{ type: session.api.CKA_LABEL }]);
    return attribute?.value?.toString('utf8').startsWith(`sealmesh-ca:${trustDomain}:`) === true;
  }).length;
  const old = await issueTestSvid(ca, 'web');
  assert.equal(privateKeys(), 2);

  await ca.rotateRoot();
  const renewed = await issueTestSvid(ca, 'api');
  assert.equal(privateKeys(), 4, 'the new root and intermediate keys are in the token');
  const outcome = await mtlsHandshake({ ...renewed, ca: ca.bundle() }, { ...old, ca: ca.bundle() });
  assert.equal(outcome.serverAuthorized, true, String(outcome.serverError));
  assert.equal(outcome.clientAuthorized, true, String(outcome.clientError));

  offsetMs = 8 * 24 * 3600 * 1000;
  const pruned = await ca.pruneRetiredRoot();
  assert.equal(pruned.pruned, true);
  assert.equal(privateKeys(), 2, 'the retired keys were destroyed in the token');
  assert.equal(ca.bundle().length, 1);
});

test('PKCS#11 server restarts on its token keys', { skip }, async (t) => {
  const hsm = sharedToken();
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-pki-pkcs11-server-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const options = {
    dataDir: join(dir, 'data'),
    host: '127.0.0.1',
    port: 0,
    log: testLogger('server'),
    caCustody: { kind: 'pkcs11' as const, module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin },
  };
  const first = new ControlPlane(options);
  await first.start();
  const fingerprint = first.ca.rootFingerprintSha256();
  assert.equal(first.ca.custodyName, 'pkcs11');
  await first.stop();

  const second = new ControlPlane(options);
  await second.start();
  t.after(() => second.stop());
  assert.equal(second.ca.rootFingerprintSha256(), fingerprint);
  const svid = await issueTestSvid(second.ca, 'api');
  assert.ok(svid.svid.chainPem.length > 0);

  const wrongPin = new ControlPlane({ ...options, dataDir: join(dir, 'other'), caCustody: { ...options.caCustody, pin: '0000' } });
  await assert.rejects(wrongPin.start(), hasCode('SEALMESH_ERR_CA_HSM_LOGIN_FAILED'));
});

test('CA custody flags need module, token and PIN', () => {
  const flags = { caCustody: 'pkcs11' as const, caPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', caPkcs11TokenLabel: 'ca', caPkcs11PinEnv: 'CA_PIN' };

  assert.deepEqual(caCustodyFromFlags(flags, { CA_PIN: '1234' }), { kind: 'pkcs11', module: flags.caPkcs11Module, tokenLabel: 'ca', pin: '1234' });
  assert.throws(() => caCustodyFromFlags(flags, {}), hasCode('SEALMESH_ERR_CA_HSM_PIN_MISSING'));
  assert.throws(() => caCustodyFromFlags(flags, { CA_PIN: '' }), hasCode('SEALMESH_ERR_CA_HSM_PIN_MISSING'));
  assert.throws(() => caCustodyFromFlags({ ...flags, caPkcs11TokenLabel: undefined }, { CA_PIN: '1234' }), hasCode('SEALMESH_ERR_CONFIG_INVALID'));
  assert.throws(() => caCustodyFromFlags({ ...flags, caCustody: 'sealed' }, {}), hasCode('SEALMESH_ERR_CONFIG_INVALID'));
  assert.deepEqual(caCustodyFromFlags({ caCustody: 'sealed', caPkcs11PinEnv: 'CA_PIN' }, {}), { kind: 'sealed' });
});
