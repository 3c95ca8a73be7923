/**
 * Shamir secret sharing over GF(2^8), byte by byte, with shares encoded as checked text.
 *
 * A share reads `smsh1-<index>-<payload>-<crc32>`. The payload is base64url of
 * `version (1) | set id (8) | threshold (1) | index (1) | share bytes`, one share byte per secret
 * byte. The set id is random per split, so shares of different splits can be distinguished without
 * revealing anything about the secret. The CRC-32 (8 hex digits) covers all text before it. It
 * detects any single mistyped character or swap of two adjacent characters, because those change
 * at most 32 consecutive bits, and misses other random errors with probability 2^-32. It does not
 * stop a share holder who forges a share on purpose. Callers detect that by checking the combined
 * secret, as `ShamirUnsealer` does.
 */
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { SealmeshError } from '../../errors/index.ts';
import { gfEvaluate, gfInterpolateAtZero } from './gf256.ts';

export const SHARE_PREFIX = 'smsh1';
export const MAX_SHARES = 255;
/** Maximum secret length in bytes for `split`, which keeps each share short enough to type. */
export const MAX_SECRET_BYTES = 1024;

const PAYLOAD_VERSION = 1;
const SET_ID_BYTES = 8;
const HEADER_BYTES = 1 + SET_ID_BYTES + 1 + 1;
const SHARE_PATTERN = /^smsh1-(\d{1,3})-([A-Za-z0-9_-]+)-([0-9a-f]{8})$/;

/** One decoded share. `bytes` is secret material, so wipe it after use. */
export interface ParsedShare {
  index: number;
  threshold: number;
  /** Hex of the random set id chosen at split time. */
  setId: string;
  bytes: Uint8Array;
}

/**
 * Splits `secret` into `shares` text shares, any `threshold` of which recover it with `combine`.
 * Fewer than `threshold` shares reveal nothing about the secret beyond its length.
 *
 * Throws SEALMESH_ERR_INVALID_ARGUMENT unless 1 <= threshold <= shares <= 255 and the secret has
 * 1 to 1024 bytes. A threshold of 1 is accepted only for a single share, because with more shares
 * every share would contain the secret itself.
 */
export function split(secret: Uint8Array, shares: number, threshold: number): string[] {
  validateSplit(secret, shares, threshold);

  const setId = randomBytes(SET_ID_BYTES);
  const payloads: Uint8Array[] = [];
  for (let index = 1; index <= shares; index++) {
    const payload = new Uint8Array(HEADER_BYTES + secret.length);
    payload[0] = PAYLOAD_VERSION;
    payload.set(setId, 1);
    payload[1 + SET_ID_BYTES] = threshold;
    payload[2 + SET_ID_BYTES] = index;
    payloads.push(payload);
  }

  // One random polynomial of degree threshold - 1 per secret byte, with that byte as constant term.
  const coefficients = new Uint8Array(threshold);
  for (let position = 0; position < secret.length; position++) {
    coefficients[0] = secret[position]!;
    coefficients.set(randomBytes(threshold - 1), 1);
    for (let index = 1; index <= shares; index++) {
      payloads[index - 1]![HEADER_BYTES + position] = gfEvaluate(coefficients, index);
    }
  }
  coefficients.fill(0);

  return payloads.map((payload, i) => {
    const text = `${SHARE_PREFIX}-${i + 1}-${Buffer.from(payload).toString('base64url')}`;
    payload.fill(0);
    return `${text}-${checksum(text)}`;
  });
}

/**
 * Recovers the secret from at least `threshold` shares of one split. It uses the first
 * `threshold` shares in the given order and ignores the rest. Throws
 * SEALMESH_ERR_SEAL_SHARE_INVALID for a malformed or mistyped share, a share given twice, or shares
 * from different splits, and SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT for fewer shares than the
 * threshold.
 */
export function combine(shares: string[]): Uint8Array {
  if (shares.length === 0) {
    throw new SealmeshError('SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT', 'Shamir seal: no shares given; supply at least the threshold number of shares');
  }
  const parsed: ParsedShare[] = [];
  try {
    shares.forEach((share, position) => parsed.push(parseShare(share, `share ${position + 1}`)));
    for (let i = 1; i < parsed.length; i++) {
      assertCompatible(parsed[0]!, parsed[i]!, parsed.slice(0, i));
    }
    const threshold = parsed[0]!.threshold;
    if (parsed.length < threshold) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT',
        `Shamir seal: ${parsed.length} of ${threshold} required shares given; supply ${threshold - parsed.length} more`,
      );
    }
    return interpolate(parsed.slice(0, threshold));
  } finally {
    for (const share of parsed) {
      share.bytes.fill(0);
    }
  }
}

/**
 * Decodes one share. `label` names it in errors, because the share text itself is secret and is
 * never echoed. Throws SEALMESH_ERR_SEAL_SHARE_INVALID when the text does not have the share form,
 * fails its checksum, has an unknown version, or states inconsistent index or threshold values.
 */
export function parseShare(share: string, label = 'share'): ParsedShare {
  const invalid = (reason: string): SealmeshError => new SealmeshError('SEALMESH_ERR_SEAL_SHARE_INVALID', `Shamir seal: ${label} ${reason}`);

  const text = typeof share === 'string' ? share.trim() : '';
  const match = SHARE_PATTERN.exec(text);
  if (match === null) {
    throw invalid(`does not have the form ${SHARE_PREFIX}-<index>-<data>-<checksum>; copy it again`);
  }
  const [, indexText, encoded, expectedChecksum] = match as unknown as [string, string, string, string];
  if (checksum(text.slice(0, text.length - expectedChecksum.length - 1)) !== expectedChecksum) {
    throw invalid('fails its checksum, so it was mistyped or truncated; copy it again');
  }

  const decoded = Buffer.from(encoded, 'base64url');
  const payload = new Uint8Array(decoded);
  decoded.fill(0);
  if (payload.length <= HEADER_BYTES || payload[0] !== PAYLOAD_VERSION) {
    throw invalid('has an unknown format version or no share data');
  }
  const setId = Buffer.from(payload.subarray(1, 1 + SET_ID_BYTES)).toString('hex');
  const threshold = payload[1 + SET_ID_BYTES]!;
  const index = payload[2 + SET_ID_BYTES]!;
  if (index === 0 || String(index) !== indexText) {
    throw invalid(`states index ${indexText} in its text but ${index} in its data`);
  }
  if (threshold === 0) {
    throw invalid('states a threshold of 0');
  }
  return { index, threshold, setId, bytes: payload.subarray(HEADER_BYTES) };
}

/**
 * Throws SEALMESH_ERR_SEAL_SHARE_INVALID when `share` belongs to another split than `first`,
 * disagrees on threshold or length, or repeats the index of a share in `earlier`, because
 * interpolating such points would return a wrong secret without any error.
 */
export function assertCompatible(first: ParsedShare, share: ParsedShare, earlier: readonly ParsedShare[]): void {
  if (share.setId !== first.setId) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_SHARE_INVALID',
      `Shamir seal: share with index ${share.index} belongs to a different split (set ${share.setId}) than the first share (set ${first.setId})`,
    );
  }
  if (share.threshold !== first.threshold || share.bytes.length !== first.bytes.length) {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_SHARE_INVALID',
      `Shamir seal: share with index ${share.index} disagrees with the first share on threshold or length, although both name set ${share.setId}`,
    );
  }
  if (earlier.some((other) => other.index === share.index)) {
    throw new SealmeshError('SEALMESH_ERR_SEAL_SHARE_INVALID', `Shamir seal: share with index ${share.index} was given twice; supply a different share`);
  }
}

/** Interpolates each byte position at x = 0 from shares with distinct indexes. */
export function interpolate(shares: readonly ParsedShare[]): Uint8Array {
  const xs = shares.map((share) => share.index);
  const length = shares[0]!.bytes.length;
  const secret = new Uint8Array(length);
  const ys: number[] = new Array<number>(shares.length).fill(0);
  for (let position = 0; position < length; position++) {
    for (let i = 0; i < shares.length; i++) {
      ys[i] = shares[i]!.bytes[position]!;
    }
    secret[position] = gfInterpolateAtZero(xs, ys);
  }
  ys.fill(0);
  return secret;
}

/** Throws SEALMESH_ERR_INVALID_ARGUMENT for split arguments outside the documented bounds. */
function validateSplit(secret: Uint8Array, shares: number, threshold: number): void {
  const invalid = (reason: string): SealmeshError => new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `Shamir seal: ${reason}`);
  if (!(secret instanceof Uint8Array) || secret.length === 0 || secret.length > MAX_SECRET_BYTES) {
    throw invalid(`the secret must be 1 to ${MAX_SECRET_BYTES} bytes`);
  }
  if (!Number.isInteger(shares) || shares < 1 || shares > MAX_SHARES) {
    throw invalid(`the share count is ${String(shares)}, expected 1 to ${MAX_SHARES}`);
  }
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > shares) {
    throw invalid(`the threshold is ${String(threshold)}, expected 1 to the share count ${shares}`);
  }
  if (threshold === 1 && shares > 1) {
    throw invalid('a threshold of 1 with several shares would put the whole secret in every share; use a threshold of at least 2');
  }
}

/** CRC-32 of the share text as 8 lowercase hex digits. */
function checksum(text: string): string {
  return crc32(text).toString(16).padStart(8, '0');
}
