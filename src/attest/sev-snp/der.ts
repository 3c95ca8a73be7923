/**
 * A minimal DER reader (ITU-T X.690 §10) that returns exact byte ranges. Signatures cover the
 * encoded bytes of a TBSCertificate or TBSCertList as received, so the verifier slices them out of
 * the input instead of re-encoding a decoded structure.
 */

/** One DER element: its tag byte and where its header and contents sit in the input. */
export interface DerElement {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first contents byte. */
  contentStart: number;
  /** Offset one past the last contents byte. */
  end: number;
}

/** Thrown for input that is not DER; callers turn it into their own error code. */
export class DerError extends Error {}

/**
 * Reads the element that starts at `offset`. Only single-byte tags and definite lengths in their
 * shortest form are accepted, which is all that X.509 needs and what DER requires.
 */
export function readElement(bytes: Uint8Array, offset: number, limit = bytes.length): DerElement {
  if (offset + 2 > limit) {
    throw new DerError(`DER element at offset ${offset} is truncated`);
  }
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) {
    throw new DerError(`DER element at offset ${offset} uses a multi-byte tag`);
  }
  const first = bytes[offset + 1]!;
  let length: number;
  let headerLength: number;
  if (first < 0x80) {
    length = first;
    headerLength = 2;
  } else {
    const lengthBytes = first & 0x7f;
    if (lengthBytes === 0 || lengthBytes > 4) {
      throw new DerError(`DER element at offset ${offset} has an indefinite or oversized length`);
    }
    if (offset + 2 + lengthBytes > limit) {
      throw new DerError(`DER element at offset ${offset} is truncated`);
    }
    length = 0;
    for (let i = 0; i < lengthBytes; i += 1) {
      length = length * 256 + bytes[offset + 2 + i]!;
    }
    if (length < 0x80 || bytes[offset + 2] === 0) {
      throw new DerError(`DER element at offset ${offset} does not use the shortest length form`);
    }
    headerLength = 2 + lengthBytes;
  }
  const contentStart = offset + headerLength;
  const end = contentStart + length;
  if (end > limit) {
    throw new DerError(`DER element at offset ${offset} claims ${length} bytes, past the end of its container`);
  }
  return { tag, start: offset, contentStart, end };
}

/** Returns the elements directly inside a constructed element, in order. */
export function readChildren(bytes: Uint8Array, parent: DerElement): DerElement[] {
  const children: DerElement[] = [];
  let offset = parent.contentStart;
  while (offset < parent.end) {
    const child = readElement(bytes, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

/** Reads `bytes` as exactly one element, with nothing after it. */
export function readSingleElement(bytes: Uint8Array): DerElement {
  const element = readElement(bytes, 0);
  if (element.end !== bytes.length) {
    throw new DerError(`${bytes.length - element.end} bytes follow the DER element`);
  }
  return element;
}

/** Returns the whole encoding (tag, length and contents) of `element`. */
export function encodingOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.start, element.end);
}

/** Returns the contents of `element`. */
export function contentsOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.contentStart, element.end);
}
