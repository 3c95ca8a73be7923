/**
 * Key and serial-number helpers shared by the CA, the CSR checks and the workload helpers.
 */
import { createPublicKey, randomBytes, type KeyObject, type webcrypto } from 'node:crypto';
import { P256_KEY_ALGORITHM } from './algorithms.ts';
import { nodeCrypto, x509 } from './x509.ts';

export { ECDSA_SHA256, P256_KEY_ALGORITHM } from './algorithms.ts';

/**
 * Imports a DER SubjectPublicKeyInfo as an ECDSA P-256 verification key. Throws an Error that
 * names the key type when the key is anything else (RSA, another curve, Ed25519) or when the EC
 * point is not on the curve.
 */
export async function importP256PublicKey(spkiDer: Uint8Array): Promise<webcrypto.CryptoKey> {
  let algorithm: { name?: string; namedCurve?: string } | null;
  try {
    algorithm = new x509.PublicKey(toArrayBuffer(spkiDer)).algorithm as typeof algorithm;
  } catch {
    algorithm = null;
  }
  if (algorithm === null || algorithm === undefined) throw new Error('public key algorithm is not recognised');
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') {
    const curve = algorithm.namedCurve === undefined ? '' : ` ${algorithm.namedCurve}`;
    throw new Error(`public key is ${algorithm.name ?? 'unknown'}${curve}, expected ECDSA P-256`);
  }
  try {
    return await nodeCrypto.subtle.importKey('spki', spkiDer, P256_KEY_ALGORITHM, true, ['verify']);
  } catch {
    throw new Error('public key is not a valid EC P-256 point');
  }
}

/**
 * Parses a DER SubjectPublicKeyInfo with node:crypto and returns it when it is an ECDSA P-256
 * key. OpenSSL rejects an EC point that is not on the curve while decoding. Throws an Error that
 * names the key type otherwise, as `importP256PublicKey` does, without the ASN.1 library's cost.
 */
export function p256PublicKeyObject(spkiDer: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spkiDer.buffer, spkiDer.byteOffset, spkiDer.byteLength), format: 'der', type: 'spki' });
  } catch {
    throw new Error('public key is not a valid SubjectPublicKeyInfo of a supported algorithm');
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    const type = key.asymmetricKeyType === 'ec' ? 'ECDSA' : (key.asymmetricKeyType ?? 'unknown').toUpperCase();
    throw new Error(`public key is ${type}${curve === undefined ? '' : ` ${curve}`}, expected ECDSA P-256`);
  }
  return key;
}

/** Exports a public key as DER SubjectPublicKeyInfo with the WebCrypto provider that owns it. */
export async function exportSpki(key: webcrypto.CryptoKey, crypto: webcrypto.Crypto = nodeCrypto): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey('spki', key));
}

/**
 * Returns a random positive certificate serial number of 128 bits as lowercase hex, the form
 * `x509.X509Certificate#serialNumber` reports. RFC 5280 §4.1.2.2 requires a positive integer of at
 * most 20 octets. The first byte is never zero, so the hex never loses a leading byte on encoding.
 */
export function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  while (bytes[0] === 0) bytes[0] = randomBytes(1)[0] ?? 0;
  return bytes.toString('hex');
}

/** Copies a byte view into a standalone ArrayBuffer, the input type several x509 APIs expect. */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy.buffer;
}
