import { ERROR_CODES, type ErrorCode } from './codes.ts';

export { ERROR_CODES, type ErrorCode } from './codes.ts';

/**
 * The one error class of sealmesh. Every failure that crosses a module boundary carries a stable
 * `code` from the registry in `codes.ts`; `message` names the value at fault and the fix, and never
 * contains a key, token or other secret.
 */
export class SealmeshError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SealmeshError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
  }

  /** Returns the body the control-plane API sends for this error. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Returns true when `value` is a SealmeshError, optionally with the given code. */
export function isSealmeshError(value: unknown, code?: ErrorCode): value is SealmeshError {
  return value instanceof SealmeshError && (code === undefined || value.code === code);
}

/** Returns true when `value` is one of the registered codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}
