import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers/cli.ts';

test('proxy admin on a wildcard address is a usage error', async () => {
  const result = await runCli(
    ['proxy', '--service', 'api', '--join-token', 'smt_unused', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:1', '--admin', '0.0.0.0:0', '--ca-file', '/nonexistent'],
  );
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
  assert.match(result.stderr, /--admin 0\.0\.0\.0:0 is not a loopback address/);
});
