import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { choiceListSetting, integerListSetting, integerSetting } from '../bench/settings.ts';
import { isSealmeshError } from '../src/errors/index.ts';
import { cliEnv } from './helpers/cli.ts';

const run = promisify(execFile);
const BENCH = fileURLToPath(new URL('../bench/run.ts', import.meta.url));

interface BenchResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `npm run bench -- ARGS` with only the SEALMESH_* variables in `env`, in the directory `cwd`,
 * under which the results go to bench/results.
 */
async function runBench(args: string[], env: Record<string, string>, cwd = tmpdir()): Promise<BenchResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BENCH, ...args], { cwd, env: cliEnv(env), timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Sets one environment variable for the duration of `body`. */
function withVariable<T>(name: string, value: string | undefined, body: () => T): T {
  const previous = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return body();
  } finally {
    if (previous === undefined) delete process.env[name];
    else process.env[name] = previous;
  }
}

function assertInvalid(body: () => unknown, name: string): void {
  assert.throws(body, (error: unknown) => {
    assert.ok(isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'), String(error));
    assert.match(error.message, new RegExp(`^${name}=`));
    return true;
  });
}

test('integer setting default and value', () => {
  const name = 'SEALMESH_BENCH_TEST_COUNT';
  assert.equal(withVariable(name, undefined, () => integerSetting(name, 5)), 5);
  assert.equal(withVariable(name, '', () => integerSetting(name, 5)), 5);
  assert.equal(withVariable(name, ' 12 ', () => integerSetting(name, 5)), 12);
  assert.equal(withVariable(name, '0', () => integerSetting(name, 5, 0)), 0);
});

test('integer setting rejects bad values', () => {
  const name = 'SEALMESH_BENCH_TEST_COUNT';
  for (const value of ['abc', '0', '-3', '2.5', '1e3', '12abc', '99999999999999999999']) {
    assertInvalid(() => withVariable(name, value, () => integerSetting(name, 5)), name);
  }
});

test('integer list setting', () => {
  const name = 'SEALMESH_BENCH_TEST_LIST';
  assert.deepEqual(withVariable(name, undefined, () => integerListSetting(name, [1000, 5000])), [1000, 5000]);
  assert.deepEqual(withVariable(name, '200, 300', () => integerListSetting(name, [1000])), [200, 300]);
  for (const value of ['200,', '200,abc', ',200', '0']) {
    assertInvalid(() => withVariable(name, value, () => integerListSetting(name, [1000])), name);
  }
});

test('choice list setting', () => {
  const name = 'SEALMESH_BENCH_TEST_CHOICES';
  const choices = ['latency', 'saturation'] as const;
  assert.equal(withVariable(name, undefined, () => choiceListSetting(name, choices)), undefined);
  assert.deepEqual(withVariable(name, 'saturation,latency', () => choiceListSetting(name, choices)), ['saturation', 'latency']);
  assertInvalid(() => withVariable(name, 'saturaton', () => choiceListSetting(name, choices)), name);
});

test('bench run rejects a bad setting', async () => {
  const result = await runBench(['store'], { SEALMESH_BENCH_ROUNDS: 'abc' });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /SEALMESH_BENCH_ROUNDS="abc" is invalid/);
  assert.match(result.stderr, /\(SEALMESH_ERR_CONFIG_INVALID\)/);
  assert.doesNotMatch(result.stderr, /store round/, 'no round ran');
  assert.equal(result.stdout, '', 'no report was written');
});

test('bench run rejects an unknown name', async () => {
  const result = await runBench(['stor'], {});
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /unknown benchmark stor; known: store, signing, datapath, controlplane \(SEALMESH_ERR_CONFIG_INVALID\)/);
});

test('bench run names missing tools first', async () => {
  // A PATH with sh alone, so that wrk, h2load, haproxy and nginx are all missing.
  const bin = mkdtempSync(join(tmpdir(), 'sealmesh-bench-path-'));
  try {
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const result = await runBench(['store', 'datapath'], { PATH: bin, SEALMESH_BENCH_ROUNDS: '1', SEALMESH_BENCH_WRITES: '10', SEALMESH_BENCH_READS: '10' });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /`apt-get install -y wrk nghttp2-client haproxy nginx( libnginx-mod-stream)?`/);
    assert.match(result.stderr, /\(SEALMESH_ERR_BENCH_TOOL_MISSING\)/);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
    assert.doesNotMatch(result.stderr, /store round/, 'the store benchmark did not start before the check');
    assert.equal(result.stdout, '', 'no report was written');
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('bench run names missing SoftHSM2', async () => {
  const bin = mkdtempSync(join(tmpdir(), 'sealmesh-bench-path-'));
  try {
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const result = await runBench(['signing'], { PATH: bin });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /`apt-get install -y softhsm2` \(SEALMESH_ERR_BENCH_TOOL_MISSING\)/);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(result.stdout, '', 'no report was written');
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('bench run keeps finished results', async () => {
  // The control-plane server cannot start with an unknown Node.js option, so that benchmark fails
  // after the store benchmark has finished.
  const cwd = mkdtempSync(join(tmpdir(), 'sealmesh-bench-cwd-'));
  try {
    const result = await runBench(['store', 'controlplane'], { SEALMESH_BENCH_ROUNDS: '1', SEALMESH_BENCH_WRITES: '20', SEALMESH_BENCH_READS: '20', SEALMESH_BENCH_SERVER_ARGS: '--no-such-option' }, cwd);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /control plane exited/);
    const files = readdirSync(join(cwd, 'bench', 'results'));
    assert.equal(files.length, 1, 'one result file');
    const report = JSON.parse(readFileSync(join(cwd, 'bench', 'results', files[0] ?? ''), 'utf8')) as Record<string, unknown>;
    assert.ok('store' in report, 'the store results were kept');
    assert.ok(!('controlplane' in report));
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
