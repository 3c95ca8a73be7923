/**
 * The public surface of the sealmesh PKI: the CA, its key custody, CSR validation, peer identity
 * checks and the workload key helpers.
 */
export { CertificateAuthority } from './ca.ts';
export {
  CLOCK_SKEW_SECONDS,
  DEFAULT_SVID_TTL_SECONDS,
  MAX_SVID_TTL_SECONDS,
  MIN_SVID_TTL_SECONDS,
  type CaStatus,
  type CertificateAuthorityOptions,
  type IssuedCertificate,
  type IssuedSvid,
  type RootPrune,
  type RootRotation,
  type RootStatus,
} from './ca-types.ts';
export { MAX_CSR_BYTES, validateCsr, type ValidatedCsr } from './csr.ts';
export type { CaSigningKey, KeyCustody, KeyCustodyName } from './custody.ts';
export { Pkcs11KeyCustody, type Pkcs11CustodyOptions } from './pkcs11-custody.ts';
export { spiffeIdFromPeerCertificate } from './peer.ts';
export { SealedKeyCustody } from './sealed-custody.ts';
export { generateCsr, generateCsrWithSigner, generateKeyPair, privateKeyToPem } from './workload.ts';
