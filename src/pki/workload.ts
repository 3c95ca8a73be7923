/**
 * Key and CSR helpers for the workload side: a proxy generates a key pair, sends a CSR for its
 * SPIFFE ID to the control plane, and hands the private key to Node's TLS layer as PEM.
 */
import { KeyObject, sign, webcrypto } from 'node:crypto';
import { parseSpiffeId } from '../spiffe/index.ts';
import { P256_KEY_ALGORITHM } from './algorithms.ts';
import { ecdsaSignatureToDer, encodeWorkloadCsr } from './csr-der.ts';
import { encodePem, encodePemBuffer } from './pem.ts';

// Node's WebCrypto, taken directly rather than from './x509.ts', so that a proxy loads no ASN.1 library.
const nodeCrypto = webcrypto;

/**
 * Generates an ECDSA P-256 key pair for an SVID. The private key is extractable because Node's
 * TLS layer accepts keys only as PEM, which `privateKeyToPem` produces.
 */
export async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return (await nodeCrypto.subtle.generateKey(P256_KEY_ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

/**
 * Creates a PEM PKCS#10 CSR signed with `keys`, whose only subjectAltName is the URI `spiffeId`.
 * Throws SEALMESH_ERR_SPIFFE_ID_INVALID when `spiffeId` is not a sealmesh SPIFFE ID.
 */
export async function generateCsr(spiffeId: string, keys: webcrypto.CryptoKeyPair): Promise<string> {
  const privateKey = KeyObject.from(keys.privateKey);
  return generateCsrWithSigner(spiffeId, keys.publicKey, (info) => sign('sha256', info, { key: privateKey, dsaEncoding: 'ieee-p1363' }));
}

/**
 * Creates the same CSR for a private key held elsewhere, such as in a PKCS#11 token: `signRaw`
 * returns the ECDSA P-256 SHA-256 signature over the bytes it is given in the r || s form.
 */
export async function generateCsrWithSigner(spiffeId: string, publicKey: webcrypto.CryptoKey, signRaw: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>): Promise<string> {
  const id = parseSpiffeId(spiffeId);
  const der = await encodeWorkloadCsr(spiffeId, id.service, publicKey, async (info) => ecdsaSignatureToDer(await signRaw(info)));
  return encodePem('CERTIFICATE REQUEST', der);
}

/**
 * Exports an extractable private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). The PEM is
 * returned in a Buffer and no JavaScript string contains a copy, so the caller can wipe it with
 * `fill(0)` once the TLS context is built. The intermediate DER copy is zeroed here.
 */
export async function privateKeyToPem(key: webcrypto.CryptoKey): Promise<Buffer> {
  const der = new Uint8Array(await nodeCrypto.subtle.exportKey('pkcs8', key));
  try {
    return encodePemBuffer('PRIVATE KEY', der);
  } finally {
    der.fill(0);
  }
}
