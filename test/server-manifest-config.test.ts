import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../src/client/index.ts';
import { readCaFile } from '../src/cli/output.ts';
import { freePort, runCli, spawnCli, waitForExit, type CliResult } from './helpers/cli.ts';
import { eventually, tempDir } from './helpers/mesh.ts';

const CLI_TIMEOUT_MS = 30_000;

function describeResult(result: CliResult): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

describe('local configuration guard', () => {
  const dir = tempDir('sealmesh-config-test-');

  after(() => dir.remove());

  /** Writes a configuration file into the test directory and returns its path. */
  function configFile(name: string, text: string): string {
    const path = join(dir.path, name);
    writeFileSync(path, text);
    return path;
  }

  test('server rejects a default policy in the file', async () => {
    const file = configFile('policy.yaml', `data_dir: ${join(dir.path, 'policy-data')}\ndefault_policy: allow\n`);
    const result = await runCli(['server', '--config', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_SECURITY_SETTING/);
    assert.ok(result.stderr.includes(file), `the message does not name ${file}`);
    assert.match(result.stderr, /"default_policy"/);
    assert.equal(existsSync(join(dir.path, 'policy-data')), false, 'the server created its data directory before rejecting the file');
  });

  test('server rejects disabling ACLs in the file', async () => {
    const file = configFile('acl.yaml', `data_dir: ${join(dir.path, 'acl-data')}\nacl:\n  enabled: false\n`);
    const result = await runCli(['server', '--config', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_SECURITY_SETTING/);
    assert.ok(result.stderr.includes(file), `the message does not name ${file}`);
    assert.match(result.stderr, /"acl"/);
  });

  test('server rejects an unknown key', async () => {
    const file = configFile('unknown.json', JSON.stringify({ data_dir: join(dir.path, 'unknown-data'), data_dri: 'x' }));
    const result = await runCli(['server', '--config', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_UNKNOWN_KEY/);
    assert.ok(result.stderr.includes(file), `the message does not name ${file}`);
    assert.match(result.stderr, /"data_dri"/);
  });

  test('proxy rejects a security setting in the file', async () => {
    const file = configFile('proxy.yaml', 'service: web\nlisten: 127.0.0.1:0\napp: 127.0.0.1:9\ntls:\n  min_version: TLSv1.2\n');
    const result = await runCli(['proxy', '--config', file, '--join-token', 'x', '--ca-file', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_SECURITY_SETTING/);
    assert.ok(result.stderr.includes(file), `the message does not name ${file}`);
    assert.match(result.stderr, /"tls"/);
  });

  test('server rejects SEALMESH_DEFAULT_POLICY', async () => {
    const result = await runCli(['server', '--data-dir', join(dir.path, 'env-data')], {
      env: { SEALMESH_DEFAULT_POLICY: 'allow' },
      timeoutMs: CLI_TIMEOUT_MS,
    });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_SECURITY_SETTING/);
    assert.match(result.stderr, /SEALMESH_DEFAULT_POLICY/);
  });

  test('proxy rejects an unknown SEALMESH_ variable', async () => {
    const result = await runCli(['proxy', '--service', 'web', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9'], {
      env: { SEALMESH_ADRR: 'https://127.0.0.1:1' },
      timeoutMs: CLI_TIMEOUT_MS,
    });
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_UNKNOWN_KEY/);
    assert.match(result.stderr, /SEALMESH_ADRR \(did you mean SEALMESH_ADDR\?\)/);
  });

  test('server takes the file and lets flags override it', async () => {
    const dataDir = join(dir.path, 'started-data');
    const filePort = await freePort();
    const flagPort = await freePort();
    const file = configFile('server.yaml', `data_dir: ${dataDir}\naddr: 127.0.0.1:${filePort}\nlog_level: warn\n`);
    const server = spawnCli(['server', '--config', file, '--addr', `127.0.0.1:${flagPort}`]);
    try {
      const bundle = join(dataDir, 'trust-bundle.pem');
      const exited = (): boolean => server.child.exitCode !== null || server.child.signalCode !== null;
      await eventually(
        () => {
          if (exited()) throw new Error(`the server exited\nstderr: ${server.stderr()}`);
          return existsSync(bundle);
        },
        CLI_TIMEOUT_MS,
        bundle,
      );
      const client = new ApiClient({ url: `https://127.0.0.1:${flagPort}`, ca: readCaFile(bundle), timeoutMs: 2_000 });
      await eventually(
        () =>
          client.get('/v1/status').then(
            () => true,
            () => false,
          ),
        CLI_TIMEOUT_MS,
        'GET /v1/status on the port of --addr',
      );
    } finally {
      server.child.kill('SIGTERM');
      await waitForExit(server.child, CLI_TIMEOUT_MS);
    }
  });
});
