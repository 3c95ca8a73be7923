/**
 * Errors of the sealed store's integrity checks, and the mapping of backend failures caused by a
 * damaged SQLite file to SEALMESH_ERR_INTEGRITY_FILE_CORRUPT.
 */
import { type ErrorCode, SealmeshError, isSealmeshError } from '../errors/index.ts';

const RESTORE_ADVICE = 'The data directory was changed outside sealmesh: stop the server and restore it from a trusted backup';

// SQLite result codes for a damaged file (https://sqlite.org/rescode.html). node:sqlite puts the
// extended code in `errcode`, whose low byte is the primary code.
const SQLITE_CORRUPT = 11;
const SQLITE_NOTADB = 26;
// SQLite reports an unknown schema format number in the header as a plain SQLITE_ERROR with this text.
const CORRUPTION_MESSAGES = ['database disk image is malformed', 'file is not a database', 'unsupported file format'];

/**
 * Returns an integrity error that names the record by its backend key (a hashed name or an
 * internal key, never the plaintext key), the revision when known, and the failed check.
 */
export function recordError(code: ErrorCode, name: string, revision: number | undefined, check: string): SealmeshError {
  const at = revision === undefined ? '' : ` at revision ${revision}`;
  return new SealmeshError(code, `sealed record ${name}${at} failed the integrity check: ${check}. ${RESTORE_ADVICE}`);
}

/** Returns an integrity error about the store as a whole (head, chain, meta or keyring). */
export function storeError(code: ErrorCode, check: string): SealmeshError {
  return new SealmeshError(code, `sealed store failed the integrity check: ${check}. ${RESTORE_ADVICE}`);
}

/** Returns true when `error` or one of its causes is SQLite reporting a damaged or foreign file. */
export function isCorruptionError(error: unknown): boolean {
  return corruptionCause(error) !== undefined;
}

/** Returns the error in the cause chain of `error` that reports a damaged or foreign file, if any. */
function corruptionCause(error: unknown): Error | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 8; depth += 1) {
    const errcode = (current as { errcode?: unknown }).errcode;
    if (typeof errcode === 'number' && [SQLITE_CORRUPT, SQLITE_NOTADB].includes(errcode & 0xff)) return current;
    const message = current.message;
    if (CORRUPTION_MESSAGES.some((text) => message.includes(text)) && !(current.cause instanceof Error)) return current;
    current = current.cause;
  }
  return undefined;
}

/** Returns SEALMESH_ERR_INTEGRITY_FILE_CORRUPT for a damaged-file failure during `action`, else `error` unchanged. */
export function mapBackendError(error: unknown, action: string): unknown {
  const cause = corruptionCause(error);
  if (cause === undefined || isSealmeshError(error, 'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT')) return error;
  return new SealmeshError(
    'SEALMESH_ERR_INTEGRITY_FILE_CORRUPT',
    `sealed store ${action} failed because the store file is truncated or corrupted (SQLite: ${cause.message}). ${RESTORE_ADVICE}`,
    { cause: error },
  );
}

/** Runs one backend call and maps a damaged-file failure to SEALMESH_ERR_INTEGRITY_FILE_CORRUPT. */
export async function callBackend<T>(action: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw mapBackendError(error, action);
  }
}

/** Returns true when `error` carries one of the integrity codes, which callers report as tampering. */
export function isIntegrityError(error: unknown): error is SealmeshError {
  return isSealmeshError(error) && error.code.startsWith('SEALMESH_ERR_INTEGRITY_');
}

/**
 * Returns `error` reworded for a sealed snapshot file that failed its checks before a restore: the
 * advice to restore the data directory does not apply, because the directory was left unchanged.
 */
export function snapshotIntegrityError(error: SealmeshError, file: string): SealmeshError {
  const reason = error.message.replace(` ${RESTORE_ADVICE}`, '').replace(RESTORE_ADVICE, '').replace(/[.\s]+$/, '');
  return new SealmeshError(error.code, `snapshot ${file} failed verification, so nothing was restored: ${reason}. Choose another snapshot`, { cause: error });
}
