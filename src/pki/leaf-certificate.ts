/**
 * The leaf certificate profile of the sealmesh CA, encoded field by field with the DER helpers in
 * der.ts instead of through @peculiar/x509's generator, because issuance is on the hot path of
 * enrollment and renewal. The parts that depend only on the issuer (its name, the authority key
 * identifier) and the fixed extensions are encoded once and reused. Each leaf places its serial
 * number, validity, subject, public key, subject key identifier and subjectAltName.
 *
 * The output is byte for byte what `X509CertificateGenerator.create` of @peculiar/x509 2.2.0
 * produces for the same fields (test/pki-leaf-certificate.test.ts compares the two). The one
 * exception is an IPv4-mapped IPv6 address such as `::ffff:192.0.2.1`, whose dotted tail that
 * library encodes differently; here it becomes the 16 bytes RFC 4291 §2.5.5.2 defines.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { CaSigningKey } from './custody.ts';
import {
  bitString,
  certificateTime,
  ecdsaSignatureToDer,
  elementContents,
  objectIdentifier,
  octetString,
  sequence,
  sequenceElements,
  tlv,
  TAG,
  unsignedInteger,
} from './der.ts';
import { encodePem } from './pem.ts';
import { x509 } from './x509.ts';

/** A CA certificate together with the key that signs under it. */
export interface LeafIssuer {
  certificate: x509.X509Certificate;
  key: CaSigningKey;
}

/** A signed leaf certificate. */
export interface LeafCertificate {
  der: Uint8Array;
  /** PEM with 64-character lines and a final line break. */
  pem: string;
  /** Lowercase hex, as passed in. */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

// ecdsa-with-SHA256 (RFC 5758 §3.2): the AlgorithmIdentifier has no parameters.
const ECDSA_WITH_SHA256 = sequence(objectIdentifier('1.2.840.10045.4.3.2'));
// [0] EXPLICIT Version v3 (RFC 5280 §4.1.2.1).
const VERSION_V3 = tlv(0xa0, Uint8Array.of(TAG.integer, 1, 2));
const CRITICAL = Uint8Array.of(TAG.boolean, 1, 0xff);

function extension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? sequence(objectIdentifier(oid), CRITICAL, octetString(value)) : sequence(objectIdentifier(oid), octetString(value));
}

// basicConstraints, critical, cA FALSE: the DEFAULT is omitted, which leaves an empty SEQUENCE.
const BASIC_CONSTRAINTS_LEAF = extension('2.5.29.19', true, sequence());
// keyUsage, critical, digitalSignature only: bit 0, so one byte 0x80 with 7 unused bits.
const KEY_USAGE_DIGITAL_SIGNATURE = extension('2.5.29.15', true, tlv(TAG.bitString, Uint8Array.of(7, 0x80)));
// extKeyUsage serverAuth and clientAuth (RFC 5280 §4.2.1.12), not critical.
const EXTENDED_KEY_USAGE = extension('2.5.29.37', false, sequence(objectIdentifier('1.3.6.1.5.5.7.3.1'), objectIdentifier('1.3.6.1.5.5.7.3.2')));
const SUBJECT_KEY_IDENTIFIER_OID = '2.5.29.14';
const SUBJECT_ALT_NAME_OID = '2.5.29.17';

/** The encoded parts that depend only on the issuer certificate. */
interface IssuerParts {
  name: Uint8Array;
  authorityKeyIdentifier: Uint8Array;
}

const issuerParts = new WeakMap<x509.X509Certificate, IssuerParts>();

function partsOf(certificate: x509.X509Certificate): IssuerParts {
  let parts = issuerParts.get(certificate);
  if (parts === undefined) {
    const keyId = certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    if (keyId === undefined) throw new Error('issuer certificate has no subjectKeyIdentifier extension');
    // The issuer name is the issuer certificate's subject, so that it matches byte for byte.
    parts = {
      name: new Uint8Array(certificate.subjectName.toArrayBuffer()),
      authorityKeyIdentifier: new Uint8Array(new x509.AuthorityKeyIdentifierExtension(keyId).rawData),
    };
    issuerParts.set(certificate, parts);
  }
  return parts;
}

/** Encoded subject names by their string form; services are few, so the map stays small. */
const subjectNames = new Map<string, Uint8Array>();
const MAX_CACHED_SUBJECTS = 4096;

function encodeSubject(subject: string): Uint8Array {
  let encoded = subjectNames.get(subject);
  if (encoded === undefined) {
    encoded = new Uint8Array(new x509.Name(subject).toArrayBuffer());
    if (subjectNames.size >= MAX_CACHED_SUBJECTS) subjectNames.clear();
    subjectNames.set(subject, encoded);
  }
  return encoded;
}

/**
 * RFC 5280 §4.2.1.2 method 1: the SHA-1 hash of the subjectPublicKey BIT STRING's value, without
 * its unused-bits byte.
 */
function subjectKeyIdentifier(spkiDer: Uint8Array): Uint8Array {
  const [, subjectPublicKey] = sequenceElements(spkiDer);
  if (subjectPublicKey === undefined || subjectPublicKey[0] !== TAG.bitString) throw new Error('SubjectPublicKeyInfo has no subjectPublicKey BIT STRING');
  const bits = elementContents(subjectPublicKey);
  return createHash('sha1').update(bits.subarray(1)).digest();
}

/** Encodes GeneralNames (RFC 5280 §4.2.1.6) for URI, DNS name and IP address entries. */
function generalNames(names: x509.JsonGeneralNames): Uint8Array {
  const encoded = names.map((name) => {
    switch (name.type) {
      case 'url':
        return tlv(0x86, Buffer.from(name.value, 'ascii'));
      case 'dns':
        return tlv(0x82, Buffer.from(name.value, 'ascii'));
      case 'ip':
        return tlv(0x87, ipAddressBytes(name.value));
      default:
        throw new Error(`subjectAltName type ${name.type} is not issued by this CA`);
    }
  });
  return sequence(...encoded);
}

/** Returns the 4 or 16 bytes of an IPv4 or IPv6 address in network order. */
function ipAddressBytes(address: string): Uint8Array {
  const version = isIP(address);
  if (version === 4) return Uint8Array.from(address.split('.').map(Number));
  if (version !== 6) throw new Error(`IP address ${JSON.stringify(address)} is invalid`);
  const [head = '', tail] = address.split('::');
  const groups = (part: string | undefined): string[] => (part === undefined || part === '' ? [] : part.split(':'));
  const expand = (list: string[]): number[] => {
    const words: number[] = [];
    for (const group of list) {
      if (group.includes('.')) {
        const [a = 0, b = 0, c = 0, d = 0] = group.split('.').map(Number);
        words.push((a << 8) | b, (c << 8) | d);
      } else {
        words.push(parseInt(group, 16));
      }
    }
    return words;
  };
  const first = expand(groups(head));
  const last = expand(groups(tail));
  const words = tail === undefined ? first : [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
  const bytes = new Uint8Array(16);
  words.forEach((word, index) => {
    bytes[index * 2] = word >> 8;
    bytes[index * 2 + 1] = word & 0xff;
  });
  return bytes;
}

/**
 * Builds and signs a leaf: not a CA, digitalSignature only, and serverAuth plus clientAuth so the
 * same certificate serves both ends of an mTLS connection (X509-SVID §4.4). `names` becomes the
 * whole subjectAltName. An SVID passes exactly one URI there. `serialNumber` is positive lowercase
 * hex, and `spkiDer` an ECDSA P-256 SubjectPublicKeyInfo that the caller has validated.
 */
export async function signLeafCertificate(options: {
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  spkiDer: Uint8Array;
  subject: string;
  names: x509.JsonGeneralNames;
  issuer: LeafIssuer;
}): Promise<LeafCertificate> {
  const issuer = partsOf(options.issuer.certificate);
  const extensions = sequence(
    BASIC_CONSTRAINTS_LEAF,
    KEY_USAGE_DIGITAL_SIGNATURE,
    EXTENDED_KEY_USAGE,
    extension(SUBJECT_KEY_IDENTIFIER_OID, false, octetString(subjectKeyIdentifier(options.spkiDer))),
    issuer.authorityKeyIdentifier,
    extension(SUBJECT_ALT_NAME_OID, false, generalNames(options.names)),
  );
  const tbs = sequence(
    VERSION_V3,
    unsignedInteger(Buffer.from(options.serialNumber, 'hex')),
    ECDSA_WITH_SHA256,
    issuer.name,
    sequence(certificateTime(options.notBefore), certificateTime(options.notAfter)),
    encodeSubject(options.subject),
    options.spkiDer,
    tlv(0xa3, extensions),
  );
  const signature = ecdsaSignatureToDer(await options.issuer.key.sign(tbs));
  const der = sequence(tbs, ECDSA_WITH_SHA256, bitString(signature));
  return {
    der,
    pem: encodePem('CERTIFICATE', der),
    serialNumber: options.serialNumber,
    notBefore: options.notBefore,
    notAfter: options.notAfter,
  };
}
