import { chmod, chown, lstat, realpath, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { connect, type Server } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { SealmeshError } from '../errors/index.ts';

/** Owner, group and permission bits of the Unix sockets that the proxy creates. */
export interface SocketPermissions {
  /** Permission bits of the socket file, such as 0o600. */
  mode: number;
  /** Owner of the socket; the proxy's user when absent. */
  uid?: number;
  /** Group of the socket; the proxy's primary group when absent. */
  gid?: number;
}

export const DEFAULT_SOCKET_MODE = 0o600;

/** A bound Unix socket and the way to remove it again. */
export interface UnixSocketListener {
  /** Path the socket was bound at, with symbolic links in its directory resolved. */
  path: string;
  /** Unlinks the socket file unless another file has taken its place. Safe to call twice. */
  remove: () => Promise<void>;
}

const STICKY = 0o1000;
const GROUP_WRITE = 0o020;
const OTHER_WRITE = 0o002;
/** How long a connect to an existing socket may take before it counts as live. */
const PROBE_TIMEOUT_MS = 1_000;
/**
 * Umask while binding: the kernel creates the socket file with mode 0777 minus the umask, so
 * 0177 gives 0600 from the first moment, before the chmod to the configured mode.
 */
const BIND_UMASK = 0o177;

/** Formats permission bits as four octal digits, such as 0660 or 1777. */
export function formatMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Parses `--socket-mode` text such as `0660`, `660` or `0o660`. */
export function parseSocketMode(text: string): number {
  const match = /^(?:0o|0)?([0-7]{3})$/.exec(text.trim());
  if (match === null) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--socket-mode ${JSON.stringify(text)} is invalid: use three or four octal digits, for example 0600 or 0660`);
  }
  return Number.parseInt(match[1] ?? '', 8);
}

/** Writes the permission bits of one class (`g` or `o`) in chmod notation, such as `o+rw`. */
function symbolicBits(mode: number, who: 'g' | 'o'): string {
  const bits = who === 'g' ? (mode >> 3) & 7 : mode & 7;
  const letters = `${bits & 4 ? 'r' : ''}${bits & 2 ? 'w' : ''}${bits & 1 ? 'x' : ''}`;
  return `${who}+${letters}`;
}

/**
 * Rejects a socket mode that gives other users any permission bit. Connecting to a Unix socket
 * needs only write permission on it, but read and execute bits are rejected as well so that the
 * mode states the intent plainly.
 */
export function checkSocketMode(path: string, mode: number): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `socket mode ${String(mode)} for ${path} is invalid: use permission bits from 0000 to 0777`);
  }
  if ((mode & 0o007) !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_MODE_TOO_OPEN',
      `socket mode ${formatMode(mode)} for ${path} sets ${symbolicBits(mode, 'o')}, so any local user could connect and act with this proxy's identity; ` +
        'use 0600, or 0660 with --socket-group naming the group that may connect',
    );
  }
}

interface DirectoryContext {
  /** The socket path, named in every message. */
  socket: string;
  euid: number;
  socketGid: number | undefined;
}

/**
 * Checks one directory on the socket's path. The socket's own directory must not be writable by
 * other users at all. A directory above it may be, when its sticky bit is set as on /tmp, because
 * then other users cannot rename or delete the entries that lead to the socket.
 */
function checkDirectory(dir: string, stats: Stats, context: DirectoryContext, ancestor: boolean): void {
  const mode = stats.mode & 0o7777;
  const sticky = (mode & STICKY) !== 0;
  const where = ancestor ? `directory ${dir}, above the socket ${context.socket},` : `directory ${dir} of the socket ${context.socket}`;
  const stickyNote = sticky ? ', sticky bit set' : '';
  if ((mode & OTHER_WRITE) !== 0 && (!ancestor || !sticky)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE',
      `${where} has mode ${formatMode(mode)} (o+w${stickyNote}): other users can create entries in it and so take or replace the socket path; ` +
        `run \`chmod o-w ${dir}\` or put the socket in a directory that only the proxy's user can write`,
    );
  }
  if ((mode & GROUP_WRITE) !== 0 && stats.gid !== context.socketGid && (!ancestor || !sticky)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_DIR_GROUP_WRITABLE',
      `${where} has mode ${formatMode(mode)} (g+w) and its group, gid ${stats.gid}, is not the socket group ` +
        `(${context.socketGid === undefined ? 'no --socket-group given' : `gid ${context.socketGid}`}): members of gid ${stats.gid} can replace the socket; ` +
        `run \`chmod g-w ${dir}\` or pass --socket-group ${stats.gid} if that group may connect anyway`,
    );
  }
  if (stats.uid !== context.euid && stats.uid !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_DIR_OWNER',
      `${where} is owned by uid ${stats.uid}, which is neither the proxy's user (uid ${context.euid}) nor root; that user can replace the socket; ` +
        `run \`chown ${context.euid} ${dir}\` or put the socket in a directory owned by the proxy's user or root`,
    );
  }
}

/** Returns the socket's directory with symbolic links resolved. */
async function resolveSocketDirectory(socketPath: string): Promise<string> {
  try {
    return await realpath(dirname(socketPath));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new SealmeshError(
        'SEALMESH_ERR_SOCKET_DIR_MISSING',
        `directory ${dirname(socketPath)} of the socket ${socketPath} does not exist; create it owned by the proxy's user with mode 0700, or 0750 with the socket group`,
      );
    }
    throw new SealmeshError('SEALMESH_ERR_SOCKET_SETUP_FAILED', `cannot resolve directory ${dirname(socketPath)} of the socket ${socketPath}: ${code ?? String(error)}`, { cause: error });
  }
}

/**
 * Checks the directory of a socket path and every directory above it, after resolving symbolic
 * links, and returns the resolved directory. The socket is bound there, so a link that changes
 * after the check cannot redirect it.
 */
export async function checkSocketDirectory(socketPath: string, socketGid: number | undefined, euid = currentEuid()): Promise<string> {
  const dir = await resolveSocketDirectory(socketPath);

  const context: DirectoryContext = { socket: socketPath, euid, socketGid };
  checkDirectory(dir, await lstat(dir), context, false);
  for (let current = dirname(dir); ; current = dirname(current)) {
    // The sandbox grants read access to the socket's own directory but not to the directories
    // above it, because a grant covers a whole subtree. The sandbox launcher checked those with
    // `checkSocketAncestors` before it started this process.
    if (readableInSandbox(current)) checkDirectory(current, await lstat(current), context, true);
    if (dirname(current) === current) break;
  }
  return dir;
}

/**
 * Checks every directory above the socket's directory, after resolving symbolic links, with the
 * rules for ancestors. The sandbox launcher runs it before it starts the sandboxed proxy, which
 * may not read those directories. A directory that passes is owned by root or the proxy's user
 * and open to others only with the sticky bit, so no other user can change it before the bind.
 */
export async function checkSocketAncestors(socketPath: string, euid = currentEuid()): Promise<void> {
  const dir = await resolveSocketDirectory(socketPath);
  const context: DirectoryContext = { socket: socketPath, euid, socketGid: undefined };
  for (let current = dirname(dir); ; current = dirname(current)) {
    checkDirectory(current, await lstat(current), context, true);
    if (dirname(current) === current) break;
  }
}

/** True unless this process runs under the Node.js permission model without read access to `path`. */
function readableInSandbox(path: string): boolean {
  return process.permission === undefined || process.permission.has('fs.read', path);
}

/** Returns true when a process accepts connections on the socket at `path`. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    socket.setTimeout(PROBE_TIMEOUT_MS, () => {
      // A listener whose backlog is full does not accept at once, but it is still alive.
      socket.destroy();
      resolve(true);
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'ECONNREFUSED' && error.code !== 'ENOENT'));
  });
}

function fileKind(stats: Stats): string {
  if (stats.isSymbolicLink()) return 'symbolic link';
  if (stats.isDirectory()) return 'directory';
  if (stats.isFile()) return 'regular file';
  if (stats.isFIFO()) return 'FIFO';
  return 'special file';
}

/**
 * Removes a socket left behind by an earlier run of the proxy. Anything else at the path is left
 * alone and rejected: another kind of file, a socket of another user, or a socket that a process
 * still listens on.
 */
export async function removeStaleSocket(path: string, owners: readonly number[]): Promise<void> {
  let stats: Stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket()) {
    throw new SealmeshError('SEALMESH_ERR_SOCKET_PATH_EXISTS', `${path} exists and is a ${fileKind(stats)}, not a socket; remove it or choose another socket path`);
  }
  if (!owners.includes(stats.uid)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_PATH_EXISTS',
      `${path} is a socket owned by uid ${stats.uid}, not by the proxy's user or the --socket-owner (uid ${owners.join(' or ')}); remove it or choose another socket path`,
    );
  }
  if (await isListening(path)) {
    throw new SealmeshError('SEALMESH_ERR_SOCKET_IN_USE', `another process is listening on ${path}; stop it or choose another socket path`);
  }
  await unlink(path);
}

/** Binds `server` to `path` under a umask that keeps the new socket file at mode 0600. */
function bindRestricted(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      const code = error.code ?? error.message;
      reject(
        code === 'EADDRINUSE'
          ? new SealmeshError('SEALMESH_ERR_SOCKET_PATH_EXISTS', `${path} was created by another process while the proxy was binding it; check who writes to ${dirname(path)}`)
          : new SealmeshError('SEALMESH_ERR_SOCKET_SETUP_FAILED', `binding the socket ${path} failed: ${code}`, { cause: error }),
      );
    };
    server.once('error', onError);
    // Node binds a Unix socket synchronously inside listen() when the process is not a cluster
    // worker, so the umask applies to exactly that bind. process.umask is process-wide: a file
    // that the libuv thread pool creates at the same moment gets the narrower mode too, never a
    // wider one.
    const previous = process.umask(BIND_UMASK);
    try {
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
    } finally {
      process.umask(previous);
    }
  });
}

function currentEuid(): number {
  if (process.geteuid === undefined) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'Unix socket permissions need a POSIX system');
  return process.geteuid();
}

/**
 * Binds `server` to a Unix socket at `path` after checking the path, then sets the configured
 * owner, group and mode. The group is set before the mode, so the socket never has group bits for
 * the wrong group.
 */
export async function listenUnix(server: Server, path: string, permissions: SocketPermissions): Promise<UnixSocketListener> {
  const euid = currentEuid();
  checkSocketMode(path, permissions.mode);
  const dir = await checkSocketDirectory(path, permissions.gid, euid);
  const target = join(dir, basename(path));
  await removeStaleSocket(target, permissions.uid === undefined ? [euid] : [euid, permissions.uid]);
  await bindRestricted(server, target);
  try {
    if (permissions.uid !== undefined || permissions.gid !== undefined) await chown(target, permissions.uid ?? -1, permissions.gid ?? -1);
    await chmod(target, permissions.mode);
  } catch (error) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await unlink(target).catch(() => undefined);
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new SealmeshError(
      'SEALMESH_ERR_SOCKET_SETUP_FAILED',
      `setting owner ${permissions.uid ?? '-'}, group ${permissions.gid ?? '-'} and mode ${formatMode(permissions.mode)} on ${target} failed: ${code}; ` +
        'changing the owner needs root, and changing the group needs membership in it',
      { cause: error },
    );
  }
  const bound = await lstat(target);
  return {
    path: target,
    remove: async () => {
      try {
        const now = await lstat(target);
        if (now.isSocket() && now.ino === bound.ino && now.dev === bound.dev) await unlink(target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    },
  };
}
