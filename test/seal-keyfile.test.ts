import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { KeyFileSealProvider, defaultKeyFilePath } from '../src/seal/index.ts';
import { tempDir } from './helpers/mesh.ts';

const AAD = new TextEncoder().encode('record/key-1');
const DATA_KEY = new Uint8Array(32).map((_, i) => 255 - i);

/** Asserts that `promise` rejects with `code` and a message that matches `message`. */
async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error, code), `expected ${code}, got ${String(error)}`);
    if (message !== undefined) {
      assert.match(error.message, message);
    }
    return true;
  });
}

describe('KeyFileSealProvider', () => {
  const dir = tempDir('sealmesh-seal-keyfile-');
  const dataDir = join(dir.path, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  let counter = 0;
  /** Returns a fresh key file path outside the data directory. */
  const nextPath = (): string => join(dir.path, 'keys', `key-${++counter}`);

  after(() => dir.remove());

  test('round trip through create and open', async () => {
    const path = nextPath();
    const created = await KeyFileSealProvider.create(path, { dataDir });
    const wrapped = await created.wrap(DATA_KEY, AAD);
    await created.close();

    const opened = await KeyFileSealProvider.open(path, { dataDir });
    assert.deepEqual(await opened.unwrap(wrapped, AAD), DATA_KEY);
    assert.equal(opened.name, 'keyfile');
    assert.equal(opened.path, path);
    assert.match(opened.strength, /without the key file/);
    await opened.close();
  });

  test('create writes mode 0600 in a 0700 directory', async () => {
    const parent = join(dir.path, 'fresh-parent', 'nested');
    const path = join(parent, 'seal-key');
    const provider = await KeyFileSealProvider.create(path);
    await provider.close();
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(parent).mode & 0o777, 0o700);
    const content = readFileSync(path, 'utf8');
    assert.match(content, /^[A-Za-z0-9+/]{43}=\n$/);
    assert.equal(Buffer.from(content.trim(), 'base64').length, 32);
  });

  test('create rejects an existing file', async () => {
    const path = nextPath();
    const provider = await KeyFileSealProvider.create(path);
    await provider.close();
    const before = readFileSync(path, 'utf8');
    await rejectsWith(KeyFileSealProvider.create(path), 'SEALMESH_ERR_CONFLICT', /already exists, .*pass a path that does not exist yet$/);
    assert.equal(readFileSync(path, 'utf8'), before);
  });

  test('create rejects a path inside the data directory', async () => {
    await rejectsWith(KeyFileSealProvider.create(join(dataDir, 'sub', 'seal-key'), { dataDir }), 'SEALMESH_ERR_SEAL_KEY_LOCATION');
  });

  test('wrong key fails unwrap', async () => {
    const first = await KeyFileSealProvider.create(nextPath());
    const second = await KeyFileSealProvider.create(nextPath());
    const wrapped = await first.wrap(DATA_KEY, AAD);
    const escaped = second.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await rejectsWith(second.unwrap(wrapped, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', new RegExp(`\\(key file ${escaped}\\)\\. Pass the key file that sealed this data with --seal-key-file, or restore ${escaped} from a backup$`));
    await first.close();
    await second.close();
  });

  test('AAD mismatch and altered bytes fail unwrap', async () => {
    const provider = await KeyFileSealProvider.create(nextPath());
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await rejectsWith(provider.unwrap(wrapped, new TextEncoder().encode('record/key-2')), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    const altered = Uint8Array.from(wrapped);
    altered[20]! ^= 0x80;
    await rejectsWith(provider.unwrap(altered, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    const wrongVersion = Uint8Array.from(wrapped);
    wrongVersion[0] = 2;
    await rejectsWith(provider.unwrap(wrongVersion, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', /format version 2/);
    await provider.close();
  });

  test('missing file rejected', async () => {
    const path = join(dir.path, 'no-such-key');
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_MISSING', /does not exist/);
  });

  test('mode 0644 rejected with chmod fix', async () => {
    const path = nextPath();
    await (await KeyFileSealProvider.create(path)).close();
    chmodSync(path, 0o644);
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_PERMISSIONS', /mode 0644.*chmod 600/);
  });

  test('mode 0640 rejected', async () => {
    const path = nextPath();
    await (await KeyFileSealProvider.create(path)).close();
    chmodSync(path, 0o640);
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_PERMISSIONS', /mode 0640/);
  });

  test('mode 0400 accepted', async () => {
    const path = nextPath();
    await (await KeyFileSealProvider.create(path)).close();
    chmodSync(path, 0o400);
    await (await KeyFileSealProvider.open(path, { dataDir })).close();
  });

  test('file of another owner rejected', { skip: process.getuid?.() !== 0 ? 'changing the owner needs root' : false }, async () => {
    const path = nextPath();
    await (await KeyFileSealProvider.create(path)).close();
    chownSync(path, 65534, 65534);
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_PERMISSIONS', /owned by uid 65534/);
  });

  test('file inside the data directory rejected', async () => {
    const path = join(dataDir, 'seal-key');
    await (await KeyFileSealProvider.create(path)).close();
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_LOCATION', /inside the data directory/);
  });

  test('data directory reached through a symlinked parent rejected', async () => {
    const alias = join(dir.path, 'data-alias');
    symlinkSync(dataDir, alias);
    const path = join(alias, 'aliased-key');
    await (await KeyFileSealProvider.create(path)).close();
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_LOCATION', /inside the data directory/);
  });

  test('symlink rejected', async () => {
    const target = nextPath();
    await (await KeyFileSealProvider.create(target)).close();
    const link = join(dir.path, 'linked-key');
    symlinkSync(target, link);
    await rejectsWith(KeyFileSealProvider.open(link, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_LOCATION', /symbolic link/);
  });

  test('wrong length rejected as corrupt', async () => {
    const path = nextPath();
    mkdirSync(join(dir.path, 'keys'), { recursive: true, mode: 0o700 });
    writeFileSync(path, `${Buffer.alloc(16, 1).toString('base64')}\n`, { mode: 0o600 });
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_CORRUPT', /decodes to 16 bytes/);
  });

  test('non-base64 content rejected as corrupt', async () => {
    const path = nextPath();
    mkdirSync(join(dir.path, 'keys'), { recursive: true, mode: 0o700 });
    // Buffer.from would skip the '!' characters and decode 32 bytes from the rest.
    const valid = Buffer.alloc(32, 9).toString('base64');
    writeFileSync(path, `${valid.slice(0, 20)}!!!!${valid.slice(20)}\n`, { mode: 0o600 });
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_CORRUPT', /not contain base64/);
  });

  test('empty file rejected as corrupt', async () => {
    const path = nextPath();
    mkdirSync(join(dir.path, 'keys'), { recursive: true, mode: 0o700 });
    writeFileSync(path, '', { mode: 0o600 });
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_CORRUPT', /decodes to 0 bytes/);
  });

  test('directory rejected as corrupt', async () => {
    const path = join(dir.path, 'a-directory');
    mkdirSync(path, { mode: 0o700 });
    await rejectsWith(KeyFileSealProvider.open(path, { dataDir }), 'SEALMESH_ERR_SEAL_KEY_CORRUPT', /not a regular file; pass the key file with --seal-key-file/);
  });

  test('closed provider rejects wrap', async () => {
    const provider = await KeyFileSealProvider.create(nextPath());
    await provider.close();
    await rejectsWith(provider.wrap(DATA_KEY, AAD), 'SEALMESH_ERR_SEAL_CLOSED');
  });
});

describe('defaultKeyFilePath', () => {
  test('sibling of the data directory', () => {
    assert.equal(defaultKeyFilePath('/var/lib/sealmesh', {}), '/var/lib/sealmesh.seal-key');
    assert.equal(defaultKeyFilePath('/var/lib/sealmesh/', {}), '/var/lib/sealmesh.seal-key');
  });

  test('relative data directory resolved', () => {
    assert.equal(defaultKeyFilePath('data', {}), join(process.cwd(), 'data.seal-key'));
  });

  test('environment variable overrides', () => {
    assert.equal(defaultKeyFilePath('/var/lib/sealmesh', { SEALMESH_SEAL_KEY_FILE: '/etc/sealmesh/key' }), '/etc/sealmesh/key');
    assert.equal(defaultKeyFilePath('/var/lib/sealmesh', { SEALMESH_SEAL_KEY_FILE: '' }), '/var/lib/sealmesh.seal-key');
  });

  test('root directory rejected', () => {
    assert.throws(() => defaultKeyFilePath('/', {}), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'));
  });
});
