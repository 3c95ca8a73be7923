/**
 * A monotonic counter stored in a PKCS#11 data object, used to detect a rollback of the data
 * directory to an older copy.
 */
import { SealmeshError } from '../../errors/index.ts';
import type { MonotonicCounter } from '../types.ts';
import { TokenSession, call, type Pkcs11Handle, type Pkcs11TokenOptions } from './session.ts';

const CONTEXT = 'PKCS#11 counter';
const VALUE_BYTES = 8;
const MAX_VALUE = 2n ** 64n - 1n;
/** CKA_APPLICATION of the data objects this module creates. */
const APPLICATION = 'sealmesh';

export interface Pkcs11CounterOptions extends Pkcs11TokenOptions {
  /** CKA_LABEL of the data object. */
  label: string;
}

/**
 * A counter kept as an 8-byte big-endian CKA_VALUE of a private token data object (CKO_DATA).
 *
 * SoftHSM 2.6.1 rejects C_SetAttributeValue on the CKA_VALUE of a data object with
 * CKR_ATTRIBUTE_READ_ONLY, so each advance creates a new object with the same label and then
 * destroys the old one. A crash between the two steps leaves two objects. `open` then keeps the
 * one with the highest value and destroys the rest, which is safe because the value only goes up.
 *
 * NOTE: a data object is a monotonic counter only against an attacker who does not know the user
 * PIN. SoftHSM has no hardware monotonic counter, so anyone with the PIN can lower the value with
 * C_SetAttributeValue, and anyone who can restore the token directory can roll it back along with
 * the data. `advanceTo` refuses to go down only for callers that go through this class.
 */
export class Pkcs11Counter implements MonotonicCounter {
  readonly name: string;
  #session: TokenSession | undefined;
  readonly #label: string;
  #object: Pkcs11Handle;

  private constructor(session: TokenSession, object: Pkcs11Handle, label: string) {
    this.#session = session;
    this.#object = object;
    this.#label = label;
    this.name = `pkcs11:${session.tokenLabel}/${label}`;
  }

  /**
   * Creates the data object with value `initial` (default 0). Throws SEALMESH_ERR_CONFLICT when a
   * data object with the label exists, SEALMESH_ERR_INVALID_ARGUMENT for a value outside 0 to
   * 2^64 - 1, besides the errors of opening the token.
   */
  static async create(options: Pkcs11CounterOptions, initial = 0n): Promise<Pkcs11Counter> {
    validateLabel(options);
    validateValue(initial);
    const session = TokenSession.open(options, CONTEXT);
    try {
      if (findCounters(session, options.label).length > 0) {
        throw new SealmeshError(
          'SEALMESH_ERR_CONFLICT',
          `${CONTEXT}: token ${JSON.stringify(options.tokenLabel)} already has a data object labelled ${JSON.stringify(options.label)}; open it instead`,
        );
      }
      const object = createCounterObject(session, options.label, initial);
      return new Pkcs11Counter(session, object, options.label);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  /**
   * Finds the data object labelled `label`. When an interrupted advance left several, it keeps
   * the highest and destroys the others. Throws SEALMESH_ERR_SEAL_KEY_MISSING when there is none,
   * besides the errors of opening the token. A caller must not react by creating a new counter at
   * 0, because that would hide a rollback.
   */
  static async open(options: Pkcs11CounterOptions): Promise<Pkcs11Counter> {
    validateLabel(options);
    const session = TokenSession.open(options, CONTEXT);
    try {
      const objects = findCounters(session, options.label);
      const label = `data object ${JSON.stringify(options.label)} in token ${JSON.stringify(options.tokenLabel)}`;
      if (objects.length === 0) {
        throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_MISSING', `${CONTEXT}: no ${label}; create the counter with the init command or correct the label`);
      }
      const values = objects.map((object) => readValue(session, object, label));
      const highest = values.reduce((best, value, i) => (value > values[best]! ? i : best), 0);
      objects.forEach((object, i) => {
        if (i !== highest) {
          call(CONTEXT, 'C_DestroyObject', () => session.library.C_DestroyObject(session.handle, object));
        }
      });
      return new Pkcs11Counter(session, objects[highest]!, options.label);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  /** Returns the current value. Throws SEALMESH_ERR_SEAL_KEY_CORRUPT when it is not 8 bytes. */
  async read(): Promise<bigint> {
    return this.#readSync();
  }

  /**
   * Raises the counter to `value`; does nothing when it is already there. Throws
   * SEALMESH_ERR_SEAL_COUNTER_REGRESSION when the counter is higher, because going down would let
   * an older copy of the data pass the rollback check. Throws SEALMESH_ERR_INVALID_ARGUMENT for a
   * value outside 0 to 2^64 - 1, and SEALMESH_ERR_SEAL_HSM_UNAVAILABLE when the HSM fails. If
   * only destroying the old object fails, the counter already contains `value`, and the next `open`
   * removes the old object.
   */
  async advanceTo(value: bigint): Promise<void> {
    validateValue(value);
    const session = this.#requireSession();

    // Read, compare and replace run with no await in between, so no other call can interleave.
    const current = this.#readSync();
    if (value < current) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_COUNTER_REGRESSION',
        `${CONTEXT}: ${this.name} is at ${current} and cannot go down to ${value}; the data directory may be an older copy`,
      );
    }
    if (value === current) {
      return;
    }
    const replacement = createCounterObject(session, this.#label, value);
    const stored = readValue(session, replacement, this.name);
    if (stored !== value) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_HSM_UNAVAILABLE', `${CONTEXT}: ${this.name} reads back ${stored} after writing ${value}; check the HSM`);
    }
    const previous = this.#object;
    this.#object = replacement;
    call(CONTEXT, 'C_DestroyObject', () => session.library.C_DestroyObject(session.handle, previous));
  }

  /** Closes the HSM session. Idempotent. */
  async close(): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    session?.close();
  }

  #readSync(): bigint {
    return readValue(this.#requireSession(), this.#object, this.name);
  }

  #requireSession(): TokenSession {
    if (this.#session === undefined) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_CLOSED', `${CONTEXT}: the counter was closed; open it again`);
    }
    return this.#session;
  }
}

function findCounters(session: TokenSession, label: string): Pkcs11Handle[] {
  const { api } = session;
  return session.findObjects([
    { type: api.CKA_CLASS, value: api.CKO_DATA },
    { type: api.CKA_LABEL, value: label },
  ]);
}

/** Creates a private token data object that contains `value`, and returns its handle. */
function createCounterObject(session: TokenSession, label: string, value: bigint): Pkcs11Handle {
  const { api, library } = session;
  return call(CONTEXT, 'C_CreateObject', () =>
    library.C_CreateObject(session.handle, [
      { type: api.CKA_CLASS, value: api.CKO_DATA },
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_PRIVATE, value: true },
      { type: api.CKA_LABEL, value: label },
      { type: api.CKA_APPLICATION, value: APPLICATION },
      { type: api.CKA_VALUE, value: encodeValue(value) },
    ]),
  );
}

/**
 * Reads the value of a counter object. Throws SEALMESH_ERR_SEAL_KEY_CORRUPT when CKA_VALUE is not
 * 8 bytes, which means something other than this class wrote the object.
 */
function readValue(session: TokenSession, object: Pkcs11Handle, name: string): bigint {
  const { api, library } = session;
  const [attribute] = call(CONTEXT, 'C_GetAttributeValue', () => library.C_GetAttributeValue(session.handle, object, [{ type: api.CKA_VALUE }]));
  const bytes = attribute?.value;
  if (bytes === undefined || bytes.length !== VALUE_BYTES) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_CORRUPT',
      `${CONTEXT}: ${name} holds ${bytes?.length ?? 0} bytes, expected ${VALUE_BYTES}; it was changed outside sealmesh`,
    );
  }
  return bytes.readBigUInt64BE(0);
}

function encodeValue(value: bigint): Buffer {
  const bytes = Buffer.alloc(VALUE_BYTES);
  bytes.writeBigUInt64BE(value, 0);
  return bytes;
}

/** Throws SEALMESH_ERR_INVALID_ARGUMENT unless `value` fits the 8-byte unsigned counter. */
function validateValue(value: bigint): void {
  if (typeof value !== 'bigint' || value < 0n || value > MAX_VALUE) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${CONTEXT}: value ${String(value)} is outside 0 to 2^64 - 1`);
  }
}

/** Throws SEALMESH_ERR_INVALID_ARGUMENT for an empty label. */
function validateLabel(options: Pkcs11CounterOptions): void {
  if (typeof options.label !== 'string' || options.label === '') {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${CONTEXT}: option label is missing or empty`);
  }
}
