/**
 * Validation of the PKCS#10 certificate signing requests that proxies send to obtain an SVID.
 *
 * The CA never copies anything from a CSR except its public key: the leaf's names, extensions and
 * validity come from the caller's entitlement. The checks below exist so that a CSR that requests
 * something else fails loudly with its own error code instead of being silently narrowed.
 */
import { verify as verifySignature, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificationRequest } from '@peculiar/asn1-csr';
import {
  BasicConstraints,
  Extensions,
  SubjectAlternativeName,
  id_ce_basicConstraints,
  id_ce_subjectAltName,
  type Extension,
  type GeneralName,
} from '@peculiar/asn1-x509';
import { SealmeshError } from '../errors/index.ts';
import { formatSpiffeId, parseSpiffeId, type SpiffeId } from '../spiffe/index.ts';
import { p256PublicKeyObject } from './keys.ts';
import { assertSingleDerElement, decodeSinglePem } from './pem.ts';

/** Largest accepted CSR in bytes of PEM text. A P-256 CSR with one URI SAN is about 500 bytes. */
export const MAX_CSR_BYTES = 8 * 1024;

// PKCS#9 extensionRequest attribute (RFC 2985 §5.4.2): carries the extensions that a CSR requests.
const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14';

// Signature algorithms accepted on a CSR, by OID (RFC 5758 §3.2), with the hash node:crypto uses.
const ECDSA_SIGNATURE_HASHES: ReadonlyMap<string, string> = new Map([
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
]);

/** The parts of a validated CSR that the CA uses. */
export interface ValidatedCsr {
  /** The requester's ECDSA P-256 public key. */
  readonly publicKey: KeyObject;
  /** The same key as DER SubjectPublicKeyInfo. */
  readonly spkiDer: Uint8Array;
  /** The SPIFFE ID that the CSR requests, equal to the entitled one it was validated against. */
  readonly spiffeId: string;
}

/** Every result of `validateCsr`, so that `isValidatedCsr` can tell them from look-alike objects. */
const validated = new WeakSet<ValidatedCsr>();

/** Returns true when `csr` is a result of `validateCsr` in this process. */
export function isValidatedCsr(csr: ValidatedCsr): boolean {
  return validated.has(csr);
}

/**
 * Validates a PEM CSR against the identity its sender is entitled to, and returns its public key.
 *
 * Each check throws its own code, in this order:
 * - SEALMESH_ERR_CSR_TOO_LARGE: the PEM text is larger than MAX_CSR_BYTES.
 * - SEALMESH_ERR_CSR_MALFORMED: the text is not exactly one `CERTIFICATE REQUEST` PEM block
 *   (RFC 7468 §7) that contains DER PKCS#10 version 1 (RFC 2986 §4.1), or its extension request
 *   cannot be decoded or repeats an extension.
 * - SEALMESH_ERR_CSR_UNSUPPORTED_KEY: the subject public key is not ECDSA P-256.
 * - SEALMESH_ERR_CSR_BAD_SIGNATURE: the signature is not ECDSA with SHA-2, or the signature over
 *   CertificationRequestInfo does not verify with the CSR's own key (RFC 2986 §4.2). This proves
 *   that the sender has the private key.
 * - SEALMESH_ERR_CSR_CA_REQUESTED: the CSR requests basicConstraints with cA set.
 * - SEALMESH_ERR_CSR_SAN_INVALID: the CSR has no subjectAltName extension, or that extension contains
 *   anything other than exactly one URI, or the URI is not a sealmesh SPIFFE ID. An X509-SVID
 *   carries exactly one URI SAN (SPIFFE X509-SVID §2). sealmesh leaves issue no other SAN types,
 *   so a CSR that requests one is rejected too.
 * - SEALMESH_ERR_CSR_IDENTITY_MISMATCH: the SPIFFE ID differs from `entitled` in trust domain,
 *   namespace or service.
 *
 * The subject name and all other requested extensions are ignored, because the CA does not copy them.
 */
export async function validateCsr(csrPem: string, entitled: SpiffeId): Promise<ValidatedCsr> {
  const size = Buffer.byteLength(csrPem, 'utf8');
  if (size > MAX_CSR_BYTES) {
    throw new SealmeshError('SEALMESH_ERR_CSR_TOO_LARGE', `CSR is ${size} bytes, above the maximum of ${MAX_CSR_BYTES} bytes: send one P-256 CSR with one URI SAN`);
  }

  const request = parseRequest(csrPem);
  const extensions = requestedExtensions(request);
  const info = request.certificationRequestInfo;

  let publicKey: KeyObject;
  try {
    publicKey = p256PublicKeyObject(new Uint8Array(AsnConvert.serialize(info.subjectPKInfo)));
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CSR_UNSUPPORTED_KEY', `CSR key is not accepted (${(error as Error).message}): generate an ECDSA P-256 key`);
  }
  const spkiDer = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));

  verifyRequestSignature(request, publicKey);

  const basicConstraints = extensions.get(id_ce_basicConstraints);
  if (basicConstraints !== undefined && decodeExtension(basicConstraints, BasicConstraints).cA) {
    throw new SealmeshError('SEALMESH_ERR_CSR_CA_REQUESTED', 'CSR requests a CA certificate (basicConstraints cA=true): remove the basicConstraints extension');
  }

  const requested = spiffeIdFromSan(extensions.get(id_ce_subjectAltName));
  const expected = formatSpiffeId(entitled);
  if (formatSpiffeId(requested) !== expected) {
    throw new SealmeshError(
      'SEALMESH_ERR_CSR_IDENTITY_MISMATCH',
      `CSR requests SPIFFE ID ${formatSpiffeId(requested)}, but the caller is entitled only to ${expected}: put ${expected} in the URI SAN`,
    );
  }
  const result: ValidatedCsr = Object.freeze({ publicKey, spkiDer, spiffeId: expected });
  validated.add(result);
  return result;
}

function malformed(detail: string, cause?: unknown): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_CSR_MALFORMED', `CSR is malformed (${detail}): send one PEM-encoded PKCS#10 CSR`, { cause });
}

function sanInvalid(detail: string, cause?: unknown): SealmeshError {
  return new SealmeshError(
    'SEALMESH_ERR_CSR_SAN_INVALID',
    `CSR subjectAltName is invalid because ${detail}: request exactly one URI SAN that contains the workload's SPIFFE ID`,
    { cause },
  );
}

function parseRequest(csrPem: string): CertificationRequest {
  let der: Uint8Array;
  try {
    der = decodeSinglePem(csrPem, 'CERTIFICATE REQUEST');
    assertSingleDerElement(der);
  } catch (error) {
    throw malformed((error as Error).message, error);
  }
  let request: CertificationRequest;
  try {
    request = AsnConvert.parse(der, CertificationRequest);
  } catch (error) {
    throw malformed('DER is not a PKCS#10 CertificationRequest', error);
  }
  // RFC 2986 §4.1: version is 0 (v1) for this version of the standard.
  if (request.certificationRequestInfo.version !== 0) {
    throw malformed(`version is ${request.certificationRequestInfo.version}, expected 0 (v1)`);
  }
  return request;
}

/** Returns the extensions of the CSR's extensionRequest attribute, keyed by OID. */
function requestedExtensions(request: CertificationRequest): Map<string, Extension> {
  const attributes = (request.certificationRequestInfo.attributes ?? []).filter((attribute) => attribute.type === EXTENSION_REQUEST_OID);
  const extensions = new Map<string, Extension>();
  if (attributes.length === 0) return extensions;
  if (attributes.length > 1) throw malformed('more than one extensionRequest attribute');

  const values = attributes[0]?.values ?? [];
  if (values.length !== 1 || values[0] === undefined) throw malformed('extensionRequest attribute does not contain exactly one value');
  let parsed: Extensions;
  try {
    parsed = AsnConvert.parse(values[0], Extensions);
  } catch (error) {
    throw malformed('extensionRequest attribute is not a list of extensions', error);
  }
  for (const extension of parsed) {
    // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
    if (extensions.has(extension.extnID)) throw malformed(`extension ${extension.extnID} is requested more than once`);
    extensions.set(extension.extnID, extension);
  }
  return extensions;
}

function decodeExtension<T>(extension: Extension, type: new () => T): T {
  try {
    return AsnConvert.parse(extension.extnValue, type);
  } catch (error) {
    throw malformed(`extension ${extension.extnID} cannot be decoded`, error);
  }
}

function verifyRequestSignature(request: CertificationRequest, key: KeyObject): void {
  const oid = request.signatureAlgorithm.algorithm;
  const hash = ECDSA_SIGNATURE_HASHES.get(oid);
  if (hash === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CSR_BAD_SIGNATURE', `CSR signature algorithm ${oid} is not ECDSA with SHA-256, SHA-384 or SHA-512: sign the CSR with ECDSA SHA-256`);
  }
  // The signature covers the DER bytes of CertificationRequestInfo exactly as received.
  const signedBytes = request.certificationRequestInfoRaw ?? AsnConvert.serialize(request.certificationRequestInfo);
  let valid: boolean;
  try {
    valid = verifySignature(hash, new Uint8Array(signedBytes), { key, dsaEncoding: 'der' }, new Uint8Array(request.signature));
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new SealmeshError('SEALMESH_ERR_CSR_BAD_SIGNATURE', 'CSR signature does not verify with the CSR public key: sign the CSR with the private key of the key it contains');
  }
}

function spiffeIdFromSan(extension: Extension | undefined): SpiffeId {
  if (extension === undefined) throw sanInvalid('the CSR has no subjectAltName extension');
  const names = decodeExtension(extension, SubjectAlternativeName);
  const name = names[0];
  if (name === undefined) throw sanInvalid('it contains no names');
  if (names.length > 1) {
    throw sanInvalid(`it contains ${names.length} names, ${names.map(describeGeneralName).join(' and ')}`);
  }
  const uri = name.uniformResourceIdentifier;
  if (uri === undefined) throw sanInvalid(`it contains ${describeGeneralName(name)} instead of a URI`);
  try {
    return parseSpiffeId(uri);
  } catch (error) {
    throw sanInvalid(`URI ${JSON.stringify(uri.slice(0, 200))} is not a sealmesh SPIFFE ID`, error);
  }
}

/** Names the type of a GeneralName (RFC 5280 §4.2.1.6) for error messages, without its value. */
function describeGeneralName(name: GeneralName): string {
  if (name.uniformResourceIdentifier !== undefined) return 'a URI';
  if (name.dNSName !== undefined) return 'a DNS name';
  if (name.iPAddress !== undefined) return 'an IP address';
  if (name.rfc822Name !== undefined) return 'an email address';
  if (name.directoryName !== undefined) return 'a directory name';
  if (name.otherName !== undefined) return 'an otherName';
  if (name.registeredID !== undefined) return 'a registered ID';
  return 'an unsupported name type';
}
