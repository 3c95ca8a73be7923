import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import { call, P256_EC_PARAMS, p256SigningKeyTemplates, signingKeyProblems, TokenSession, type Pkcs11Handle, type Pkcs11TokenOptions } from '../seal/pkcs11/session.ts';
import { publicKeyToPem } from './schema.ts';
import type { ManifestSigner } from './signers.ts';
import { operatorKeyId } from './signers.ts';

/** Where the operator key lives on the token, in addition to the module, token label and PIN. */
export interface Pkcs11SignerOptions extends Pkcs11TokenOptions {
  /** CKA_LABEL of the key pair. */
  keyLabel: string;
  /** Key id in the manifest; defaults to `operatorKeyId` of the public key. */
  keyId?: string;
}

const CONTEXT = 'PKCS#11 manifest signer';
// DER of the OID 1.2.840.10045.3.1.7 (prime256v1), the CKA_EC_PARAMS of a P-256 key.
// DER SPKI header of a P-256 public key, followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const UNCOMPRESSED_POINT_BYTES = 65;

/**
 * An ECDSA P-256 operator key held in a PKCS#11 token. The private key is generated in the token
 * as sensitive and non-extractable, and `open` rejects a key that is not. Each signature is
 * CKM_ECDSA over a SHA-256 digest computed in this process, which tokens return as r || s, the
 * IEEE P1363 form the manifest format uses.
 *
 * pkcs11js calls are synchronous, so `sign` blocks the event loop while the token signs.
 */
export class Pkcs11ManifestSigner implements ManifestSigner {
  readonly keyId: string;
  readonly algorithm = 'ecdsa-p256' as const;
  readonly publicKeyPem: string;
  readonly #session: TokenSession;
  readonly #privateKey: Pkcs11Handle;

  private constructor(session: TokenSession, privateKey: Pkcs11Handle, publicKeyPem: string, keyId: string | undefined) {
    this.#session = session;
    this.#privateKey = privateKey;
    this.publicKeyPem = publicKeyPem;
    this.keyId = keyId ?? operatorKeyId(publicKeyPem);
  }

  /**
   * Generates a P-256 key pair labelled `keyLabel` in the token and returns its signer. Throws
   * SEALMESH_ERR_CONFLICT when the token already has a key with that label, and the errors of
   * `TokenSession.open` for the module, token and PIN.
   */
  static generate(options: Pkcs11SignerOptions): Pkcs11ManifestSigner {
    const session = TokenSession.open(options, CONTEXT);
    try {
      const { api, library } = session;
      if (session.findObjects([{ type: api.CKA_LABEL, value: options.keyLabel }]).length > 0) {
        throw new SealmeshError(
          'SEALMESH_ERR_CONFLICT',
          `${CONTEXT}: token ${JSON.stringify(options.tokenLabel)} already has an object labelled ${JSON.stringify(options.keyLabel)}; choose another key label`,
        );
      }
      const id = randomBytes(16);
      const templates = p256SigningKeyTemplates(api, options.keyLabel, id);
      const pair = call(CONTEXT, 'C_GenerateKeyPair', () =>
        library.C_GenerateKeyPair(
          session.handle,
          { mechanism: api.CKM_EC_KEY_PAIR_GEN },
          templates.publicKey,
          templates.privateKey,
        ),
      );
      const publicKeyPem = readPublicKeyPem(session, pair.publicKey, options.keyLabel);
      return new Pkcs11ManifestSigner(session, pair.privateKey, publicKeyPem, options.keyId);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  /**
   * Opens the key pair labelled `keyLabel`. Throws SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID when
   * the token has no such private or public key, has several, or contains a private key that is not a
   * sensitive, non-extractable P-256 signing key; and the errors of `TokenSession.open`.
   */
  static open(options: Pkcs11SignerOptions): Pkcs11ManifestSigner {
    const session = TokenSession.open(options, CONTEXT);
    try {
      const { api } = session;
      const privateKey = findOne(session, api.CKO_PRIVATE_KEY, options.keyLabel, 'private key');
      checkPrivateKey(session, privateKey, options.keyLabel);
      const publicKey = findOne(session, api.CKO_PUBLIC_KEY, options.keyLabel, 'public key');
      const publicKeyPem = readPublicKeyPem(session, publicKey, options.keyLabel);
      return new Pkcs11ManifestSigner(session, privateKey, publicKeyPem, options.keyId);
    } catch (error) {
      session.close();
      throw error;
    }
  }

  async sign(bytes: Uint8Array): Promise<Uint8Array> {
    const { api, library, handle } = this.#session;
    const digest = createHash('sha256').update(bytes).digest();
    // No await separates C_SignInit from C_Sign, so no other call on this session interleaves.
    const signature = call(CONTEXT, 'C_Sign', () => {
      library.C_SignInit(handle, { mechanism: api.CKM_ECDSA }, this.#privateKey);
      return library.C_Sign(handle, digest, Buffer.alloc(2 * 32 + 8));
    });
    if (signature.length !== 64) {
      throw new SealmeshError('SEALMESH_ERR_SEAL_HSM_UNAVAILABLE', `${CONTEXT}: the token returned a ${signature.length}-byte ECDSA signature, expected 64 bytes (r || s)`);
    }
    return new Uint8Array(signature);
  }

  /** Closes the token session. Idempotent. */
  close(): void {
    this.#session.close();
  }
}

function findOne(session: TokenSession, objectClass: number, keyLabel: string, objectKind: string): Pkcs11Handle {
  const { api } = session;
  const found = session.findObjects([
    { type: api.CKA_CLASS, value: objectClass },
    { type: api.CKA_LABEL, value: keyLabel },
  ]);
  if (found.length !== 1) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
      `${CONTEXT}: token ${JSON.stringify(session.tokenLabel)} has ${found.length} ${objectKind}s labelled ${JSON.stringify(keyLabel)}, expected exactly one`,
    );
  }
  return found[0]!;
}

/** Rejects a private key that is not an EC signing key, or that the token would let anyone export. */
function checkPrivateKey(session: TokenSession, privateKey: Pkcs11Handle, keyLabel: string): void {
  const problems = signingKeyProblems(session, privateKey, { requireToken: false, call: (action, run) => call(CONTEXT, action, run) });
  if (problems.length > 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
      `${CONTEXT}: private key ${JSON.stringify(keyLabel)} cannot be used as an operator key: ${problems.join(', ')}; generate a new key in the token`,
    );
  }
}

/** Reads a P-256 public key object and returns it as SPKI PEM. */
function readPublicKeyPem(session: TokenSession, publicKey: Pkcs11Handle, keyLabel: string): string {
  const { api, library } = session;
  const attributes = call(CONTEXT, 'C_GetAttributeValue', () =>
    library.C_GetAttributeValue(session.handle, publicKey, [{ type: api.CKA_EC_PARAMS }, { type: api.CKA_EC_POINT }]),
  );
  const params = attributes.find((attribute) => attribute.type === api.CKA_EC_PARAMS)?.value;
  const encodedPoint = attributes.find((attribute) => attribute.type === api.CKA_EC_POINT)?.value;
  if (params === undefined || !params.equals(P256_EC_PARAMS)) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', `${CONTEXT}: public key ${JSON.stringify(keyLabel)} is not on the P-256 curve`);
  }
  // PKCS#11 2.40 stores CKA_EC_POINT as a DER OCTET STRING (04 41 || point); some tokens return the
  // bare point, so both forms are accepted.
  let point = encodedPoint;
  if (point !== undefined && point.length === UNCOMPRESSED_POINT_BYTES + 2 && point[0] === 0x04 && point[1] === UNCOMPRESSED_POINT_BYTES) {
    point = point.subarray(2);
  }
  if (point === undefined || point.length !== UNCOMPRESSED_POINT_BYTES || point[0] !== 0x04) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', `${CONTEXT}: public key ${JSON.stringify(keyLabel)} has no uncompressed P-256 point`);
  }
  const der = Buffer.concat([P256_SPKI_PREFIX, point]);
  return publicKeyToPem(createPublicKey({ key: der, format: 'der', type: 'spki' }));
}
