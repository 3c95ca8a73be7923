export {
  ATTESTATION_PROVIDERS,
  OPERATOR_KEY_ALGORITHMS,
  TCB_STATUSES,
  SIGNATURE_BYTES,
  importOperatorPublicKey,
  isCanonicalBase64,
  manifestSchema,
  parseManifest,
  parseSignedManifest,
  publicKeyToPem,
  signatureSchema,
  signedManifestSchema,
  type AttestationProviderName,
  type AttestationServicePolicy,
  type AttestationSettings,
  type IntentionRule,
  type Manifest,
  type ManifestSignature,
  type OperatorKey,
  type OperatorKeyAlgorithm,
  type SignedManifest,
} from './schema.ts';
export { MANIFEST_FORMAT, canonicalJson, canonicalManifestBytes, manifestDigest, manifestSigningInput } from './canonical.ts';
export {
  FileManifestSigner,
  generateOperatorKey,
  operatorKeyId,
  requireOperatorPublicKey,
  verifyOperatorSignature,
  type GeneratedOperatorKey,
  type ManifestSigner,
} from './signers.ts';
export { Pkcs11ManifestSigner, type Pkcs11SignerOptions } from './pkcs11-signer.ts';
export {
  MAX_DOCUMENT_BYTES,
  detectDocumentFormat,
  formatSignedManifest,
  parseDocumentText,
  parseSignedManifestText,
  readSignedManifestFile,
  signManifest,
  unsignedDocument,
  writeSignedManifestFile,
  type DocumentFormat,
} from './document.ts';
export { ManifestChainError, acceptManifest, verifyChain, type AcceptedManifest } from './accept.ts';
export {
  DEFAULT_TCB_STATUSES,
  effectivePosture,
  formatPosture,
  resolveServicePolicy,
  type EffectivePosture,
  type ServiceAttestationPolicy,
  type TcbStatusName,
} from './posture.ts';
export { initManifest, nextManifest, operatorKeyEntry, type InitManifestOptions, type ManifestChanges, type OperatorKeyInput } from './builders.ts';
