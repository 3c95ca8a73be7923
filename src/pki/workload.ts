/**
 * Key and CSR helpers for the workload side: a proxy generates a key pair, sends a CSR for its
 * SPIFFE ID to the control plane, and hands the private key to Node's TLS layer as PEM.
 */
import type { webcrypto } from 'node:crypto';
import { parseSpiffeId } from '../spiffe/index.ts';
import { ECDSA_SHA256, P256_KEY_ALGORITHM } from './keys.ts';
import { encodePemBuffer } from './pem.ts';
import { nodeCrypto, x509 } from './x509.ts';

/**
 * Generates an ECDSA P-256 key pair for an SVID. The private key is extractable because Node's
 * TLS layer accepts keys only as PEM, which `privateKeyToPem` produces.
 */
export async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return (await nodeCrypto.subtle.generateKey(P256_KEY_ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

/**
 * Creates a PEM PKCS#10 CSR signed with `keys` through `crypto`, whose only subjectAltName is the URI `spiffeId`.
 * Throws SEALMESH_ERR_SPIFFE_ID_INVALID when `spiffeId` is not a sealmesh SPIFFE ID.
 */
export async function generateCsr(spiffeId: string, keys: webcrypto.CryptoKeyPair, crypto: webcrypto.Crypto = nodeCrypto): Promise<string> {
  const id = parseSpiffeId(spiffeId);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: `O=sealmesh, CN=${id.service}`,
      keys,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])],
    },
    crypto,
  );
  return csr.toString('pem');
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
