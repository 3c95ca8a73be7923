/**
 * Loading a PKCS#11 module through pkcs11js and opening logged-in sessions on a token by label.
 *
 * A module is loaded and initialised once per process and shared by every session opened on it,
 * because a second C_Initialize on the same library fails and C_Finalize would end the sessions of
 * every other user. The login state of a token is also shared by all sessions of the process, so
 * the first session logs in and the others only reuse that login (see `TokenSession.open`).
 *
 * Every pkcs11js call is synchronous and runs on the main thread, so two calls on one session
 * never interleave, and a multi-step operation such as C_EncryptInit then C_Encrypt is atomic as
 * long as no `await` separates the steps.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { resolve } from 'node:path';
import type * as Pkcs11Types from 'pkcs11js';
import { SealmeshError } from '../../errors/index.ts';

export type Pkcs11Api = typeof Pkcs11Types;
export type Pkcs11Library = Pkcs11Types.PKCS11;
export type Pkcs11Handle = Buffer;
export type Pkcs11Template = Pkcs11Types.Template;
export type Pkcs11Mechanism = Pkcs11Types.Mechanism;
export type Pkcs11GcmParams = Pkcs11Types.AesGCM;

/** How to reach a token: the module to load, the token's label and the user PIN. */
export interface Pkcs11TokenOptions {
  /** Path of the PKCS#11 module, such as /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  tokenLabel: string;
  /** User PIN. It is used for C_Login and is not kept afterwards. */
  pin: string;
}

interface LoadedModule {
  api: Pkcs11Api;
  library: Pkcs11Library;
  key: string;
  references: number;
  /** False when something else in the process had already initialised the library. */
  ownsInitialize: boolean;
  /** Per slot (hex of the slot id): open sessions and the SHA-256 of the PIN that logged in. */
  logins: Map<string, { sessions: number; pinDigest: Buffer }>;
}

const loadedModules = new Map<string, LoadedModule>();
let cachedApi: Pkcs11Api | undefined;

/**
 * Returns the pkcs11js bindings, loaded on first use so that the other seal providers work on a
 * host where the native addon was not built. Throws SEALMESH_ERR_SEAL_HSM_UNAVAILABLE when it
 * cannot be loaded.
 */
function loadBindings(): Pkcs11Api {
  if (cachedApi === undefined) {
    try {
      cachedApi = createRequire(import.meta.url)('pkcs11js') as Pkcs11Api;
    } catch (error) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE',
        `PKCS#11: the pkcs11js addon cannot be loaded (${errorText(error)}); run npm install so its native part is built`,
        { cause: error },
      );
    }
  }
  return cachedApi;
}

/** Loads and initialises `modulePath`, or takes another reference to the already loaded module. */
function acquireModule(modulePath: string, context: string): LoadedModule {
  const api = loadBindings();
  const key = canonicalModulePath(modulePath);
  const existing = loadedModules.get(key);
  if (existing !== undefined) {
    existing.references++;
    return existing;
  }

  const library = new api.PKCS11();
  try {
    library.load(key);
  } catch (error) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE',
      `${context}: cannot load the PKCS#11 module ${modulePath} (${errorText(error)}); install it (for SoftHSM: apt-get install softhsm2) or correct the module path`,
      { cause: error },
    );
  }

  let ownsInitialize = true;
  try {
    library.C_Initialize();
  } catch (error) {
    if (ckrName(error) === 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
      ownsInitialize = false;
    } else {
      library.close();
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE',
        `${context}: C_Initialize of ${modulePath} failed with ${errorText(error)}; check the module's configuration (for SoftHSM: the file named by SOFTHSM2_CONF)`,
        { cause: error },
      );
    }
  }

  const loaded: LoadedModule = { api, library, key, references: 1, ownsInitialize, logins: new Map() };
  loadedModules.set(key, loaded);
  return loaded;
}

/** Drops one reference and finalises and unloads the module after the last one. */
function releaseModule(loaded: LoadedModule): void {
  loaded.references--;
  if (loaded.references > 0) {
    return;
  }
  loadedModules.delete(loaded.key);
  try {
    if (loaded.ownsInitialize) {
      loaded.library.C_Finalize();
    }
  } finally {
    loaded.library.close();
  }
}

/** A read-write session on one token, logged in as the user. */
export class TokenSession {
  readonly api: Pkcs11Api;
  readonly library: Pkcs11Library;
  readonly handle: Pkcs11Handle;
  readonly tokenLabel: string;
  readonly context: string;
  readonly #module: LoadedModule;
  readonly #slotKey: string;
  #closed = false;

  private constructor(loaded: LoadedModule, handle: Pkcs11Handle, slotKey: string, tokenLabel: string, context: string) {
    this.api = loaded.api;
    this.library = loaded.library;
    this.handle = handle;
    this.tokenLabel = tokenLabel;
    this.context = context;
    this.#module = loaded;
    this.#slotKey = slotKey;
  }

  /**
   * Opens a session on the token labelled `tokenLabel` and logs in with `pin`. `context` prefixes
   * error messages, such as `PKCS#11 seal`. Throws:
   * - SEALMESH_ERR_SEAL_HSM_UNAVAILABLE when the module cannot be loaded or a call fails;
   * - SEALMESH_ERR_SEAL_KEY_MISSING when no token has the label;
   * - SEALMESH_ERR_CONFLICT when several tokens have it, because the choice would be arbitrary;
   * - SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED when the token rejects the PIN, or when this process is
   *   already logged in to the token with a different PIN. PKCS#11 keeps one login per token for
   *   the whole process, so without that comparison a wrong PIN would be accepted silently.
   */
  static open(options: Pkcs11TokenOptions, context: string): TokenSession {
    validateTokenOptions(options, context);
    const loaded = acquireModule(options.module, context);
    try {
      const { api, library } = loaded;
      const slot = findSlot(loaded, options, context);
      const handle = call(context, 'C_OpenSession', () => library.C_OpenSession(slot, api.CKF_SERIAL_SESSION | api.CKF_RW_SESSION));
      const slotKey = slot.toString('hex');
      try {
        login(loaded, handle, slotKey, options, context);
      } catch (error) {
        library.C_CloseSession(handle);
        throw error;
      }
      return new TokenSession(loaded, handle, slotKey, options.tokenLabel, context);
    } catch (error) {
      releaseModule(loaded);
      throw error;
    }
  }

  /** Returns the handles of all objects that match `template`. */
  findObjects(template: Pkcs11Template): Pkcs11Handle[] {
    return call(this.context, 'C_FindObjects', () => {
      const found: Pkcs11Handle[] = [];
      this.library.C_FindObjectsInit(this.handle, template);
      try {
        for (let batch = this.library.C_FindObjects(this.handle, 32); batch.length > 0; batch = this.library.C_FindObjects(this.handle, 32)) {
          found.push(...batch);
        }
      } finally {
        this.library.C_FindObjectsFinal(this.handle);
      }
      return found;
    });
  }

  /**
   * Closes the session and releases the module. It does not call C_Logout, because that would log
   * out every other session of this process on the token. The token returns to the public state
   * when its last session closes. Idempotent.
   */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    try {
      const entry = this.#module.logins.get(this.#slotKey);
      if (entry !== undefined && --entry.sessions === 0) {
        this.#module.logins.delete(this.#slotKey);
      }
      this.library.C_CloseSession(this.handle);
    } finally {
      releaseModule(this.#module);
    }
  }
}

/** Returns the one slot whose token has the label. */
function findSlot(loaded: LoadedModule, options: Pkcs11TokenOptions, context: string): Pkcs11Handle {
  const { library } = loaded;
  const slots = call(context, 'C_GetSlotList', () => library.C_GetSlotList(true));
  const matching = slots.filter((slot) => call(context, 'C_GetTokenInfo', () => library.C_GetTokenInfo(slot)).label.trimEnd() === options.tokenLabel);
  if (matching.length === 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_MISSING',
      `${context}: no token labelled ${JSON.stringify(options.tokenLabel)} in ${options.module}; initialise the token or correct the label`,
    );
  }
  if (matching.length > 1) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFLICT',
      `${context}: ${matching.length} tokens are labelled ${JSON.stringify(options.tokenLabel)} in ${options.module}; give each token a unique label`,
    );
  }
  return matching[0]!;
}

/** Logs the session in, or checks the PIN against the one this process already logged in with. */
function login(loaded: LoadedModule, session: Pkcs11Handle, slotKey: string, options: Pkcs11TokenOptions, context: string): void {
  const { api, library } = loaded;
  const pinDigest = createHash('sha256').update(options.pin, 'utf8').digest();
  const rejected = (detail: string, cause?: unknown): SealmeshError =>
    new SealmeshError(
      'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED',
      `${context}: token ${JSON.stringify(options.tokenLabel)} rejected the user PIN (${detail}); check SEALMESH_PKCS11_PIN`,
      { cause },
    );

  const entry = loaded.logins.get(slotKey);
  if (entry !== undefined) {
    if (!timingSafeEqual(entry.pinDigest, pinDigest)) {
      throw rejected('it differs from the PIN this process is already logged in with');
    }
    entry.sessions++;
    return;
  }

  try {
    library.C_Login(session, api.CKU_USER, options.pin);
  } catch (error) {
    const name = ckrName(error);
    // NOTE: a login made outside this module is reused without checking the PIN.
    if (name !== 'CKR_USER_ALREADY_LOGGED_IN') {
      if (name !== undefined && /^CKR_(PIN_|USER_PIN_NOT_INITIALIZED)/.test(name)) {
        throw rejected(name, error);
      }
      throw hsmFailure(context, 'C_Login', error);
    }
  }
  loaded.logins.set(slotKey, { sessions: 1, pinDigest });
}

/** Throws SEALMESH_ERR_INVALID_ARGUMENT for an empty module path, token label or PIN. */
function validateTokenOptions(options: Pkcs11TokenOptions, context: string): void {
  for (const field of ['module', 'tokenLabel', 'pin'] as const) {
    if (typeof options[field] !== 'string' || options[field] === '') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${context}: option ${field} is missing or empty`);
    }
  }
}

/** Runs one PKCS#11 call and turns any failure into SEALMESH_ERR_SEAL_HSM_UNAVAILABLE. */
export function call<T>(context: string, action: string, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof SealmeshError) {
      throw error;
    }
    throw hsmFailure(context, action, error);
  }
}

/** Builds the error for a PKCS#11 call that failed for a reason other than bad input. */
export function hsmFailure(context: string, action: string, error: unknown): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_SEAL_HSM_UNAVAILABLE', `${context}: ${action} failed with ${errorText(error)}; check the HSM and its logs`, {
    cause: error,
  });
}

/**
 * Returns the CKR_* name of a failed PKCS#11 call, or undefined for other errors. pkcs11js 2.1.7
 * throws Pkcs11Error with the bare name for most calls, but a plain Error with `CKR_NAME:code` for
 * the methods its PKCS11 subclass overrides (C_CreateObject, C_SetAttributeValue and others).
 */
export function ckrName(error: unknown): string | undefined {
  return error instanceof Error ? /^(CKR_[A-Z0-9_]+)/.exec(error.message)?.[1] : undefined;
}

/** Reads a CK_BBOOL attribute value. */
export function readBool(value: Buffer | undefined): boolean {
  return value !== undefined && value.length > 0 && value[0] !== 0;
}

/** Reads a CK_ULONG attribute value, which pkcs11js returns in the platform's byte order. */
export function readUlong(value: Buffer | undefined): number {
  if (value === undefined || (value.length !== 4 && value.length !== 8)) {
    return -1;
  }
  const little = endianness() === 'LE';
  if (value.length === 4) {
    return little ? value.readUInt32LE(0) : value.readUInt32BE(0);
  }
  return Number(little ? value.readBigUInt64LE(0) : value.readBigUInt64BE(0));
}

function canonicalModulePath(modulePath: string): string {
  try {
    return realpathSync(modulePath);
  } catch {
    return resolve(modulePath);
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** DER of the OID of the P-256 curve (prime256v1), the CKA_EC_PARAMS of P-256 keys. */
export const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');

/**
 * Returns the templates of a P-256 signing key pair kept in the token: a public key anyone on the
 * token may read, and a private key that is sensitive and never extractable.
 */
export function p256SigningKeyTemplates(api: Pkcs11Api, label: string, id: Buffer): { publicKey: Pkcs11Template; privateKey: Pkcs11Template } {
  return {
    publicKey: [
      { type: api.CKA_CLASS, value: api.CKO_PUBLIC_KEY },
      { type: api.CKA_KEY_TYPE, value: api.CKK_EC },
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_PRIVATE, value: false },
      { type: api.CKA_VERIFY, value: true },
      { type: api.CKA_EC_PARAMS, value: P256_EC_PARAMS },
      { type: api.CKA_LABEL, value: label },
      { type: api.CKA_ID, value: id },
    ],
    privateKey: [
      { type: api.CKA_CLASS, value: api.CKO_PRIVATE_KEY },
      { type: api.CKA_KEY_TYPE, value: api.CKK_EC },
      { type: api.CKA_TOKEN, value: true },
      { type: api.CKA_PRIVATE, value: true },
      { type: api.CKA_SENSITIVE, value: true },
      { type: api.CKA_EXTRACTABLE, value: false },
      { type: api.CKA_SIGN, value: true },
      { type: api.CKA_LABEL, value: label },
      { type: api.CKA_ID, value: id },
    ],
  };
}

/**
 * Returns what makes `privateKey` unfit as a signing key that must stay in the token: not an EC
 * key, not sensitive, extractable, not allowed to sign, or (with `requireToken`) a session object.
 * Empty when the key is fit. `call` wraps the attribute read in the caller's error mapping.
 */
export function signingKeyProblems(
  session: TokenSession,
  privateKey: Pkcs11Handle,
  options: { requireToken: boolean; call: <T>(action: string, run: () => T) => T },
): string[] {
  const { api, library } = session;
  const attributes = options.call('C_GetAttributeValue', () =>
    library.C_GetAttributeValue(session.handle, privateKey, [
      { type: api.CKA_KEY_TYPE },
      { type: api.CKA_TOKEN },
      { type: api.CKA_SENSITIVE },
      { type: api.CKA_EXTRACTABLE },
      { type: api.CKA_SIGN },
    ]),
  );
  const value = (type: number): Buffer | undefined => attributes.find((attribute) => attribute.type === type)?.value;
  const problems: string[] = [];
  if (readUlong(value(api.CKA_KEY_TYPE)) !== api.CKK_EC) problems.push('it is not an EC key');
  if (options.requireToken && !readBool(value(api.CKA_TOKEN))) problems.push('CKA_TOKEN is false');
  if (!readBool(value(api.CKA_SENSITIVE))) problems.push('CKA_SENSITIVE is false');
  if (readBool(value(api.CKA_EXTRACTABLE))) problems.push('CKA_EXTRACTABLE is true');
  if (!readBool(value(api.CKA_SIGN))) problems.push('CKA_SIGN is false');
  return problems;
}
