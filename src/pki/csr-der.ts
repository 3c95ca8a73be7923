/**
 * A DER encoder for the one PKCS#10 request a workload sends (RFC 2986): an ECDSA P-256 key, the
 * subject `O=sealmesh, CN=<service>` and an extensionRequest with one URI subjectAltName. It needs
 * no ASN.1 library, so a sidecar proxy can enroll and renew without loading @peculiar/x509 and its
 * dependencies, which add about 17 MiB of resident memory. The CA checks every request it
 * receives with the full ASN.1 decoder (`validateCsr`).
 */
import { webcrypto } from 'node:crypto';

const OID_ORGANIZATION = '2.5.4.10';
const OID_COMMON_NAME = '2.5.4.3';
const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/** Encodes one DER element: tag, definite length, contents. */
function element(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const length = contents.reduce((sum, part) => sum + part.length, 0);
  let header: number[];
  if (length < 0x80) {
    header = [tag, length];
  } else {
    const lengthBytes: number[] = [];
    for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) lengthBytes.unshift(rest % 256);
    header = [tag, 0x80 | lengthBytes.length, ...lengthBytes];
  }
  return Buffer.concat([Uint8Array.from(header), ...contents]);
}

const sequence = (...contents: Uint8Array[]): Uint8Array => element(0x30, ...contents);
const set = (...contents: Uint8Array[]): Uint8Array => element(0x31, ...contents);
const utf8String = (text: string): Uint8Array => element(0x0c, Buffer.from(text, 'utf8'));

function objectIdentifier(oid: string): Uint8Array {
  const arcs = oid.split('.').map(Number);
  const bytes: number[] = [(arcs[0] ?? 0) * 40 + (arcs[1] ?? 0)];
  for (const arc of arcs.slice(2)) {
    // Base-128, most significant group first, with the high bit set on all but the last byte.
    const groups: number[] = [arc & 0x7f];
    for (let rest = arc >>> 7; rest > 0; rest >>>= 7) groups.unshift((rest & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return element(0x06, Uint8Array.from(bytes));
}

function relativeName(oid: string, value: string): Uint8Array {
  return set(sequence(objectIdentifier(oid), utf8String(value)));
}

/**
 * Returns the DER CertificationRequest for `spiffeId` with `publicKey`, signed with ECDSA SHA-256
 * by `signDer`, which returns the DER ECDSA-Sig-Value over the request info it is given. `service`
 * becomes the subject's common name, which the CA ignores but operators read.
 */
export async function encodeWorkloadCsr(
  spiffeId: string,
  service: string,
  publicKey: webcrypto.CryptoKey,
  signDer: (info: Uint8Array) => Uint8Array | Promise<Uint8Array>,
): Promise<Uint8Array> {
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', publicKey));
  // GeneralName uniformResourceIdentifier is [6] IMPLICIT IA5String; a SPIFFE ID is ASCII.
  const generalNames = sequence(element(0x86, Buffer.from(spiffeId, 'ascii')));
  const extensions = sequence(sequence(objectIdentifier(OID_SUBJECT_ALT_NAME), element(0x04, generalNames)));
  const attributes = element(0xa0, sequence(objectIdentifier(OID_EXTENSION_REQUEST), set(extensions)));
  const subject = sequence(relativeName(OID_ORGANIZATION, 'sealmesh'), relativeName(OID_COMMON_NAME, service));
  const info = sequence(element(0x02, Uint8Array.of(0)), subject, spki, attributes);
  const signature = await signDer(info);
  const algorithm = sequence(objectIdentifier(OID_ECDSA_WITH_SHA256));
  return sequence(info, algorithm, element(0x03, Uint8Array.of(0), signature));
}

/** Encodes one unsigned big-endian integer as a DER INTEGER: leading zeros dropped, a zero added before a high bit. */
function unsignedInteger(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start += 1;
  const trimmed = bytes.subarray(start);
  return element(0x02, ...((trimmed[0] ?? 0) >= 0x80 ? [Uint8Array.of(0), trimmed] : [trimmed]));
}

/**
 * Converts an ECDSA P-256 signature in the r || s form that PKCS#11 returns (64 bytes) into the
 * DER ECDSA-Sig-Value that X.509 and PKCS#10 carry (RFC 5758 §3.2). Throws on any other length.
 */
export function ecdsaSignatureToDer(raw: Uint8Array): Uint8Array {
  if (raw.length !== 64) throw new Error(`an ECDSA P-256 signature has 64 bytes (r || s), got ${raw.length}`);
  return sequence(unsignedInteger(raw.subarray(0, 32)), unsignedInteger(raw.subarray(32)));
}
