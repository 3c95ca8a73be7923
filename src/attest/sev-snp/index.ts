/**
 * AMD SEV-SNP evidence: the report parser, the certificate table parser and the verifier.
 */
export {
  parseSnpReport,
  decodeTcb,
  productLineFromCpuid,
  SNP_PRODUCT_LINES,
  SNP_REPORT_SIZE,
  SNP_SIGNED_REPORT_SIZE,
  SUPPORTED_SNP_REPORT_VERSIONS,
  type SnpFirmwareVersion,
  type SnpGuestPolicy,
  type SnpProductLine,
  type SnpReport,
  type SnpTcb,
} from './report.ts';
export {
  encodeSnpCertTable,
  MAX_SNP_CERT_TABLE_BYTES,
  parseSnpCertTable,
  SNP_CERT_TABLE_GUIDS,
  type SnpCertTable,
  type SnpCertTableRole,
} from './cert-table.ts';
export { checkSnpRevocation, MAX_AMD_CRL_BYTES, type SnpCrlSource } from './crl.ts';
export { AMD_ARK_SPKI_SHA256 } from './roots.ts';
export { SEV_SNP_PROVIDER, SevSnpVerifier, type SevSnpVerifierOptions } from './verifier.ts';
