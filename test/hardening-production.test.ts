import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { coreFileSoftLimit, productionViolations, type ProcessFacts } from '../src/hardening/index.ts';
import type { ErrorCode } from '../src/errors/index.ts';
import { tempDir } from './helpers/mesh.ts';
import { runSealmesh } from './helpers/process-mesh.ts';

const LIMITS_CORE_OFF = [
  'Limit                     Soft Limit           Hard Limit           Units     ',
  'Max cpu time              unlimited            unlimited            seconds   ',
  'Max core file size        0                    unlimited            bytes     ',
].join('\n');
const LIMITS_CORE_ON = LIMITS_CORE_OFF.replace(/(Max core file size +)0 {3}/, '$1unlimited');

const CLEAN: ProcessFacts = { execArgv: [], nodeOptions: undefined, inspectorUrl: undefined, limits: LIMITS_CORE_OFF, permissionModel: true };

function codes(facts: Partial<ProcessFacts>): ErrorCode[] {
  return productionViolations({ ...CLEAN, ...facts }).map((violation) => violation.code);
}

describe('production mode checks', () => {
  test('clean process passes', () => {
    assert.deepEqual(codes({}), []);
  });

  test('harmless flags pass', () => {
    const execArgv = ['--permission', '--allow-fs-read=/srv/sealmesh', '--disable-sigusr1', '--max-old-space-size=512', '--enable-source-maps'];
    assert.deepEqual(codes({ execArgv }), []);
  });

  const rejected: Array<[string, Partial<ProcessFacts>, ErrorCode]> = [
    ['--inspect', { execArgv: ['--inspect'] }, 'SEALMESH_ERR_PRODUCTION_INSPECTOR'],
    ['--inspect-brk with a port', { execArgv: ['--inspect-brk=0'] }, 'SEALMESH_ERR_PRODUCTION_INSPECTOR'],
    ['--inspect-port in NODE_OPTIONS', { nodeOptions: '--max-old-space-size=64 --inspect-port=0' }, 'SEALMESH_ERR_PRODUCTION_INSPECTOR'],
    ['an active inspector', { inspectorUrl: 'ws://127.0.0.1:9229/id' }, 'SEALMESH_ERR_PRODUCTION_INSPECTOR'],
    ['--expose-gc', { execArgv: ['--expose-gc'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--expose_gc in V8 spelling', { execArgv: ['--expose_gc'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--allow-natives-syntax', { execArgv: ['--allow-natives-syntax'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--expose-internals', { execArgv: ['--expose-internals'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--heapsnapshot-signal', { execArgv: ['--heapsnapshot-signal=SIGUSR2'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--heapsnapshot-near-heap-limit', { execArgv: ['--heapsnapshot-near-heap-limit=1'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--heap-prof', { execArgv: ['--heap-prof'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--cpu-prof-dir', { execArgv: ['--cpu-prof-dir=/tmp'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--prof', { execArgv: ['--prof'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--trace-gc', { execArgv: ['--trace-gc'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--trace-event-categories in NODE_OPTIONS', { nodeOptions: '--trace-event-categories=v8' }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--diagnostic-dir', { execArgv: ['--diagnostic-dir=/tmp'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--report-on-signal', { execArgv: ['--report-on-signal'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--report-uncaught-exception', { execArgv: ['--report-uncaught-exception'] }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['--report-on-fatalerror in NODE_OPTIONS', { nodeOptions: '--report-on-fatalerror' }, 'SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG'],
    ['core dumps on', { limits: LIMITS_CORE_ON }, 'SEALMESH_ERR_PRODUCTION_CORE_DUMPS'],
    ['unreadable limits', { limits: undefined }, 'SEALMESH_ERR_PRODUCTION_CORE_DUMPS'],
    ['no permission model', { permissionModel: false }, 'SEALMESH_ERR_PRODUCTION_SANDBOX_REQUIRED'],
  ];
  for (const [name, facts, code] of rejected) {
    test(`rejects ${name}`, () => {
      assert.deepEqual(codes(facts), [code]);
    });
  }

  test('reads the core file soft limit', () => {
    assert.equal(coreFileSoftLimit(LIMITS_CORE_OFF), '0');
    assert.equal(coreFileSoftLimit(LIMITS_CORE_ON), 'unlimited');
    assert.equal(coreFileSoftLimit('Max cpu time  unlimited  unlimited  seconds'), undefined);
  });
});

/** Returns the hard core file size limit of this process, above which no child can raise its soft limit. */
function hardCoreLimit(): string | undefined {
  const row = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((line) => line.startsWith('Max core file size'));
  return row?.slice('Max core file size'.length).trim().split(/\s+/)[1];
}

describe('production mode in child processes', () => {
  const EXIT_FAILURE = 1;

  /** Starts a production server in a fresh directory and returns its result and whether a key file was made. */
  async function startProductionServer(args: string[], options: Parameters<typeof runSealmesh>[1] = {}) {
    const dir = tempDir('sealmesh-production-');
    try {
      const dataDir = join(dir.path, 'data');
      const result = await runSealmesh(['server', '--data-dir', dataDir, '--addr', '127.0.0.1:0', '--mode', 'production', ...args], options);
      return { ...result, keyFileCreated: existsSync(`${dataDir}.seal-key`) };
    } finally {
      dir.remove();
    }
  }

  test('server without sandbox is rejected', async () => {
    const result = await startProductionServer([]);
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_SANDBOX_REQUIRED/);
    assert.equal(result.keyFileCreated, false, 'the check runs before the key file is created');
  });

  test('server with --inspect is rejected', async () => {
    const result = await startProductionServer(['--sandbox'], { nodeArgs: ['--inspect=127.0.0.1:0'] });
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_INSPECTOR/);
    assert.equal(result.keyFileCreated, false);
  });

  test('server with --expose-gc is rejected', async () => {
    const result = await startProductionServer(['--sandbox'], { nodeArgs: ['--expose-gc'] });
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG/);
  });

  test('server with a heap snapshot signal in NODE_OPTIONS is rejected', async () => {
    const result = await startProductionServer(['--sandbox'], { env: { NODE_OPTIONS: '--heapsnapshot-signal=SIGUSR2' } });
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG/);
    assert.match(result.stderr, /--heapsnapshot-signal in NODE_OPTIONS/);
  });

  test('server with core dumps on is rejected', async (t) => {
    if (hardCoreLimit() === '0') {
      t.skip('the hard core file size limit is 0, so no child can turn core dumps on');
      return;
    }
    const result = await startProductionServer(['--sandbox'], { coreLimit: 'unlimited' });
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_CORE_DUMPS/);
    assert.equal(result.keyFileCreated, false);
  });

  test('proxy with --join-token is rejected', async () => {
    const result = await runSealmesh([
      'proxy', '--service', 'api', '--join-token', 'smt_a-token-on-the-command-line', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9',
      '--addr', '127.0.0.1:9', '--ca-file', '/nonexistent/bundle.pem', '--mode', 'production', '--sandbox',
    ]);
    assert.equal(result.code, EXIT_FAILURE, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_PRODUCTION_SECRET_IN_ARGV/);
    assert.doesNotMatch(result.stderr, /smt_a-token-on-the-command-line/, 'the message does not repeat the token');
  });
});
