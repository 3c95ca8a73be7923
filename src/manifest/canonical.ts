import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { SealmeshError } from '../errors/index.ts';
import type { Manifest } from './schema.ts';

/**
 * The canonical encoding of a manifest, format `sealmesh-manifest-v1`.
 *
 * 1. Input: the `manifest` member of the document exactly as written, after schema validation.
 *    Validation rejects unknown members and never fills in defaults, so an omitted optional field
 *    stays omitted and is not part of the encoding.
 * 2. Canonical bytes: the UTF-8 bytes of the JSON Canonicalization Scheme (RFC 8785) form of that
 *    object. Object members are sorted by the UTF-16 code units of their names, there is no
 *    whitespace, numbers use the ECMAScript shortest round-trip form (all manifest numbers are
 *    integers, written without exponent, sign or fraction), and strings use the minimal JSON
 *    escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00XX` with lowercase hex for the
 *    other control characters. Every other character, including non-ASCII, is written as itself.
 * 3. Digest: SHA-256 of the canonical bytes, written as 64 lowercase hex digits. Version n + 1
 *    stores the digest of version n in `previous`, and proxies pin the digest of version 1.
 * 4. Signature input: the 21 ASCII bytes `sealmesh-manifest-v1\n` (ending in one line feed,
 *    0x0a) followed by the canonical bytes. The prefix keeps a manifest signature from being
 *    valid for any other message signed with the same key.
 * 5. Signatures: Ed25519 keys sign the signature input with pure Ed25519 (RFC 8032). ECDSA P-256
 *    keys sign it with ECDSA over SHA-256, and the signature is stored in IEEE P1363 form, which is
 *    r then s, each 32 bytes big-endian (not DER). Either way the signature is 64 bytes, stored as
 *    base64 with padding (RFC 4648 section 4) in `signatures[].signature`.
 *
 * The signatures are outside the manifest, so collecting signatures never changes the digest.
 */
export const MANIFEST_FORMAT = 'sealmesh-manifest-v1';

const SIGNATURE_PREFIX = new TextEncoder().encode(`${MANIFEST_FORMAT}\n`);
const encoder = new TextEncoder();

/**
 * Returns the RFC 8785 canonical JSON text of a JSON value. Throws SEALMESH_ERR_MANIFEST_INVALID
 * for a value that has no JSON form, such as NaN, Infinity or a string with a lone surrogate.
 */
export function canonicalJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `value has no canonical JSON form: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  if (text === undefined) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', 'value has no canonical JSON form: it is undefined, a function or a symbol');
  }
  return text;
}

/** Returns the canonical bytes of a manifest (steps 1 and 2 of the encoding). */
export function canonicalManifestBytes(manifest: Manifest): Uint8Array {
  return encoder.encode(canonicalJson(manifest));
}

/** Returns the lowercase hex SHA-256 of the canonical bytes of a manifest. */
export function manifestDigest(manifest: Manifest): string {
  return createHash('sha256').update(canonicalManifestBytes(manifest)).digest('hex');
}

/** Returns the bytes that operator keys sign: the format prefix and the canonical bytes. */
export function manifestSigningInput(manifest: Manifest): Uint8Array {
  const canonical = canonicalManifestBytes(manifest);
  const input = new Uint8Array(SIGNATURE_PREFIX.length + canonical.length);
  input.set(SIGNATURE_PREFIX, 0);
  input.set(canonical, SIGNATURE_PREFIX.length);
  return input;
}
