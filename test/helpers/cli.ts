import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Absolute path of the CLI entry, run from source by Node's type stripping. */
export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

const DEFAULT_RUN_TIMEOUT_MS = 60_000;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A CLI child process that keeps running, with everything it has written so far. */
export interface CliProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
}

/**
 * Returns the environment for a CLI child process: this process's environment without any
 * SEALMESH_* variable, so that only the variables in `extra` reach the child.
 */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('SEALMESH_')) env[name] = value;
  }
  return { ...env, ...extra };
}

/** Starts `sealmesh ARGS` and collects its output. `nodeArgs` go to Node.js before the CLI path. */
export function spawnCli(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): CliProcess {
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv(env) });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  return { child, stdout: () => stdout, stderr: () => stderr };
}

/**
 * Runs `sealmesh ARGS` to completion. When it is still running after `timeoutMs`, the child is
 * killed and the promise rejects with the output so far.
 */
export async function runCli(args: string[], options: { env?: Record<string, string>; timeoutMs?: number; nodeArgs?: string[] } = {}): Promise<CliResult> {
  const running = spawnCli(args, options.env, options.nodeArgs);
  const timeoutMs = options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
  try {
    const { code, signal } = await waitForExit(running.child, timeoutMs);
    return { code, signal, stdout: running.stdout(), stderr: running.stderr() };
  } catch (error) {
    running.child.kill('SIGKILL');
    throw new Error(`sealmesh ${args.join(' ')} did not exit: ${(error as Error).message}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`);
  }
}

/** Resolves with the exit code and signal once the child has exited and closed its output. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pid ${child.pid} still running after ${timeoutMs} ms`)), timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      resolve({ code: child.exitCode, signal: child.signalCode });
    };
    // 'close' comes after 'exit' once the output pipes are drained, so the collected output is complete.
    if (child.exitCode !== null || child.signalCode !== null) {
      if (child.stdout?.closed !== false && child.stderr?.closed !== false) done();
      else child.once('close', done);
    } else {
      child.once('close', done);
    }
  });
}

/** Resolves with the child's standard output once it matches `pattern`, and rejects when the child exits first or the time runs out. */
export function waitForOutput(running: CliProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      running.child.stdout?.off('data', check);
      running.child.off('close', exited);
      if (error === undefined) resolve(running.stdout());
      else reject(error);
    };
    const check = (): void => {
      if (pattern.test(running.stdout())) finish();
    };
    const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (pattern.test(running.stdout())) return finish();
      finish(new Error(`pid ${running.child.pid} exited (code ${code}, signal ${signal}) before printing ${pattern}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`));
    };
    const timer = setTimeout(
      () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`)),
      timeoutMs,
    );
    // This listener is added after the collecting one in spawnCli, so the text it tests includes the chunk.
    running.child.stdout?.on('data', check);
    running.child.once('close', exited);
    check();
  });
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Returns true while a process with this pid exists, and false once `kill(pid, 0)` fails with ESRCH. */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}
