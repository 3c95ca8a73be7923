/**
 * Helpers for the server-level seal tests: control planes started in this process or as CLI child
 * processes, file hashes, and a byte flip inside a stored record of a closed database.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ApiClient } from '../../src/client/index.ts';
import { readCaFile } from '../../src/cli/output.ts';
import { isSealmeshError, type ErrorCode } from '../../src/errors/index.ts';
import { ControlPlane, type ServerOptions } from '../../src/server/index.ts';
import { spawn } from 'node:child_process';
import { CLI, cliEnv, spawnCli, waitForExit, type CliProcess, type CliResult } from './cli.ts';
import { testLogger } from './mesh.ts';

/** Maximum wait for a CLI server to log that it is ready or sealed. */
export const SERVER_READY_TIMEOUT_MS = 30_000;
/** Maximum wait for a CLI server to exit after SIGTERM. */
export const SERVER_EXIT_TIMEOUT_MS = 15_000;

/** A private temporary directory. The data directory goes inside it, so files beside it go too. */
export interface SealTempDir {
  path: string;
  dataDir: string;
  remove: () => void;
}

/** Directories not removed yet. The exit handler removes them when a suite's `after` hook never ran. */
const liveTempDirs = new Set<string>();
process.once('exit', () => {
  for (const path of liveTempDirs) rmSync(path, { recursive: true, force: true });
});

export function sealTempDir(prefix = 'sealmesh-server-seal-'): SealTempDir {
  // realpath, because the key-file provider compares resolved paths and /tmp may be a symbolic link.
  const path = realpathSync(mkdtempSync(join(tmpdir(), prefix)));
  liveTempDirs.add(path);
  const remove = (): void => {
    rmSync(path, { recursive: true, force: true });
    liveTempDirs.delete(path);
  };
  return { path, dataDir: join(path, 'data'), remove };
}

/** Returns the SHA-256 of a file as hex. */
export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Starts a control plane in this process on 127.0.0.1 with a free port. */
export async function startControlPlane(dataDir: string, options: Partial<ServerOptions> = {}): Promise<ControlPlane> {
  const server = new ControlPlane({ dataDir, host: '127.0.0.1', port: 0, leaseSeconds: 5, log: testLogger('server'), ...options });
  await server.start();
  return server;
}

/** Returns a client for a control plane started in this process. */
export function clientFor(server: ControlPlane, token?: string): ApiClient {
  return new ApiClient({ url: server.url, ca: server.ca.bundle(), timeoutMs: 10_000, ...(token !== undefined ? { token } : {}) });
}

/** Returns a client for a server at `127.0.0.1:port` that trusts the bundle in its data directory. */
export function clientForDataDir(dataDir: string, port: number, token?: string): ApiClient {
  return new ApiClient({
    url: `https://127.0.0.1:${port}`,
    ca: readCaFile(join(dataDir, 'trust-bundle.pem')),
    timeoutMs: 10_000,
    ...(token !== undefined ? { token } : {}),
  });
}

/** Asserts that `promise` rejects with a SealmeshError of `code` whose message matches `message`. */
export async function assertRejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError with ${code}, got ${error instanceof Error ? error.stack : String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  });
}

/** Returns the error code that the CLI printed on standard error, in text or JSON form. */
export function cliErrorCode(stderr: string): string | undefined {
  const json = /"code":"(SEALMESH_ERR_[A-Z0-9_]+)"/.exec(stderr);
  if (json !== null) return json[1];
  return /\((SEALMESH_ERR_[A-Z0-9_]+)\)\s*$/m.exec(stderr)?.[1];
}

/** Formats a CLI result for an assertion message. */
export function describeCli(result: CliResult): string {
  return `exit ${result.code} (signal ${result.signal})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** Parses the standard output of a `--json` command. */
export function parseCliJson<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`standard output is not JSON\n${describeCli(result)}`);
  }
}

/**
 * Resolves once the child's standard error matches `pattern`. Rejects when the child exits first
 * or `timeoutMs` passes. The server logs to standard error, so tests detect its start there.
 */
export function waitForStderr(running: CliProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      running.child.stderr?.off('data', check);
      running.child.off('close', exited);
      if (error === undefined) resolve();
      else reject(error);
    };
    const check = (): void => {
      if (pattern.test(running.stderr())) finish();
    };
    const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (pattern.test(running.stderr())) return finish();
      finish(new Error(`pid ${running.child.pid} exited (code ${code}, signal ${signal}) before logging ${pattern}\nstderr: ${running.stderr()}`));
    };
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}\nstderr: ${running.stderr()}`)), timeoutMs);
    running.child.stderr?.on('data', check);
    running.child.once('close', exited);
    check();
  });
}

/**
 * Runs `sealmesh server ARGS` and waits until it serves HTTPS (`state` 'open') or listens on its
 * sealed-state socket (`state` 'sealed'). The child is added to `running` so the caller can kill it
 * in cleanup.
 */
export async function startCliServer(
  args: string[],
  options: { env?: Record<string, string>; state?: 'open' | 'sealed'; running: CliProcess[] },
): Promise<CliProcess> {
  const server = spawnCli(['server', ...args], options.env ?? {});
  options.running.push(server);
  const pattern = options.state === 'sealed' ? /sealed-state control socket listening/ : /sealmesh server started/;
  await waitForStderr(server, pattern, SERVER_READY_TIMEOUT_MS);
  return server;
}

/** Runs `sealmesh ARGS` with `input` on standard input, and kills it after `timeoutMs`. */
export async function runCliWithStdin(args: string[], input: string, timeoutMs = 30_000): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: cliEnv() });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  child.stdin.end(input);
  try {
    const { code, signal } = await waitForExit(child, timeoutMs);
    return { code, signal, stdout, stderr };
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`sealmesh ${args.join(' ')} did not exit: ${(error as Error).message}\nstdout: ${stdout}\nstderr: ${stderr}`);
  }
}

/** Returns the port from the `sealmesh server started` log line of a CLI server. */
export function listeningPort(server: CliProcess): number {
  for (const line of server.stderr().split('\n')) {
    if (!line.includes('sealmesh server started')) continue;
    const { url } = JSON.parse(line) as { url?: string };
    if (url !== undefined) return Number(new URL(url).port);
  }
  throw new Error(`the server has not logged its URL yet\nstderr: ${server.stderr()}`);
}

/** Sends SIGTERM and waits for the exit. Kills the child when it is still running after the timeout. */
export async function stopCliServer(server: CliProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return waitForExit(server.child, SERVER_EXIT_TIMEOUT_MS);
  server.child.kill('SIGTERM');
  try {
    return await waitForExit(server.child, SERVER_EXIT_TIMEOUT_MS);
  } catch (error) {
    server.child.kill('SIGKILL');
    throw new Error(`the server did not exit after SIGTERM: ${(error as Error).message}\nstderr: ${server.stderr()}`);
  }
}

/** Kills every child in `running` that is still alive. */
export function killAll(running: CliProcess[]): void {
  for (const cli of running) {
    if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL');
  }
}

/**
 * Resolves with the error code of a TCP connection attempt to 127.0.0.1:`port`, or 'connected'
 * when a listener accepted it.
 */
export function tryConnect(port: number, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(error.code ?? error.message);
    });
  });
}

/**
 * Flips one bit in the middle of the sealed value of the user record written last, in every copy
 * of that value in the closed database file (the live row and its copy in the watch log). Returns
 * the file offsets changed. The store must be closed, so that SQLite has moved the write-ahead log
 * into the main file.
 */
export function flipByteInLatestRecord(dbPath: string): number[] {
  const db = new DatabaseSync(dbPath);
  let value: Buffer;
  try {
    const row = db.prepare("SELECT value FROM kv WHERE key LIKE 'd/%' ORDER BY mod_revision DESC, length(value) DESC LIMIT 1").get();
    if (row === undefined) throw new Error(`${dbPath} has no user record`);
    value = Buffer.from(row.value as Uint8Array);
  } finally {
    db.close();
  }

  const bytes = readFileSync(dbPath);
  const pageSize = bytes.readUInt16BE(16) === 1 ? 65_536 : bytes.readUInt16BE(16);
  const middle = Math.floor(value.length / 2);
  const offsets: number[] = [];
  for (let at = bytes.indexOf(value); at !== -1; at = bytes.indexOf(value, at + 1)) {
    const offset = at + middle;
    // Page 1 starts with the 100-byte database header, and the flip must land in a record page.
    assert.ok(offset >= pageSize, `record copy at offset ${offset} lies in the first page`);
    bytes[offset] = (bytes[offset] as number) ^ 0x01;
    offsets.push(offset);
  }
  assert.ok(offsets.length > 0, `the sealed value was not found in ${dbPath}; is the write-ahead log checkpointed?`);
  writeFileSync(dbPath, bytes);
  return offsets;
}
