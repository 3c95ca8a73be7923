import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from './helpers/cli.ts';
import { tempDir } from './helpers/mesh.ts';
import { createSoftHsmToken, softHsmSkipReason, type SoftHsmToken } from './helpers/softhsm.ts';

const skip = softHsmSkipReason();
const dir = tempDir('sealmesh-manifest-hsm-');
let token: SoftHsmToken | undefined;

before(() => {
  if (skip === undefined) token = createSoftHsmToken({ label: 'operators' });
});

after(() => {
  token?.remove();
  dir.remove();
});

test('operator key in a PKCS#11 token signs a manifest', { skip }, async () => {
  const hsm = token!;
  const env = { SEALMESH_PKCS11_PIN: hsm.pin };
  const out = join(dir.path, 'alice');
  const keygen = await runCli(['manifest', 'keygen', '--out', out, '--pkcs11-module', hsm.module, '--pkcs11-token', hsm.tokenLabel, '--pkcs11-key-label', 'alice', '--json'], { env });
  assert.equal(keygen.code, 0, keygen.stderr);
  assert.equal(existsSync(out), false, 'no private key file is written');
  assert.equal(existsSync(`${out}.pub`), true);

  const manifest = join(dir.path, 'manifest.yaml');
  const init = await runCli(['manifest', 'init', '--operator-key', `${out}.pub`, '--threshold', '1', '--trust-domain', 'hsm-test.sealmesh', '--out', manifest]);
  assert.equal(init.code, 0, init.stderr);

  const sign = await runCli(['manifest', 'sign', manifest, '--pkcs11-module', hsm.module, '--pkcs11-token', hsm.tokenLabel, '--pkcs11-key-label', 'alice', '--json'], { env });
  assert.equal(sign.code, 0, sign.stderr);
  assert.equal(JSON.parse(sign.stdout).signatures, 1);

  const verify = await runCli(['manifest', 'verify', manifest, '--json']);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).ok, true);
});

test('PKCS#11 signing without a PIN is a usage error', { skip }, async () => {
  const hsm = token!;
  const result = await runCli(['manifest', 'sign', join(dir.path, 'manifest.yaml'), '--pkcs11-module', hsm.module, '--pkcs11-token', hsm.tokenLabel, '--pkcs11-key-label', 'alice']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
});
