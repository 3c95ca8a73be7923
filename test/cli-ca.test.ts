import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CaStatus, RootPrune, RootRotation } from '../src/pki/index.ts';
import { runCli } from './helpers/cli.ts';
import { startServer, tempDir, type TestServer } from './helpers/mesh.ts';
import { issueTestSvid } from './helpers/svid.ts';

describe('operator ca commands', () => {
  let mesh: TestServer;
  const connection = (): string[] => ['--addr', mesh.url, '--ca-file', mesh.server.trustBundlePath, '--token', mesh.operatorToken];

  before(async () => {
    mesh = await startServer();
  });
  after(() => mesh.stop());

  test('ca status shows one signing root', async () => {
    const result = await runCli(['operator', 'ca', 'status', '--json', ...connection()]);

    assert.equal(result.code, 0, result.stderr);
    const status = JSON.parse(result.stdout) as CaStatus;
    assert.equal(status.custody, 'sealed');
    assert.equal(status.roots.length, 1);
    assert.equal(status.roots[0]?.state, 'signing');
    assert.equal(status.rotation, null);
  });

  test('ca rotate-root, status and prune', async () => {
    // An SVID under the current root keeps it in the bundle after the rotation.
    await issueTestSvid(mesh.server.ca, 'api');
    const rotated = await runCli(['operator', 'ca', 'rotate-root', '--json', ...connection()]);
    assert.equal(rotated.code, 0, rotated.stderr);
    const rotation = JSON.parse(rotated.stdout) as RootRotation;

    const status = await runCli(['operator', 'ca', 'status', ...connection()]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`Root: +${rotation.retiredRoot.serialNumber} retiring`));
    assert.match(status.stdout, new RegExp(`Root: +${rotation.root.serialNumber} signing`));

    const again = await runCli(['operator', 'ca', 'rotate-root', ...connection()]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /SEALMESH_ERR_CA_ROTATION_PENDING/);

    const prune = await runCli(['operator', 'ca', 'prune', '--json', ...connection()]);
    assert.equal(prune.code, 0, prune.stderr);
    const pruned = JSON.parse(prune.stdout) as RootPrune;
    assert.equal(pruned.pruned, false);
    assert.equal(pruned.prunableAfter, rotation.prunableAfter);
  });

  test('ca rotate-root needs an operator token', async () => {
    const result = await runCli(['operator', 'ca', 'rotate-root', '--addr', mesh.url, '--ca-file', mesh.server.trustBundlePath, '--token', 'not-a-token']);

    assert.equal(result.code, 1);
    assert.match(result.stderr, /SEALMESH_ERR_ACL_TOKEN_INVALID/);
  });
});

describe('server CA custody flags', () => {
  const dir = tempDir();
  after(() => dir.remove());

  test('pkcs11 custody without PIN fails', async () => {
    const result = await runCli([
      'server',
      '--data-dir',
      join(dir.path, 'data'),
      '--addr',
      '127.0.0.1:0',
      '--ca-custody',
      'pkcs11',
      '--ca-pkcs11-module',
      '/usr/lib/softhsm/libsofthsm2.so',
      '--ca-pkcs11-token-label',
      'ca',
    ]);

    assert.equal(result.code, 1);
    assert.match(result.stderr, /SEALMESH_ERR_CA_HSM_PIN_MISSING/);
  });

  test('pkcs11 flags without pkcs11 custody fail', async () => {
    const result = await runCli(['server', '--data-dir', join(dir.path, 'data'), '--addr', '127.0.0.1:0', '--ca-pkcs11-module', '/usr/lib/softhsm/libsofthsm2.so']);

    assert.equal(result.code, 2, 'a usage error');
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
  });
});
