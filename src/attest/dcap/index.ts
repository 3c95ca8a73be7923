/** Intel DCAP quote verification for TDX and SGX evidence. */
export { DcapVerifier, DCAP_REJECTION_CHANNEL, MAX_QUOTE_SIZE, type DcapRejectionEvent, type DcapVerifierOptions } from './verifier.ts';
export {
  prepareQuote,
  verifyPreparedQuote,
  verifyQuote,
  type DcapVerification,
  type PreparedQuote,
  type VerifyQuoteOptions,
} from './verify.ts';
export {
  parseQuote,
  parseQuoteHeader,
  parseSgxReportBody,
  parseTdReportBody,
  type DcapQuote,
  type QuoteBody,
  type QuoteHeader,
  type QuoteSignatureData,
  type SgxReportBody,
  type TdReportBody,
} from './quote.ts';
export { parsePckExtension, parsePckExtensionValue, SGX_EXTENSION_OID, type PckExtension, type PckTcb } from './pck.ts';
export { INTEL_SGX_ROOT_CA_SPKI_SHA256 } from './chain.ts';
export { parseQeIdentity, parseTcbInfo, verifyQeIdentity, verifyTcbInfo, type QeIdentity, type TcbInfo, type TcbLevel } from './documents.ts';
export { dcapCollateralFromJson, extractSignedDocument, type SignedDocumentText } from './collateral-json.ts';
export { combineTcbStatus, type LevelMatch } from './tcb.ts';
