/**
 * A small DER encoder (ITU-T X.690 §10) for the few ASN.1 types that a leaf certificate needs. The
 * general ASN.1 library builds an object tree and walks it for every certificate, which costs far
 * more than the ECDSA signature itself. The leaf builder in leaf-certificate.ts uses these helpers
 * to place each field directly.
 */

/** Universal and context-specific tags used by X.509 (X.690 §8, RFC 5280 §4.1). */
export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
} as const;

/** Encodes a definite length in the shortest form (X.690 §10.1). */
function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** Encodes one tag-length-value element whose contents are the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const header = encodeLength(length);
  const output = new Uint8Array(1 + header.length + length);
  output[0] = tag;
  output.set(header, 1);
  let offset = 1 + header.length;
  for (const part of parts) {
    output.set(part, offset);
    offset += part.length;
  }
  return output;
}

/** Encodes a SEQUENCE of already encoded elements. */
export function sequence(...elements: Uint8Array[]): Uint8Array {
  return tlv(TAG.sequence, ...elements);
}

/**
 * Encodes the non-negative integer whose big-endian magnitude is `magnitude` as a DER INTEGER:
 * leading zero bytes are dropped, and one zero byte is added when the high bit is set, so the
 * value stays positive (X.690 §8.3).
 */
export function unsignedInteger(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start += 1;
  const trimmed = magnitude.subarray(start);
  if (trimmed.length === 0) return Uint8Array.of(TAG.integer, 1, 0);
  return ((trimmed[0] as number) & 0x80) === 0 ? tlv(TAG.integer, trimmed) : tlv(TAG.integer, Uint8Array.of(0), trimmed);
}

/** Encodes a dotted OBJECT IDENTIFIER such as `1.2.840.10045.4.3.2` (X.690 §8.19). */
export function objectIdentifier(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map((arc) => {
    if (!/^\d+$/.test(arc)) throw new Error(`OID ${JSON.stringify(dotted)} has an arc that is not a decimal number`);
    return Number(arc);
  });
  if (arcs.length < 2 || (arcs[0] as number) > 2) throw new Error(`OID ${JSON.stringify(dotted)} is invalid`);
  const bytes: number[] = [];
  const values = [(arcs[0] as number) * 40 + (arcs[1] as number), ...arcs.slice(2)];
  for (const value of values) {
    const groups: number[] = [value & 0x7f];
    for (let rest = Math.floor(value / 128); rest > 0; rest = Math.floor(rest / 128)) groups.unshift(0x80 | (rest & 0x7f));
    bytes.push(...groups);
  }
  return tlv(TAG.oid, Uint8Array.from(bytes));
}

/** Encodes a BIT STRING whose contents are whole bytes (no unused bits). */
export function bitString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG.bitString, Uint8Array.of(0), bytes);
}

export function octetString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG.octetString, bytes);
}

/**
 * Encodes a certificate time as RFC 5280 §4.1.2.5 requires: UTCTime `YYMMDDHHMMSSZ` for the years
 * 1950 to 2049, GeneralizedTime `YYYYMMDDHHMMSSZ` otherwise, both in UTC with whole seconds.
 */
export function certificateTime(date: Date): Uint8Array {
  const year = date.getUTCFullYear();
  const pad = (value: number): string => String(value).padStart(2, '0');
  const rest = `${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}${pad(date.getUTCSeconds())}Z`;
  if (year >= 1950 && year < 2050) return tlv(TAG.utcTime, Buffer.from(`${pad(year % 100)}${rest}`, 'ascii'));
  return tlv(TAG.generalizedTime, Buffer.from(`${String(year).padStart(4, '0')}${rest}`, 'ascii'));
}

/**
 * Converts an ECDSA signature from r || s (IEEE P1363, as WebCrypto and PKCS#11 return it) to the
 * DER ECDSA-Sig-Value that X.509 carries (RFC 5758 §3.2, RFC 3279 §2.2.3).
 */
export function ecdsaSignatureToDer(rawSignature: Uint8Array): Uint8Array {
  if (rawSignature.length === 0 || rawSignature.length % 2 !== 0) {
    throw new Error(`ECDSA signature of ${rawSignature.length} bytes is not r || s of equal halves`);
  }
  const half = rawSignature.length / 2;
  return sequence(unsignedInteger(rawSignature.subarray(0, half)), unsignedInteger(rawSignature.subarray(half)));
}

/**
 * Returns the elements directly inside the DER SEQUENCE `der`, each with its header. Throws when
 * `der` is not one SEQUENCE with definite lengths that fill it exactly.
 */
export function sequenceElements(der: Uint8Array): Uint8Array[] {
  const outer = readElement(der, 0);
  if (der[0] !== TAG.sequence || outer.end !== der.length) throw new Error('DER is not exactly one SEQUENCE');
  const elements: Uint8Array[] = [];
  for (let offset = outer.contentStart; offset < outer.end; ) {
    const element = readElement(der, offset);
    if (element.end > outer.end) throw new Error('DER element overruns its SEQUENCE');
    elements.push(der.subarray(offset, element.end));
    offset = element.end;
  }
  return elements;
}

/** Returns the contents of the DER element `der` after its tag and length. */
export function elementContents(der: Uint8Array): Uint8Array {
  const element = readElement(der, 0);
  if (element.end !== der.length) throw new Error('DER element does not fill its bytes exactly');
  return der.subarray(element.contentStart, element.end);
}

function readElement(der: Uint8Array, offset: number): { contentStart: number; end: number } {
  if (offset + 2 > der.length) throw new Error('DER element is truncated');
  if (((der[offset] as number) & 0x1f) === 0x1f) throw new Error('DER element has a multi-byte tag');
  const first = der[offset + 1] as number;
  let length = first;
  let contentStart = offset + 2;
  if (first >= 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw new Error('DER element has an indefinite or oversized length');
    if (contentStart + count > der.length) throw new Error('DER length is truncated');
    length = 0;
    for (let index = 0; index < count; index += 1) length = length * 256 + (der[contentStart + index] as number);
    contentStart += count;
  }
  const end = contentStart + length;
  if (end > der.length) throw new Error('DER element is truncated');
  return { contentStart, end };
}
