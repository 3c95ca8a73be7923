import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { accessLogSettings } from '../src/cli/run.ts';
import { loadLocalConfig } from '../src/config/index.ts';
import { isSealmeshError } from '../src/errors/index.ts';
import { runCli } from './helpers/cli.ts';

function writeConfig(t: TestContext, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-access-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'proxy.yaml');
  writeFileSync(path, text);
  return path;
}

test('access log keys load', async (t) => {
  const path = writeConfig(t, 'access_log: true\naccess_log_sampling: 0.25\naccess_log_path: logs/access.jsonl\naccess_log_query: true\n');
  const config = await loadLocalConfig(path, 'proxy');
  assert.equal(config.accessLog, true);
  assert.equal(config.accessLogSampling, 0.25);
  assert.equal(config.accessLogPath, join(path, '..', 'logs', 'access.jsonl'));
  assert.equal(config.accessLogQuery, true);
});

test('bad access log values rejected', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['access_log: yes please\n', /"access_log".*not a boolean/],
    ['access_log_sampling: 1.5\n', /"access_log_sampling".*not a sampling rate/],
    ['access_log_sampling: -0.1\n', /"access_log_sampling".*not a sampling rate/],
    ['access_log_sampling: half\n', /"access_log_sampling".*not a sampling rate/],
    ['access_log_query: 1\n', /"access_log_query".*not a boolean/],
    ['access_log_path: ""\n', /"access_log_path".*non-empty string/],
  ];
  for (const [text, pattern] of cases) {
    await assert.rejects(
      loadLocalConfig(writeConfig(t, text), 'proxy'),
      (error: unknown) => isSealmeshError(error) && error.code === 'SEALMESH_ERR_CONFIG_INVALID' && pattern.test(error.message),
      text,
    );
  }
});

test('flags override access log file keys', () => {
  const file = { accessLog: true, accessLogSampling: 0.5, accessLogPath: join(tmpdir(), 'a.jsonl'), accessLogQuery: true };
  assert.deepEqual(accessLogSettings({}, file), { sampleRate: 0.5, includeQuery: true, path: join(tmpdir(), 'a.jsonl') });
  assert.deepEqual(accessLogSettings({ accessLogSampling: '0.1', accessLogQuery: false, accessLogPath: '/tmp/b.jsonl' }, file), { sampleRate: 0.1, includeQuery: false, path: '/tmp/b.jsonl' });
  assert.equal(accessLogSettings({ accessLog: false }, file), undefined);
  assert.equal(accessLogSettings({ accessLog: false, accessLogPath: '/nonexistent/dir/a.jsonl' }, {}), undefined);
  assert.equal(accessLogSettings({}, {}), undefined);
  assert.deepEqual(accessLogSettings({ accessLog: true }, {}), { sampleRate: 1, includeQuery: false });
});

test('bad sampling flag rejected', () => {
  for (const value of ['2', '-1', 'half', '0x1', '', '1e-1']) {
    assert.throws(
      () => accessLogSettings({ accessLog: true, accessLogSampling: value }, {}),
      (error: unknown) => isSealmeshError(error) && error.code === 'SEALMESH_ERR_CONFIG_INVALID' && /--access-log-sampling/.test(error.message),
      value,
    );
  }
});

test('unwritable access log path rejected', () => {
  assert.throws(
    () => accessLogSettings({ accessLog: true, accessLogPath: '/nonexistent/dir/a.jsonl' }, {}),
    (error: unknown) => isSealmeshError(error) && error.code === 'SEALMESH_ERR_CONFIG_INVALID' && /access log path \/nonexistent\/dir\/a\.jsonl cannot be written: ENOENT/.test(error.message),
  );
});

test('bad sampling flag exits 2', async () => {
  const result = await runCli(['proxy', '--service', 'api', '--join-token', 'smt_unused', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:1', '--ca-file', '/nonexistent', '--access-log', '--access-log-sampling', '1.5']);
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
  assert.match(result.stderr, /--access-log-sampling "1\.5" is not a sampling rate/);
});
