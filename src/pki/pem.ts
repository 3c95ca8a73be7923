/**
 * PEM encoding and decoding (RFC 7468) for certificates, CSRs and private keys.
 */

const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const LINE_LENGTH = 64;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;

/** Encodes DER bytes as one PEM block with 64-character lines and a final line break. */
export function encodePem(label: string, der: Uint8Array): string {
  return encodePemBuffer(label, der).toString('ascii');
}

/**
 * Encodes DER bytes as one PEM block directly into a Buffer.
 *
 * The base64 text is written byte by byte instead of through `Buffer#toString('base64')`, so no
 * JavaScript string contains a copy of the encoded bytes. A caller that encodes a private key can
 * therefore wipe every copy by zeroing the DER input and the returned Buffer.
 */
export function encodePemBuffer(label: string, der: Uint8Array): Buffer {
  const header = `-----BEGIN ${label}-----\n`;
  const footer = `-----END ${label}-----\n`;
  const base64Length = Math.ceil(der.length / 3) * 4;
  const lineBreaks = Math.ceil(base64Length / LINE_LENGTH);
  const output = Buffer.alloc(header.length + base64Length + lineBreaks + footer.length);

  let offset = output.write(header, 0, 'ascii');
  let column = 0;
  const writeChar = (code: number): void => {
    output[offset++] = code;
    column++;
    if (column === LINE_LENGTH) {
      output[offset++] = 0x0a;
      column = 0;
    }
  };
  for (let i = 0; i < der.length; i += 3) {
    const b0 = der[i] ?? 0;
    const b1 = der[i + 1] ?? 0;
    const b2 = der[i + 2] ?? 0;
    const remaining = der.length - i;
    writeChar(BASE64_ALPHABET.charCodeAt(b0 >> 2));
    writeChar(BASE64_ALPHABET.charCodeAt(((b0 & 0x03) << 4) | (b1 >> 4)));
    writeChar(remaining > 1 ? BASE64_ALPHABET.charCodeAt(((b1 & 0x0f) << 2) | (b2 >> 6)) : 0x3d);
    writeChar(remaining > 2 ? BASE64_ALPHABET.charCodeAt(b2 & 0x3f) : 0x3d);
  }
  if (column !== 0) output[offset++] = 0x0a;
  output.write(footer, offset, 'ascii');
  return output;
}

/**
 * Decodes text that contains exactly one PEM block with the given label and nothing else except
 * surrounding whitespace. Throws an Error that states the problem, for the caller to wrap in its
 * own error code.
 */
export function decodeSinglePem(text: string, label: string): Uint8Array {
  const trimmed = text.trim();
  const begin = `-----BEGIN ${label}-----`;
  const end = `-----END ${label}-----`;
  if (!trimmed.startsWith(begin)) {
    const found = /^-----BEGIN ([A-Z0-9 ]{1,64})-----/.exec(trimmed)?.[1];
    throw new Error(found === undefined ? `text does not start with '${begin}'` : `PEM label is '${found}', expected '${label}'`);
  }
  if (!trimmed.endsWith(end)) throw new Error(`text does not end with '${end}'`);

  const body = trimmed.slice(begin.length, trimmed.length - end.length).replace(/\s+/g, '');
  if (body.includes('-----')) throw new Error('text contains more than one PEM block');
  if (body.length === 0 || body.length % 4 !== 0 || !BASE64_BODY.test(body)) {
    throw new Error('PEM body is not valid base64');
  }
  return new Uint8Array(Buffer.from(body, 'base64'));
}

/**
 * Throws an Error unless `der` is one complete DER TLV (tag, length, value) with no trailing
 * bytes. ASN.1 parsers stop after the first element, so without this check data appended after it
 * would pass unseen.
 */
export function assertSingleDerElement(der: Uint8Array): void {
  if (der.length < 2) throw new Error('DER data is shorter than 2 bytes');
  const first = der[1] ?? 0;
  let headerLength = 2;
  let contentLength = first;
  if (first & 0x80) {
    const lengthBytes = first & 0x7f;
    if (lengthBytes === 0 || lengthBytes > 4) throw new Error('DER length field is invalid');
    contentLength = 0;
    for (let i = 0; i < lengthBytes; i++) contentLength = contentLength * 256 + (der[2 + i] ?? 0);
    headerLength += lengthBytes;
  }
  if (headerLength + contentLength !== der.length) {
    throw new Error(`DER element declares ${headerLength + contentLength} bytes but the data has ${der.length}`);
  }
}
