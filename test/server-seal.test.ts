/**
 * The sealed store behind a real control plane: key-file and passphrase seals, start-up failures
 * that leave the database untouched, verify-data, snapshots and key rotation.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { ApiClient } from '../src/client/index.ts';
import { isSealmeshError } from '../src/errors/index.ts';
import { createLogger, type Logger } from '../src/log/index.ts';
import { KeyFileSealProvider } from '../src/seal/index.ts';
import type { ControlPlane } from '../src/server/index.ts';
import { restoreSnapshot, verifyDataDirectory } from '../src/server/offline.ts';
import { createRotatedProvider, type SealConfig } from '../src/server/seal-setup.ts';
import type { VerifyReport } from '../src/store/index.ts';
import { runCli, type CliProcess } from './helpers/cli.ts';
import { eventually } from './helpers/mesh.ts';
import {
  assertRejectsWith,
  clientFor,
  clientForDataDir,
  cliErrorCode,
  describeCli,
  flipByteInLatestRecord,
  killAll,
  listeningPort,
  parseCliJson,
  sealTempDir,
  sha256File,
  startCliServer,
  startControlPlane,
  stopCliServer,
} from './helpers/seal-server.ts';

const STORE_FILE = 'sealmesh.db';
const CLI_TIMEOUT_MS = 30_000;

interface SealStatusField {
  provider: string;
  strength: string;
  rollbackDetection: string;
  dataKeyRotation: { recordsUnderOldKeys: number };
}

/** Issues the first operator token of a freshly started server. */
async function bootstrap(server: ControlPlane): Promise<string> {
  const { token } = await clientFor(server).post<{ token: string }>('/v1/operator/init', {});
  return token;
}

async function allow(client: ApiClient, source: string, destination: string): Promise<void> {
  await client.post('/v1/intentions', { source, destination, action: 'allow' });
}

/** Returns the sources of all intentions, without the namespace. */
async function intentionSources(client: ApiClient): Promise<string[]> {
  const { intentions } = await client.get<{ intentions: Array<{ source: string }> }>('/v1/intentions');
  return intentions.map((intention) => intention.source.split('/').pop() ?? intention.source).sort();
}

async function sealStatus(client: ApiClient): Promise<SealStatusField> {
  return (await client.get<{ seal: SealStatusField }>('/v1/status')).seal;
}

/** Starts the server on `dataDir`, returns what `body` returns, and always stops the server. */
async function withServer<T>(dataDir: string, body: (server: ControlPlane) => Promise<T>, options: Parameters<typeof startControlPlane>[1] = {}): Promise<T> {
  const server = await startControlPlane(dataDir, options);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

function flushLogger(log: Logger): Promise<void> {
  return new Promise((resolve, reject) => log.flush((error) => (error === undefined ? resolve() : reject(error))));
}

/** Reads a pino log file into one object per line. */
function readLogLines(path: string): Array<Record<string, unknown>> {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function fileMode(path: string): number {
  return statSync(path).mode & 0o777;
}

describe('key-file seal on the server', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const keyFile = `${dataDir}.seal-key`;
  const dbFile = join(dataDir, STORE_FILE);
  const logFile = join(dir.path, 'server.log');
  let operatorToken = '';
  let firstStatus: SealStatusField | undefined;
  let storedIntentions: string[] = [];

  before(async () => {
    const log = createLogger({ component: 'server', destination: logFile });
    try {
      await withServer(
        dataDir,
        async (server) => {
          operatorToken = await bootstrap(server);
          const client = clientFor(server, operatorToken);
          await allow(client, 'keyfile-web', 'keyfile-db');
          storedIntentions = await intentionSources(client);
          firstStatus = await sealStatus(client);
        },
        { log },
      );
    } finally {
      await flushLogger(log);
    }
  });
  after(() => dir.remove());

  /** Asserts that a start on `dataDir` fails with `code`, naming the provider, and leaves the database unchanged. */
  async function assertStartFails(code: Parameters<typeof assertRejectsWith>[1]): Promise<void> {
    const before = sha256File(dbFile);
    await assertRejectsWith(startControlPlane(dataDir), code, /key-?file seal/);
    assert.equal(sha256File(dbFile), before, 'the database file changed during the failed start');
  }

  test('first start creates 0600 key file', () => {
    assert.ok(existsSync(keyFile), `${keyFile} was not created`);
    assert.equal(fileMode(keyFile), 0o600);
    assert.ok(!existsSync(join(dataDir, 'data.seal-key')), 'the key file must not be inside the data directory');
  });

  test('store keeps API writes', () => {
    assert.deepEqual(storedIntentions, ['keyfile-web']);
  });

  test('status reports provider and strength', () => {
    assert.equal(firstStatus?.provider, 'keyfile');
    assert.match(firstStatus?.strength ?? '', /^key-file seal: .+\.?$/);
    assert.match(firstStatus?.rollbackDetection ?? '', /^off: /);
  });

  test('start-up log names provider and strength', () => {
    const lines = readLogLines(logFile);
    const created = lines.find((line) => line.msg === 'sealed store created');
    assert.ok(created !== undefined, `no 'sealed store created' line in ${JSON.stringify(lines.map((line) => line.msg))}`);
    assert.equal(created.provider, 'keyfile');
    assert.equal(created.strength, firstStatus?.strength);
    assert.equal(created.keyFile, keyFile);
    assert.equal(created.level, 30, 'logged at info level');
  });

  test('restart opens the store', async () => {
    const sources = await withServer(dataDir, (server) => intentionSources(clientFor(server, operatorToken)));
    assert.deepEqual(sources, ['keyfile-web']);
  });

  test('missing key file fails the start', async () => {
    renameSync(keyFile, `${keyFile}.moved`);
    try {
      await assertStartFails('SEALMESH_ERR_SEAL_KEY_MISSING');
    } finally {
      renameSync(`${keyFile}.moved`, keyFile);
    }
  });

  test('another valid key file fails to unwrap', async () => {
    const original = readFileSync(keyFile);
    const otherPath = join(dir.path, 'other.seal-key');
    await (await KeyFileSealProvider.create(otherPath, { dataDir })).close();
    writeFileSync(keyFile, readFileSync(otherPath));
    try {
      assert.equal(fileMode(keyFile), 0o600, 'the replaced key file keeps mode 0600');
      await assertStartFails('SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    } finally {
      writeFileSync(keyFile, original);
    }
  });

  test('corrupted key file fails the start', async () => {
    const original = readFileSync(keyFile);
    writeFileSync(keyFile, 'this is not a base64 key\n');
    try {
      await assertStartFails('SEALMESH_ERR_SEAL_KEY_CORRUPT');
    } finally {
      writeFileSync(keyFile, original);
    }
  });

  test('key file mode 0644 fails', async () => {
    chmodSync(keyFile, 0o644);
    try {
      await assertStartFails('SEALMESH_ERR_SEAL_KEY_PERMISSIONS');
    } finally {
      chmodSync(keyFile, 0o600);
    }
  });

  test('restored key file opens the store', async () => {
    const sources = await withServer(dataDir, (server) => intentionSources(clientFor(server, operatorToken)));
    assert.deepEqual(sources, ['keyfile-web']);
  });
});

describe('passphrase seal on the server', () => {
  const PASSPHRASE = 'correct horse battery staple';
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const dbFile = join(dataDir, STORE_FILE);
  const seal = (passphrase: string): SealConfig => ({ provider: 'passphrase', passphrase: async () => passphrase });
  let operatorToken = '';
  let firstStatus: SealStatusField | undefined;

  before(async () => {
    await withServer(
      dataDir,
      async (server) => {
        operatorToken = await bootstrap(server);
        const client = clientFor(server, operatorToken);
        await allow(client, 'passphrase-web', 'passphrase-db');
        firstStatus = await sealStatus(client);
      },
      { seal: seal(PASSPHRASE) },
    );
  });
  after(() => dir.remove());

  test('status reports the passphrase provider', () => {
    assert.equal(firstStatus?.provider, 'passphrase');
    assert.match(firstStatus?.strength ?? '', /^passphrase seal: /);
  });

  test('no key file is created', () => {
    assert.ok(!existsSync(`${dataDir}.seal-key`));
  });

  test('same passphrase reopens the store', async () => {
    const sources = await withServer(dataDir, (server) => intentionSources(clientFor(server, operatorToken)), { seal: seal(PASSPHRASE) });
    assert.deepEqual(sources, ['passphrase-web']);
  });

  test('wrong passphrase fails to unwrap', async () => {
    const before = sha256File(dbFile);
    await assertRejectsWith(startControlPlane(dataDir, { seal: seal('a different long passphrase') }), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', /passphrase seal/);
    assert.equal(sha256File(dbFile), before, 'the database file changed during the failed start');
  });

  test('wrong environment passphrase fails', async () => {
    const cliDir = sealTempDir();
    const running: CliProcess[] = [];
    try {
      const args = ['--seal', 'passphrase', '--data-dir', cliDir.dataDir, '--addr', '127.0.0.1:0'];
      const server = await startCliServer(args, { env: { SEALMESH_SEAL_PASSPHRASE: PASSPHRASE }, running });
      assert.match(server.stderr(), /"provider":"passphrase"/);
      // NOTE: the CLI installs its SIGTERM handler only after the start-up log line, so a SIGTERM
      // sent right after that line can kill the server before a clean stop. The request waits that out.
      const status = await clientForDataDir(cliDir.dataDir, listeningPort(server)).get<{ seal: SealStatusField }>('/v1/status');
      assert.equal(status.seal.provider, 'passphrase');
      const stopped = await stopCliServer(server);
      assert.equal(stopped.code, 0, server.stderr());

      const wrong = await runCli(['server', ...args], { env: { SEALMESH_SEAL_PASSPHRASE: 'a different long passphrase' }, timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(wrong.code, 1, describeCli(wrong));
      assert.equal(cliErrorCode(wrong.stderr), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', wrong.stderr);
      assert.match(wrong.stderr, /passphrase seal/);
    } finally {
      killAll(running);
      cliDir.remove();
    }
  });
});

describe('verify-data', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const bundle = join(dataDir, 'trust-bundle.pem');
  let onlineResult: Awaited<ReturnType<typeof runCli>> | undefined;
  let offlineWhileRunning: Awaited<ReturnType<typeof runCli>> | undefined;

  before(async () => {
    await withServer(dataDir, async (server) => {
      const token = await bootstrap(server);
      const client = clientFor(server, token);
      await allow(client, 'verify-web', 'verify-db');
      await allow(client, 'verify-api', 'verify-db');
      const { address } = server;
      onlineResult = await runCli(['operator', 'verify-data', '--addr', `${address.host}:${address.port}`, '--ca-file', bundle, '--token', token, '--json'], {
        timeoutMs: CLI_TIMEOUT_MS,
      });
      offlineWhileRunning = await runCli(['operator', 'verify-data', '--data-dir', dataDir], { timeoutMs: CLI_TIMEOUT_MS });
    });
  });
  after(() => dir.remove());

  test('online verification through the API', () => {
    assert.ok(onlineResult !== undefined);
    assert.equal(onlineResult.code, 0, describeCli(onlineResult));
    const output = parseCliJson<{ ok: boolean; report: VerifyReport }>(onlineResult);
    assert.equal(output.ok, true);
    assert.ok(output.report.records > 0, `records: ${output.report.records}`);
    assert.ok(output.report.chainEntries >= output.report.revision, 'one chain entry per write');
  });

  test('offline verification of a running server rejected', () => {
    assert.ok(offlineWhileRunning !== undefined);
    assert.equal(offlineWhileRunning.code, 1, describeCli(offlineWhileRunning));
    assert.match(offlineWhileRunning.stderr, /SEALMESH_ERR_CONFLICT/);
    assert.match(offlineWhileRunning.stderr, /verify-data` without --data-dir/);
  });

  test('offline verification of the stopped directory', async () => {
    const result = await runCli(['operator', 'verify-data', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeCli(result));
    const output = parseCliJson<{ ok: boolean; report: VerifyReport }>(result);
    assert.equal(output.ok, true);
    const online = parseCliJson<{ report: VerifyReport }>(onlineResult as NonNullable<typeof onlineResult>).report;
    assert.equal(output.report.storeId, online.storeId);
    assert.ok(output.report.revision >= online.revision);
    assert.ok(output.report.records >= online.records);
  });

  test('offline text report', async () => {
    const result = await runCli(['operator', 'verify-data', '--data-dir', dataDir], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeCli(result));
    assert.match(result.stdout, /^OK: \d+ records and \d+ chain entries verified at revision \d+ \(store [0-9a-f]{32}\)\.$/m);
  });

  test('offline verification detects flipped byte', async () => {
    const dbFile = join(dataDir, STORE_FILE);
    assert.ok(!existsSync(`${dbFile}-wal`), 'the stopped server left a write-ahead log behind');
    const offsets = flipByteInLatestRecord(dbFile);
    assert.ok(offsets.length >= 1);

    const result = await runCli(['operator', 'verify-data', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeCli(result));
    assert.equal(result.stdout, '');
    assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', result.stderr);
  });
});

describe('deleted meta record', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const dbFile = join(dataDir, STORE_FILE);

  before(async () => {
    await withServer(dataDir, async (server) => {
      await bootstrap(server);
    });
    const db = new DatabaseSync(dbFile);
    try {
      db.prepare('DELETE FROM kv WHERE key = ?').run('m/meta');
    } finally {
      db.close();
    }
  });
  after(() => dir.remove());

  test('server start names the record', async () => {
    const original = sha256File(dbFile);
    await assertRejectsWith(startControlPlane(dataDir), 'SEALMESH_ERR_INTEGRITY_RECORD_MISSING', /m\/meta/);
    assert.equal(sha256File(dbFile), original, 'the start changed the store file');
  });

  test('offline verify-data names the record', async () => {
    await assertRejectsWith(verifyDataDirectory({ dataDir, seal: { provider: 'keyfile' } }), 'SEALMESH_ERR_INTEGRITY_RECORD_MISSING', /m\/meta/);
  });
});

describe('sealed snapshots', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const dbFile = join(dataDir, STORE_FILE);
  const bundle = join(dataDir, 'trust-bundle.pem');
  const snapshotFile = join(dir.path, 'snapshot.db');
  const SECRET_SERVICE = 'snapshot-secret-payments';
  let operatorToken = '';
  let joinToken = '';
  let saveResult: Awaited<ReturnType<typeof runCli>> | undefined;
  let existingFileResult: Awaited<ReturnType<typeof runCli>> | undefined;
  let missingDirectoryResult: Awaited<ReturnType<typeof runCli>> | undefined;
  let beforeSnapshot: string[] = [];
  let afterSnapshot: string[] = [];

  before(async () => {
    await withServer(dataDir, async (server) => {
      operatorToken = await bootstrap(server);
      const client = clientFor(server, operatorToken);
      await allow(client, 'snapshot-web', SECRET_SERVICE);
      joinToken = (await client.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: SECRET_SERVICE })).token;
      beforeSnapshot = await intentionSources(client);

      const { address } = server;
      saveResult = await runCli(
        ['operator', 'snapshot', 'save', snapshotFile, '--addr', `${address.host}:${address.port}`, '--ca-file', bundle, '--token', operatorToken, '--json'],
        { timeoutMs: CLI_TIMEOUT_MS },
      );

      const connection = ['--addr', `${address.host}:${address.port}`, '--ca-file', bundle, '--token', operatorToken];
      existingFileResult = await runCli(['operator', 'snapshot', 'save', snapshotFile, ...connection], { timeoutMs: CLI_TIMEOUT_MS });
      missingDirectoryResult = await runCli(['operator', 'snapshot', 'save', join(dir.path, 'missing', 'snapshot.db'), ...connection], { timeoutMs: CLI_TIMEOUT_MS });

      await allow(client, 'after-snapshot-web', 'after-snapshot-db');
      afterSnapshot = await intentionSources(client);
    });
  });
  after(() => dir.remove());

  test('snapshot save writes a 0600 file', () => {
    assert.ok(saveResult !== undefined);
    assert.equal(saveResult.code, 0, describeCli(saveResult));
    assert.equal(fileMode(snapshotFile), 0o600);
    const output = parseCliJson<{ file: string; bytes: number }>(saveResult);
    assert.equal(output.bytes, statSync(snapshotFile).size);
  });

  test('snapshot save keeps an existing file', () => {
    assert.ok(existingFileResult !== undefined);
    assert.equal(existingFileResult.code, 1, describeCli(existingFileResult));
    assert.equal(cliErrorCode(existingFileResult.stderr), 'SEALMESH_ERR_CONFLICT', existingFileResult.stderr);
    assert.match(existingFileResult.stderr, /already exists/);
    assert.equal(statSync(snapshotFile).size, parseCliJson<{ bytes: number }>(saveResult ?? existingFileResult).bytes, 'the first snapshot is unchanged');
  });

  test('snapshot save names a missing directory', () => {
    assert.ok(missingDirectoryResult !== undefined);
    assert.equal(missingDirectoryResult.code, 2, describeCli(missingDirectoryResult));
    assert.equal(cliErrorCode(missingDirectoryResult.stderr), 'SEALMESH_ERR_CONFIG_INVALID', missingDirectoryResult.stderr);
    assert.match(missingDirectoryResult.stderr, /cannot create the snapshot file .*missing.*snapshot\.db/);
    assert.ok(!existsSync(join(dir.path, 'missing')), 'no directory was created');
  });

  test('snapshot has no plaintext secrets', () => {
    const bytes = readFileSync(snapshotFile);
    assert.ok(bytes.length > 0);
    for (const secret of [SECRET_SERVICE, 'snapshot-web', joinToken, operatorToken]) {
      assert.ok(secret.length > 0);
      assert.equal(bytes.indexOf(secret), -1, `the snapshot contains ${JSON.stringify(secret)} in plaintext`);
    }
  });

  test('later writes live before restore', () => {
    assert.deepEqual(afterSnapshot, ['after-snapshot-web', 'snapshot-web']);
  });

  test('restore while the server runs fails', async () => {
    const server = await startControlPlane(dataDir);
    try {
      const result = await runCli(['operator', 'snapshot', 'restore', snapshotFile, '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(result.code, 1, describeCli(result));
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_CONFLICT', result.stderr);
    } finally {
      await server.stop();
    }
  });

  test('restore names a missing snapshot file', async () => {
    const missing = join(dir.path, 'missing-snapshot.db');
    await assertRejectsWith(restoreSnapshot({ file: missing, dataDir, seal: { provider: 'keyfile' } }), 'SEALMESH_ERR_CONFIG_INVALID', /snapshot file .*missing-snapshot\.db does not exist/);
  });

  test('restore of a damaged snapshot file', async () => {
    const damaged = join(dir.path, 'damaged-snapshot.db');
    writeFileSync(damaged, 'not a database, only text\n'.repeat(200));
    const before = sha256File(dbFile);
    const filesBefore = readdirSync(dataDir).sort();
    await assert.rejects(restoreSnapshot({ file: damaged, dataDir, seal: { provider: 'keyfile' } }), (error: unknown) => {
      assert.ok(isSealmeshError(error), String(error));
      assert.equal(error.code, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT', error.message);
      assert.match(error.message, /^snapshot .*damaged-snapshot\.db failed verification, so nothing was restored: /);
      assert.doesNotMatch(error.message, /The data directory was changed outside sealmesh/);
      return true;
    });
    assert.equal(sha256File(dbFile), before, 'the rejected restore changed the database');
    assert.deepEqual(readdirSync(dataDir).sort(), filesBefore, 'the rejected restore left files behind');
  });

  test('snapshot of another cluster is rejected', async () => {
    const other = sealTempDir();
    try {
      const otherSnapshot = join(other.path, 'other-snapshot.db');
      await withServer(other.dataDir, async (server) => {
        await bootstrap(server);
        await server.seal.snapshotTo(otherSnapshot);
      });
      // The other cluster's key file is not on this host, as after copying a snapshot between hosts.
      rmSync(`${other.dataDir}.seal-key`);
      const before = sha256File(dbFile);
      const filesBefore = readdirSync(dataDir).sort();
      const result = await runCli(['operator', 'snapshot', 'restore', otherSnapshot, '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(result.code, 1, describeCli(result));
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_INTEGRITY_STORE_MISMATCH', result.stderr);
      assert.equal(sha256File(dbFile), before, 'the rejected restore changed the database');
      assert.deepEqual(readdirSync(dataDir).sort(), filesBefore, 'the rejected restore left files behind');
    } finally {
      other.remove();
    }
  });

  test('restore brings back the snapshot state', async () => {
    const result = await runCli(['operator', 'snapshot', 'restore', snapshotFile, '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeCli(result));
    const output = parseCliJson<{ report: VerifyReport; storeId: string }>(result);
    assert.ok(output.report.records > 0);

    await withServer(dataDir, async (server) => {
      const client = clientFor(server, operatorToken);
      assert.deepEqual(await intentionSources(client), beforeSnapshot);
      const { tokens } = await client.get<{ tokens: Array<{ kind: string; service?: string }> }>('/v1/acl/tokens');
      assert.ok(
        tokens.some((token) => token.kind === 'join' && token.service === SECRET_SERVICE),
        `the join token for ${SECRET_SERVICE} is missing: ${JSON.stringify(tokens)}`,
      );
    });
  });
});

test('rotate-kek names the missing CLI input', async () => {
  const dir = sealTempDir();
  try {
    await assertRejectsWith(createRotatedProvider('keyfile', {}, { provider: 'keyfile' }, dir.dataDir), 'SEALMESH_ERR_BAD_REQUEST', /--key-file PATH/);
    await assertRejectsWith(createRotatedProvider('passphrase', {}, { provider: 'passphrase', passphrase: () => Promise.resolve('unused passphrase') }, dir.dataDir), 'SEALMESH_ERR_BAD_REQUEST', /SEALMESH_NEW_SEAL_PASSPHRASE/);
  } finally {
    dir.remove();
  }
});

test('data directory that is a file', async () => {
  const dir = sealTempDir();
  try {
    writeFileSync(join(dir.path, 'file'), 'x');
    await assertRejectsWith(startControlPlane(join(dir.path, 'file')), 'SEALMESH_ERR_CONFIG_INVALID', /--data-dir .*file is not a directory/);
  } finally {
    dir.remove();
  }
});

describe('key rotation on a running server', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const oldKeyFile = `${dataDir}.seal-key`;
  const newKeyFile = join(dir.path, 'rotated', 'kek.seal-key');
  const bundle = join(dataDir, 'trust-bundle.pem');
  /** More than one re-encryption batch of 100 records, so a stop can land in the middle. */
  const JOIN_TOKENS = 260;
  let operatorToken = '';

  before(async () => {
    await withServer(dataDir, async (server) => {
      operatorToken = await bootstrap(server);
      const client = clientFor(server, operatorToken);
      await allow(client, 'rotate-web', 'rotate-db');
      // Writes are serialised by the store, so a few requests in flight only hide the round trips.
      const pending = Array.from({ length: JOIN_TOKENS }, (_, i) => i);
      const workers = Array.from({ length: 8 }, async () => {
        for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
          await client.post('/v1/acl/tokens', { kind: 'join', service: `rotate-svc-${next}` });
        }
      });
      await Promise.all(workers);
    });
  });
  after(() => dir.remove());

  async function offlineReport(): Promise<VerifyReport> {
    return verifyDataDirectory({ dataDir, seal: { provider: 'keyfile' } });
  }

  test('rotate-kek keeps serving requests', async () => {
    await withServer(dataDir, async (server) => {
      const { address } = server;
      const result = await runCli(
        ['operator', 'rotate-kek', '--key-file', newKeyFile, '--addr', `${address.host}:${address.port}`, '--ca-file', bundle, '--token', operatorToken, '--json'],
        { timeoutMs: CLI_TIMEOUT_MS },
      );
      assert.equal(result.code, 0, describeCli(result));
      assert.equal(parseCliJson<{ provider: string }>(result).provider, 'keyfile');
      assert.equal(fileMode(newKeyFile), 0o600);

      const client = clientFor(server, operatorToken);
      await allow(client, 'after-kek-web', 'rotate-db');
      assert.deepEqual(await intentionSources(client), ['after-kek-web', 'rotate-web']);
      assert.equal((await sealStatus(client)).provider, 'keyfile');
    });
  });

  test('restart uses recorded key file', async () => {
    const sources = await withServer(dataDir, (server) => intentionSources(clientFor(server, operatorToken)));
    assert.deepEqual(sources, ['after-kek-web', 'rotate-web']);
  });

  test('store opens without old key file', async () => {
    rmSync(oldKeyFile);
    const sources = await withServer(dataDir, (server) => intentionSources(clientFor(server, operatorToken)));
    assert.deepEqual(sources, ['after-kek-web', 'rotate-web']);
  });

  test('missing new key file is named', async () => {
    renameSync(newKeyFile, `${newKeyFile}.moved`);
    try {
      await assertRejectsWith(startControlPlane(dataDir), 'SEALMESH_ERR_SEAL_KEY_MISSING', new RegExp(newKeyFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    } finally {
      renameSync(`${newKeyFile}.moved`, newKeyFile);
    }
  });

  test('rotate-data-key re-encrypts every record', async () => {
    const before = await offlineReport();
    assert.equal(before.dataKeys, 1);
    await withServer(dataDir, async (server) => {
      const client = clientFor(server, operatorToken);
      const started = await client.post<{ recordsUnderOldKeys: number }>('/v1/operator/rotate-data-key', {});
      assert.ok(started.recordsUnderOldKeys > JOIN_TOKENS, `recordsUnderOldKeys: ${started.recordsUnderOldKeys}`);
      await eventually(async () => (await sealStatus(client)).dataKeyRotation.recordsUnderOldKeys === 0, 30_000, 'recordsUnderOldKeys to reach 0');
    });
    const report = await offlineReport();
    assert.equal(report.recordsUnderOldKeys, 0);
    assert.equal(report.dataKeys, 1, 'the old data key is removed from the keyring');
    // A start may add records of its own, such as a renewed server certificate, but none is lost.
    assert.ok(report.records >= before.records, `records before ${before.records}, after ${report.records}`);
  });

  test('data-key rotation resumes after a restart', async () => {
    const server = await startControlPlane(dataDir);
    let started: { recordsUnderOldKeys: number };
    try {
      started = await clientFor(server, operatorToken).post<{ recordsUnderOldKeys: number }>('/v1/operator/rotate-data-key', {});
    } finally {
      await server.stop();
    }
    assert.ok(started.recordsUnderOldKeys > JOIN_TOKENS);
    const interrupted = await offlineReport();
    assert.ok(interrupted.recordsUnderOldKeys > 0, 'the stop came after the rotation had finished, so nothing was left to resume');
    assert.equal(interrupted.dataKeys, 2);

    await withServer(dataDir, async (restarted) => {
      const client = clientFor(restarted, operatorToken);
      await eventually(async () => (await sealStatus(client)).dataKeyRotation.recordsUnderOldKeys === 0, 30_000, 'recordsUnderOldKeys to reach 0');
    });
    const report = await offlineReport();
    assert.equal(report.recordsUnderOldKeys, 0);
    assert.equal(report.dataKeys, 1);
  });
});
