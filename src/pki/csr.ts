/**
 * Validation of the PKCS#10 certificate signing requests that proxies send to obtain an SVID.
 *
 * The CA never copies anything from a CSR except its public key: the leaf's names, extensions and
 * validity come from the caller's entitlement. The checks below exist so that a CSR that requests
 * something else fails loudly with its own error code instead of being silently narrowed.
 */
import { verify as verifySignature, type KeyObject } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import { formatSpiffeId, parseSpiffeId, type SpiffeId } from '../spiffe/index.ts';
import { CsrDecodeError, decodeBasicConstraintsCa, decodeCertificationRequest, decodeGeneralNames, type DecodedCsr, type GeneralName } from './csr-decode.ts';
import { p256PublicKeyObject } from './keys.ts';
import { decodeSinglePem } from './pem.ts';

/** Largest accepted CSR in bytes of PEM text. A P-256 CSR with one URI SAN is about 500 bytes. */
export const MAX_CSR_BYTES = 8 * 1024;

// Extensions that the CA reads from a request (RFC 5280 §4.2.1.9 and §4.2.1.6).
const BASIC_CONSTRAINTS_OID = '2.5.29.19';
const SUBJECT_ALT_NAME_OID = '2.5.29.17';

// Signature algorithms accepted on a CSR, by OID (RFC 5758 §3.2), with the hash node:crypto uses.
const ECDSA_SIGNATURE_HASHES: ReadonlyMap<string, string> = new Map([
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
]);

/**
 * DER header of a SubjectPublicKeyInfo with id-ecPublicKey, the named curve P-256 and a 65-byte
 * BIT STRING (RFC 5480 §2), which an uncompressed point (0x04 || X || Y) follows.
 */
const P256_SPKI_HEADER = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/**
 * Returns true when `spki` is already the encoding that node:crypto exports for a P-256 key, so
 * that it can be used without a round trip through export. It compares bytes only, because the
 * key has been parsed and checked by then.
 */
function isCanonicalP256Spki(spki: Uint8Array): boolean {
  return spki.length === P256_SPKI_HEADER.length + 65 && P256_SPKI_HEADER.equals(spki.subarray(0, P256_SPKI_HEADER.length)) && spki[P256_SPKI_HEADER.length] === 0x04;
}

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

  let publicKey: KeyObject;
  try {
    publicKey = p256PublicKeyObject(request.spkiDer);
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CSR_UNSUPPORTED_KEY', `CSR key is not accepted (${(error as Error).message}): generate an ECDSA P-256 key`);
  }
  const spkiDer = isCanonicalP256Spki(request.spkiDer) ? Uint8Array.from(request.spkiDer) : new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));

  verifyRequestSignature(request, publicKey);

  const basicConstraints = request.extensions.get(BASIC_CONSTRAINTS_OID);
  if (basicConstraints !== undefined && decodeExtension(BASIC_CONSTRAINTS_OID, () => decodeBasicConstraintsCa(basicConstraints))) {
    throw new SealmeshError('SEALMESH_ERR_CSR_CA_REQUESTED', 'CSR requests a CA certificate (basicConstraints cA=true): remove the basicConstraints extension');
  }

  const requested = spiffeIdFromSan(request.extensions.get(SUBJECT_ALT_NAME_OID));
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

function parseRequest(csrPem: string): DecodedCsr {
  let der: Uint8Array;
  try {
    der = decodeSinglePem(csrPem, 'CERTIFICATE REQUEST');
  } catch (error) {
    throw malformed((error as Error).message, error);
  }
  let request: DecodedCsr;
  try {
    request = decodeCertificationRequest(der);
  } catch (error) {
    if (error instanceof CsrDecodeError) throw malformed(`DER is not a PKCS#10 CertificationRequest: ${error.message}`, error);
    throw error;
  }
  // RFC 2986 §4.1: version is 0 (v1) for this version of the standard.
  if (request.version !== 0) {
    throw malformed(`version is ${request.version}, expected 0 (v1)`);
  }
  return request;
}

function decodeExtension<T>(oid: string, decode: () => T): T {
  try {
    return decode();
  } catch (error) {
    if (error instanceof CsrDecodeError) throw malformed(`extension ${oid} cannot be decoded: ${error.message}`, error);
    throw error;
  }
}

function verifyRequestSignature(request: DecodedCsr, key: KeyObject): void {
  const oid = request.signatureAlgorithm;
  const hash = ECDSA_SIGNATURE_HASHES.get(oid);
  if (hash === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CSR_BAD_SIGNATURE', `CSR signature algorithm ${oid} is not ECDSA with SHA-256, SHA-384 or SHA-512: sign the CSR with ECDSA SHA-256`);
  }
  // The signature covers the DER bytes of CertificationRequestInfo exactly as received.
  let valid: boolean;
  try {
    valid = verifySignature(hash, request.infoDer, { key, dsaEncoding: 'der' }, request.signature);
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new SealmeshError('SEALMESH_ERR_CSR_BAD_SIGNATURE', 'CSR signature does not verify with the CSR public key: sign the CSR with the private key of the key it contains');
  }
}

function spiffeIdFromSan(extension: Uint8Array | undefined): SpiffeId {
  if (extension === undefined) throw sanInvalid('the CSR has no subjectAltName extension');
  const names = decodeExtension(SUBJECT_ALT_NAME_OID, () => decodeGeneralNames(extension));
  const name = names[0];
  if (name === undefined) throw sanInvalid('it contains no names');
  if (names.length > 1) {
    throw sanInvalid(`it contains ${names.length} names, ${names.map(describeGeneralName).join(' and ')}`);
  }
  const uri = name.uri;
  if (uri === undefined) throw sanInvalid(`it contains ${describeGeneralName(name)} instead of a URI`);
  try {
    return parseSpiffeId(uri);
  } catch (error) {
    throw sanInvalid(`URI ${JSON.stringify(uri.slice(0, 200))} is not a sealmesh SPIFFE ID`, error);
  }
}

/** Names the type of a GeneralName (RFC 5280 §4.2.1.6) for error messages, without its value. */
function describeGeneralName(name: GeneralName): string {
  switch (name.kind) {
    case 'uniformResourceIdentifier':
      return 'a URI';
    case 'dNSName':
      return 'a DNS name';
    case 'iPAddress':
      return 'an IP address';
    case 'rfc822Name':
      return 'an email address';
    case 'directoryName':
      return 'a directory name';
    case 'otherName':
      return 'an otherName';
    case 'registeredID':
      return 'a registered ID';
    default:
      return 'an unsupported name type';
  }
}
