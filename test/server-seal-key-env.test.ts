import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { ControlPlane } from '../src/server/index.ts';
import { tempDir } from './helpers/mesh.ts';

test('key file found through SEALMESH_SEAL_KEY_FILE', async () => {
  const base = tempDir('sealmesh-key-env-');
  const dataDir = join(base.path, 'data');
  try {
    const first = new ControlPlane({ dataDir, host: '127.0.0.1', port: 0 });
    await first.start();
    await first.stop();

    const moved = join(base.path, 'moved.seal-key');
    renameSync(`${dataDir}.seal-key`, moved);
    process.env.SEALMESH_SEAL_KEY_FILE = moved;
    const second = new ControlPlane({ dataDir, host: '127.0.0.1', port: 0 });
    await second.start();
    assert.equal(second.sealed, false);
    await second.stop();
  } finally {
    delete process.env.SEALMESH_SEAL_KEY_FILE;
    base.remove();
  }
});
