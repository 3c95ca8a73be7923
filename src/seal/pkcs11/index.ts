/**
 * The PKCS#11 seal: the KEK is a non-extractable AES-256 key inside an HSM, and wrap and unwrap run
 * inside the HSM with CKM_AES_GCM, so the KEK never exists in this process.
 *
 * Wrapped format, the same as the in-process providers use:
 * `version (1) | IV (12) | ciphertext | tag (16)`. The IV is random, generated here, and passed to
 * the HSM in CK_GCM_PARAMS together with the AAD and a 128-bit tag length. CKM_AES_GCM was checked
 * against SoftHSM 2.6.1 through pkcs11js 2.1.7, including rejection of an altered ciphertext and of
 * a different AAD, so the CBC-plus-HMAC fallback is not needed there.
 */
import { randomBytes } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import { AEAD_FORMAT_VERSION, AEAD_NONCE_BYTES, AEAD_OVERHEAD_BYTES, AEAD_TAG_BYTES } from '../aead.ts';
import type { SealProvider } from '../types.ts';
import { TokenSession, call, ckrName, hsmFailure, readBool, readUlong, type Pkcs11GcmParams, type Pkcs11Handle, type Pkcs11Mechanism, type Pkcs11TokenOptions } from './session.ts';

export { Pkcs11Counter, type Pkcs11CounterOptions } from './counter.ts';
export type { Pkcs11TokenOptions } from './session.ts';

const CONTEXT = 'PKCS#11 seal';
const KEY_BYTES = 32;

/**
 * Decrypt failures that mean the input or AAD does not authenticate. SoftHSM 2.6.1 reports a GCM
 * tag mismatch as CKR_GENERAL_ERROR, so that code counts here too.
 */
const AUTHENTICATION_FAILURES = new Set(['CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'CKR_GENERAL_ERROR']);

const STRENGTH =
  'PKCS#11 seal: strong against a copy of the disk, because the KEK never leaves the HSM, but code running as the server can still ask the HSM to unwrap';

export interface Pkcs11SealOptions extends Pkcs11TokenOptions {
  /** CKA_LABEL of the AES key in the token. */
  keyLabel: string;
}

/** A seal provider whose wrap and unwrap run inside a PKCS#11 token. */
export class Pkcs11SealProvider implements SealProvider {
  readonly name = 'pkcs11';
  readonly strength = STRENGTH;
  /** The token and key label, for logs. */
  readonly description: string;
  #session: TokenSession | undefined;
  readonly #key: Pkcs11Handle;

  private constructor(session: TokenSession, key: Pkcs11Handle, keyLabel: string) {
    this.#session = session;
    this.#key = key;
    this.description = `token ${JSON.stringify(session.tokenLabel)}, key ${JSON.stringify(keyLabel)}`;
  }

  /**
   * Generates a new AES-256 key in the token under `keyLabel`: a token object that is private,
   * sensitive, not extractable and not modifiable, usable only to encrypt and decrypt. Throws
   * SEALMESH_ERR_CONFLICT when a secret key with that label exists, besides the errors of `open`.
   */
  static async create(options: Pkcs11SealOptions): Promise<Pkcs11SealProvider> {
    validateKeyLabel(options);
    const session = TokenSession.open(options, CONTEXT);
    try {
      const { api, library } = session;
      if (findKeys(session, options.keyLabel).length > 0) {
        throw new SealmeshError(
          'SEALMESH_ERR_CONFLICT',
          `${CONTEXT}: token ${JSON.stringify(options.tokenLabel)} already has a key labelled ${JSON.stringify(options.keyLabel)}; open it instead or choose another label`,
        );
      }
      const key = call(CONTEXT, 'C_GenerateKey', () =>
        library.C_GenerateKey(session.handle, { mechanism: api.CKM_AES_KEY_GEN }, [
          { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
          { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
          { type: api.CKA_VALUE_LEN, value: KEY_BYTES },
          { type: api.CKA_LABEL, value: options.keyLabel },
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_SENSITIVE, value: true },
          { type: api.CKA_EXTRACTABLE, value: false },
          { type: api.CKA_MODIFIABLE, value: false },
          { type: api.CKA_ENCRYPT, value: true },
          { type: api.CKA_DECRYPT, value: true },
          { type: api.CKA_WRAP, value: false },
          { type: api.CKA_UNWRAP, value: false },
          { type: api.CKA_SIGN, value: false },
          { type: api.CKA_VERIFY, value: false },
          { type: api.CKA_DERIVE, value: false },
        ]),
      );
      return new Pkcs11SealProvider(session, key, options.keyLabel);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  /**
   * Finds the key labelled `keyLabel` and checks its attributes. Throws, besides the errors of
   * opening the token (HSM_UNAVAILABLE, KEY_MISSING for the token, HSM_LOGIN_FAILED):
   * - SEALMESH_ERR_SEAL_KEY_MISSING when the token has no secret key with the label;
   * - SEALMESH_ERR_CONFLICT when several keys have it;
   * - SEALMESH_ERR_SEAL_KEY_CORRUPT when it is not an AES-256 key allowed to encrypt and decrypt;
   * - SEALMESH_ERR_SEAL_KEY_PERMISSIONS when it is extractable or not sensitive, because then its
   *   value could leave the HSM and this provider would promise more than it gives.
   */
  static async open(options: Pkcs11SealOptions): Promise<Pkcs11SealProvider> {
    validateKeyLabel(options);
    const session = TokenSession.open(options, CONTEXT);
    try {
      const keys = findKeys(session, options.keyLabel);
      const label = `key ${JSON.stringify(options.keyLabel)} in token ${JSON.stringify(options.tokenLabel)}`;
      if (keys.length === 0) {
        throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_MISSING', `${CONTEXT}: no ${label}; create it with the init command or correct the key label`);
      }
      if (keys.length > 1) {
        throw new SealmeshError('SEALMESH_ERR_CONFLICT', `${CONTEXT}: ${keys.length} keys match ${label}; delete the extra keys or choose a unique label`);
      }
      const key = keys[0]!;
      checkKeyAttributes(session, key, label);
      return new Pkcs11SealProvider(session, key, options.keyLabel);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  async wrap(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const session = this.#requireSession();
    const { library } = session;
    const iv = randomBytes(AEAD_NONCE_BYTES);
    const mechanism = gcmMechanism(session, iv, aad);

    // Init and Encrypt run back to back with no await between them, so no other call can interleave.
    const output = Buffer.alloc(plaintext.length + AEAD_TAG_BYTES);
    const sealed = call(CONTEXT, 'C_Encrypt', () => {
      library.C_EncryptInit(session.handle, mechanism, this.#key);
      return library.C_Encrypt(session.handle, Buffer.from(plaintext), output);
    });
    if (sealed.length !== plaintext.length + AEAD_TAG_BYTES) {
      throw hsmFailure(CONTEXT, 'C_Encrypt', `an output of ${sealed.length} bytes for ${plaintext.length} bytes of input`);
    }

    const out = new Uint8Array(1 + AEAD_NONCE_BYTES + sealed.length);
    out[0] = AEAD_FORMAT_VERSION;
    out.set(iv, 1);
    out.set(sealed, 1 + AEAD_NONCE_BYTES);
    return out;
  }

  /**
   * Decrypts inside the HSM. Throws SEALMESH_ERR_SEAL_UNWRAP_FAILED for a truncated value, an
   * unknown version byte, or a GCM tag that does not verify, and
   * SEALMESH_ERR_SEAL_HSM_UNAVAILABLE when the HSM fails for another reason.
   */
  async unwrap(wrapped: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const session = this.#requireSession();
    const { library } = session;
    if (wrapped.length < AEAD_OVERHEAD_BYTES || wrapped[0] !== AEAD_FORMAT_VERSION) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
        `${CONTEXT}: the wrapped value is truncated or has an unknown format version; restore the data from a backup`,
      );
    }
    const iv = Buffer.from(wrapped.subarray(1, 1 + AEAD_NONCE_BYTES));
    const sealed = Buffer.from(wrapped.subarray(1 + AEAD_NONCE_BYTES));
    const mechanism = gcmMechanism(session, iv, aad);

    const output = Buffer.alloc(sealed.length);
    try {
      library.C_DecryptInit(session.handle, mechanism, this.#key);
    } catch (error) {
      throw hsmFailure(CONTEXT, 'C_DecryptInit', error);
    }
    let plaintext: Buffer;
    try {
      plaintext = library.C_Decrypt(session.handle, sealed, output);
    } catch (error) {
      const name = ckrName(error);
      if (name !== undefined && AUTHENTICATION_FAILURES.has(name)) {
        throw new SealmeshError(
          'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
          `${CONTEXT}: the HSM rejected the wrapped value (${name}), so the key is wrong or the value or its associated data were altered`,
          { cause: error },
        );
      }
      throw hsmFailure(CONTEXT, 'C_Decrypt', error);
    }
    const result = new Uint8Array(plaintext);
    output.fill(0);
    return result;
  }

  /** Closes the HSM session. Later calls to `wrap` and `unwrap` fail. Idempotent. */
  async close(): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    session?.close();
  }

  #requireSession(): TokenSession {
    if (this.#session === undefined) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_CLOSED', `${CONTEXT}: the provider was closed; open it again to wrap or unwrap`);
    }
    return this.#session;
  }
}

/** CKM_AES_GCM with the 96-bit IV, the AAD and a 128-bit tag, in the PKCS#11 v2.40 parameter layout. */
function gcmMechanism(session: TokenSession, iv: Buffer, aad: Uint8Array): Pkcs11Mechanism {
  const { api } = session;
  const parameter: Pkcs11GcmParams = {
    type: api.CK_PARAMS_AES_GCM_v240,
    iv,
    aad: Buffer.from(aad),
    ivBits: AEAD_NONCE_BYTES * 8,
    tagBits: AEAD_TAG_BYTES * 8,
  };
  return { mechanism: api.CKM_AES_GCM, parameter };
}

function findKeys(session: TokenSession, keyLabel: string): Pkcs11Handle[] {
  const { api } = session;
  return session.findObjects([
    { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
    { type: api.CKA_LABEL, value: keyLabel },
  ]);
}

/**
 * Throws SEALMESH_ERR_SEAL_KEY_CORRUPT unless the key is AES-256 with CKA_ENCRYPT and CKA_DECRYPT,
 * and SEALMESH_ERR_SEAL_KEY_PERMISSIONS unless it is sensitive and not extractable.
 */
function checkKeyAttributes(session: TokenSession, key: Pkcs11Handle, label: string): void {
  const { api, library } = session;
  const types = [api.CKA_KEY_TYPE, api.CKA_VALUE_LEN, api.CKA_ENCRYPT, api.CKA_DECRYPT, api.CKA_SENSITIVE, api.CKA_EXTRACTABLE];
  const values = call(CONTEXT, 'C_GetAttributeValue', () =>
    library.C_GetAttributeValue(
      session.handle,
      key,
      types.map((type) => ({ type })),
    ),
  );
  const value = (type: number): Buffer | undefined => values.find((attribute) => attribute.type === type)?.value;

  if (readUlong(value(api.CKA_KEY_TYPE)) !== api.CKK_AES || readUlong(value(api.CKA_VALUE_LEN)) !== KEY_BYTES) {
    throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_CORRUPT', `${CONTEXT}: ${label} is not an AES-256 key; create a new key with the init command`);
  }
  if (!readBool(value(api.CKA_ENCRYPT)) || !readBool(value(api.CKA_DECRYPT))) {
    throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_CORRUPT', `${CONTEXT}: ${label} does not allow both encrypt and decrypt; create a new key with the init command`);
  }
  if (!readBool(value(api.CKA_SENSITIVE)) || readBool(value(api.CKA_EXTRACTABLE))) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_PERMISSIONS',
      `${CONTEXT}: ${label} can be exported from the HSM (CKA_SENSITIVE false or CKA_EXTRACTABLE true); create a non-extractable key with the init command`,
    );
  }
}

/** Throws SEALMESH_ERR_INVALID_ARGUMENT for an empty key label. */
function validateKeyLabel(options: Pkcs11SealOptions): void {
  if (typeof options.keyLabel !== 'string' || options.keyLabel === '') {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${CONTEXT}: option keyLabel is missing or empty`);
  }
}
