import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { join } from 'node:path';
import { isSealmeshError } from '../src/errors/index.ts';
import { parseUpstream, type SidecarProxy } from '../src/proxy/index.ts';
import { allow, startProxy, startServer, tempDir, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';
import { connectAsUser, createTestUser, removeTestUser, type TestUser } from './helpers/perimeter.ts';

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

function makeDir(path: string, mode: number): string {
  mkdirSync(path);
  chmodSync(path, mode);
  return path;
}

describe('proxy on Unix sockets', () => {
  const root = tempDir('sealmesh-unix-');
  const serverDir = tempDir();
  let mesh: TestServer;
  let web: SidecarProxy;
  let api: SidecarProxy;
  let app: Server;
  /** A user whose primary group is the socket group, so it may connect. */
  let member: TestUser;
  /** A user outside the socket group. */
  let other: TestUser;
  let upstreamPath: string;
  let adminPath: string;

  before(async () => {
    member = createTestUser();
    other = createTestUser();
    // The test root must be traversable by the test users, so that a refused connect comes from the
    // socket's own mode and not from a directory on the way.
    chmodSync(root.path, 0o755);
    const webDir = makeDir(join(root.path, 'web'), 0o750);
    chownSync(webDir, 0, member.gid);
    const appDir = makeDir(join(root.path, 'app'), 0o700);
    upstreamPath = join(webDir, 'api.sock');
    adminPath = join(webDir, 'admin.sock');

    app = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ app: 'api', path: req.url }));
    });
    const appPath = join(appDir, 'app.sock');
    await new Promise<void>((resolve) => app.listen(appPath, resolve));

    mesh = await startServer({ dataDir: serverDir.path });
    api = await startProxy(mesh, 'api', 0, [], { app: { path: appPath } });
    web = await startProxy(mesh, 'web', 1, [], {
      upstreams: [parseUpstream(`api=unix:${upstreamPath}`)],
      admin: { path: adminPath },
      socketPermissions: { mode: 0o660, gid: member.gid },
    });
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => (app?.listening ? app.close(() => resolve()) : resolve()));
    await mesh?.stop();
    root.remove();
    serverDir.remove();
    removeTestUser(member);
    removeTestUser(other);
  });

  test('request crosses the mesh over Unix sockets', async () => {
    const response = await unixGet(upstreamPath, '/orders');
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { app: 'api', path: '/orders' });
  });

  test('upstream address reports the socket path', () => {
    assert.deepEqual(web.upstreamAddress('api'), { path: upstreamPath });
    assert.equal(web.upstreamPort('api'), undefined);
  });

  test('upstream socket has the configured mode and group', () => {
    const stats = lstatSync(upstreamPath);
    assert.ok(stats.isSocket());
    assert.equal(stats.mode & 0o7777, 0o660);
    assert.equal(stats.gid, member.gid);
    assert.equal(stats.uid, process.geteuid?.());
  });

  test('user outside the socket group refused', async () => {
    assert.equal(await connectAsUser(other, upstreamPath), 'EACCES');
  });

  test('user in the socket group connects', async () => {
    assert.equal(await connectAsUser(member, upstreamPath), 'connected');
  });

  test('admin endpoint served on its socket', async () => {
    const response = await unixGet(adminPath, '/ready');
    assert.equal(response.status, 200);
    assert.equal(lstatSync(adminPath).mode & 0o7777, 0o660);
    assert.equal(await connectAsUser(other, adminPath), 'EACCES');
  });

  test('refused socket path stops start before enrolling', async () => {
    const open = makeDir(join(root.path, 'open'), 0o777);
    await assert.rejects(
      startProxy(mesh, 'refused', 1, [], { upstreams: [parseUpstream(`api=unix:${join(open, 'api.sock')}`)] }),
      (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE'),
    );
    const { tokens } = await mesh.operator.get<{ tokens: Array<{ service?: string; usedAt?: string }> }>('/v1/acl/tokens');
    const refused = tokens.filter((record) => record.service === 'refused');
    assert.equal(refused.length, 1, 'startProxy created one join token');
    assert.equal(refused[0]?.usedAt, undefined, 'the join token is still unused');
  });

  test('stop removes the sockets', async () => {
    await web.stop();
    assert.equal(existsSync(upstreamPath), false);
    assert.equal(existsSync(adminPath), false);
  });
});
