import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync } from 'node:fs';
import { checkedProxyGrant } from '../src/cli/hardening-flags.ts';
import { isSealmeshError } from '../src/errors/index.ts';
import { request } from 'node:http';
import { join } from 'node:path';
import type { CliProcess } from './helpers/cli.ts';
import { eventually, startHttpApp, tempDir } from './helpers/mesh.ts';
import { createJoinToken, startProxyProcess, startServerProcess, stopProcesses, type ServerProcess } from './helpers/process-mesh.ts';

/** GETs a path over a Unix socket and returns status and body. */
function unixGet(socketPath: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, agent: false, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('sandboxed proxy on Unix sockets', () => {
  const dir = tempDir('sealmesh-sandbox-unix-');
  const processes: CliProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  let server: ServerProcess;
  let upstreamPath = '';

  before(async () => {
    server = await startServerProcess(dir.path);
    processes.push(server.running);
    const app = await startHttpApp('api');
    closers.push(app.close);
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    const api = await startProxyProcess(server, 'api', await createJoinToken(server, 'api'), ['--app', `127.0.0.1:${app.port}`]);
    processes.push(api.running);

    const socketDir = join(dir.path, 'web-sockets');
    mkdirSync(socketDir);
    chmodSync(socketDir, 0o700);
    upstreamPath = join(socketDir, 'api.sock');
    const web = await startProxyProcess(server, 'web', await createJoinToken(server, 'web'), ['--app', '127.0.0.1:9', '--upstream', `api=unix:${upstreamPath}`, '--sandbox']);
    processes.push(web.running);
  });

  after(async () => {
    await stopProcesses(processes);
    for (const close of closers) await close();
    dir.remove();
  });

  test('upstream socket carries traffic', async () => {
    await eventually(
      async () => (await unixGet(upstreamPath, '/sandboxed-unix').catch(() => ({ status: 0 }))).status === 200,
      30_000,
      'a request through the sandboxed proxy\'s Unix socket',
    );
    const response = await unixGet(upstreamPath, '/sandboxed-unix');
    assert.equal(response.status, 200);
    assert.equal(JSON.parse(response.body).app, 'api');
  });
});

describe('sandbox launcher socket check', () => {
  const HARDENING_DEFAULTS = { mode: 'development' as const, sandboxAllowRead: [], sandboxAllowWrite: [] };

  test('open ancestor is rejected', async () => {
    const dir = tempDir('sealmesh-sandbox-ancestor-');
    try {
      // Any user may rename entries of a directory with mode 0777 and no sticky bit, so the socket
      // directory below it could be swapped after the check.
      const open = join(dir.path, 'open');
      mkdirSync(open);
      chmodSync(open, 0o777);
      const socketDir = join(open, 'sockets');
      mkdirSync(socketDir);
      chmodSync(socketDir, 0o700);
      await assert.rejects(checkedProxyGrant({ ...HARDENING_DEFAULTS, upstream: [`api=unix:${join(socketDir, 'api.sock')}`] }, {}), (error: unknown) => {
        assert.ok(isSealmeshError(error), String(error));
        assert.equal(error.code, 'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE');
        assert.match(error.message, /above the socket/);
        return true;
      });
    } finally {
      dir.remove();
    }
  });

  test('private ancestors pass', async () => {
    const dir = tempDir('sealmesh-sandbox-ancestor-');
    try {
      const socketDir = join(dir.path, 'sockets');
      mkdirSync(socketDir);
      chmodSync(socketDir, 0o700);
      const grant = await checkedProxyGrant({ ...HARDENING_DEFAULTS, upstream: [`api=unix:${join(socketDir, 'api.sock')}`] }, {});
      assert.ok(grant.read.includes(socketDir));
    } finally {
      dir.remove();
    }
  });
});
