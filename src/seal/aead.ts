/**
 * AES-256-GCM sealing with node:crypto, shared by the providers that hold the KEK in process memory.
 *
 * Output format: `version (1 byte) | nonce (12 bytes) | ciphertext | tag (16 bytes)`. The nonce is
 * random for every call. With random 96-bit nonces, NIST SP 800-38D limits one key to 2^32
 * encryptions, far above the number of data keys a KEK wraps.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';

/** The only format version written and accepted. */
export const AEAD_FORMAT_VERSION = 1;
export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
/** Size of the version byte, nonce and tag that `sealAead` adds around the ciphertext. */
export const AEAD_OVERHEAD_BYTES = 1 + AEAD_NONCE_BYTES + AEAD_TAG_BYTES;

const CIPHER = 'aes-256-gcm';

/** Throws SEALMESH_ERR_INTERNAL unless `key` is exactly 32 bytes, because a shorter key is a bug. */
function checkKey(key: Uint8Array): void {
  if (key.length !== AEAD_KEY_BYTES) {
    throw new SealmeshError('SEALMESH_ERR_INTERNAL', `AES-256-GCM key is ${key.length} bytes, expected ${AEAD_KEY_BYTES}`);
  }
}

/** Encrypts and authenticates `plaintext` under `key`, binding `aad`, in the format above. */
export function sealAead(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  checkKey(key);
  const nonce = randomBytes(AEAD_NONCE_BYTES);
  const cipher = createCipheriv(CIPHER, key, nonce, { authTagLength: AEAD_TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();

  const out = new Uint8Array(AEAD_OVERHEAD_BYTES + ciphertext.length);
  out[0] = AEAD_FORMAT_VERSION;
  out.set(nonce, 1);
  out.set(ciphertext, 1 + AEAD_NONCE_BYTES);
  out.set(tag, 1 + AEAD_NONCE_BYTES + ciphertext.length);
  return out;
}

/**
 * Decrypts the output of `sealAead`. Throws SEALMESH_ERR_SEAL_UNWRAP_FAILED, naming `provider`,
 * when the input is shorter than the format allows, has an unknown version byte, or fails the GCM
 * tag check because the key is wrong or the bytes or `aad` were altered.
 */
export function openAead(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array, provider: string): Uint8Array {
  checkKey(key);
  if (sealed.length < AEAD_OVERHEAD_BYTES) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
      `${provider} seal: the wrapped value is ${sealed.length} bytes, shorter than the ${AEAD_OVERHEAD_BYTES}-byte minimum, so it was truncated`,
    );
  }
  if (sealed[0] !== AEAD_FORMAT_VERSION) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
      `${provider} seal: the wrapped value has format version ${sealed[0]}, expected ${AEAD_FORMAT_VERSION}`,
    );
  }

  const nonce = sealed.subarray(1, 1 + AEAD_NONCE_BYTES);
  const ciphertext = sealed.subarray(1 + AEAD_NONCE_BYTES, sealed.length - AEAD_TAG_BYTES);
  const tag = sealed.subarray(sealed.length - AEAD_TAG_BYTES);
  const decipher = createDecipheriv(CIPHER, key, nonce, { authTagLength: AEAD_TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return new Uint8Array(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
  } catch (error) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_UNWRAP_FAILED',
      `${provider} seal: authentication failed, so the key is wrong or the wrapped value or its associated data were altered`,
      { cause: error },
    );
  }
}
