/**
 * The proxy's TLS private key in a PKCS#11 token.
 *
 * The key pair is generated inside the token, or found there again by its label, and the private
 * key never leaves it. The CSR is signed in the token through pkcs11js (CKM_ECDSA over a SHA-256
 * digest computed here). Every TLS context loads the key through OpenSSL's pkcs11 engine (Debian:
 * libengine-pkcs11-openssl), which signs each handshake in the token.
 *
 * Node.js 24 takes an engine key with the `privateKeyEngine` and `privateKeyIdentifier` options of
 * `tls.createSecureContext`. The engine must be found by its id `pkcs11`: passing the path of
 * pkcs11.so works for the first context only, and every later one fails with "init failed"
 * (checked on Node.js 24.21.0, OpenSSL 3.5.8, libengine-pkcs11-openssl 0.4.12). With the id,
 * OpenSSL loads the engine from the directory in OPENSSL_ENGINES once and keeps it registered.
 * The engine API is deprecated in Node.js (DEP0183), but 24.21.0 prints no runtime warning for it.
 * Node.js rejects engines under the permission model (ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED), so a
 * token key cannot run with `--sandbox`.
 */
import { createHash, webcrypto } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { generateCsrWithSigner } from '../pki/workload.ts';
import { importP256PublicKey } from '../pki/keys.ts';
import { ckrName, P256_EC_PARAMS, p256SigningKeyTemplates, signingKeyProblems, TokenSession, type Pkcs11Handle } from '../seal/pkcs11/session.ts';

/** Location of the proxy's TLS key in a token, and the login to it. */
export interface TokenKeyOptions {
  /** Path of the PKCS#11 module, such as /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  tokenLabel: string;
  /** CKA_LABEL of the key pair. */
  keyLabel: string;
  /** User PIN, for the pkcs11js session and the engine. */
  pin: string;
  /** File that `pin` was read from, for messages. */
  pinFile?: string;
}

/** OpenSSL engine id of libengine-pkcs11-openssl. */
export const PKCS11_ENGINE_ID = 'pkcs11';

const CONTEXT = 'PKCS#11 proxy TLS key';
const ENGINE_FILE = 'pkcs11.so';
/** Usual directories of OpenSSL 3 engines (Debian multiarch, lib64, /usr/local); /usr/lib/*-linux-gnu is searched too. */
const ENGINE_DIR_CANDIDATES = ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3', '/usr/lib64/engines-3', '/usr/local/lib/engines-3'];
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const UNCOMPRESSED_POINT_BYTES = 65;
const SIGNATURE_BYTES = 64;

/** A P-256 key pair in a token, kept for the life of the proxy and reused for every SVID. */
export class TokenTlsKey {
  readonly keyLabel: string;
  readonly tokenLabel: string;
  /** The public key, for the CSR and for attestation report data. */
  readonly publicKey: webcrypto.CryptoKey;
  /** True when `open` generated the key pair, false when it found an existing one. */
  readonly generated: boolean;
  readonly #privateKey: Pkcs11Handle;
  readonly #identifier: string;
  #session: TokenSession | undefined;

  private constructor(session: TokenSession, privateKey: Pkcs11Handle, publicKey: webcrypto.CryptoKey, options: TokenKeyOptions, generated: boolean) {
    this.#session = session;
    this.#privateKey = privateKey;
    this.publicKey = publicKey;
    this.keyLabel = options.keyLabel;
    this.tokenLabel = options.tokenLabel;
    this.generated = generated;
    this.#identifier = engineKeyUri(options);
  }

  /**
   * Opens a session on the token, finds the key pair labelled `keyLabel` or generates it, checks
   * that the private key is a sensitive, non-extractable P-256 signing key, and loads it once
   * through the engine. Throws SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED under the permission
   * model, SEALMESH_ERR_TLS_KEY_ENGINE_MISSING, SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE,
   * SEALMESH_ERR_TLS_KEY_HSM_TOKEN_MISSING, SEALMESH_ERR_TLS_KEY_HSM_LOGIN_FAILED and
   * SEALMESH_ERR_TLS_KEY_INVALID.
   */
  static async open(options: TokenKeyOptions): Promise<TokenTlsKey> {
    if (process.permission !== undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED',
        `${CONTEXT}: Node.js rejects OpenSSL engines under the permission model (ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED), so a TLS key in a token cannot be used with --sandbox; drop --sandbox or keep the key in memory`,
      );
    }
    if (typeof options.keyLabel !== 'string' || options.keyLabel === '') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${CONTEXT}: option keyLabel is missing or empty`);
    }
    const engineDir = findEngineDirectory();
    let session: TokenSession;
    try {
      session = TokenSession.open(options, CONTEXT);
    } catch (error) {
      throw translateOpenError(error, options);
    }
    let found: ReturnType<typeof findOrGenerate> | undefined;
    try {
      found = findOrGenerate(session, options.keyLabel);
      const publicKey = await importP256PublicKey(found.spki);
      const key = new TokenTlsKey(session, found.privateKey, publicKey, options, found.generated);
      configureEngine(engineDir, options.module);
      key.#probeEngine();
      return key;
    } catch (error) {
      // A pair generated by a start that fails is removed, so the next start generates its own
      // instead of finding one that no proxy ever used.
      if (found?.generated === true) destroyPair(session, found);
      session.close();
      throw error;
    }
  }

  /** Secure context options that load the private key through the engine, without key material. */
  engineOptions(): Pick<SecureContextOptions, 'privateKeyEngine' | 'privateKeyIdentifier'> {
    return { privateKeyEngine: PKCS11_ENGINE_ID, privateKeyIdentifier: this.#identifier };
  }

  /** Returns a PEM CSR for `spiffeId`, signed in the token with CKM_ECDSA over SHA-256. */
  async csr(spiffeId: string): Promise<string> {
    return generateCsrWithSigner(spiffeId, this.publicKey, (info) => this.#sign(info));
  }

  /** Closes the pkcs11js session, after which `csr` fails. Call it after the proxy has stopped. */
  close(): void {
    const session = this.#session;
    this.#session = undefined;
    session?.close();
  }

  /** Signs the SHA-256 digest of `data` in the token and returns r || s. */
  #sign(data: Uint8Array): Buffer {
    const session = this.#session;
    if (session === undefined) throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', `${CONTEXT}: the token session was closed`);
    const { api, library, handle } = session;
    const digest = createHash('sha256').update(data).digest();
    // No await separates C_SignInit from C_Sign, so no other call on this session interleaves.
    const signature = hsmCall('C_Sign', () => {
      library.C_SignInit(handle, { mechanism: api.CKM_ECDSA }, this.#privateKey);
      return library.C_Sign(handle, digest, Buffer.alloc(SIGNATURE_BYTES + 8));
    });
    if (signature.length !== SIGNATURE_BYTES) {
      throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', `${CONTEXT}: the token returned a ${signature.length}-byte ECDSA signature, expected ${SIGNATURE_BYTES} bytes (r || s)`);
    }
    return signature;
  }

  /** Loads the key once through the engine, so that a missing engine or a failing token fails the start. */
  #probeEngine(): void {
    try {
      createSecureContext(this.engineOptions());
    } catch (error) {
      throw engineError(error, this.tokenLabel);
    }
  }
}

/** Returns the pkcs11 engine's directory: OPENSSL_ENGINES when it has pkcs11.so, else the first candidate that has it. */
export function findEngineDirectory(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.OPENSSL_ENGINES;
  if (configured !== undefined && configured !== '') {
    if (existsSync(join(configured, ENGINE_FILE))) return configured;
    throw new SealmeshError(
      'SEALMESH_ERR_TLS_KEY_ENGINE_MISSING',
      `${CONTEXT}: OPENSSL_ENGINES is ${configured}, which has no ${ENGINE_FILE}; install libengine-pkcs11-openssl or point OPENSSL_ENGINES at its engines-3 directory`,
    );
  }
  const multiarch = safeReaddir('/usr/lib')
    .filter((entry) => entry.endsWith('-linux-gnu'))
    .map((entry) => join('/usr/lib', entry, 'engines-3'));
  const found = [...ENGINE_DIR_CANDIDATES, ...multiarch].find((dir) => existsSync(join(dir, ENGINE_FILE)));
  if (found === undefined) {
    throw new SealmeshError(
      'SEALMESH_ERR_TLS_KEY_ENGINE_MISSING',
      `${CONTEXT}: the OpenSSL pkcs11 engine (${ENGINE_FILE}) is not in ${ENGINE_DIR_CANDIDATES.join(', ')} or /usr/lib/*-linux-gnu/engines-3; install it (Debian: apt-get install libengine-pkcs11-openssl) or set OPENSSL_ENGINES to its directory`,
    );
  }
  return found;
}

/**
 * Points OpenSSL at the engine and the engine at the module. Both are process-wide environment
 * variables that OpenSSL and the engine read when the engine is first loaded, so one process can
 * use one PKCS#11 module for TLS keys.
 */
function configureEngine(engineDir: string, module: string): void {
  process.env.OPENSSL_ENGINES = engineDir;
  process.env.PKCS11_MODULE_PATH = module;
}

/**
 * Returns the RFC 7512 URI of the private key with the PIN the engine logs in with. libp11 0.4.12
 * reads pin-value as a path attribute, separated by `;`, so it is not put in the query part. The
 * PIN goes in as pin-value rather than pin-source, because libp11 0.4.12 keeps the final line
 * break of a PIN file as part of the PIN.
 */
function engineKeyUri(options: TokenKeyOptions): string {
  return `pkcs11:token=${encodeURIComponent(options.tokenLabel)};object=${encodeURIComponent(options.keyLabel)};type=private;pin-value=${encodeURIComponent(options.pin)}`;
}

/** Finds the key pair labelled `keyLabel`, or generates it when the token has no private key with that label. */
function findOrGenerate(session: TokenSession, keyLabel: string): { privateKey: Pkcs11Handle; publicKey: Pkcs11Handle; spki: Uint8Array; generated: boolean } {
  const { api, library } = session;
  const find = (objectClass: number): Pkcs11Handle[] =>
    hsmCall('C_FindObjects', () =>
      session.findObjects([
        { type: api.CKA_CLASS, value: objectClass },
        { type: api.CKA_LABEL, value: keyLabel },
      ]),
    );
  const privateKeys = find(api.CKO_PRIVATE_KEY);
  if (privateKeys.length === 0) {
    const id = createHash('sha256').update(keyLabel).digest().subarray(0, 16);
    const templates = p256SigningKeyTemplates(api, keyLabel, id);
    const pair = hsmCall('C_GenerateKeyPair', () => library.C_GenerateKeyPair(session.handle, { mechanism: api.CKM_EC_KEY_PAIR_GEN }, templates.publicKey, templates.privateKey));
    return { privateKey: pair.privateKey, publicKey: pair.publicKey, spki: readSpki(session, pair.publicKey, keyLabel), generated: true };
  }
  if (privateKeys.length > 1) throw keyInvalid(`token has ${privateKeys.length} private keys labelled ${JSON.stringify(keyLabel)}; keep one or choose another --tls-key-pkcs11-key-label`);
  const privateKey = privateKeys[0]!;
  const problems = signingKeyProblems(session, privateKey, { requireToken: true, call: hsmCall });
  if (problems.length > 0) throw keyInvalid(`private key ${JSON.stringify(keyLabel)} cannot hold the proxy's TLS key: ${problems.join(', ')}`);
  const publicKeys = find(api.CKO_PUBLIC_KEY);
  if (publicKeys.length !== 1) throw keyInvalid(`token has ${publicKeys.length} public keys labelled ${JSON.stringify(keyLabel)}, expected exactly one`);
  return { privateKey, publicKey: publicKeys[0]!, spki: readSpki(session, publicKeys[0]!, keyLabel), generated: false };
}

/** Destroys a key pair this start generated. A failure here is ignored: the start already failed. */
function destroyPair(session: TokenSession, pair: { privateKey: Pkcs11Handle; publicKey: Pkcs11Handle }): void {
  for (const handle of [pair.privateKey, pair.publicKey]) {
    try {
      session.library.C_DestroyObject(session.handle, handle);
    } catch {
      // The original error is the one the operator needs.
    }
  }
}

/** Reads a P-256 public key object and returns its DER SubjectPublicKeyInfo. */
function readSpki(session: TokenSession, publicKey: Pkcs11Handle, keyLabel: string): Uint8Array {
  const { api, library } = session;
  const attributes = hsmCall('C_GetAttributeValue', () => library.C_GetAttributeValue(session.handle, publicKey, [{ type: api.CKA_EC_PARAMS }, { type: api.CKA_EC_POINT }]));
  const params = attributes.find((attribute) => attribute.type === api.CKA_EC_PARAMS)?.value;
  let point = attributes.find((attribute) => attribute.type === api.CKA_EC_POINT)?.value;
  if (params === undefined || !params.equals(P256_EC_PARAMS)) throw keyInvalid(`public key ${JSON.stringify(keyLabel)} is not on the P-256 curve`);
  // PKCS#11 2.40 stores CKA_EC_POINT as a DER OCTET STRING (04 41 || point); some tokens return the bare point.
  if (point !== undefined && point.length === UNCOMPRESSED_POINT_BYTES + 2 && point[0] === 0x04 && point[1] === UNCOMPRESSED_POINT_BYTES) {
    point = point.subarray(2);
  }
  if (point === undefined || point.length !== UNCOMPRESSED_POINT_BYTES || point[0] !== 0x04) {
    throw keyInvalid(`public key ${JSON.stringify(keyLabel)} has no uncompressed P-256 point`);
  }
  return new Uint8Array(Buffer.concat([P256_SPKI_PREFIX, point]));
}

/** Maps the errors of `TokenSession.open` to the TLS key codes. */
function translateOpenError(error: unknown, options: TokenKeyOptions): unknown {
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED')) {
    return new SealmeshError(
      'SEALMESH_ERR_TLS_KEY_HSM_LOGIN_FAILED',
      `${CONTEXT}: token ${JSON.stringify(options.tokenLabel)} rejected the user PIN; check --tls-key-pkcs11-pin-file or the variable that --tls-key-pkcs11-pin-env names`,
      { cause: error },
    );
  }
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_KEY_MISSING')) return new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_TOKEN_MISSING', error.message, { cause: error });
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE')) return new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', error.message, { cause: error });
  return error;
}

/** Maps an error of `createSecureContext` with the engine options to a TLS key code. */
function engineError(error: unknown, tokenLabel: string): SealmeshError {
  const stack = (error as { opensslErrorStack?: unknown }).opensslErrorStack;
  const detail = [(error as Error).message, ...(Array.isArray(stack) ? stack.map(String) : [])].join('; ');
  if (/no such engine|dso not found|could not load the shared library/i.test(detail)) {
    return new SealmeshError(
      'SEALMESH_ERR_TLS_KEY_ENGINE_MISSING',
      `${CONTEXT}: OpenSSL could not load the pkcs11 engine (${detail}); install libengine-pkcs11-openssl or set OPENSSL_ENGINES to its directory`,
      { cause: error },
    );
  }
  if (/PIN incorrect|PIN_INCORRECT|login/i.test(detail)) {
    return new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_LOGIN_FAILED', `${CONTEXT}: the engine could not log in to token ${JSON.stringify(tokenLabel)} (${detail}); check the PIN`, { cause: error });
  }
  return new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', `${CONTEXT}: the pkcs11 engine could not load the key from token ${JSON.stringify(tokenLabel)} (${detail})`, { cause: error });
}

/** Runs one PKCS#11 call and turns any failure into SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE. */
function hsmCall<T>(action: string, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof SealmeshError) throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', error.message, { cause: error });
    const reason = ckrName(error) ?? (error instanceof Error ? error.message : String(error));
    throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE', `${CONTEXT}: ${action} failed with ${reason}; check the token and its logs`, { cause: error });
  }
}

function keyInvalid(detail: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_TLS_KEY_INVALID', `${CONTEXT}: ${detail}`);
}

function safeReaddir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
