import { createHash } from 'node:crypto';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { ckrName, P256_EC_PARAMS, p256SigningKeyTemplates, signingKeyProblems, TokenSession, type Pkcs11Handle, type Pkcs11TokenOptions } from '../seal/pkcs11/session.ts';
import { assertKeyLabel, type CaSigningKey, type KeyCustody } from './custody.ts';

/** Location of the CA keys: the module, token label and PIN, and the cluster they belong to. */
export interface Pkcs11CustodyOptions extends Pkcs11TokenOptions {
  /**
   * Scopes the keys of one cluster in a token that several clusters may share. The server passes
   * its trust domain. Each key's CKA_LABEL is `sealmesh-ca:<cluster>:<label>`.
   */
  cluster: string;
}

const CONTEXT = 'PKCS#11 CA key custody';
// DER of the OID 1.2.840.10045.3.1.7 (prime256v1), the CKA_EC_PARAMS of a P-256 key.
// DER SubjectPublicKeyInfo header of a P-256 public key, followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const UNCOMPRESSED_POINT_BYTES = 65;
const SIGNATURE_BYTES = 64;

/**
 * A key custody whose CA keys are generated inside a PKCS#11 token and never leave it. Each
 * private key is a token object (CKA_TOKEN) that is sensitive and not extractable, so the token
 * refuses to return its value, wrapped or not. Every certificate is signed in the token with
 * CKM_ECDSA over a SHA-256 digest computed in this process.
 *
 * After a restart `load` finds the keys again by CKA_LABEL. It rejects a private key that the
 * token would let anyone export, so a key created or changed outside sealmesh cannot weaken the
 * custody. pkcs11js calls are synchronous, so a signature blocks the event loop while the token
 * signs (SoftHSM2: see docs/benchmarks.md).
 */
export class Pkcs11KeyCustody implements KeyCustody {
  readonly name = 'pkcs11';
  readonly #cluster: string;
  #session: TokenSession | undefined;

  private constructor(session: TokenSession, cluster: string) {
    this.#session = session;
    this.#cluster = cluster;
  }

  /**
   * Opens a logged-in session on the token. Throws SEALMESH_ERR_CA_HSM_UNAVAILABLE when the module
   * cannot be loaded or fails, SEALMESH_ERR_CA_HSM_TOKEN_MISSING when no token has the label,
   * SEALMESH_ERR_CA_HSM_LOGIN_FAILED when the token rejects the PIN, SEALMESH_ERR_CONFLICT when
   * several tokens have the label, and SEALMESH_ERR_INVALID_ARGUMENT for an empty option.
   */
  static open(options: Pkcs11CustodyOptions): Pkcs11KeyCustody {
    if (typeof options.cluster !== 'string' || options.cluster === '') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `${CONTEXT}: option cluster is missing or empty`);
    }
    let session: TokenSession;
    try {
      session = TokenSession.open(options, CONTEXT);
    } catch (error) {
      throw translateOpenError(error, options.tokenLabel);
    }
    return new Pkcs11KeyCustody(session, options.cluster);
  }

  /**
   * Generates an ECDSA P-256 key pair in the token. The private key has CKA_TOKEN, CKA_PRIVATE,
   * CKA_SENSITIVE and CKA_SIGN true and CKA_EXTRACTABLE false. The public key is a token object
   * too, and both carry the same CKA_LABEL and a CKA_ID derived from it. Throws SEALMESH_ERR_CONFLICT
   * when the token already has an object with that label.
   */
  async generate(label: string): Promise<CaSigningKey> {
    const session = this.#requireSession();
    const { api, library } = session;
    const objectLabel = this.#objectLabel(label);
    if (hsmCall('C_FindObjects', () => session.findObjects([{ type: api.CKA_LABEL, value: objectLabel }])).length > 0) {
      throw new SealmeshError('SEALMESH_ERR_CONFLICT', `${CONTEXT}: token ${JSON.stringify(session.tokenLabel)} already has a key labelled ${JSON.stringify(objectLabel)}`);
    }
    const id = createHash('sha256').update(objectLabel).digest().subarray(0, 16);
    const templates = p256SigningKeyTemplates(api, objectLabel, id);
    const pair = hsmCall('C_GenerateKeyPair', () =>
      library.C_GenerateKeyPair(
        session.handle,
        { mechanism: api.CKM_EC_KEY_PAIR_GEN },
        templates.publicKey,
        templates.privateKey,
      ),
    );
    return this.#signingKey(label, pair.privateKey, readSpki(session, pair.publicKey, objectLabel));
  }

  /**
   * Finds the key pair labelled for `label`, or returns undefined when the token has no private
   * key with that label. Throws SEALMESH_ERR_CA_KEY_INVALID when the label matches several keys,
   * the public key is missing or not P-256, or the private key is not a sensitive, non-extractable
   * EC signing key.
   */
  async load(label: string): Promise<CaSigningKey | undefined> {
    const session = this.#requireSession();
    const { api } = session;
    const objectLabel = this.#objectLabel(label);
    const privateKeys = this.#find(api.CKO_PRIVATE_KEY, objectLabel);
    if (privateKeys.length === 0) return undefined;
    if (privateKeys.length > 1) throw keyInvalid(`token has ${privateKeys.length} private keys labelled ${JSON.stringify(objectLabel)}`);
    const privateKey = privateKeys[0]!;
    checkPrivateKey(session, privateKey, objectLabel);
    const publicKeys = this.#find(api.CKO_PUBLIC_KEY, objectLabel);
    if (publicKeys.length !== 1) throw keyInvalid(`token has ${publicKeys.length} public keys labelled ${JSON.stringify(objectLabel)}, expected exactly one`);
    return this.#signingKey(label, privateKey, readSpki(session, publicKeys[0]!, objectLabel));
  }

  /** Destroys every object labelled for `label`. Returns false when there was none. */
  async destroy(label: string): Promise<boolean> {
    const session = this.#requireSession();
    const objectLabel = this.#objectLabel(label);
    const objects = hsmCall('C_FindObjects', () => session.findObjects([{ type: session.api.CKA_LABEL, value: objectLabel }]));
    for (const object of objects) hsmCall('C_DestroyObject', () => session.library.C_DestroyObject(session.handle, object));
    return objects.length > 0;
  }

  /** Closes the token session. Keys loaded before keep their handles but can no longer sign. */
  async close(): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    session?.close();
  }

  #objectLabel(label: string): string {
    assertKeyLabel(label);
    return `sealmesh-ca:${this.#cluster}:${label}`;
  }

  #find(objectClass: number, objectLabel: string): Pkcs11Handle[] {
    const session = this.#requireSession();
    return hsmCall('C_FindObjects', () =>
      session.findObjects([
        { type: session.api.CKA_CLASS, value: objectClass },
        { type: session.api.CKA_LABEL, value: objectLabel },
      ]),
    );
  }

  #signingKey(label: string, privateKey: Pkcs11Handle, spki: Uint8Array): CaSigningKey {
    return {
      label,
      spki,
      sign: async (data) => {
        const session = this.#requireSession();
        const { api, library, handle } = session;
        const digest = createHash('sha256').update(data).digest();
        // No await separates C_SignInit from C_Sign, so no other call on this session interleaves.
        const signature = hsmCall('C_Sign', () => {
          library.C_SignInit(handle, { mechanism: api.CKM_ECDSA }, privateKey);
          return library.C_Sign(handle, digest, Buffer.alloc(SIGNATURE_BYTES + 8));
        });
        if (signature.length !== SIGNATURE_BYTES) {
          throw new SealmeshError('SEALMESH_ERR_CA_HSM_UNAVAILABLE', `${CONTEXT}: the token returned a ${signature.length}-byte ECDSA signature, expected ${SIGNATURE_BYTES} bytes (r || s)`);
        }
        return new Uint8Array(signature);
      },
    };
  }

  #requireSession(): TokenSession {
    if (this.#session === undefined) {
      throw new SealmeshError('SEALMESH_ERR_CA_HSM_UNAVAILABLE', `${CONTEXT}: the custody was closed; restart the server to sign again`);
    }
    return this.#session;
  }
}

/** Maps the seal-oriented errors of `TokenSession.open` to the CA custody codes. */
function translateOpenError(error: unknown, tokenLabel: string): unknown {
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED')) {
    return new SealmeshError(
      'SEALMESH_ERR_CA_HSM_LOGIN_FAILED',
      `${CONTEXT}: token ${JSON.stringify(tokenLabel)} rejected the user PIN: check the variable that --ca-pkcs11-pin-env names`,
      { cause: error },
    );
  }
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_KEY_MISSING')) {
    return new SealmeshError('SEALMESH_ERR_CA_HSM_TOKEN_MISSING', error.message, { cause: error });
  }
  if (isSealmeshError(error, 'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE')) {
    return new SealmeshError('SEALMESH_ERR_CA_HSM_UNAVAILABLE', error.message, { cause: error });
  }
  return error;
}

/** Runs one PKCS#11 call and turns any failure into SEALMESH_ERR_CA_HSM_UNAVAILABLE. */
function hsmCall<T>(action: string, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof SealmeshError) {
      throw new SealmeshError('SEALMESH_ERR_CA_HSM_UNAVAILABLE', error.message, { cause: error });
    }
    const reason = ckrName(error) ?? (error instanceof Error ? error.message : String(error));
    throw new SealmeshError('SEALMESH_ERR_CA_HSM_UNAVAILABLE', `${CONTEXT}: ${action} failed with ${reason}; check the HSM and its logs`, { cause: error });
  }
}

function keyInvalid(detail: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_CA_KEY_INVALID', `${CONTEXT}: ${detail}; restore the CA keys or create a new cluster`);
}

/** Rejects a private key that is not an EC signing key, or that the token would let anyone export. */
function checkPrivateKey(session: TokenSession, privateKey: Pkcs11Handle, objectLabel: string): void {
  const problems = signingKeyProblems(session, privateKey, { requireToken: true, call: hsmCall });
  if (problems.length > 0) throw keyInvalid(`private key ${JSON.stringify(objectLabel)} cannot hold a CA key: ${problems.join(', ')}`);
}

/** Reads a P-256 public key object and returns its DER SubjectPublicKeyInfo. */
function readSpki(session: TokenSession, publicKey: Pkcs11Handle, objectLabel: string): Uint8Array {
  const { api, library } = session;
  const attributes = hsmCall('C_GetAttributeValue', () =>
    library.C_GetAttributeValue(session.handle, publicKey, [{ type: api.CKA_EC_PARAMS }, { type: api.CKA_EC_POINT }]),
  );
  const params = attributes.find((attribute) => attribute.type === api.CKA_EC_PARAMS)?.value;
  let point = attributes.find((attribute) => attribute.type === api.CKA_EC_POINT)?.value;
  if (params === undefined || !params.equals(P256_EC_PARAMS)) throw keyInvalid(`public key ${JSON.stringify(objectLabel)} is not on the P-256 curve`);
  // PKCS#11 2.40 stores CKA_EC_POINT as a DER OCTET STRING (04 41 || point); some tokens return the
  // bare point, so both forms are accepted.
  if (point !== undefined && point.length === UNCOMPRESSED_POINT_BYTES + 2 && point[0] === 0x04 && point[1] === UNCOMPRESSED_POINT_BYTES) {
    point = point.subarray(2);
  }
  if (point === undefined || point.length !== UNCOMPRESSED_POINT_BYTES || point[0] !== 0x04) {
    throw keyInvalid(`public key ${JSON.stringify(objectLabel)} has no uncompressed P-256 point`);
  }
  return new Uint8Array(Buffer.concat([P256_SPKI_PREFIX, point]));
}
