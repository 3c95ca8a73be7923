/**
 * The Node.js permission model around `sealmesh server` and `sealmesh proxy`: which paths and
 * capabilities each may use, the flags that grant them, and the launcher that re-executes the CLI
 * under those flags.
 *
 * What the model restricts in Node.js 24 (checked against 24.21): file system reads and writes
 * through `node:fs`, child processes, worker threads, native addons and WASI. It does not restrict
 * the network, `node:sqlite` (which opens database files through SQLite's own I/O), Unix socket
 * listeners, or anything a native addon does once loaded.
 */
import { spawn } from 'node:child_process';
import { resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SealmeshError } from '../errors/index.ts';

/** The package root: `src/` (or `dist/`), `node_modules/` and `package.json` are read from here. */
export const CODE_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Paths and capabilities a sandboxed process may use. */
export interface SandboxGrant {
  /** Paths the process may read; a directory grants everything below it. */
  read: string[];
  /** Paths the process may read and write. */
  write: string[];
  /** Native addons, which the PKCS#11 seal and counter load (pkcs11js). */
  addons: boolean;
  /** Child processes, which user and group name lookups (getent) and the nftables perimeter run. */
  childProcess: boolean;
}

/**
 * Returns the Node.js flags that enforce `grant`. `--disable-sigusr1` keeps SIGUSR1 from opening the
 * inspector, which Node.js does by default for any process that may signal this one.
 */
export function permissionFlags(grant: SandboxGrant): string[] {
  const flags = ['--permission', '--disable-sigusr1'];
  const read = coveringPaths([CODE_ROOT, ...grant.read, ...grant.write]);
  const write = coveringPaths(grant.write);
  for (const path of read) flags.push(`--allow-fs-read=${path}`);
  for (const path of write) flags.push(`--allow-fs-write=${path}`);
  if (grant.addons) flags.push('--allow-addons');
  if (grant.childProcess) flags.push('--allow-child-process');
  return flags;
}

/**
 * Returns the absolute forms of `paths` without those inside another listed directory, parents
 * first. Node.js 24.21 denies a granted directory itself when a path below it was granted before it
 * (`--allow-fs-read=/a/b --allow-fs-read=/a` denies reading `/a`), so parents must come first.
 */
export function coveringPaths(paths: readonly string[]): string[] {
  const sorted = [...new Set(paths.map((path) => resolve(path)))].sort((a, b) => a.length - b.length || a.localeCompare(b));
  const kept: string[] = [];
  for (const path of sorted) {
    const covered = kept.some((parent) => path === parent || path.startsWith(parent.endsWith(sep) ? parent : parent + sep));
    if (!covered) kept.push(path);
  }
  return widenNamePrefixes(kept);
}

/**
 * Replaces a granted path that other granted paths extend by name, such as the data directory
 * `D/data` and its default key file `D/data.seal-key`, with one wildcard grant `D/data*` that
 * covers both. Node.js 24.21 denies every access to the shorter path itself when both are granted
 * (files inside it stay reachable), so a sandboxed server could not start again on its own data.
 * The wildcard also covers other entries of the parent directory whose names start the same way.
 */
function widenNamePrefixes(paths: string[]): string[] {
  const widened: string[] = [];
  for (const path of paths) {
    if (widened.some((grant) => grant.endsWith('*') && path.startsWith(grant.slice(0, -1)))) continue;
    const extended = paths.some((other) => other !== path && other.startsWith(path));
    widened.push(extended ? `${path}*` : path);
  }
  return widened;
}

/** True when this process runs under the Node.js permission model. */
export function sandboxActive(): boolean {
  return process.permission !== undefined;
}

/**
 * Returns the command that runs the CLI with `args` under `grant`: this Node.js binary, its own
 * flags (`process.execArgv`), the permission flags and this CLI entry point.
 */
export function sandboxCommand(args: readonly string[], grant: SandboxGrant): string[] {
  const entry = process.argv[1];
  if (entry === undefined) throw new SealmeshError('SEALMESH_ERR_SANDBOX_LAUNCH_FAILED', 'cannot find the CLI entry point in process.argv');
  return [process.execPath, ...process.execArgv, ...permissionFlags(grant), resolve(entry), ...args];
}

const FORWARDED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** Signal numbers on Linux, for the shell-style exit status 128 + number of a child killed by a signal. */
const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15, SIGABRT: 6 };

/**
 * Runs the CLI with `args` in a sandboxed child process and resolves with its exit code. The child
 * shares standard input, output and error. SIGINT, SIGTERM and SIGHUP sent to this process are
 * passed on, so a service manager stops the child by stopping the launcher.
 */
export async function runSandboxed(args: readonly string[], grant: SandboxGrant): Promise<number> {
  const [binary, ...rest] = sandboxCommand(args, grant);
  const child = spawn(binary as string, rest, { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
  try {
    return await new Promise<number>((resolvePromise, reject) => {
      child.once('error', (error) => reject(new SealmeshError('SEALMESH_ERR_SANDBOX_LAUNCH_FAILED', `cannot start ${binary}: ${error.message}`, { cause: error })));
      child.once('exit', (code, signal) => {
        if (code !== null) resolvePromise(code);
        else resolvePromise(128 + (SIGNAL_NUMBERS[signal ?? 'SIGKILL'] ?? 0));
      });
    });
  } finally {
    for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
  }
}

/** Returns an argument quoted for a POSIX shell when it needs quoting. */
export function shellQuote(argument: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(argument) ? argument : `'${argument.replaceAll("'", "'\\''")}'`;
}

/**
 * Returns SEALMESH_ERR_SANDBOX_DENIED for an ERR_ACCESS_DENIED error that the permission model
 * raised, naming the permission and the resource; undefined for any other error.
 */
export function sandboxDeniedError(error: unknown): SealmeshError | undefined {
  if (typeof error !== 'object' || error === null || (error as { code?: unknown }).code !== 'ERR_ACCESS_DENIED') return undefined;
  const { permission, resource, message } = error as { permission?: unknown; resource?: unknown; message?: unknown };
  if (typeof permission !== 'string') {
    // Node.js raises this form for APIs the permission model disables outright, such as fchmod.
    return new SealmeshError('SEALMESH_ERR_SANDBOX_DENIED', `the sandbox denied an operation: ${String(message)}`, { cause: error });
  }
  const where = typeof resource === 'string' && resource !== '' ? ` on ${resource}` : '';
  return new SealmeshError(
    'SEALMESH_ERR_SANDBOX_DENIED',
    `the sandbox denied ${permission}${where}; grant the path with --sandbox-allow-read or --sandbox-allow-write, or choose a path the sandbox already allows`,
    { cause: error },
  );
}
