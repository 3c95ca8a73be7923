/**
 * The key-file seal: a random 32-byte KEK stored base64 in a file outside the data directory.
 *
 * The file must be a regular file owned by the server's user with mode 0600 or stricter, and must
 * not lie inside the data directory, because a copy of that directory must not carry its own key.
 */
import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { chmod, lstat, mkdir, open, realpath, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { SealmeshError } from '../../errors/index.ts';
import { MemoryKekProvider } from '../memory-kek.ts';

/** The environment variable that overrides the default key file path. */
export const KEY_FILE_ENV = 'SEALMESH_SEAL_KEY_FILE';

const KEY_BYTES = 32;
/** Maximum key file size that `open` reads: 44 base64 characters plus line endings and some whitespace. */
const MAX_KEY_FILE_BYTES = 256;
const STRICT_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const STRENGTH =
  'key-file seal: protects a copy of the data directory taken without the key file, but not against a host-level attacker who reads both';

/**
 * Returns the key file path for `dataDir`: the value of `SEALMESH_SEAL_KEY_FILE` when it is set and
 * not empty, else a sibling of the data directory named `<data dir name>.seal-key`, for example
 * `/var/lib/sealmesh.seal-key` for `/var/lib/sealmesh`. Throws SEALMESH_ERR_INVALID_ARGUMENT for
 * the root directory, which has no sibling.
 */
export function defaultKeyFilePath(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[KEY_FILE_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    return resolve(fromEnv);
  }
  const absolute = resolve(dataDir);
  const name = basename(absolute);
  if (name === '') {
    throw new SealmeshError(
      'SEALMESH_ERR_INVALID_ARGUMENT',
      `key-file seal: the data directory ${absolute} has no parent for the key file; set ${KEY_FILE_ENV}`,
    );
  }
  return join(dirname(absolute), `${name}.seal-key`);
}

/** A seal provider whose KEK is read from a key file. */
export class KeyFileSealProvider extends MemoryKekProvider {
  /** Absolute path of the key file. */
  readonly path: string;

  private constructor(path: string, kek: Uint8Array) {
    super('keyfile', STRENGTH, kek);
    this.path = path;
  }

  /**
   * Unwraps like every in-memory KEK, but names the key file and the next step when authentication
   * fails.
   */
  override async unwrap(wrapped: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    try {
      return await super.unwrap(wrapped, aad);
    } catch (error) {
      if (error instanceof SealmeshError && error.code === 'SEALMESH_ERR_SEAL_UNWRAP_FAILED') {
        throw new SealmeshError(
          error.code,
          `${error.message} (key file ${this.path}). Pass the key file that sealed this data with --seal-key-file, or restore ${this.path} from a backup`,
          { cause: error },
        );
      }
      throw error;
    }
  }

  /**
   * Writes a new random key to `path` with mode 0600, creating missing parent directories with
   * mode 0700. Throws SEALMESH_ERR_CONFLICT when the file exists, because overwriting it would
   * make everything wrapped under the old key unreadable. When `dataDir` is given, throws
   * SEALMESH_ERR_SEAL_KEY_LOCATION if `path` lies inside it.
   */
  static async create(path: string, options: { dataDir?: string } = {}): Promise<KeyFileSealProvider> {
    const absolute = resolve(path);
    if (options.dataDir !== undefined) {
      await assertOutsideDataDir(absolute, options.dataDir);
    }
    await mkdir(dirname(absolute), { recursive: true, mode: 0o700 });

    let handle: FileHandle;
    try {
      handle = await open(absolute, 'wx', 0o600);
    } catch (error) {
      if (errorCode(error) === 'EEXIST') {
        throw new SealmeshError(
          'SEALMESH_ERR_CONFLICT',
          `key-file seal: ${absolute} already exists, and an existing key file is never overwritten; pass a path that does not exist yet`,
          { cause: error },
        );
      }
      throw error;
    }

    const key = randomBytes(KEY_BYTES);
    try {
      // The umask cannot add permission bits, but set 0600 explicitly in case the file system ignores the mode.
      // Node.js 24's permission model rejects descriptor-based chmod, so a sandboxed server sets the
      // mode by path. This process created the file with O_EXCL a moment before.
      if (process.permission === undefined) await handle.chmod(0o600);
      else await chmod(absolute, 0o600);
      await handle.writeFile(`${key.toString('base64')}\n`, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await syncDirectory(dirname(absolute));

    const provider = new KeyFileSealProvider(absolute, key);
    key.fill(0);
    return provider;
  }

  /**
   * Reads the key from `path` after checking the file. Each check throws with the path and the fix:
   * - SEALMESH_ERR_SEAL_KEY_MISSING when the file does not exist;
   * - SEALMESH_ERR_SEAL_KEY_LOCATION when it is a symbolic link, which could point anywhere,
   *   including into the data directory, or when it lies inside `dataDir`;
   * - SEALMESH_ERR_SEAL_KEY_PERMISSIONS when it grants any group or other permission, or another
   *   user owns it, because then someone besides the server's user may read or replace it;
   * - SEALMESH_ERR_SEAL_KEY_CORRUPT when it is not a regular file, is not base64, or does not
   *   decode to exactly 32 bytes.
   */
  static async open(path: string, options: { dataDir: string }): Promise<KeyFileSealProvider> {
    const absolute = resolve(path);
    const linkStats = await lstatKeyFile(absolute);
    if (linkStats.isSymbolicLink()) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_KEY_LOCATION',
        `key-file seal: ${absolute} is a symbolic link; point the server at the real file instead`,
      );
    }
    await assertOutsideDataDir(absolute, options.dataDir);

    // O_NOFOLLOW closes the gap between lstat and open, and O_NONBLOCK keeps a FIFO from blocking.
    const handle = await open(absolute, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((error: unknown) => {
      if (errorCode(error) === 'ELOOP') {
        throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_LOCATION', `key-file seal: ${absolute} was replaced by a symbolic link; point the server at the real file`);
      }
      throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_MISSING', `key-file seal: cannot open ${absolute}: ${String(error)}`, { cause: error });
    });
    try {
      const stats = await handle.stat();
      if (!stats.isFile() || stats.ino !== linkStats.ino || stats.dev !== linkStats.dev) {
        throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_CORRUPT', `key-file seal: ${absolute} is not a regular file; pass the key file with --seal-key-file, or restore it from a backup`);
      }
      assertOwnerOnly(absolute, stats);
      if (stats.size > MAX_KEY_FILE_BYTES) {
        throw new SealmeshError(
          'SEALMESH_ERR_SEAL_KEY_CORRUPT',
          `key-file seal: ${absolute} is ${stats.size} bytes, too long for a base64 32-byte key; restore the key file from a backup`,
        );
      }
      const key = decodeKey(absolute, await handle.readFile('utf8'));
      const provider = new KeyFileSealProvider(absolute, key);
      key.fill(0);
      return provider;
    } finally {
      await handle.close();
    }
  }
}

/** Returns `lstat` of the key file, or throws SEALMESH_ERR_SEAL_KEY_MISSING when it does not exist. */
async function lstatKeyFile(path: string): Promise<Stats> {
  try {
    return await lstat(path);
  } catch (error) {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_KEY_MISSING',
        `key-file seal: ${path} does not exist; restore it from a backup, or set ${KEY_FILE_ENV} to its path`,
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * Throws SEALMESH_ERR_SEAL_KEY_PERMISSIONS when the file grants any permission to group or other
 * users, or when a user other than the current one owns it. Skips the owner check where the
 * platform has no user ids.
 */
function assertOwnerOnly(path: string, stats: Stats): void {
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_PERMISSIONS',
      `key-file seal: ${path} has mode ${formatMode(mode)}, which grants access to group or other users; run chmod 600 ${path}`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_PERMISSIONS',
      `key-file seal: ${path} is owned by uid ${stats.uid}, not by the server's uid ${uid}; run chown ${uid} ${path}`,
    );
  }
}

/**
 * Throws SEALMESH_ERR_SEAL_KEY_LOCATION when `keyPath` is inside `dataDir` after resolving symbolic
 * links in both, because a copy or backup of the data directory would then include its key.
 */
async function assertOutsideDataDir(keyPath: string, dataDir: string): Promise<void> {
  const key = await canonicalPath(keyPath);
  const data = await canonicalPath(resolve(dataDir));
  const prefix = data.endsWith(sep) ? data : data + sep;
  if (key === data || key.startsWith(prefix)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_LOCATION',
      `key-file seal: ${keyPath} lies inside the data directory ${data}; move it out, for example to ${defaultKeyFilePath(dataDir, {})}`,
    );
  }
}

/** Resolves symbolic links in the longest existing prefix of `path` and appends the rest unchanged. */
async function canonicalPath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    const parent = dirname(path);
    if (errorCode(error) !== 'ENOENT' || parent === path) {
      throw error;
    }
    return join(await canonicalPath(parent), basename(path));
  }
}

/**
 * Decodes the file content. Throws SEALMESH_ERR_SEAL_KEY_CORRUPT when it is not strict base64
 * (Buffer.from would silently skip invalid characters) or not exactly 32 bytes.
 */
function decodeKey(path: string, content: string): Buffer {
  const text = content.trim();
  if (!STRICT_BASE64.test(text) || text.length % 4 !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_CORRUPT',
      `key-file seal: ${path} does not contain base64 text; restore the key file from a backup`,
    );
  }
  const key = Buffer.from(text, 'base64');
  if (key.length !== KEY_BYTES) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_CORRUPT',
      `key-file seal: ${path} decodes to ${key.length} bytes, expected ${KEY_BYTES}; restore the key file from a backup`,
    );
  }
  return key;
}

/** Flushes a directory entry to disk, so a new key file survives a crash right after `create`. */
async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function formatMode(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined;
}
