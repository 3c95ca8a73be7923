import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { SealmeshError } from '../errors/index.ts';
import { importOperatorPublicKey, publicKeyToPem, type OperatorKeyAlgorithm } from './schema.ts';

/**
 * One operator's signing key. `sign` receives the complete signature input (see
 * `manifestSigningInput`) and returns a 64-byte signature: pure Ed25519, or ECDSA P-256 over
 * SHA-256 in IEEE P1363 form (r || s).
 */
export interface ManifestSigner {
  readonly keyId: string;
  readonly algorithm: OperatorKeyAlgorithm;
  /** The public key as canonical SPKI PEM, as it appears in `operators.keys[].publicKey`. */
  readonly publicKeyPem: string;
  sign(bytes: Uint8Array): Promise<Uint8Array>;
}

/** A new operator key pair as PEM text. */
export interface GeneratedOperatorKey {
  algorithm: OperatorKeyAlgorithm;
  /** The key id derived by `operatorKeyId`. */
  keyId: string;
  publicKeyPem: string;
  /** PKCS#8 PEM, encrypted with AES-256-CBC when a passphrase was given. */
  privateKeyPem: string;
}

/**
 * Derives a key id from a public key: `ed25519:` or `p256:` and the first 16 hex digits of the
 * SHA-256 of the DER SPKI encoding. Operators may choose any other id.
 */
export function operatorKeyId(publicKeyPem: string): string {
  const key = createPublicKey({ key: publicKeyPem, format: 'pem' });
  const der = key.export({ type: 'spki', format: 'der' });
  const prefix = key.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'p256';
  return `${prefix}:${createHash('sha256').update(der).digest('hex').slice(0, 16)}`;
}

/** Generates an operator key pair. With `passphrase` the private key PEM is encrypted. */
export function generateOperatorKey(algorithm: OperatorKeyAlgorithm, options: { passphrase?: string } = {}): GeneratedOperatorKey {
  const { publicKey, privateKey } =
    algorithm === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicKeyPem = publicKeyToPem(publicKey);
  const privateKeyPem =
    options.passphrase === undefined
      ? privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
      : privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: options.passphrase }).toString();
  return { algorithm, keyId: operatorKeyId(publicKeyPem), publicKeyPem, privateKeyPem };
}

/** Returns the algorithm of an imported key, or undefined when it is neither Ed25519 nor P-256. */
function keyAlgorithm(key: KeyObject): OperatorKeyAlgorithm | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  return undefined;
}

/** Signs `bytes` with a private key object in the encoding of the manifest format. */
function signWithKey(algorithm: OperatorKeyAlgorithm, privateKey: KeyObject, bytes: Uint8Array): Uint8Array {
  if (algorithm === 'ed25519') {
    return sign(null, bytes, privateKey);
  }
  return sign('sha256', bytes, { key: privateKey, dsaEncoding: 'ieee-p1363' });
}

/**
 * Returns true when `signature` is a valid signature of `bytes` by `publicKey` in the encoding of
 * the manifest format. A signature of the wrong length or form returns false.
 */
export function verifyOperatorSignature(algorithm: OperatorKeyAlgorithm, publicKey: KeyObject, bytes: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (algorithm === 'ed25519') {
      return verify(null, bytes, publicKey, signature);
    }
    return verify('sha256', bytes, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false;
  }
}

/** A signer whose private key is a PKCS#8 PEM file or string, Ed25519 or ECDSA P-256. */
export class FileManifestSigner implements ManifestSigner {
  readonly keyId: string;
  readonly algorithm: OperatorKeyAlgorithm;
  readonly publicKeyPem: string;
  readonly #privateKey: KeyObject;

  private constructor(privateKey: KeyObject, algorithm: OperatorKeyAlgorithm, keyId: string | undefined) {
    this.#privateKey = privateKey;
    this.algorithm = algorithm;
    this.publicKeyPem = publicKeyToPem(createPublicKey(privateKey));
    this.keyId = keyId ?? operatorKeyId(this.publicKeyPem);
  }

  /**
   * Creates a signer from PKCS#8 PEM text. `keyId` defaults to `operatorKeyId` of the public key.
   * Throws SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID when the text is not a PKCS#8 private key
   * of a supported algorithm or the passphrase is wrong.
   */
  static fromPem(privateKeyPem: string, options: { keyId?: string; passphrase?: string; source?: string } = {}): FileManifestSigner {
    const source = options.source ?? 'operator private key';
    if (!/^-----BEGIN (ENCRYPTED )?PRIVATE KEY-----\n/.test(privateKeyPem)) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
        `${source} is not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----); convert it with \`openssl pkcs8 -topk8\``,
      );
    }
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key: privateKeyPem, format: 'pem', ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}) });
    } catch (error) {
      const encrypted = privateKeyPem.startsWith('-----BEGIN ENCRYPTED PRIVATE KEY-----');
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
        encrypted
          ? `${source} cannot be decrypted: the passphrase is missing or wrong`
          : `${source} cannot be decoded as a PKCS#8 private key`,
        { cause: error },
      );
    }
    const algorithm = keyAlgorithm(privateKey);
    if (algorithm === undefined) {
      throw new SealmeshError('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', `${source} is neither an Ed25519 nor an ECDSA P-256 key`);
    }
    return new FileManifestSigner(privateKey, algorithm, options.keyId);
  }

  /**
   * Creates a signer from a PKCS#8 PEM file. Throws SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID when
   * the file cannot be read, is readable or writable by group or others, or fails `fromPem`.
   */
  static async fromFile(path: string, options: { keyId?: string; passphrase?: string } = {}): Promise<FileManifestSigner> {
    let text: string;
    try {
      const info = await stat(path);
      if ((info.mode & 0o077) !== 0) {
        throw new SealmeshError(
          'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
          `operator private key ${path} has mode ${(info.mode & 0o777).toString(8)}, which lets group or others access it; run chmod 600 ${path}`,
        );
      }
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (error instanceof SealmeshError) throw error;
      throw new SealmeshError('SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID', `operator private key ${path} cannot be read: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
    return FileManifestSigner.fromPem(text, { ...options, source: `operator private key ${path}` });
  }

  async sign(bytes: Uint8Array): Promise<Uint8Array> {
    return signWithKey(this.algorithm, this.#privateKey, bytes);
  }
}

/**
 * Imports a public key as canonical SPKI PEM of `algorithm`. Throws SEALMESH_ERR_MANIFEST_INVALID
 * with the reason otherwise.
 */
export function requireOperatorPublicKey(pem: string, algorithm: OperatorKeyAlgorithm, label: string): KeyObject {
  const imported = importOperatorPublicKey(pem, algorithm);
  if (typeof imported === 'string') {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${label} ${imported}`);
  }
  return imported;
}
