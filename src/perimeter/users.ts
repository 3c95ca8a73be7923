import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SealmeshError } from '../errors/index.ts';

const execFileAsync = promisify(execFile);

/** Maximum uid or gid Linux accepts; 2^32 - 1 itself means "unchanged" to chown(2). */
const MAX_ID = 2 ** 32 - 2;

/** POSIX portable user and group names, as useradd accepts them by default. */
const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

/**
 * Looks a name up with `getent`, so that users and groups from every NSS source (files, LDAP,
 * systemd) resolve, and returns the third field of the entry: the uid or gid.
 */
async function lookUp(database: 'passwd' | 'group', name: string, what: string): Promise<number> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('getent', [database, name], { encoding: 'utf8', timeout: 5_000 }));
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { code?: string | number };
    if (failure.code === 'ENOENT') {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(name)} cannot be resolved because getent is not installed; pass the numeric id instead`);
    }
    // getent exits with 2 when the key is not in the database.
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(name)} not found; pass an existing name or a numeric id`);
  }
  const id = Number(stdout.split(':')[2]);
  if (!Number.isInteger(id)) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(name)} has no numeric id in its ${database} entry`);
  return id;
}

async function resolveId(database: 'passwd' | 'group', value: string, what: string): Promise<number> {
  if (/^\d+$/.test(value)) {
    const id = Number(value);
    if (id > MAX_ID) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${value} is invalid: ids range from 0 to ${MAX_ID}`);
    return id;
  }
  if (!NAME_PATTERN.test(value)) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(value)} is neither a numeric id nor a valid name`);
  return lookUp(database, value, what);
}

/** Resolves a user given as a uid or a name; `what` names the option in errors, such as `--socket-owner`. */
export function resolveUserId(value: string, what: string): Promise<number> {
  return resolveId('passwd', value, what);
}

/** Resolves a group given as a gid or a name. */
export function resolveGroupId(value: string, what: string): Promise<number> {
  return resolveId('group', value, what);
}

