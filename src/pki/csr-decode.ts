/**
 * A DER decoder (ITU-T X.690 §10) for PKCS#10 certification requests (RFC 2986 §4) and the two
 * extensions that `validateCsr` reads: basicConstraints and subjectAltName (RFC 5280 §4.2.1.9 and
 * §4.2.1.6). It reads the structure in place, without the object tree that the general ASN.1
 * library builds, which took most of the time of each CSR check on the CA.
 *
 * Every function throws CsrDecodeError with the offset and the rule that the input breaks. Only
 * DER is accepted: definite lengths in their shortest form, single-byte tags, BOOLEAN as 0x00 or
 * 0xff, and no bytes after an element's last field.
 */

/** A decoding failure; `validateCsr` reports it as SEALMESH_ERR_CSR_MALFORMED. */
export class CsrDecodeError extends Error {}

/** ASN.1 tags read here, from X.690 §8, and RFC 2986 §4.1 for the [0] attributes. */
const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  sequence: 0x30,
  set: 0x31,
  /** CertificationRequestInfo.attributes, [0] IMPLICIT SET OF Attribute. */
  attributes: 0xa0,
} as const;

/** One element: its tag, where its contents start and end, and where the element itself starts. */
interface Element {
  tag: number;
  start: number;
  contentStart: number;
  end: number;
}

/** The fields of a CertificationRequest that `validateCsr` checks. */
export interface DecodedCsr {
  version: number;
  /** DER SubjectPublicKeyInfo, as received. */
  spkiDer: Uint8Array;
  /** DER CertificationRequestInfo as received: the bytes the signature covers. */
  infoDer: Uint8Array;
  signatureAlgorithm: string;
  /** DER ECDSA-Sig-Value (or another algorithm's signature) from the BIT STRING. */
  signature: Uint8Array;
  /** The requested extensions by OID, with their extnValue contents. */
  extensions: Map<string, Uint8Array>;
}

/** Kinds of GeneralName (RFC 5280 §4.2.1.6), by context-specific tag number. */
const GENERAL_NAME_KINDS = ['otherName', 'rfc822Name', 'dNSName', 'x400Address', 'directoryName', 'ediPartyName', 'uniformResourceIdentifier', 'iPAddress', 'registeredID'] as const;

/** A GeneralName: its kind and, for a URI, its text. */
export interface GeneralName {
  kind: (typeof GENERAL_NAME_KINDS)[number];
  uri?: string;
}

const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14';
const MAX_LENGTH_BYTES = 4;

/** Reads the element that starts at `offset` and must end by `limit`. */
function readElement(der: Uint8Array, offset: number, limit: number, label: string): Element {
  if (offset + 2 > limit) throw new CsrDecodeError(`${label} at offset ${offset} is truncated`);
  const tag = der[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new CsrDecodeError(`${label} at offset ${offset} has a multi-byte tag`);
  const first = der[offset + 1] as number;
  let length = first;
  let contentStart = offset + 2;
  if (first >= 0x80) {
    const count = first & 0x7f;
    if (count === 0) throw new CsrDecodeError(`${label} at offset ${offset} has an indefinite length, which DER forbids`);
    if (count > MAX_LENGTH_BYTES) throw new CsrDecodeError(`${label} at offset ${offset} has a ${count}-byte length`);
    if (contentStart + count > limit) throw new CsrDecodeError(`${label} at offset ${offset} has a truncated length`);
    length = 0;
    for (let index = 0; index < count; index += 1) length = length * 256 + (der[contentStart + index] as number);
    // X.690 §10.1: the shortest form, so no leading zero byte and no long form below 128.
    if (der[contentStart] === 0 || length < 0x80) throw new CsrDecodeError(`${label} at offset ${offset} has a length that is not in its shortest form`);
    contentStart += count;
  }
  const end = contentStart + length;
  if (end > limit) throw new CsrDecodeError(`${label} at offset ${offset} declares ${length} bytes of contents, more than its enclosing element contains`);
  return { tag, start: offset, contentStart, end };
}

/** Reads the element at `offset` and checks its tag. */
function expectElement(der: Uint8Array, offset: number, limit: number, tag: number, label: string): Element {
  const element = readElement(der, offset, limit, label);
  if (element.tag !== tag) throw new CsrDecodeError(`${label} at offset ${offset} has tag 0x${element.tag.toString(16)}, expected 0x${tag.toString(16)}`);
  return element;
}

/** Returns the elements inside a constructed element, which must fill its contents exactly. */
function children(der: Uint8Array, parent: Element, label: string): Element[] {
  const elements: Element[] = [];
  for (let offset = parent.contentStart; offset < parent.end; ) {
    const element = readElement(der, offset, parent.end, label);
    elements.push(element);
    offset = element.end;
  }
  return elements;
}

/** Returns the children of `parent`, which must number from `min` to `max`. */
function exactChildren(der: Uint8Array, parent: Element, min: number, max: number, label: string): Element[] {
  const elements = children(der, parent, `field of ${label}`);
  if (elements.length < min || elements.length > max) {
    const expected = min === max ? String(min) : `${min} to ${max}`;
    throw new CsrDecodeError(`${label} at offset ${parent.start} has ${elements.length} fields, expected ${expected}`);
  }
  return elements;
}

/** Decodes an OBJECT IDENTIFIER's contents to dotted decimal (X.690 §8.19). */
function decodeOid(der: Uint8Array, element: Element, label: string): string {
  if (element.tag !== TAG.oid) throw new CsrDecodeError(`${label} at offset ${element.start} is not an OBJECT IDENTIFIER`);
  if (element.end === element.contentStart) throw new CsrDecodeError(`${label} at offset ${element.start} is an empty OBJECT IDENTIFIER`);
  const arcs: number[] = [];
  let value = 0;
  let groupStart = true;
  for (let index = element.contentStart; index < element.end; index += 1) {
    const byte = der[index] as number;
    // X.690 §8.19.2: a subidentifier has no leading 0x80 byte.
    if (groupStart && byte === 0x80) throw new CsrDecodeError(`${label} at offset ${element.start} has a subidentifier with a leading zero group`);
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new CsrDecodeError(`${label} at offset ${element.start} has a subidentifier that is too large`);
    groupStart = (byte & 0x80) === 0;
    if (groupStart) {
      arcs.push(value);
      value = 0;
    }
  }
  if (!groupStart) throw new CsrDecodeError(`${label} at offset ${element.start} ends inside a subidentifier`);
  const first = arcs[0] as number;
  // X.690 §8.19.4: the first subidentifier is 40 * arc1 + arc2, where arc1 is 0, 1 or 2.
  let root = 2;
  if (first < 40) root = 0;
  else if (first < 80) root = 1;
  return [root, first - root * 40, ...arcs.slice(1)].join('.');
}

/** Decodes a small non-negative INTEGER, such as a version (X.690 §8.3). */
function decodeSmallInteger(der: Uint8Array, element: Element, label: string): number {
  if (element.tag !== TAG.integer) throw new CsrDecodeError(`${label} at offset ${element.start} is not an INTEGER`);
  const length = element.end - element.contentStart;
  if (length === 0) throw new CsrDecodeError(`${label} at offset ${element.start} is an empty INTEGER`);
  if (length > 1 && (der[element.contentStart] === 0 ? ((der[element.contentStart + 1] as number) & 0x80) === 0 : der[element.contentStart] === 0xff && ((der[element.contentStart + 1] as number) & 0x80) !== 0)) {
    throw new CsrDecodeError(`${label} at offset ${element.start} is an INTEGER that is not in its shortest form`);
  }
  if (((der[element.contentStart] as number) & 0x80) !== 0) throw new CsrDecodeError(`${label} at offset ${element.start} is negative`);
  if (length > 4) throw new CsrDecodeError(`${label} at offset ${element.start} is too large`);
  let value = 0;
  for (let index = element.contentStart; index < element.end; index += 1) value = value * 256 + (der[index] as number);
  return value;
}

/** Decodes a DER BOOLEAN (X.690 §11.1: true is 0xff). */
function decodeBoolean(der: Uint8Array, element: Element, label: string): boolean {
  if (element.tag !== TAG.boolean || element.end - element.contentStart !== 1) throw new CsrDecodeError(`${label} at offset ${element.start} is not a one-byte BOOLEAN`);
  const byte = der[element.contentStart];
  if (byte !== 0x00 && byte !== 0xff) throw new CsrDecodeError(`${label} at offset ${element.start} is a BOOLEAN other than 0x00 or 0xff`);
  return byte === 0xff;
}

/** Checks a Name (RFC 5280 §4.1.2.4): a SEQUENCE of non-empty SETs of type-and-value pairs. */
function checkName(der: Uint8Array, name: Element): void {
  if (name.tag !== TAG.sequence) throw new CsrDecodeError(`subject at offset ${name.start} is not a SEQUENCE`);
  for (const rdn of children(der, name, 'relative distinguished name')) {
    if (rdn.tag !== TAG.set) throw new CsrDecodeError(`relative distinguished name at offset ${rdn.start} is not a SET`);
    const pairs = children(der, rdn, 'attribute of a relative distinguished name');
    if (pairs.length === 0) throw new CsrDecodeError(`relative distinguished name at offset ${rdn.start} is empty`);
    for (const pair of pairs) {
      if (pair.tag !== TAG.sequence) throw new CsrDecodeError(`name attribute at offset ${pair.start} is not a SEQUENCE`);
      const [type] = exactChildren(der, pair, 2, 2, 'name attribute');
      decodeOid(der, type as Element, 'name attribute type');
    }
  }
}

/** Returns the extensions in an extensionRequest value, Extensions (RFC 5280 §4.1), keyed by OID. */
function decodeExtensions(der: Uint8Array, value: Element): Map<string, Uint8Array> {
  if (value.tag !== TAG.sequence) throw new CsrDecodeError(`extensionRequest value at offset ${value.start} is not a SEQUENCE of extensions`);
  const extensions = new Map<string, Uint8Array>();
  for (const extension of children(der, value, 'extension')) {
    if (extension.tag !== TAG.sequence) throw new CsrDecodeError(`extension at offset ${extension.start} is not a SEQUENCE`);
    const fields = exactChildren(der, extension, 2, 3, 'extension');
    const oid = decodeOid(der, fields[0] as Element, 'extension id');
    if (fields.length === 3) decodeBoolean(der, fields[1] as Element, 'extension critical flag');
    const extnValue = fields[fields.length - 1] as Element;
    if (extnValue.tag !== TAG.octetString) throw new CsrDecodeError(`value of extension ${oid} at offset ${extnValue.start} is not an OCTET STRING`);
    // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
    if (extensions.has(oid)) throw new CsrDecodeError(`extension ${oid} is requested more than once`);
    extensions.set(oid, der.subarray(extnValue.contentStart, extnValue.end));
  }
  return extensions;
}

/** Returns the extensions of the [0] attributes' one extensionRequest (RFC 2985 §5.4.2). */
function requestedExtensions(der: Uint8Array, attributes: Element | undefined): Map<string, Uint8Array> {
  let extensions: Map<string, Uint8Array> | undefined;
  if (attributes === undefined) return new Map();
  for (const attribute of children(der, attributes, 'attribute')) {
    if (attribute.tag !== TAG.sequence) throw new CsrDecodeError(`attribute at offset ${attribute.start} is not a SEQUENCE`);
    const [type, values] = exactChildren(der, attribute, 2, 2, 'attribute') as [Element, Element];
    const oid = decodeOid(der, type, 'attribute type');
    if (values.tag !== TAG.set) throw new CsrDecodeError(`values of attribute ${oid} at offset ${values.start} are not a SET`);
    const members = children(der, values, `value of attribute ${oid}`);
    if (oid !== EXTENSION_REQUEST_OID) continue;
    if (extensions !== undefined) throw new CsrDecodeError('more than one extensionRequest attribute');
    if (members.length !== 1) throw new CsrDecodeError('extensionRequest attribute does not contain exactly one value');
    extensions = decodeExtensions(der, members[0] as Element);
  }
  return extensions ?? new Map();
}

/** Decodes one DER CertificationRequest (RFC 2986 §4) that fills `der` exactly. */
export function decodeCertificationRequest(der: Uint8Array): DecodedCsr {
  const request = expectElement(der, 0, der.length, TAG.sequence, 'CertificationRequest');
  if (request.end !== der.length) throw new CsrDecodeError(`${der.length - request.end} bytes follow the CertificationRequest`);
  const [info, algorithm, signature] = exactChildren(der, request, 3, 3, 'CertificationRequest') as [Element, Element, Element];

  if (info.tag !== TAG.sequence) throw new CsrDecodeError(`CertificationRequestInfo at offset ${info.start} is not a SEQUENCE`);
  // RFC 2986 requires the attributes field. A request without it is accepted, because it then
  // requests no extensions and the CA copies nothing else from a request.
  const infoFields = exactChildren(der, info, 3, 4, 'CertificationRequestInfo');
  const [version, subject, spki] = infoFields as [Element, Element, Element];
  const attributes = infoFields[3];
  if (attributes !== undefined && attributes.tag !== TAG.attributes) {
    throw new CsrDecodeError(`attributes at offset ${attributes.start} have tag 0x${attributes.tag.toString(16)}, expected [0] (0xa0)`);
  }
  checkName(der, subject);
  if (spki.tag !== TAG.sequence) throw new CsrDecodeError(`subjectPKInfo at offset ${spki.start} is not a SEQUENCE`);

  if (algorithm.tag !== TAG.sequence) throw new CsrDecodeError(`signatureAlgorithm at offset ${algorithm.start} is not a SEQUENCE`);
  const algorithmFields = exactChildren(der, algorithm, 1, 2, 'signatureAlgorithm');
  const signatureAlgorithm = decodeOid(der, algorithmFields[0] as Element, 'signature algorithm');

  if (signature.tag !== TAG.bitString) throw new CsrDecodeError(`signature at offset ${signature.start} is not a BIT STRING`);
  if (signature.end === signature.contentStart || der[signature.contentStart] !== 0) {
    throw new CsrDecodeError(`signature at offset ${signature.start} is not a BIT STRING of whole bytes`);
  }

  return {
    version: decodeSmallInteger(der, version, 'version'),
    spkiDer: der.subarray(spki.start, spki.end),
    infoDer: der.subarray(info.start, info.end),
    signatureAlgorithm,
    signature: der.subarray(signature.contentStart + 1, signature.end),
    extensions: requestedExtensions(der, attributes),
  };
}

/** Returns whether a basicConstraints extension value (RFC 5280 §4.2.1.9) sets cA. */
export function decodeBasicConstraintsCa(der: Uint8Array): boolean {
  const constraints = expectElement(der, 0, der.length, TAG.sequence, 'basicConstraints');
  if (constraints.end !== der.length) throw new CsrDecodeError('bytes follow the basicConstraints value');
  const fields = exactChildren(der, constraints, 0, 2, 'basicConstraints');
  const first = fields[0];
  if (first === undefined || first.tag !== TAG.boolean) {
    // cA is absent, so it is false by default, and the one field left may only be pathLenConstraint.
    if (fields.length > 1) throw new CsrDecodeError('basicConstraints has two fields but no cA');
    if (first !== undefined) decodeSmallInteger(der, first, 'basicConstraints pathLenConstraint');
    return false;
  }
  const second = fields[1];
  if (second !== undefined) decodeSmallInteger(der, second, 'basicConstraints pathLenConstraint');
  return decodeBoolean(der, first, 'basicConstraints cA');
}

/** Decodes a subjectAltName extension value, GeneralNames (RFC 5280 §4.2.1.6). */
export function decodeGeneralNames(der: Uint8Array): GeneralName[] {
  const names = expectElement(der, 0, der.length, TAG.sequence, 'subjectAltName');
  if (names.end !== der.length) throw new CsrDecodeError('bytes follow the subjectAltName value');
  return children(der, names, 'general name').map((name) => {
    // Context-specific class (0b10), primitive or constructed, tag numbers 0 to 8.
    const number = name.tag & 0x1f;
    const kind = GENERAL_NAME_KINDS[number];
    if ((name.tag & 0xc0) !== 0x80 || kind === undefined) throw new CsrDecodeError(`general name at offset ${name.start} has tag 0x${name.tag.toString(16)}, not one of [0] to [8]`);
    if (kind !== 'uniformResourceIdentifier') return { kind };
    if (name.tag !== 0x86) throw new CsrDecodeError(`URI at offset ${name.start} is not a primitive IA5String`);
    const bytes = der.subarray(name.contentStart, name.end);
    // IA5String: 7-bit characters only.
    for (const byte of bytes) {
      if (byte > 0x7f) throw new CsrDecodeError(`URI at offset ${name.start} contains a byte outside IA5String`);
    }
    return { kind, uri: Buffer.from(bytes).toString('latin1') };
  });
}
