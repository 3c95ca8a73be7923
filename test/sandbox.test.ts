import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CODE_ROOT, coveringPaths, permissionFlags } from '../src/hardening/index.ts';
import { proxyGrant } from '../src/cli/hardening-flags.ts';
import { serverGrant } from '../src/cli/server-grant.ts';
import { freePort, type CliProcess } from './helpers/cli.ts';
import { eventually, httpGet, startHttpApp, tempDir } from './helpers/mesh.ts';
import { createJoinToken, runSealmesh, SERVER_READY_TIMEOUT_MS, spawnSealmesh, startProxyProcess, startServerProcess, stopProcesses, type ServerProcess } from './helpers/process-mesh.ts';

const HARDENING_DEFAULTS = { mode: 'development' as const, sandboxAllowRead: [], sandboxAllowWrite: [] };
const SEAL_DEFAULTS = { seal: 'keyfile' as const, pkcs11KeyLabel: 'sealmesh-kek', counterLabel: 'sealmesh-counter' };

describe('sandbox grants', () => {
  test('parents come first and cover their children', () => {
    assert.deepEqual(coveringPaths(['/srv/a/b', '/srv/a', '/srv/c', '/srv/a/b/c']), ['/srv/a', '/srv/c']);
  });

  test('a name extended by another becomes a wildcard', () => {
    // Node.js denies /srv/a itself when /srv/a and /srv/ab are both granted, so one grant covers both.
    assert.deepEqual(coveringPaths(['/srv/a/b', '/srv/a', '/srv/c', '/srv/ab']), ['/srv/a*', '/srv/c']);
    assert.deepEqual(coveringPaths(['/srv/data.seal-key', '/srv/data']), ['/srv/data*']);
  });

  test('server grant has no child processes or addons', () => {
    const grant = serverGrant({ ...HARDENING_DEFAULTS, ...SEAL_DEFAULTS }, '/srv/sealmesh/data', {});
    const flags = permissionFlags(grant);
    assert.ok(flags.includes('--permission'));
    assert.ok(flags.includes('--disable-sigusr1'));
    assert.ok(flags.includes('--allow-fs-write=/srv/sealmesh'), 'before the key file exists, its directory is granted');
    assert.ok(flags.includes(`--allow-fs-read=${CODE_ROOT.replace(/\/$/, '')}`) || flags.includes(`--allow-fs-read=${CODE_ROOT}`));
    assert.ok(!flags.includes('--allow-child-process'));
    assert.ok(!flags.includes('--allow-addons'));
    assert.ok(!flags.some((flag) => flag === '--allow-fs-read=/' || flag === '--allow-fs-write=/'), 'the root directory is never granted');
  });

  test('existing key file narrows the grant', () => {
    const dir = tempDir('sealmesh-grant-');
    try {
      const dataDir = join(dir.path, 'data');
      writeFileSync(`${dataDir}.seal-key`, 'key\n', { mode: 0o600 });
      const write = permissionFlags(serverGrant({ ...HARDENING_DEFAULTS, ...SEAL_DEFAULTS }, dataDir, {})).filter((flag) => flag.startsWith('--allow-fs-write='));
      // One wildcard covers the data directory and the key file beside it; the parent stays out.
      assert.deepEqual(write, [`--allow-fs-write=${dataDir}*`]);
    } finally {
      dir.remove();
    }
  });

  test('PKCS#11 seal grants addons and the module', () => {
    const grant = serverGrant(
      { ...HARDENING_DEFAULTS, ...SEAL_DEFAULTS, seal: 'pkcs11', pkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', pkcs11Token: 'sealmesh' },
      '/srv/sealmesh/data',
      {},
    );
    assert.equal(grant.addons, true);
    assert.ok(grant.read.includes('/usr/lib/softhsm/libsofthsm2.so'));
    assert.equal(grant.childProcess, false);
  });

  test('proxy grant covers its Unix sockets', () => {
    const grant = proxyGrant({ ...HARDENING_DEFAULTS, upstream: ['db=unix:/run/app/db.sock'], admin: 'unix:/run/app/admin.sock', caFile: '/etc/sealmesh/ca.pem' }, {}, {});
    assert.ok(grant.write.includes('/run/app/db.sock'));
    assert.ok(grant.write.includes('/run/app/admin.sock'));
    assert.ok(grant.read.includes('/run/app'), 'the directory check reads the socket directory');
    assert.ok(grant.read.includes('/etc/sealmesh/ca.pem'));
    assert.equal(grant.childProcess, false);
  });

  test('socket owner by name grants child processes', () => {
    const grant = proxyGrant({ ...HARDENING_DEFAULTS, upstream: [], socketOwner: 'app' }, {}, {});
    assert.equal(grant.childProcess, true, 'getent resolves the name in a child process');
    assert.equal(proxyGrant({ ...HARDENING_DEFAULTS, upstream: [], socketOwner: '1000' }, {}, {}).childProcess, false);
  });

  test('--sandbox-print prints the command', async () => {
    const dir = tempDir('sealmesh-sandbox-print-');
    try {
      const dataDir = join(dir.path, 'data');
      const result = await runSealmesh(['server', '--data-dir', dataDir, '--sandbox-print']);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /--permission /);
      assert.ok(result.stdout.includes(`--allow-fs-write=${dir.path}`), result.stdout);
      assert.match(result.stdout, / server --data-dir /);
      assert.doesNotMatch(result.stdout, /--sandbox-print/);
    } finally {
      dir.remove();
    }
  });
});

/** Returns the command line of the first child of `pid`, the sandboxed process the launcher started. */
function childCommandLine(pid: number): string[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((entry) => entry !== '');
  const [child] = children;
  assert.ok(child !== undefined, `pid ${pid} has a child process`);
  return readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0');
}

describe('sandboxed production mesh', () => {
  const dir = tempDir('sealmesh-sandbox-');
  const processes: CliProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  const production = ['--sandbox', '--mode', 'production'];
  let server: ServerProcess;
  let upstreamPort = 0;

  before(async () => {
    server = await startServerProcess(dir.path, production);
    processes.push(server.running);
    const app = await startHttpApp('api');
    closers.push(app.close);
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    const api = await startProxyProcess(server, 'api', await createJoinToken(server, 'api'), ['--app', `127.0.0.1:${app.port}`, ...production]);
    processes.push(api.running);
    upstreamPort = await freePort();
    const web = await startProxyProcess(server, 'web', await createJoinToken(server, 'web'), ['--app', '127.0.0.1:9', '--upstream', `api=127.0.0.1:${upstreamPort}`, ...production]);
    processes.push(web.running);
  });

  after(async () => {
    await stopProcesses(processes);
    for (const close of closers) await close();
    dir.remove();
  });

  test('server runs under the permission model', () => {
    const pid = server.running.child.pid ?? 0;
    const command = childCommandLine(pid);
    assert.ok(command.includes('--permission'), command.join(' '));
    assert.ok(command.includes('--disable-sigusr1'));
    assert.ok(!command.includes('--allow-child-process'));
    assert.ok(!command.includes('--allow-addons'));
    assert.ok(!command.includes('--sandbox'), 'the child does not launch another sandbox');
  });

  test('allowed traffic passes', async () => {
    await eventually(
      async () => (await httpGet(upstreamPort, '/sandboxed').catch(() => ({ status: 0 }))).status === 200,
      30_000,
      'a request through the sandboxed mesh',
    );
    const response = await httpGet(upstreamPort, '/sandboxed');
    assert.equal(response.status, 200);
    assert.equal(JSON.parse(response.body).app, 'api');
  });

  test('denied traffic is refused', async () => {
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'deny', replace: true });
    await eventually(
      async () => {
        const response = await httpGet(upstreamPort, '/denied').catch(() => ({ status: 0 }));
        return response.status === 0;
      },
      15_000,
      'the deny intention to reach the api proxy',
    );
    await assert.rejects(httpGet(upstreamPort, '/denied'));
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', replace: true });
  });

  test('write outside the sandbox is denied', async () => {
    const outside = join(tempDir('sealmesh-outside-').path, 'new.seal-key');
    await assert.rejects(server.operator.post('/v1/operator/rotate-kek', { keyFile: outside }), (error: Error & { code?: string; status?: number }) => {
      assert.equal(error.code, 'SEALMESH_ERR_SANDBOX_DENIED');
      assert.match(error.message, /^the sandbox denied FileSystem(Read|Write) on \/.*new\.seal-key; /);
      return true;
    });
    await eventually(() => server.running.stderr().includes('SEALMESH_ERR_SANDBOX_DENIED'), 5_000, 'the server to log the denial');
    const metrics = await server.operator.get<string>('/v1/metrics');
    assert.match(metrics, /code="SEALMESH_ERR_SANDBOX_DENIED"/, 'the denial is counted');
  });

  test('snapshot works in the sandbox', async () => {
    const snapshot = await server.operator.get<string>('/v1/operator/snapshot');
    assert.ok(snapshot.length > 0, 'the snapshot is not empty');
  });

  test('server starts again on its data', async () => {
    // The data directory and the default key file beside it (data.seal-key) are both granted,
    // and the data directory already exists on this second start.
    await stopProcesses([server.running]);
    const again = spawnSealmesh(['server', '--data-dir', server.dataDir, '--addr', server.addr, '--log-level', 'info', ...production]);
    processes.push(again);
    await eventually(
      async () => {
        if (again.child.exitCode !== null) throw new Error(`the server exited with ${again.child.exitCode}\nstderr: ${again.stderr()}`);
        return server.client.get('/v1/status').then(
          () => true,
          () => false,
        );
      },
      SERVER_READY_TIMEOUT_MS,
      'the restarted server to answer GET /v1/status',
    );
    assert.doesNotMatch(again.stderr(), /SEALMESH_ERR_SANDBOX_DENIED/);
  });
});

describe('sandboxed first start', () => {
  const dir = tempDir('sealmesh-sandbox-first-');
  const processes: CliProcess[] = [];

  after(async () => {
    await stopProcesses(processes);
    dir.remove();
  });

  test('data directory with missing parents is created', async () => {
    // The sandbox grants the data directory but not its parents, so the launcher creates them.
    const server = await startServerProcess(join(dir.path, 'missing', 'parent'), ['--sandbox']);
    processes.push(server.running);
    assert.equal(statSync(server.dataDir).mode & 0o777, 0o700);
    assert.doesNotMatch(server.running.stderr(), /SEALMESH_ERR_SANDBOX_DENIED/);
  });
});
