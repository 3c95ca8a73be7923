/**
 * The PKCS#11 seal and the PKCS#11 rollback counter behind a real server, run as CLI child
 * processes against a SoftHSM2 token that the test creates.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ApiClient } from '../src/client/index.ts';
import { TokenSession } from '../src/seal/pkcs11/session.ts';
import { runCli, type CliProcess, type CliResult } from './helpers/cli.ts';
import {
  cliErrorCode,
  clientForDataDir,
  describeCli,
  killAll,
  listeningPort,
  sealTempDir,
  sha256File,
  startCliServer,
  stopCliServer,
} from './helpers/seal-server.ts';
import { createSoftHsmToken, softHsmSkipReason, type SoftHsmToken } from './helpers/softhsm.ts';

const STORE_FILE = 'sealmesh.db';
const CLI_TIMEOUT_MS = 30_000;

interface SealStatusField {
  provider: string;
  strength: string;
  rollbackDetection: string;
}

const skip = softHsmSkipReason();

describe('PKCS#11 seal and counter on the server', { skip: skip ?? false }, () => {
  let token: SoftHsmToken;
  const running: CliProcess[] = [];

  before(() => {
    token = createSoftHsmToken({ label: 'sealmesh-server-seal' });
  });
  after(() => {
    killAll(running);
    token?.remove();
  });

  /** Server flags for a PKCS#11 seal with key `keyLabel`, and the PKCS#11 counter `counterLabel` when given. */
  function sealArgs(keyLabel: string, counterLabel?: string): string[] {
    return [
      '--seal',
      'pkcs11',
      '--pkcs11-module',
      token.module,
      '--pkcs11-token',
      token.tokenLabel,
      '--pkcs11-key-label',
      keyLabel,
      ...(counterLabel !== undefined ? ['--counter', 'pkcs11', '--counter-label', counterLabel] : []),
    ];
  }

  function pinEnv(pin = token.pin): Record<string, string> {
    return { SEALMESH_PKCS11_PIN: pin };
  }

  /** Starts a server on `dataDir` and returns it with a client that carries `operatorToken`. */
  async function start(dataDir: string, args: string[], operatorToken?: string): Promise<{ server: CliProcess; client: ApiClient }> {
    const server = await startCliServer(['--data-dir', dataDir, '--addr', '127.0.0.1:0', '--log-level', 'info', ...args], { env: pinEnv(), running });
    return { server, client: clientForDataDir(dataDir, listeningPort(server), operatorToken) };
  }

  async function stop(server: CliProcess): Promise<void> {
    const exit = await stopCliServer(server);
    assert.equal(exit.code, 0, `the server exited with ${exit.code} (signal ${exit.signal})\nstderr: ${server.stderr()}`);
  }

  /** Runs a server start that must fail, and returns the result. */
  async function failedStart(dataDir: string, args: string[], pin = token.pin): Promise<CliResult> {
    const result = await runCli(['server', '--data-dir', dataDir, '--addr', '127.0.0.1:0', ...args], { env: pinEnv(pin), timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeCli(result));
    return result;
  }

  /** Returns the number of token objects of `kind` with `label`, and destroys them when `destroy` is set. */
  function tokenObjects(kind: 'secret-key' | 'data', label: string, destroy = false): number {
    const session = TokenSession.open({ module: token.module, tokenLabel: token.tokenLabel, pin: token.pin }, 'test');
    try {
      const { api, library } = session;
      const found = session.findObjects([
        { type: api.CKA_CLASS, value: kind === 'data' ? api.CKO_DATA : api.CKO_SECRET_KEY },
        { type: api.CKA_LABEL, value: label },
      ]);
      if (destroy) for (const object of found) library.C_DestroyObject(session.handle, object);
      return found.length;
    } finally {
      session.close();
    }
  }

  async function intentionSources(client: ApiClient): Promise<string[]> {
    const { intentions } = await client.get<{ intentions: Array<{ source: string }> }>('/v1/intentions');
    return intentions.map((intention) => intention.source.split('/').pop() ?? intention.source).sort();
  }

  describe('PKCS#11 seal', () => {
    const dir = sealTempDir();
    const dataDir = dir.dataDir;
    const dbFile = join(dataDir, STORE_FILE);
    const KEY_LABEL = 'server-kek';
    let operatorToken = '';
    let firstStatus: SealStatusField | undefined;

    before(async () => {
      const { server, client } = await start(dataDir, sealArgs(KEY_LABEL));
      try {
        operatorToken = (await client.post<{ token: string }>('/v1/operator/init', {})).token;
        const operator = clientForDataDir(dataDir, listeningPort(server), operatorToken);
        await operator.post('/v1/intentions', { source: 'hsm-web', destination: 'hsm-db', action: 'allow' });
        firstStatus = (await operator.get<{ seal: SealStatusField }>('/v1/status')).seal;
      } finally {
        await stop(server);
      }
    });
    after(() => dir.remove());

    test('first start creates the key', () => {
      assert.equal(tokenObjects('secret-key', KEY_LABEL), 1);
    });

    test('status reports the PKCS#11 provider', () => {
      assert.equal(firstStatus?.provider, 'pkcs11');
      assert.match(firstStatus?.strength ?? '', /^PKCS#11 seal: /);
      assert.match(firstStatus?.rollbackDetection ?? '', /^off: /);
    });

    test('restart opens the store', async () => {
      const { server, client } = await start(dataDir, sealArgs(KEY_LABEL), operatorToken);
      try {
        assert.deepEqual(await intentionSources(client), ['hsm-web']);
      } finally {
        await stop(server);
      }
    });

    test('wrong PIN fails the login', async () => {
      const before = sha256File(dbFile);
      const result = await failedStart(dataDir, sealArgs(KEY_LABEL), '999999');
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED', result.stderr);
      assert.match(result.stderr, /PKCS#11 seal/);
      assert.equal(sha256File(dbFile), before, 'the database file changed during the failed start');
    });

    test('unknown token label fails the start', async () => {
      const args = sealArgs(KEY_LABEL).map((arg) => (arg === token.tokenLabel ? 'no-such-token' : arg));
      const result = await failedStart(dataDir, args);
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_KEY_MISSING', result.stderr);
      assert.match(result.stderr, /no-such-token/);
    });

    test('missing key label fails the start', async () => {
      assert.equal(tokenObjects('secret-key', KEY_LABEL, true), 1, 'the key was in the token');
      const before = sha256File(dbFile);
      const result = await failedStart(dataDir, sealArgs(KEY_LABEL));
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_KEY_MISSING', result.stderr);
      assert.match(result.stderr, new RegExp(`PKCS#11 seal: .*${KEY_LABEL}`));
      assert.equal(sha256File(dbFile), before, 'the database file changed during the failed start');
      assert.equal(tokenObjects('secret-key', KEY_LABEL), 0, 'a failed start must not create a new key for an existing store');
    });
  });

  describe('PKCS#11 rollback counter', () => {
    const dir = sealTempDir();
    const dataDir = dir.dataDir;
    const oldCopy = join(dir.path, 'data-copy');
    const snapshotFile = join(dir.path, 'snapshot.db');
    const KEY_LABEL = 'counter-kek';
    const COUNTER_LABEL = 'rollback-counter';
    const args = (): string[] => sealArgs(KEY_LABEL, COUNTER_LABEL);
    let operatorToken = '';
    let firstStatus: SealStatusField | undefined;

    before(async () => {
      const { server, client } = await start(dataDir, args());
      try {
        operatorToken = (await client.post<{ token: string }>('/v1/operator/init', {})).token;
        const port = listeningPort(server);
        const operator = clientForDataDir(dataDir, port, operatorToken);
        await operator.post('/v1/intentions', { source: 'before-snapshot', destination: 'db', action: 'allow' });
        firstStatus = (await operator.get<{ seal: SealStatusField }>('/v1/status')).seal;
        const saved = await runCli(
          ['operator', 'snapshot', 'save', snapshotFile, '--addr', `127.0.0.1:${port}`, '--ca-file', join(dataDir, 'trust-bundle.pem'), '--token', operatorToken],
          { timeoutMs: CLI_TIMEOUT_MS },
        );
        assert.equal(saved.code, 0, describeCli(saved));
        await operator.post('/v1/intentions', { source: 'after-snapshot', destination: 'db', action: 'allow' });
      } finally {
        await stop(server);
      }
    });
    after(() => dir.remove());

    test('status reports rollback detection on', () => {
      assert.equal(firstStatus?.rollbackDetection, `on: counter pkcs11:${token.tokenLabel}/${COUNTER_LABEL}`);
    });

    test('first start creates the counter object', () => {
      assert.equal(tokenObjects('data', COUNTER_LABEL), 1);
    });

    test('older directory copy is a rollback', async () => {
      cpSync(dataDir, oldCopy, { recursive: true });

      // The first write after an open raises the epoch, so the copy taken before it falls below the counter.
      const { server, client } = await start(dataDir, args(), operatorToken);
      try {
        for (const source of ['after-copy-1', 'after-copy-2', 'after-copy-3']) {
          await client.post('/v1/intentions', { source, destination: 'db', action: 'allow' });
        }
      } finally {
        await stop(server);
      }

      rmSync(dataDir, { recursive: true });
      cpSync(oldCopy, dataDir, { recursive: true });
      const result = await failedStart(dataDir, args());
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_INTEGRITY_ROLLBACK', result.stderr);
    });

    test('explicit snapshot restore is accepted', async () => {
      const restored = await runCli(['operator', 'snapshot', 'restore', snapshotFile, '--data-dir', dataDir, ...args(), '--json'], {
        env: pinEnv(),
        timeoutMs: CLI_TIMEOUT_MS,
      });
      assert.equal(restored.code, 0, describeCli(restored));

      const { server, client } = await start(dataDir, args(), operatorToken);
      try {
        assert.deepEqual(await intentionSources(client), ['before-snapshot']);
      } finally {
        await stop(server);
      }
    });

    test('older copy still rejected after restore', async () => {
      const restoredDir = join(dir.path, 'data-restored');
      cpSync(dataDir, restoredDir, { recursive: true });
      rmSync(dataDir, { recursive: true });
      cpSync(oldCopy, dataDir, { recursive: true });
      try {
        const result = await failedStart(dataDir, args());
        assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_INTEGRITY_ROLLBACK', result.stderr);
      } finally {
        rmSync(dataDir, { recursive: true });
        cpSync(restoredDir, dataDir, { recursive: true });
      }
    });

    test('deleted store is a rollback', async () => {
      const savedDir = join(dir.path, 'data-saved');
      cpSync(dataDir, savedDir, { recursive: true });
      const bundle = readFileSync(join(dataDir, 'trust-bundle.pem'), 'utf8');
      for (const suffix of ['', '-wal', '-shm']) rmSync(join(dataDir, `sealmesh.db${suffix}`), { force: true });
      try {
        const result = await failedStart(dataDir, args());
        assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_INTEGRITY_ROLLBACK', result.stderr);
        assert.match(result.stderr, /contains no store, but the rollback counter .*rollback-counter is at \d+/);
        assert.equal(readFileSync(join(dataDir, 'trust-bundle.pem'), 'utf8'), bundle, 'no new cluster replaced the trust bundle');
        // Nothing was initialised by the refused start, so the next start is refused the same way.
        const again = await failedStart(dataDir, args());
        assert.equal(cliErrorCode(again.stderr), 'SEALMESH_ERR_INTEGRITY_ROLLBACK', again.stderr);
      } finally {
        rmSync(dataDir, { recursive: true });
        cpSync(savedDir, dataDir, { recursive: true });
      }
    });

    test('deleted counter object fails the start', async () => {
      assert.equal(tokenObjects('data', COUNTER_LABEL, true), 1, 'the counter was in the token');
      const result = await failedStart(dataDir, args());
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_KEY_MISSING', result.stderr);
      assert.match(result.stderr, /PKCS#11 counter: .*rollback-counter/);
      assert.equal(tokenObjects('data', COUNTER_LABEL), 0, 'the counter was created again, which would hide a rollback');
    });

    test('offline verify-data also needs the counter', async () => {
      const result = await runCli(['operator', 'verify-data', '--data-dir', dataDir, ...args(), '--json'], { env: pinEnv(), timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(result.code, 1, describeCli(result));
      assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_KEY_MISSING', result.stderr);
    });
  });
});
