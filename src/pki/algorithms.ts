import type { webcrypto } from 'node:crypto';

/** WebCrypto parameters of the one key type sealmesh issues certificates for. */
export const P256_KEY_ALGORITHM: webcrypto.EcKeyImportParams = { name: 'ECDSA', namedCurve: 'P-256' };

/** WebCrypto parameters of the signature algorithm of every certificate and CSR sealmesh makes. */
export const ECDSA_SHA256: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
