/**
 * A control plane and sidecar proxies as real `sealmesh` child processes, for tests that look at a
 * whole process: its heap, its output, its flags and its sandbox.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../../src/client/index.ts';
import { readCaFile } from '../../src/cli/output.ts';
import { CLI, cliEnv, freePort, waitForExit, type CliProcess } from './cli.ts';
import { eventually, httpGet } from './mesh.ts';

export const SERVER_READY_TIMEOUT_MS = 60_000;
export const PROXY_READY_TIMEOUT_MS = 60_000;

export interface SpawnOptions {
  env?: Record<string, string>;
  /** Node.js flags placed before the CLI path. */
  nodeArgs?: string[];
  /** Core file size limit set with `ulimit -c` before Node.js starts, such as `0` or `unlimited`. */
  coreLimit?: string;
}

/** Starts `sealmesh ARGS` through /bin/sh, which sets the core file size limit first, and collects its output. */
export function spawnSealmesh(args: string[], options: SpawnOptions = {}): CliProcess {
  const command = [process.execPath, ...(options.nodeArgs ?? []), CLI, ...args];
  const script = `ulimit -c ${options.coreLimit ?? '0'} && exec "$@"`;
  const child = spawn('/bin/sh', ['-c', script, 'sh', ...command], { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv(options.env) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  return { child, stdout: () => stdout, stderr: () => stderr };
}

/** Runs `sealmesh ARGS` through /bin/sh to completion; see `spawnSealmesh`. */
export async function runSealmesh(args: string[], options: SpawnOptions = {}, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const running = spawnSealmesh(args, options);
  try {
    const { code } = await waitForExit(running.child, timeoutMs);
    return { code, stdout: running.stdout(), stderr: running.stderr() };
  } catch (error) {
    running.child.kill('SIGKILL');
    throw new Error(`sealmesh ${args.join(' ')} did not exit: ${(error as Error).message}\nstderr: ${running.stderr()}`);
  }
}

function exited(running: CliProcess): boolean {
  return running.child.exitCode !== null || running.child.signalCode !== null;
}

export interface ServerProcess {
  running: CliProcess;
  addr: string;
  dataDir: string;
  bundlePath: string;
  client: ApiClient;
  operator: ApiClient;
  operatorToken: string;
}

/** Starts `sealmesh server` on a free port, waits until its API responds, and runs operator init. */
export async function startServerProcess(dir: string, extraArgs: string[] = [], options: SpawnOptions = {}): Promise<ServerProcess> {
  const addr = `127.0.0.1:${await freePort()}`;
  const dataDir = join(dir, 'data');
  const bundlePath = join(dataDir, 'trust-bundle.pem');
  const running = spawnSealmesh(['server', '--data-dir', dataDir, '--addr', addr, '--log-level', 'info', ...extraArgs], options);
  const failIfExited = (): void => {
    if (exited(running)) throw new Error(`the server exited with ${running.child.exitCode}\nstderr: ${running.stderr()}\nstdout: ${running.stdout()}`);
  };
  await eventually(
    () => {
      failIfExited();
      return existsSync(bundlePath);
    },
    SERVER_READY_TIMEOUT_MS,
    bundlePath,
  );
  const client = new ApiClient({ url: `https://${addr}`, ca: readCaFile(bundlePath), timeoutMs: 5_000 });
  await eventually(
    async () => {
      failIfExited();
      return client.get('/v1/status').then(
        () => true,
        () => false,
      );
    },
    SERVER_READY_TIMEOUT_MS,
    'GET /v1/status to succeed',
  );
  const { token } = await client.post<{ token: string }>('/v1/operator/init', {});
  return { running, addr, dataDir, bundlePath, client, operator: client.with({ token }), operatorToken: token };
}

/** Creates a single-use join token for `service`. */
export async function createJoinToken(server: ServerProcess, service: string): Promise<string> {
  const { token } = await server.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service });
  return token;
}

export interface ProxyProcess {
  running: CliProcess;
  adminPort: number;
}

/**
 * Starts `sealmesh proxy` for `service` with the join token in SEALMESH_JOIN_TOKEN, and waits until
 * its admin endpoint reports ready.
 */
export async function startProxyProcess(
  server: ServerProcess,
  service: string,
  joinToken: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<ProxyProcess> {
  const adminPort = await freePort();
  const running = spawnSealmesh(
    ['proxy', '--service', service, '--listen', '127.0.0.1:0', '--admin', `127.0.0.1:${adminPort}`, '--addr', server.addr, '--ca-file', server.bundlePath, '--drain', '1s', ...args],
    { ...options, env: { ...options.env, SEALMESH_JOIN_TOKEN: joinToken } },
  );
  await eventually(
    async () => {
      if (exited(running)) throw new Error(`the ${service} proxy exited with ${running.child.exitCode}\nstderr: ${running.stderr()}\nstdout: ${running.stdout()}`);
      const ready = await httpGet(adminPort, '/ready').catch(() => ({ status: 0 }));
      return ready.status === 200;
    },
    PROXY_READY_TIMEOUT_MS,
    `the ${service} proxy to report ready`,
  );
  return { running, adminPort };
}

/** Sends SIGTERM to every process still running and waits for each to exit; SIGKILL after the timeout. */
export async function stopProcesses(processes: CliProcess[], timeoutMs = 15_000): Promise<void> {
  for (const running of processes) {
    if (exited(running)) continue;
    running.child.kill('SIGTERM');
    try {
      await waitForExit(running.child, timeoutMs);
    } catch {
      running.child.kill('SIGKILL');
    }
  }
}
