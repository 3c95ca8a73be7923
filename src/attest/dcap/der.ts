/**
 * A strict reader for the few DER shapes of Intel's SGX PCK certificate extension: SEQUENCE,
 * OBJECT IDENTIFIER, INTEGER, OCTET STRING, ENUMERATED and BOOLEAN with definite lengths.
 * Errors are plain `Error`s; the caller turns them into its own error code.
 */

export const TAG_BOOLEAN = 0x01;
export const TAG_INTEGER = 0x02;
export const TAG_OCTET_STRING = 0x04;
export const TAG_OBJECT_IDENTIFIER = 0x06;
export const TAG_ENUMERATED = 0x0a;
export const TAG_SEQUENCE = 0x30;

export interface DerElement {
  tag: number;
  /** The contents octets, without tag and length. */
  value: Buffer;
}

/** Splits `bytes` into consecutive DER elements; every byte must belong to one. */
export function readDerElements(bytes: Buffer): DerElement[] {
  const elements: DerElement[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const tag = bytes[offset]!;
    if ((tag & 0x1f) === 0x1f) throw new Error(`multi-byte DER tag at offset ${offset}`);
    offset += 1;
    if (offset >= bytes.length) throw new Error('DER length missing');
    let length = bytes[offset]!;
    offset += 1;
    if (length === 0x80) throw new Error('indefinite DER length');
    if (length > 0x80) {
      const lengthBytes = length & 0x7f;
      if (lengthBytes > 3 || offset + lengthBytes > bytes.length) throw new Error('DER length out of range');
      length = 0;
      for (let i = 0; i < lengthBytes; i += 1) length = length * 256 + bytes[offset + i]!;
      offset += lengthBytes;
    }
    if (offset + length > bytes.length) throw new Error(`DER element of ${length} bytes overruns its container`);
    elements.push({ tag, value: bytes.subarray(offset, offset + length) });
    offset += length;
  }
  return elements;
}

/** Reads exactly one DER element of the expected tag. */
export function readDerElement(bytes: Buffer, tag: number): DerElement {
  const elements = readDerElements(bytes);
  if (elements.length !== 1 || elements[0]!.tag !== tag) {
    throw new Error(`expected one DER element with tag 0x${tag.toString(16)}`);
  }
  return elements[0]!;
}

/** Decodes the contents of an OBJECT IDENTIFIER to dotted form. */
export function decodeOid(value: Buffer): string {
  if (value.length === 0) throw new Error('empty OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let current = 0;
  for (let i = 0; i < value.length; i += 1) {
    const byte = value[i]!;
    current = current * 128 + (byte & 0x7f);
    if (current > Number.MAX_SAFE_INTEGER / 128) throw new Error('OBJECT IDENTIFIER arc too large');
    if ((byte & 0x80) === 0) {
      arcs.push(current);
      current = 0;
    } else if (i === value.length - 1) {
      throw new Error('truncated OBJECT IDENTIFIER');
    }
  }
  const first = arcs.shift()!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs].join('.');
}

/** Decodes a non-negative INTEGER or ENUMERATED that fits in a JavaScript number. */
export function decodeUnsigned(value: Buffer): number {
  if (value.length === 0 || value.length > 6) throw new Error('INTEGER length out of range');
  if ((value[0]! & 0x80) !== 0) throw new Error('negative INTEGER');
  return value.readUIntBE(0, value.length);
}
