/**
 * Parsing and checking of the AMD certificates behind an SEV-SNP report: the ARK (AMD root key),
 * the ASK or ASVK (AMD SEV signing key, or its VLEK counterpart) and the VCEK or VLEK that signed
 * the report. Certificate contents follow AMD's "Versioned Chip Endorsement Key (VCEK) Certificate
 * and KDS Interface Specification" (publication 57230).
 */
import { constants, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { id_mgf1, id_RSASSA_PSS, id_sha384, RsaSaPssParams } from '@peculiar/asn1-rsa';
import {
  AlgorithmIdentifier,
  BasicConstraints,
  Certificate,
  KeyUsage,
  KeyUsageFlags,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  type Name,
} from '@peculiar/asn1-x509';
import { SealmeshError, type ErrorCode } from '../../errors/index.ts';
import { DerError, contentsOf, encodingOf, readChildren, readElement, readSingleElement } from './der.ts';

/** Role of a certificate in the chain, used in error messages. */
export type AmdCertificateRole = 'ARK' | 'ASK' | 'VCEK' | 'VLEK';

/** Salt length of AMD's RSASSA-PSS signatures: the SHA-384 output size. */
export const AMD_PSS_SALT_LENGTH = 48;

/** Smallest RSA modulus accepted for an ARK or ASK. AMD's keys are 4096 bits. */
export const MIN_AMD_RSA_MODULUS_BITS = 2048;

/** A parsed AMD certificate with the exact byte ranges that its checks need. */
export interface AmdCertificate {
  role: AmdCertificateRole;
  der: Uint8Array;
  /** The TBSCertificate exactly as encoded, which the signature covers. */
  tbs: Uint8Array;
  /** DER of the issuer and subject names, compared byte for byte to link the chain. */
  issuerDer: Uint8Array;
  subjectDer: Uint8Array;
  /** DER SubjectPublicKeyInfo, the input of the ARK pin. */
  spkiDer: Uint8Array;
  publicKey: KeyObject;
  commonName: string | undefined;
  serialNumber: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** The outer signatureAlgorithm, decoded. */
  signatureAlgorithm: AlgorithmIdentifier;
  signature: Uint8Array;
  parsed: Certificate;
}

/**
 * Parses one DER certificate. Throws SEALMESH_ERR_SNP_CERTIFICATE_MALFORMED when the bytes are not
 * exactly one X.509 certificate, when its two signature algorithm fields differ (RFC 5280
 * §4.1.1.2), or when its public key cannot be imported. The same code rejects a certificate that
 * marks an extension other than basicConstraints and keyUsage critical, because RFC 5280 §4.2
 * requires rejecting unknown critical extensions.
 */
export function parseAmdCertificate(der: Uint8Array, role: AmdCertificateRole): AmdCertificate {
  const fail = (detail: string, cause?: unknown): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_SNP_CERTIFICATE_MALFORMED', `${role} certificate ${detail}`, { cause });

  let tbs: Uint8Array;
  let tbsFields: { issuer: Uint8Array; subject: Uint8Array; spki: Uint8Array; signatureAlgorithm: Uint8Array };
  let outerSignatureAlgorithm: Uint8Array;
  try {
    const outer = readSingleElement(der);
    const parts = readChildren(der, outer);
    if (outer.tag !== 0x30 || parts.length !== 3 || parts[0]!.tag !== 0x30) {
      throw new DerError('is not a SEQUENCE of TBSCertificate, signatureAlgorithm and signatureValue');
    }
    tbs = encodingOf(der, parts[0]!);
    outerSignatureAlgorithm = encodingOf(der, parts[1]!);
    const fields = readChildren(der, parts[0]!);
    // TBSCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    const first = fields[0]?.tag === 0xa0 ? 1 : 0;
    const at = (index: number): Uint8Array => {
      const field = fields[first + index];
      if (field === undefined) {
        throw new DerError('has a truncated TBSCertificate');
      }
      return encodingOf(der, field);
    };
    tbsFields = { signatureAlgorithm: at(1), issuer: at(2), subject: at(4), spki: at(5) };
  } catch (error) {
    throw fail(`is not valid DER: ${(error as Error).message}`, error);
  }

  let parsed: Certificate;
  try {
    parsed = AsnConvert.parse(der, Certificate);
  } catch (error) {
    throw fail(`is not a valid X.509 certificate: ${(error as Error).message}`, error);
  }
  if (!Buffer.from(outerSignatureAlgorithm).equals(tbsFields.signatureAlgorithm)) {
    throw fail('names different algorithms in signatureAlgorithm and in the TBSCertificate signature field');
  }

  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(tbsFields.spki), format: 'der', type: 'spki' });
  } catch (error) {
    throw fail(`has a public key that cannot be imported: ${(error as Error).message}`, error);
  }

  for (const extension of parsed.tbsCertificate.extensions ?? []) {
    if (extension.critical && extension.extnID !== id_ce_basicConstraints && extension.extnID !== id_ce_keyUsage) {
      throw fail(`marks the unknown extension ${extension.extnID} critical`);
    }
  }

  const tbsCertificate = parsed.tbsCertificate;
  return {
    role,
    der,
    tbs,
    issuerDer: tbsFields.issuer,
    subjectDer: tbsFields.subject,
    spkiDer: tbsFields.spki,
    publicKey,
    commonName: commonNameOf(tbsCertificate.subject),
    serialNumber: new Uint8Array(tbsCertificate.serialNumber),
    notBefore: tbsCertificate.validity.notBefore.getTime(),
    notAfter: tbsCertificate.validity.notAfter.getTime(),
    signatureAlgorithm: parsed.signatureAlgorithm,
    signature: new Uint8Array(parsed.signatureValue),
    parsed,
  };
}

/**
 * Checks that `subject` was issued and signed by `issuer`. The subject's issuer name must equal the
 * issuer's subject name. The signature must be RSASSA-PSS with SHA-384, MGF1 with SHA-384 and a
 * 48-byte salt, the one scheme AMD uses for the ARK, ASK, ASVK, VCEK and VLEK, made with the
 * issuer's RSA key of at least MIN_AMD_RSA_MODULUS_BITS bits.
 *
 * Throws SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED for any other algorithm, parameter or
 * key type, and `code` when the names differ or the signature does not verify.
 */
export function verifyAmdSignature(subject: AmdCertificate, issuer: AmdCertificate, code: ErrorCode): void {
  requirePssSha384(subject);
  requireRsaKey(issuer);

  const relation = subject === issuer ? `${subject.role} self-signature` : `${subject.role} signature by the ${issuer.role}`;
  if (!Buffer.from(subject.issuerDer).equals(issuer.subjectDer)) {
    throw new SealmeshError(code, `${relation} failed: the ${subject.role} issuer name differs from the ${issuer.role} subject name`);
  }
  const valid = verifySignature(
    'sha384',
    subject.tbs,
    { key: issuer.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: AMD_PSS_SALT_LENGTH },
    subject.signature,
  );
  if (!valid) {
    throw new SealmeshError(code, `${relation} does not verify`);
  }
}

/**
 * Checks the validity period at `now` (RFC 5280 §4.1.2.5, both bounds inclusive). Throws
 * SEALMESH_ERR_SNP_CERTIFICATE_NOT_YET_VALID or SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED.
 */
export function checkValidity(certificate: AmdCertificate, now: Date): void {
  if (now.getTime() < certificate.notBefore.getTime()) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CERTIFICATE_NOT_YET_VALID',
      `${certificate.role} certificate is not valid before ${certificate.notBefore.toISOString()}, and verification time is ${now.toISOString()}`,
    );
  }
  if (now.getTime() > certificate.notAfter.getTime()) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED',
      `${certificate.role} certificate expired at ${certificate.notAfter.toISOString()}, and verification time is ${now.toISOString()}`,
    );
  }
}

/**
 * Checks that an ARK or ASK may issue certificates: basicConstraints with cA true, and keyUsage,
 * when present, with keyCertSign (RFC 5280 §4.2.1.9 and §4.2.1.3). Throws
 * SEALMESH_ERR_SNP_CERTIFICATE_NOT_CA.
 */
export function requireCaCertificate(certificate: AmdCertificate): void {
  const extensions = certificate.parsed.tbsCertificate.extensions ?? [];
  const basic = extensions.find((extension) => extension.extnID === id_ce_basicConstraints);
  const fail = (detail: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_SNP_CERTIFICATE_NOT_CA', `${certificate.role} certificate ${detail}, so it cannot issue certificates`);
  if (basic === undefined || !AsnConvert.parse(basic.extnValue, BasicConstraints).cA) {
    throw fail('lacks basicConstraints with cA set');
  }
  const usage = extensions.find((extension) => extension.extnID === id_ce_keyUsage);
  if (usage !== undefined && (AsnConvert.parse(usage.extnValue, KeyUsage).toNumber() & KeyUsageFlags.keyCertSign) === 0) {
    throw fail('has a keyUsage without keyCertSign');
  }
}

/** Checks that a VCEK or VLEK carries an ECDSA P-384 key, the key the firmware signs reports with. */
export function requireP384Key(certificate: AmdCertificate): void {
  const details = certificate.publicKey.asymmetricKeyDetails;
  if (certificate.publicKey.asymmetricKeyType !== 'ec' || details?.namedCurve !== 'secp384r1') {
    const keyName = [certificate.publicKey.asymmetricKeyType ?? 'unknown', details?.namedCurve].filter(Boolean).join(' ');
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED',
      `${certificate.role} certificate key is ${keyName}, but reports are signed with ECDSA P-384`,
    );
  }
}

function requireRsaKey(certificate: AmdCertificate): void {
  const type = certificate.publicKey.asymmetricKeyType;
  const bits = certificate.publicKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if ((type !== 'rsa' && type !== 'rsa-pss') || bits < MIN_AMD_RSA_MODULUS_BITS) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED',
      `${certificate.role} certificate key is ${type ?? 'unknown'} with ${bits} bits, but AMD signing keys are RSA of at least ${MIN_AMD_RSA_MODULUS_BITS} bits`,
    );
  }
}

/** Checks the signatureAlgorithm: RSASSA-PSS (RFC 4055 §3.1) with SHA-384, MGF1-SHA-384, salt 48, trailer 1. */
export function requirePssSha384(certificate: AmdCertificate): void {
  const problem = pssSha384Problem(certificate.signatureAlgorithm);
  if (problem !== undefined) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED',
      `${certificate.role} certificate ${problem}, but AMD certificates use RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt`,
    );
  }
}

/**
 * Returns why `algorithm` is not RSASSA-PSS with SHA-384, MGF1-SHA-384, a 48-byte salt and trailer
 * field 1, or undefined when it is.
 */
export function pssSha384Problem(algorithm: AlgorithmIdentifier): string | undefined {
  if (algorithm.algorithm !== id_RSASSA_PSS) {
    return `is signed with algorithm ${algorithm.algorithm}`;
  }
  if (algorithm.parameters === null || algorithm.parameters === undefined) {
    return 'has RSASSA-PSS without parameters';
  }
  let params: RsaSaPssParams;
  let mgfHash: AlgorithmIdentifier | undefined;
  try {
    params = AsnConvert.parse(algorithm.parameters, RsaSaPssParams);
    if (params.maskGenAlgorithm.parameters != null) {
      mgfHash = AsnConvert.parse(params.maskGenAlgorithm.parameters, AlgorithmIdentifier);
    }
  } catch (error) {
    return `has unreadable RSASSA-PSS parameters (${(error as Error).message})`;
  }
  if (params.hashAlgorithm.algorithm !== id_sha384) {
    return `uses hash ${params.hashAlgorithm.algorithm}`;
  }
  if (params.maskGenAlgorithm.algorithm !== id_mgf1 || mgfHash === undefined) {
    return `uses mask generation ${params.maskGenAlgorithm.algorithm}`;
  }
  if (mgfHash.algorithm !== id_sha384) {
    return `uses MGF1 with hash ${mgfHash.algorithm}`;
  }
  if (params.saltLength !== AMD_PSS_SALT_LENGTH) {
    return `uses a ${params.saltLength}-byte salt`;
  }
  if (params.trailerField !== 1) {
    return `uses trailer field ${params.trailerField}`;
  }
  return undefined;
}

// AMD's extension OIDs under 1.3.6.1.4.1.3704 (AMD's enterprise arc), from publication 57230.
export const AMD_OID = {
  productName: '1.3.6.1.4.1.3704.1.2',
  bootloaderSpl: '1.3.6.1.4.1.3704.1.3.1',
  teeSpl: '1.3.6.1.4.1.3704.1.3.2',
  snpSpl: '1.3.6.1.4.1.3704.1.3.3',
  microcodeSpl: '1.3.6.1.4.1.3704.1.3.8',
  fmcSpl: '1.3.6.1.4.1.3704.1.3.9',
  hwId: '1.3.6.1.4.1.3704.1.4',
} as const;

/** Claims of a VCEK or VLEK about the platform that has its private key. */
export interface VekClaims {
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  /** FMC security patch level; Turin only. */
  fmc: number | undefined;
  /** The productName extension, such as `Milan-B0`. */
  productName: string | undefined;
  /** The hwID extension: the chip id of the one processor the VCEK belongs to. VLEKs have none. */
  hwId: Uint8Array | undefined;
}

/**
 * Reads the TCB, product name and hardware id extensions of a VCEK or VLEK. Each SPL is a DER
 * INTEGER from 0 to 255 inside the extension value, productName an IA5String and hwID the raw chip
 * id. Throws SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID when an extension repeats or is malformed, or
 * when the bootloader, TEE, SNP or microcode SPL is missing.
 */
export function readVekClaims(certificate: AmdCertificate): VekClaims {
  const fail = (detail: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID', `${certificate.role} certificate ${detail}`);
  const values = new Map<string, Uint8Array>();
  for (const extension of certificate.parsed.tbsCertificate.extensions ?? []) {
    if (values.has(extension.extnID)) {
      throw fail(`repeats extension ${extension.extnID}`);
    }
    values.set(extension.extnID, new Uint8Array(extension.extnValue.buffer));
  }

  const spl = (oid: string, name: string, required: boolean): number | undefined => {
    const value = values.get(oid);
    if (value === undefined) {
      if (required) {
        throw fail(`lacks the ${name} extension (${oid})`);
      }
      return undefined;
    }
    return decodeSmallInteger(value, () => fail(`has a ${name} extension (${oid}) that is not a DER INTEGER from 0 to 255`));
  };

  let productName: string | undefined;
  const productValue = values.get(AMD_OID.productName);
  if (productValue !== undefined) {
    productName = decodeIa5String(productValue, () => fail(`has a productName extension (${AMD_OID.productName}) that is not an IA5String`));
  }

  let hwId: Uint8Array | undefined;
  const hwIdValue = values.get(AMD_OID.hwId);
  if (hwIdValue !== undefined) {
    hwId = decodeHwId(hwIdValue, () => fail(`has a hwID extension (${AMD_OID.hwId}) of ${hwIdValue.length} bytes`));
  }

  return {
    bootloader: spl(AMD_OID.bootloaderSpl, 'blSPL', true)!,
    tee: spl(AMD_OID.teeSpl, 'teeSPL', true)!,
    snp: spl(AMD_OID.snpSpl, 'snpSPL', true)!,
    microcode: spl(AMD_OID.microcodeSpl, 'ucodeSPL', true)!,
    fmc: spl(AMD_OID.fmcSpl, 'fmcSPL', false),
    productName,
    hwId,
  };
}

function decodeSmallInteger(value: Uint8Array, fail: () => SealmeshError): number {
  try {
    const element = readSingleElement(value);
    const contents = contentsOf(value, element);
    if (element.tag !== 0x02 || contents.length === 0 || contents.length > 2) {
      throw fail();
    }
    // A leading zero byte is DER only when the next byte has its top bit set.
    if (contents.length === 2 && (contents[0] !== 0 || contents[1]! < 0x80)) {
      throw fail();
    }
    if (contents.length === 1 && contents[0]! >= 0x80) {
      throw fail();
    }
    return contents[contents.length - 1]!;
  } catch (error) {
    if (error instanceof DerError) {
      throw fail();
    }
    throw error;
  }
}

function decodeIa5String(value: Uint8Array, fail: () => SealmeshError): string {
  try {
    const element = readSingleElement(value);
    const contents = contentsOf(value, element);
    if (element.tag !== 0x16 || contents.some((byte) => byte > 0x7f)) {
      throw fail();
    }
    return Buffer.from(contents).toString('ascii');
  } catch (error) {
    if (error instanceof DerError) {
      throw fail();
    }
    throw error;
  }
}

// AMD writes the 64-byte chip id as the extension value itself; an OCTET STRING around it is read too.
// NOTE: only 64-byte ids are read, so a VCEK whose hwID is shorter is rejected as malformed.
function decodeHwId(value: Uint8Array, fail: () => SealmeshError): Uint8Array {
  if (value.length === 64) {
    return value;
  }
  if (value.length === 66 && value[0] === 0x04 && value[1] === 0x40) {
    return contentsOf(value, readElement(value, 0));
  }
  throw fail();
}

function commonNameOf(name: Name): string | undefined {
  for (const rdn of name) {
    for (const attribute of rdn) {
      if (attribute.type === '2.5.4.3') {
        return attribute.value.toString();
      }
    }
  }
  return undefined;
}
