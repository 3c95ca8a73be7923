import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import type * as Pkcs11Types from 'pkcs11js';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import {
  FileManifestSigner,
  Pkcs11ManifestSigner,
  acceptManifest,
  generateOperatorKey,
  initManifest,
  manifestSigningInput,
  requireOperatorPublicKey,
  signManifest,
  verifyOperatorSignature,
} from '../src/manifest/index.ts';
import { fileToken, softHsmSkipReason } from './helpers/softhsm.ts';

const skip = softHsmSkipReason();

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

const sharedToken = fileToken('manifest-signer');

test('PKCS#11 signer signs a manifest that verifies', { skip }, async () => {
  const hsm = sharedToken();
  const signer = Pkcs11ManifestSigner.generate({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'operator-1', keyId: 'hsm-operator' });
  try {
    const fileSigner = FileManifestSigner.fromPem(generateOperatorKey('ed25519').privateKeyPem, { keyId: 'file-operator' });
    const draft = initManifest({
      trustDomain: 'hsm.sealmesh',
      operatorKeys: [
        { id: signer.keyId, publicKeyPem: signer.publicKeyPem },
        { id: fileSigner.keyId, publicKeyPem: fileSigner.publicKeyPem },
      ],
      threshold: 2,
    });

    const signed = await signManifest(await signManifest(draft, signer), fileSigner);
    const accepted = acceptManifest(signed, undefined);

    assert.equal(signer.algorithm, 'ecdsa-p256');
    assert.deepEqual(accepted.approvedBy, ['file-operator', 'hsm-operator']);
    const entry = signed.signatures.find((signature) => signature.keyId === 'hsm-operator');
    assert.equal(entry?.algorithm, 'ecdsa-p256');
    const publicKey = requireOperatorPublicKey(signer.publicKeyPem, 'ecdsa-p256', 'HSM public key');
    assert.ok(verifyOperatorSignature('ecdsa-p256', publicKey, manifestSigningInput(signed.manifest), Buffer.from(entry?.signature ?? '', 'base64')));
  } finally {
    signer.close();
  }
});

test('PKCS#11 signer reopens its key by label', { skip }, async () => {
  const hsm = sharedToken();
  const options = { module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'operator-2' };
  const generated = Pkcs11ManifestSigner.generate(options);
  const publicKeyPem = generated.publicKeyPem;
  generated.close();

  const reopened = Pkcs11ManifestSigner.open(options);
  try {
    assert.equal(reopened.publicKeyPem, publicKeyPem);
    const payload = new TextEncoder().encode('payload');
    const signature = await reopened.sign(payload);
    assert.equal(signature.length, 64);
    assert.ok(verifyOperatorSignature('ecdsa-p256', requireOperatorPublicKey(publicKeyPem, 'ecdsa-p256', 'HSM public key'), payload, signature));
  } finally {
    reopened.close();
  }
});

test('PKCS#11 private key is not extractable', { skip }, () => {
  const hsm = sharedToken();
  const signer = Pkcs11ManifestSigner.generate({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'operator-3' });
  signer.close();

  // Inspect the key with a second, independent look at the token's attributes.
  const pkcs11 = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
  const library = new pkcs11.PKCS11();
  library.load(hsm.module);
  library.C_Initialize();
  try {
    const slot = library.C_GetSlotList(true).find((candidate) => library.C_GetTokenInfo(candidate).label.trimEnd() === hsm.tokenLabel);
    assert.ok(slot !== undefined);
    const session = library.C_OpenSession(slot, pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION);
    library.C_Login(session, pkcs11.CKU_USER, hsm.pin);
    library.C_FindObjectsInit(session, [
      { type: pkcs11.CKA_CLASS, value: pkcs11.CKO_PRIVATE_KEY },
      { type: pkcs11.CKA_LABEL, value: 'operator-3' },
    ]);
    const [privateKey] = library.C_FindObjects(session, 2);
    library.C_FindObjectsFinal(session);
    assert.ok(privateKey !== undefined);

    const attributes = library.C_GetAttributeValue(session, privateKey, [{ type: pkcs11.CKA_EXTRACTABLE }, { type: pkcs11.CKA_SENSITIVE }]);
    assert.equal(attributes[0]?.value[0], 0, 'CKA_EXTRACTABLE is false');
    assert.equal(attributes[1]?.value[0], 1, 'CKA_SENSITIVE is true');
    assert.throws(() => library.C_GetAttributeValue(session, privateKey, [{ type: pkcs11.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/);
    library.C_CloseSession(session);
  } finally {
    library.C_Finalize();
    library.close();
  }
});

test('PKCS#11 signer rejects a taken key label', { skip }, () => {
  const hsm = sharedToken();
  const options = { module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'operator-4' };
  Pkcs11ManifestSigner.generate(options).close();

  assert.throws(() => Pkcs11ManifestSigner.generate(options), hasCode('SEALMESH_ERR_CONFLICT'));
});

test('PKCS#11 signer reports a missing key', { skip }, () => {
  const hsm = sharedToken();

  assert.throws(
    () => Pkcs11ManifestSigner.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'absent' }),
    hasCode('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID'),
  );
});

test('PKCS#11 signer reports a wrong PIN', { skip }, () => {
  const hsm = sharedToken();

  assert.throws(
    () => Pkcs11ManifestSigner.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: '0000', keyLabel: 'operator-2' }),
    hasCode('SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED'),
  );
});
