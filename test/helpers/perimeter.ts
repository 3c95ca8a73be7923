import { execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** A system user created for one test file, removed again in its `after` hook. */
export interface TestUser {
  name: string;
  uid: number;
  /** Primary group, created together with the user (Debian's USERGROUPS_ENAB). */
  gid: number;
}

/** Creates a system user named `sealmesh-test-<random>` with no home directory and no login shell. */
export function createTestUser(): TestUser {
  const name = `sealmesh-test-${randomBytes(4).toString('hex')}`;
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name], { stdio: 'pipe' });
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  return { name, uid, gid };
}

/** Deletes a test user and its primary group; a user that is already gone is ignored. */
export function removeTestUser(user: TestUser | undefined): void {
  if (user === undefined) return;
  try {
    execFileSync('userdel', [user.name], { stdio: 'pipe' });
  } catch {
    // Already removed, for example by an earlier failed run of the same hook.
  }
}

/**
 * Script for a child Node process that connects once and prints `connected` or the error code.
 * Arguments: a Unix socket path, or a host and a port.
 */
export const CONNECT_SCRIPT = `
const net = require('node:net');
const [first, second] = process.argv.slice(1);
const socket = second === undefined ? net.connect({ path: first }) : net.connect({ host: first, port: Number(second) });
socket.setTimeout(3000, () => { console.log('ETIMEDOUT'); socket.destroy(); });
socket.once('connect', () => { console.log('connected'); socket.destroy(); });
socket.once('error', (error) => console.log(error.code ?? error.message));
`;

/** Runs a command to completion and returns its trimmed standard output; rejects on a spawn failure or a timeout. */
export function runChild(command: string, args: string[], options: SpawnOptions = {}, timeoutMs = 10_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} still running after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

/** Connects to a Unix socket from a Node child running as `user`; returns `connected` or the error code. */
export async function connectAsUser(user: { uid: number; gid: number }, path: string): Promise<string> {
  const result = await runChild(process.execPath, ['-e', CONNECT_SCRIPT, path], { uid: user.uid, gid: user.gid });
  return result.stdout || `exit ${String(result.code)}: ${result.stderr}`;
}
