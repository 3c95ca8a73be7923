import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import {
  FileManifestSigner,
  acceptManifest,
  effectivePosture,
  formatPosture,
  formatSignedManifest,
  generateOperatorKey,
  initManifest,
  manifestDigest,
  nextManifest,
  operatorKeyId,
  parseManifest,
  parseSignedManifestText,
  readSignedManifestFile,
  signManifest,
  writeSignedManifestFile,
  type Manifest,
  type ManifestSigner,
  type SignedManifest,
} from '../src/manifest/index.ts';
import { DEFAULT_SVID_TTL_SECONDS, MAX_SVID_TTL_SECONDS, MIN_SVID_TTL_SECONDS } from '../src/pki/index.ts';

function hasCode(code: ErrorCode, pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-manifest-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const edKey = generateOperatorKey('ed25519');
const ecKey = generateOperatorKey('ecdsa-p256');
const edSigner = FileManifestSigner.fromPem(edKey.privateKeyPem, { keyId: 'ed' });
const ecSigner = FileManifestSigner.fromPem(ecKey.privateKeyPem, { keyId: 'ec' });

function draft(overrides: Partial<Manifest> = {}): Manifest {
  const base = initManifest({
    trustDomain: 'docs.sealmesh',
    operatorKeys: [
      { id: 'ed', publicKeyPem: edKey.publicKeyPem },
      { id: 'ec', publicKeyPem: ecKey.publicKeyPem },
    ],
    threshold: 2,
  }).manifest;
  return { ...base, ...overrides };
}

async function signBoth(manifest: Manifest): Promise<SignedManifest> {
  let document: SignedManifest = { manifest, signatures: [] };
  for (const signer of [edSigner, ecSigner] satisfies ManifestSigner[]) {
    document = await signManifest(document, signer);
  }
  return document;
}

test('initManifest fills secure defaults', () => {
  const manifest = draft();

  assert.equal(manifest.version, 1);
  assert.equal(manifest.previous, null);
  assert.equal(manifest.defaultPolicy, 'deny');
  assert.deepEqual(manifest.tls, { minVersion: 'TLSv1.3', keyTypes: ['ecdsa-p256'] });
  assert.deepEqual(manifest.svidTtl, { default: DEFAULT_SVID_TTL_SECONDS, min: MIN_SVID_TTL_SECONDS, max: MAX_SVID_TTL_SECONDS });
  assert.deepEqual(manifest.intentions, { management: 'api' });
  assert.deepEqual(manifest.attestation, { required: false, services: {}, allowDevProvider: false });
  assert.deepEqual(manifest.operators.keys.map((key) => [key.id, key.algorithm]), [['ed', 'ed25519'], ['ec', 'ecdsa-p256']]);
});

test('initManifest derives key ids from public keys', () => {
  const manifest = initManifest({ trustDomain: 'docs.sealmesh', operatorKeys: [{ publicKeyPem: edKey.publicKeyPem }], threshold: 1 }).manifest;

  assert.equal(manifest.operators.keys[0]?.id, edKey.keyId);
  assert.match(edKey.keyId, /^ed25519:[0-9a-f]{16}$/);
  assert.match(operatorKeyId(ecKey.publicKeyPem), /^p256:[0-9a-f]{16}$/);
});

test('initManifest rejects a private key', () => {
  assert.throws(
    () => initManifest({ trustDomain: 'docs.sealmesh', operatorKeys: [{ publicKeyPem: edKey.privateKeyPem }], threshold: 1 }),
    hasCode('SEALMESH_ERR_MANIFEST_INVALID', /not an SPKI PEM public key/),
  );
});

test('nextManifest links to its predecessor', () => {
  const current = draft();
  const next = nextManifest(current, { defaultPolicy: 'allow' }).manifest;

  assert.equal(next.version, 2);
  assert.equal(next.previous, manifestDigest(current));
  assert.equal(next.defaultPolicy, 'allow');
  assert.equal(next.trustDomain, current.trustDomain);
  assert.deepEqual(next.operators, current.operators);
});

test('schema rejects invalid manifests', () => {
  const otherKey = generateOperatorKey('ed25519');
  const keys = draft().operators.keys;
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown member', { ...draft(), extra: 1 }, /extra/],
    ['version 0', { ...draft(), version: 0 }, /version/],
    ['genesis with a predecessor', { ...draft(), previous: 'ab'.repeat(32) }, /previous must be null/],
    ['successor without a predecessor', { ...draft(), version: 2 }, /must name its predecessor/],
    ['predecessor not a digest', { ...draft(), version: 2, previous: 'AB'.repeat(32) }, /previous/],
    ['invalid trust domain', { ...draft(), trustDomain: 'Bad Domain' }, /trust domain/],
    ['TLS 1.2', { ...draft(), tls: { minVersion: 'TLSv1.2', keyTypes: ['ecdsa-p256'] } }, /tls\.minVersion/],
    ['RSA key type', { ...draft(), tls: { minVersion: 'TLSv1.3', keyTypes: ['rsa-2048'] } }, /tls\.keyTypes/],
    ['repeated key exchange group', { ...draft(), tls: { minVersion: 'TLSv1.3', keyTypes: ['ecdsa-p256'], keyExchange: ['X25519', 'X25519'] } }, /listed twice/],
    ['TTL below the pki minimum', { ...draft(), svidTtl: { default: 3600, min: 60, max: 86400 } }, /svidTtl\.min/],
    ['TTL above the pki maximum', { ...draft(), svidTtl: { default: 3600, min: 300, max: MAX_SVID_TTL_SECONDS + 1 } }, /svidTtl\.max/],
    ['default TTL below min', { ...draft(), svidTtl: { default: 600, min: 3600, max: 86400 } }, /min <= default <= max/],
    ['rules with API management', { ...draft(), intentions: { management: 'api', rules: [] } }, /only when management is 'manifest'/],
    ['rule end not normalised', { ...draft(), intentions: { management: 'manifest', rules: [{ source: 'default/web', destination: 'api', action: 'allow' }] } }, /write "web"/],
    ['rule listed twice', { ...draft(), intentions: { management: 'manifest', rules: [{ source: 'web', destination: 'api', action: 'allow' }, { source: 'web', destination: 'api', action: 'deny' }] } }, /listed twice/],
    ['attestation service without providers', { ...draft(), attestation: { services: { api: { providers: [] } } } }, /providers/],
    ['attestation service name invalid', { ...draft(), attestation: { services: { 'Not A Service': { providers: ['dev'] } }, allowDevProvider: true }, environment: 'development' }, /service name/],
    ['no operator keys', { ...draft(), operators: { keys: [], threshold: 1 } }, /operators\.keys/],
    ['threshold above key count', { ...draft(), operators: { keys, threshold: 3 } }, /threshold 3 exceeds the 2 operator keys/],
    ['threshold 0', { ...draft(), operators: { keys, threshold: 0 } }, /threshold/],
    ['key id used twice', { ...draft(), operators: { keys: [keys[0], { ...keys[0], publicKey: otherKey.publicKeyPem }], threshold: 1 } }, /used twice/],
    ['public key used twice', { ...draft(), operators: { keys: [keys[0], { ...keys[0], id: 'copy' }], threshold: 1 } }, /repeats the public key/],
    ['private key as public key', { ...draft(), operators: { keys: [{ ...keys[0], publicKey: edKey.privateKeyPem }], threshold: 1 } }, /not an SPKI PEM public key/],
    ['algorithm not matching the key', { ...draft(), operators: { keys: [{ ...keys[0], algorithm: 'ecdsa-p256' }], threshold: 1 } }, /is not an ecdsa-p256 key/],
    ['public key not canonical', { ...draft(), operators: { keys: [{ ...keys[0], publicKey: keys[0]!.publicKey.trimEnd() }], threshold: 1 } }, /SPKI PEM|canonical/],
  ];
  for (const [name, value, pattern] of cases) {
    assert.throws(() => parseManifest(value), hasCode('SEALMESH_ERR_MANIFEST_INVALID', pattern), name);
  }
});

test('schema rejects invalid signature entries', async () => {
  const signed = await signBoth(draft());
  const first = signed.signatures[0]!;
  const cases: Array<[string, unknown, RegExp]> = [
    ['not base64', { ...first, signature: '!'.repeat(88) }, /canonical base64/],
    ['base64 without padding', { ...first, signature: first.signature.replace(/=+$/, '') }, /canonical base64/],
    ['wrong length', { ...first, signature: Buffer.alloc(32).toString('base64') }, /64 bytes/],
    ['unknown algorithm', { ...first, algorithm: 'rsa' }, /algorithm/],
  ];
  for (const [name, entry, pattern] of cases) {
    const text = JSON.stringify({ manifest: signed.manifest, signatures: [entry] });
    assert.throws(() => parseSignedManifestText(text), hasCode('SEALMESH_ERR_MANIFEST_INVALID', pattern), name);
  }

  const twice = JSON.stringify({ manifest: signed.manifest, signatures: [first, first] });
  assert.throws(() => parseSignedManifestText(twice), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /signed twice/));
});

test('YAML and JSON files round-trip', async (t) => {
  const dir = tempDir(t);
  const signed = await signBoth(draft({ intentions: { management: 'manifest', rules: [{ source: '*', destination: 'api', action: 'deny', description: 'block by default' }] } }));

  for (const name of ['manifest.yaml', 'manifest.yml', 'manifest.json', 'manifest']) {
    const path = join(dir, name);
    await writeSignedManifestFile(path, signed);
    const read = await readSignedManifestFile(path);

    assert.deepEqual(read, signed, name);
    assert.equal(statSync(path).mode & 0o777, 0o644, name);
  }
  assert.ok(readFileSync(join(dir, 'manifest.json'), 'utf8').startsWith('{\n  "manifest": {'));
  assert.ok(readFileSync(join(dir, 'manifest.yaml'), 'utf8').startsWith('manifest:\n  version: 1\n'));
  const detected = await readSignedManifestFile(join(dir, 'manifest'));
  assert.equal(acceptManifest(detected, undefined).manifest.version, 1);
});

test('repeated mapping key rejected', async () => {
  const signed = await signBoth(draft());
  const json = formatSignedManifest(signed, 'json').replace('"defaultPolicy": "deny",', '"defaultPolicy": "allow",\n    "defaultPolicy": "deny",');
  const yaml = formatSignedManifest(signed, 'yaml').replace('  defaultPolicy: deny\n', '  defaultPolicy: allow\n  defaultPolicy: deny\n');

  assert.throws(() => parseSignedManifestText(json, { format: 'json' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /unique/));
  assert.throws(() => parseSignedManifestText(yaml, { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /unique/));
});

test('YAML 1.1 tags rejected', async () => {
  const yaml = formatSignedManifest(await signBoth(draft()), 'yaml').replace('services: {}', 'services:\n      api:\n        providers: [tpm]\n        blob: !!binary aGVsbG8=');

  assert.throws(() => parseSignedManifestText(yaml, { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /Unresolved tag/));
});

test('malformed text rejected', () => {
  assert.throws(() => parseSignedManifestText('{"manifest": ', { format: 'json', source: 'manifest file m.json' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /m\.json is not valid JSON/));
  assert.throws(() => parseSignedManifestText('manifest: [\n', { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /not valid YAML/));
  assert.throws(() => parseSignedManifestText('- 1\n- 2\n'), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
  assert.throws(() => parseSignedManifestText('manifest: *undefined\n', { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /alias/));
  assert.throws(() => parseSignedManifestText('a: &x [*x]\n', { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
});

test('missing manifest file rejected', async (t) => {
  await assert.rejects(readSignedManifestFile(join(tempDir(t), 'absent.yaml')), hasCode('SEALMESH_ERR_MANIFEST_INVALID', /cannot be read/));
});

test('signing twice with one key replaces its signature', async () => {
  const manifest = draft();
  const once = await signManifest({ manifest, signatures: [] }, ecSigner);
  const twice = await signManifest(once, ecSigner);

  assert.equal(twice.signatures.length, 1);
  assert.equal(twice.signatures[0]?.keyId, 'ec');
  // ECDSA signatures are randomised, so the second signature differs from the first.
  assert.notEqual(twice.signatures[0]?.signature, once.signatures[0]?.signature);
  assert.equal(once.signatures.length, 1, 'the input document is unchanged');
});

test('signManifest rejects a key id bound to another key', async () => {
  const impostor = FileManifestSigner.fromPem(generateOperatorKey('ed25519').privateKeyPem, { keyId: 'ed' });

  await assert.rejects(signManifest({ manifest: draft(), signatures: [] }, impostor), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID'));
});

test('signManifest rejects a signer whose signature does not verify', async () => {
  const broken: ManifestSigner = {
    keyId: 'ed',
    algorithm: 'ed25519',
    publicKeyPem: edKey.publicKeyPem,
    sign: async () => new Uint8Array(64),
  };

  await assert.rejects(signManifest({ manifest: draft(), signatures: [] }, broken), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('file signer reads an owner-only key file', async (t) => {
  const path = join(tempDir(t), 'operator.pem');
  writeFileSync(path, ecKey.privateKeyPem, { mode: 0o600 });

  const signer = await FileManifestSigner.fromFile(path);

  assert.equal(signer.algorithm, 'ecdsa-p256');
  assert.equal(signer.publicKeyPem, ecKey.publicKeyPem);
  assert.equal(signer.keyId, ecKey.keyId);
});

test('file signer rejects a key file others can read', async (t) => {
  const path = join(tempDir(t), 'operator.pem');
  writeFileSync(path, ecKey.privateKeyPem);
  chmodSync(path, 0o644);

  await assert.rejects(FileManifestSigner.fromFile(path), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /chmod 600/));
});

test('file signer rejects a missing key file', async (t) => {
  await assert.rejects(FileManifestSigner.fromFile(join(tempDir(t), 'absent.pem')), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /cannot be read/));
});

test('file signer decrypts with the passphrase', async () => {
  const encrypted = generateOperatorKey('ed25519', { passphrase: 'correct horse battery staple' });
  assert.ok(encrypted.privateKeyPem.startsWith('-----BEGIN ENCRYPTED PRIVATE KEY-----'));

  const signer = FileManifestSigner.fromPem(encrypted.privateKeyPem, { passphrase: 'correct horse battery staple' });

  assert.equal(signer.publicKeyPem, encrypted.publicKeyPem);
  assert.throws(() => FileManifestSigner.fromPem(encrypted.privateKeyPem, { passphrase: 'wrong' }), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /passphrase/));
  assert.throws(() => FileManifestSigner.fromPem(encrypted.privateKeyPem), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /passphrase/));
});

test('file signer rejects other key types', () => {
  assert.throws(() => FileManifestSigner.fromPem(edKey.publicKeyPem), hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /PKCS#8/));
  assert.throws(
    // X25519 keys exist as PKCS#8 but cannot sign.
    () => FileManifestSigner.fromPem(generateKeyPairSync('x25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
    hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', /neither an Ed25519 nor an ECDSA P-256 key/),
  );
});

test('ECDSA signatures use the IEEE P1363 form', async () => {
  const payload = new TextEncoder().encode('payload');
  const signature = await ecSigner.sign(payload);
  const publicKey = createPublicKey(ecKey.publicKeyPem);

  assert.equal(signature.length, 64);
  assert.ok(verify('sha256', payload, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature));
  assert.ok(!verify('sha256', payload, { key: publicKey, dsaEncoding: 'der' }, signature), 'the signature is not DER');
});

test('effective posture fills defaults', () => {
  const mrTd = 'ab'.repeat(48);
  const manifest = parseManifest({ ...draft(), attestation: { services: { api: { providers: ['tdx'], tdx: { mrTd: [mrTd] } } } } });
  const posture = effectivePosture(manifest);

  assert.equal(posture.version, 1);
  assert.equal(posture.digest, manifestDigest(manifest));
  assert.equal(posture.defaultPolicy, 'deny');
  assert.equal(posture.tls.keyExchange, null);
  assert.deepEqual(posture.svidTtl, { defaultSeconds: DEFAULT_SVID_TTL_SECONDS, minSeconds: MIN_SVID_TTL_SECONDS, maxSeconds: MAX_SVID_TTL_SECONDS });
  assert.equal(posture.attestation.required, false);
  assert.equal(posture.attestation.allowDevProvider, false);
  assert.equal(posture.environment, 'production');
  assert.deepEqual(posture.attestation.services, {
    api: { providers: ['tdx'], tcbStatuses: ['UpToDate'], allowDebug: false, tdx: { mrTd: [mrTd], rtMr0: null, rtMr1: null, rtMr2: null, rtMr3: null } },
  });
  assert.equal(posture.operators.threshold, 2);
  assert.match(posture.operators.keys[0]?.fingerprint ?? '', /^[0-9a-f]{64}$/);
  assert.deepEqual(posture.warnings, ['Attestation is not required, so a join token alone enrolls a proxy.']);
});

test('effective posture warns about weak settings', () => {
  const manifest = parseManifest({
    ...draft(),
    defaultPolicy: 'allow',
    attestation: { required: true, services: {}, allowDevProvider: true },
    environment: 'development',
    operators: { ...draft().operators, threshold: 1 },
  });
  const posture = effectivePosture(manifest);

  assert.equal(posture.warnings.length, 3);
  assert.match(posture.warnings[0] ?? '', /default policy is allow/);
  assert.match(posture.warnings[1] ?? '', /dev attestation provider/);
  assert.match(posture.warnings[2] ?? '', /threshold is 1/);
});

test('formatted posture lists every section', () => {
  const text = formatPosture(effectivePosture(draft({ defaultPolicy: 'allow' })));

  assert.match(text, /^version: +1$/m);
  assert.match(text, /^default policy: +allow$/m);
  assert.match(text, /^SVID TTL: +default 1d, min 5m, max 7d$/m);
  assert.match(text, /^operators: +2 of 2 signatures required$/m);
  assert.match(text, /^ {2}ec: +ecdsa-p256 sha256:[0-9a-f]{64}$/m);
  assert.match(text, /^warning: The default policy is allow/m);
  assert.ok(text.endsWith('\n'));
});
