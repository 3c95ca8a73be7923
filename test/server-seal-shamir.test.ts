/**
 * The Shamir seal through the CLI: a server that starts sealed, `operator init` with key shares,
 * and unsealing share by share over the sealed-state control socket after each restart.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { ApiClient } from '../src/client/index.ts';
import { freePort, runCli, type CliProcess, type CliResult } from './helpers/cli.ts';
import {
  cliErrorCode,
  clientForDataDir,
  describeCli,
  killAll,
  parseCliJson,
  sealTempDir,
  startCliServer,
  stopCliServer,
  runCliWithStdin,
  tryConnect,
  waitForStderr,
  SERVER_READY_TIMEOUT_MS,
} from './helpers/seal-server.ts';

const CLI_TIMEOUT_MS = 30_000;

interface SealStatus {
  sealed: boolean;
  initialized: boolean;
  provider: string;
  progress: number;
  threshold: number;
  shares: number;
}

interface InitOutput {
  shares: string[];
  keyShares: number;
  keyThreshold: number;
  token: string;
  accessorId: string;
  trustDomain: string;
}

/** Returns `share` with one character of its body replaced, so that its checksum no longer matches. */
function mistype(share: string): string {
  const index = Math.floor(share.length / 2);
  const replacement = share[index] === 'a' ? 'b' : 'a';
  return `${share.slice(0, index)}${replacement}${share.slice(index + 1)}`;
}

describe('Shamir seal through the CLI', () => {
  const dir = sealTempDir();
  const dataDir = dir.dataDir;
  const socket = `${dataDir}.unseal.sock`;
  const other = sealTempDir();
  const running: CliProcess[] = [];
  let port = 0;
  let server: CliProcess | undefined;
  let firstStart = { connect: '', socketMode: 0, status: undefined as CliResult | undefined };
  let init: CliResult | undefined;
  let shares: string[] = [];
  let initCounts: { keyShares: number; keyThreshold: number } | undefined;
  let operatorToken = '';
  let otherShares: string[] = [];

  const serverArgs = (): string[] => ['--seal', 'shamir', '--data-dir', dataDir, '--addr', `127.0.0.1:${port}`];
  const operator = (): ApiClient => clientForDataDir(dataDir, port, operatorToken);

  async function unseal(share: string): Promise<CliResult> {
    return runCli(['operator', 'unseal', share, '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
  }

  async function sealStatus(): Promise<SealStatus> {
    const result = await runCli(['operator', 'seal-status', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeCli(result));
    return parseCliJson<SealStatus>(result);
  }

  /** Stops the running server and starts it again, sealed. */
  async function restartSealed(): Promise<void> {
    if (server !== undefined) {
      const exit = await stopCliServer(server);
      assert.equal(exit.code, 0, `exit ${exit.code} (signal ${exit.signal})\nstderr: ${server.stderr()}`);
    }
    server = await startCliServer(serverArgs(), { state: 'sealed', running });
  }

  before(async () => {
    port = await freePort();
    server = await startCliServer(serverArgs(), { state: 'sealed', running });
    firstStart = {
      connect: await tryConnect(port),
      socketMode: statSync(socket).mode & 0o777,
      status: await runCli(['operator', 'seal-status', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS }),
    };

    init = await runCli(['operator', 'init', '--key-shares', '3', '--key-threshold', '2', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    if (init.code === 0) {
      const output = parseCliJson<InitOutput>(init);
      initCounts = { keyShares: output.keyShares, keyThreshold: output.keyThreshold };
      shares = output.shares;
      operatorToken = output.token;
      await waitForStderr(server, /sealmesh server started/, SERVER_READY_TIMEOUT_MS);
      await operator().post('/v1/intentions', { source: 'shamir-web', destination: 'shamir-db', action: 'allow' });
    }

    // A second cluster, for shares that combine to the wrong key.
    const otherPort = await freePort();
    const otherServer = await startCliServer(['--seal', 'shamir', '--data-dir', other.dataDir, '--addr', `127.0.0.1:${otherPort}`], { state: 'sealed', running });
    const otherInit = await runCli(['operator', 'init', '--key-shares', '3', '--key-threshold', '2', '--data-dir', other.dataDir, '--json'], {
      timeoutMs: CLI_TIMEOUT_MS,
    });
    assert.equal(otherInit.code, 0, describeCli(otherInit));
    otherShares = parseCliJson<InitOutput>(otherInit).shares;
    await stopCliServer(otherServer);
  });

  after(async () => {
    if (server !== undefined) await stopCliServer(server).catch(() => undefined);
    killAll(running);
    dir.remove();
    other.remove();
  });

  test('uninitialised server has no HTTPS listener', () => {
    assert.equal(firstStart.connect, 'ECONNREFUSED');
  });

  test('sealed-state socket has mode 0600', () => {
    assert.equal(firstStart.socketMode, 0o600);
  });

  test('seal-status reports not initialised', () => {
    const result = firstStart.status as CliResult;
    assert.equal(result.code, 0, describeCli(result));
    const status = parseCliJson<SealStatus>(result);
    assert.equal(status.initialized, false);
    assert.equal(status.sealed, true);
    assert.equal(status.provider, 'shamir');
  });

  test('init returns three shares and a token', () => {
    assert.ok(init !== undefined);
    assert.equal(init.code, 0, describeCli(init));
    assert.equal(shares.length, 3);
    assert.equal(new Set(shares).size, 3, 'the shares differ');
    assert.deepEqual(initCounts, { keyShares: 3, keyThreshold: 2 }, 'the output names how many shares unseal');
    assert.ok(operatorToken.length > 0);
  });

  test('API serves after init', async () => {
    const { intentions } = await operator().get<{ intentions: Array<{ source: string }> }>('/v1/intentions');
    assert.equal(intentions.length, 1);
    assert.match(intentions[0]?.source ?? '', /shamir-web$/);
  });

  test('second init is rejected', async () => {
    const result = await runCli(['operator', 'init', '--key-shares', '3', '--key-threshold', '2', '--data-dir', dataDir, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeCli(result));
    assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED', result.stderr);
  });

  test('restart comes up sealed', async () => {
    await restartSealed();
    const status = await sealStatus();
    assert.equal(status.sealed, true);
    assert.equal(status.initialized, true);
    assert.equal(status.progress, 0);
    assert.equal(status.threshold, 2);
    assert.equal(status.shares, 3);
  });

  test('sealed server refuses HTTPS connections', async () => {
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
  });

  test('seal-status text says sealed', async () => {
    const result = await runCli(['operator', 'seal-status', '--data-dir', dataDir], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeCli(result));
    assert.equal(result.stdout, 'Sealed: 0 of 2 key shares submitted (3 issued).\n');
  });

  test('one share leaves the server sealed', async () => {
    const result = await unseal(shares[0] as string);
    assert.equal(result.code, 0, describeCli(result));
    const status = parseCliJson<SealStatus>(result);
    assert.equal(status.sealed, true);
    assert.equal(status.progress, 1);
    assert.equal(status.threshold, 2);
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
  });

  test('mistyped share is rejected', async () => {
    const result = await unseal(mistype(shares[1] as string));
    assert.equal(result.code, 1, describeCli(result));
    assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_SHARE_INVALID', result.stderr);
    assert.equal((await sealStatus()).progress, 1, 'a rejected share must not change the progress');
  });

  test('share of another cluster is rejected', async () => {
    const result = await unseal(otherShares[1] as string);
    assert.equal(result.code, 1, describeCli(result));
    assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_SHARE_INVALID', result.stderr);
    assert.equal((await sealStatus()).progress, 1, 'a rejected share must not change the progress');
  });

  test('repeated share is rejected', async () => {
    const result = await unseal(shares[0] as string);
    assert.equal(result.code, 1, describeCli(result));
    assert.equal(cliErrorCode(result.stderr), 'SEALMESH_ERR_SEAL_SHARE_INVALID', result.stderr);
    assert.equal((await sealStatus()).progress, 1);
  });

  test('second share unseals with data intact', async () => {
    const result = await unseal(shares[2] as string);
    assert.equal(result.code, 0, describeCli(result));
    const status = parseCliJson<SealStatus>(result);
    assert.equal(status.sealed, false);
    assert.equal(status.progress, 2);
    assert.equal(status.threshold, 2);
    assert.equal(status.shares, 3);
    // The unseal request returns once the HTTPS listener is up.
    assert.equal(await tryConnect(port), 'connected');
    const { intentions } = await operator().get<{ intentions: Array<{ source: string }> }>('/v1/intentions');
    assert.deepEqual(
      intentions.map((intention) => intention.source.split('/').pop()),
      ['shamir-web'],
    );
  });

  test('other cluster shares fail to unwrap', async () => {
    await restartSealed();
    const first = await unseal(otherShares[0] as string);
    assert.equal(first.code, 0, describeCli(first));
    assert.equal(parseCliJson<SealStatus>(first).progress, 1);

    const second = await unseal(otherShares[1] as string);
    assert.equal(second.code, 1, describeCli(second));
    assert.equal(cliErrorCode(second.stderr), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', second.stderr);
    const status = await sealStatus();
    assert.equal(status.sealed, true);
    assert.equal(status.progress, 0, 'the failed combination discards the submitted shares');
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
  });

  test('unknown body field is rejected', async () => {
    const result = await postUnseal(socket, shares[0] as string, { extra: 1 });
    assert.equal(result.status, 400);
    const { error } = result.body as { error: { code: string; message: string } };
    assert.equal(error.code, 'SEALMESH_ERR_BAD_REQUEST');
    assert.equal(error.message, 'request body is invalid: Unrecognized key: "extra"');
  });

  test('shares on stdin unseal the server', async () => {
    const result = await runCliWithStdin(['operator', 'unseal', '--data-dir', dataDir, '--json'], `${shares[1]}\n${shares[2]}\n`);
    assert.equal(result.code, 0, describeCli(result));
    assert.equal(parseCliJson<SealStatus>(result).sealed, false);
  });

  test('concurrent last shares unseal once', async () => {
    await restartSealed();
    const first = await unseal(shares[0] as string);
    assert.equal(first.code, 0, describeCli(first));

    // Sent straight to the socket, without a CLI process start in between, so the two requests overlap.
    const results = await Promise.all([postUnseal(socket, shares[1] as string), postUnseal(socket, shares[2] as string)]);
    for (const result of results) {
      assert.equal(result.status, 200, JSON.stringify(result.body));
      assert.equal((result.body as SealStatus).sealed, false);
    }
    const { intentions } = await operator().get<{ intentions: unknown[] }>('/v1/intentions');
    assert.equal(intentions.length, 1);
    const log = (server as CliProcess).stderr();
    assert.equal(log.split('"msg":"server unsealed"').length - 1, 1, log);
  });

  test('stop removes socket and pid file', async () => {
    const exit = await stopCliServer(server as CliProcess);
    server = undefined;
    assert.equal(exit.code, 0);
    assert.ok(!existsSync(socket), `${socket} is left behind`);
    assert.ok(!existsSync(join(dataDir, 'server.pid')), 'server.pid is left behind');
  });
});

/** POSTs one key share to the sealed-state socket and returns the HTTP status and the parsed body. */
function postUnseal(socketPath: string, share: string, extraFields: Record<string, unknown> = {}): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify({ share, ...extraFields });
    const req = request(
      { socketPath, method: 'POST', path: '/v1/operator/unseal', headers: { 'content-type': 'application/json' }, timeout: CLI_TIMEOUT_MS },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown }));
        response.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no response from ${socketPath} within ${CLI_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}
