import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { isSealmeshError } from '../src/errors/index.ts';
import { listenUnix, parseSocketMode, type SocketPermissions, type UnixSocketListener } from '../src/perimeter/index.ts';
import { parseSocketAddress } from '../src/proxy/index.ts';
import { tempDir } from './helpers/mesh.ts';
import { connectAsUser, createTestUser, removeTestUser, runChild, type TestUser } from './helpers/perimeter.ts';

/** A child that binds a socket and is killed at once, leaving the socket file with nobody listening. */
const KILLED_LISTENER = `require('node:net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))`;

/** Creates a directory with exactly `mode`, which mkdir alone cannot set past the umask. */
function makeDir(path: string, mode: number): string {
  mkdirSync(path);
  chmodSync(path, mode);
  return path;
}

describe('Unix socket permission checks', () => {
  const root = tempDir('sealmesh-sockperm-');
  let other: TestUser;
  const servers: Server[] = [];
  let counter = 0;

  before(() => {
    other = createTestUser();
  });

  after(async () => {
    for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
    root.remove();
    removeTestUser(other);
  });

  /** Creates a fresh directory below the test root with the given mode, owned by root. */
  function freshDir(mode: number): string {
    counter += 1;
    return makeDir(join(root.path, `d${counter}`), mode);
  }

  async function bind(path: string, permissions: SocketPermissions): Promise<UnixSocketListener> {
    const server = createServer();
    servers.push(server);
    return listenUnix(server, path, permissions);
  }

  /** Expects the bind to fail with `code` and a message that names `fragments`. */
  async function expectRejected(path: string, permissions: SocketPermissions, code: string, fragments: string[]): Promise<void> {
    await assert.rejects(bind(path, permissions), (error: unknown) => {
      assert.ok(isSealmeshError(error), String(error));
      assert.equal(error.code, code, error.message);
      for (const fragment of fragments) assert.ok(error.message.includes(fragment), `message names ${fragment}: ${error.message}`);
      return true;
    });
    assert.equal(existsSync(path), false, 'no socket file was created');
  }

  test('parent writable by others refused', async () => {
    const dir = freshDir(0o777);
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE', [dir, '0777', 'o+w']);
  });

  test('parent writable by others with sticky bit refused', async () => {
    const dir = freshDir(0o1777);
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE', [dir, '1777', 'o+w, sticky bit set']);
  });

  test('parent writable by another group refused', async () => {
    const dir = freshDir(0o770);
    chownSync(dir, 0, other.gid);
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_GROUP_WRITABLE', [dir, '0770', 'g+w', `gid ${other.gid}`]);
  });

  test('parent writable by the socket group accepted', async () => {
    const dir = freshDir(0o770);
    chownSync(dir, 0, other.gid);
    const listener = await bind(join(dir, 'api.sock'), { mode: 0o660, gid: other.gid });
    assert.equal(lstatSync(listener.path).gid, other.gid);
  });

  test('parent owned by another user refused', async () => {
    const dir = freshDir(0o755);
    chownSync(dir, other.uid, other.gid);
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_OWNER', [dir, `uid ${other.uid}`]);
  });

  test('directory above writable by others refused', async () => {
    const upper = freshDir(0o777);
    const dir = makeDir(join(upper, 'inner'), 0o755);
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE', [upper, 'above the socket']);
  });

  test('directory above with sticky bit accepted', async () => {
    const upper = freshDir(0o1777);
    const dir = makeDir(join(upper, 'inner'), 0o755);
    const listener = await bind(join(dir, 'api.sock'), { mode: 0o600 });
    assert.ok(lstatSync(listener.path).isSocket());
  });

  test('missing parent refused', async () => {
    const dir = join(root.path, 'absent');
    await expectRejected(join(dir, 'api.sock'), { mode: 0o600 }, 'SEALMESH_ERR_SOCKET_DIR_MISSING', [dir]);
  });

  test('socket mode 0666 refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await expectRejected(path, { mode: 0o666 }, 'SEALMESH_ERR_SOCKET_MODE_TOO_OPEN', [path, '0666', 'o+rw']);
  });

  test('socket mode 0606 refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await expectRejected(path, { mode: 0o606 }, 'SEALMESH_ERR_SOCKET_MODE_TOO_OPEN', [path, '0606', 'o+rw']);
  });

  test('socket mode 0602 refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await expectRejected(path, { mode: 0o602 }, 'SEALMESH_ERR_SOCKET_MODE_TOO_OPEN', [path, '0602', 'o+w']);
  });

  test('socket mode 0600 accepted', async () => {
    const listener = await bind(join(freshDir(0o755), 'api.sock'), { mode: 0o600 });
    const stats = lstatSync(listener.path);
    assert.ok(stats.isSocket());
    assert.equal(stats.mode & 0o7777, 0o600);
  });

  test('socket mode 0660 accepted', async () => {
    const listener = await bind(join(freshDir(0o755), 'api.sock'), { mode: 0o660 });
    assert.equal(lstatSync(listener.path).mode & 0o7777, 0o660);
  });

  test('socket owner and group applied', async () => {
    const listener = await bind(join(freshDir(0o755), 'api.sock'), { mode: 0o660, uid: other.uid, gid: other.gid });
    const stats = lstatSync(listener.path);
    assert.equal(stats.uid, other.uid);
    assert.equal(stats.gid, other.gid);
  });

  test('stale socket replaced', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await runChild(process.execPath, ['-e', KILLED_LISTENER, path]);
    assert.ok(lstatSync(path).isSocket(), 'the killed process left its socket');
    assert.equal(await connectAsUser({ uid: 0, gid: 0 }, path), 'ECONNREFUSED');

    const listener = await bind(path, { mode: 0o600 });

    assert.equal(await connectAsUser({ uid: 0, gid: 0 }, listener.path), 'connected');
  });

  test('live socket refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await bind(path, { mode: 0o600 });
    await assert.rejects(bind(path, { mode: 0o600 }), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_SOCKET_IN_USE'));
  });

  test('socket of another user refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    await runChild(process.execPath, ['-e', KILLED_LISTENER, path]);
    chownSync(path, other.uid, other.gid);
    await assert.rejects(bind(path, { mode: 0o600 }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_SOCKET_PATH_EXISTS'), String(error));
      assert.ok(error.message.includes(`uid ${other.uid}`), error.message);
      return true;
    });
    assert.equal(lstatSync(path).uid, other.uid, 'the other user\'s socket is left alone');
  });

  test('regular file at the path refused', async () => {
    const path = join(freshDir(0o755), 'api.sock');
    writeFileSync(path, 'keep me');
    await assert.rejects(bind(path, { mode: 0o600 }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_SOCKET_PATH_EXISTS'), String(error));
      assert.ok(error.message.includes('regular file'), error.message);
      return true;
    });
    assert.equal(readFileSync(path, 'utf8'), 'keep me');
  });

  test('symbolic link at the path refused', async () => {
    const dir = freshDir(0o755);
    const path = join(dir, 'api.sock');
    symlinkSync(join(dir, 'elsewhere.sock'), path);
    await assert.rejects(bind(path, { mode: 0o600 }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_SOCKET_PATH_EXISTS'), String(error));
      assert.ok(error.message.includes('symbolic link'), error.message);
      return true;
    });
  });

  test('remove unlinks the socket', async () => {
    const listener = await bind(join(freshDir(0o755), 'api.sock'), { mode: 0o600 });
    await listener.remove();
    assert.equal(existsSync(listener.path), false);
    await listener.remove();
  });

  test('socket mode text parsed', () => {
    assert.equal(parseSocketMode('0660'), 0o660);
    assert.equal(parseSocketMode('600'), 0o600);
    assert.equal(parseSocketMode('0o640'), 0o640);
    assert.throws(() => parseSocketMode('0680'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'));
    assert.throws(() => parseSocketMode('rw'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'));
  });

  test('unix address parsed', () => {
    assert.deepEqual(parseSocketAddress('unix:/run/web/app.sock', '--app'), { path: '/run/web/app.sock' });
    assert.deepEqual(parseSocketAddress('127.0.0.1:8080', '--app'), { host: '127.0.0.1', port: 8080 });
    assert.throws(() => parseSocketAddress('unix:relative.sock', '--app'), /not absolute/);
    assert.throws(() => parseSocketAddress(`unix:/${'a'.repeat(120)}`, '--app'), /at most 107/);
  });
});
