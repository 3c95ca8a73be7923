/**
 * The passphrase seal: the KEK is derived from an operator's passphrase with scrypt.
 *
 * The salt and scrypt parameters are not secret. The caller persists them (the data directory is
 * fine) and passes them back to `open`. A wrong passphrase is detected only when the first unwrap
 * fails with SEALMESH_ERR_SEAL_UNWRAP_FAILED, because nothing derived from the passphrase is stored.
 */
import { randomBytes, scrypt, type ScryptOptions } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import { MemoryKekProvider } from '../memory-kek.ts';

export { PASSPHRASE_ENV, readPassphrase, type PassphraseInput, type ReadPassphraseOptions } from './prompt.ts';

/** Minimum passphrase length in Unicode code points, after NFC normalisation. */
export const MIN_PASSPHRASE_LENGTH = 12;

/** scrypt cost for new passphrases: N = 2^17, r = 8, p = 1, which needs 128 MiB of memory. */
export const DEFAULT_SCRYPT_COST = { N: 2 ** 17, r: 8, p: 1 } as const;

const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Bounds that `open` accepts, so edited parameters cannot make a derivation take forever. */
const MIN_N = 2 ** 14;
const MAX_SCRYPT_MEMORY_BYTES = 1024 * 1024 * 1024;
const MAX_R = 32;
const MAX_P = 16;

const STRENGTH =
  'passphrase seal: weak to moderate, depending on the passphrase; anyone who copies the data directory can run an offline guessing attack against scrypt';

/** The KDF parameters that the caller persists next to the data. None of them is secret. */
export interface PassphraseParams {
  kdf: 'scrypt';
  /** Random salt, standard base64. */
  salt: string;
  /** scrypt CPU and memory cost, a power of two. */
  N: number;
  /** scrypt block size. */
  r: number;
  /** scrypt parallelization. */
  p: number;
  /** Derived key length in bytes, always 32. */
  keyLength: number;
}

/** A seal provider whose KEK is scrypt(passphrase, salt). */
export class PassphraseSealProvider extends MemoryKekProvider {
  private constructor(kek: Uint8Array) {
    super('passphrase', STRENGTH, kek);
  }

  /**
   * Derives a KEK from `passphrase` with a new random salt. Throws SEALMESH_ERR_SEAL_KEY_WEAK when
   * the passphrase is shorter than 12 characters, because a short passphrase falls quickly to an
   * offline guessing attack on a copied data directory.
   */
  static async create(passphrase: string): Promise<{ provider: PassphraseSealProvider; params: PassphraseParams }> {
    const normalized = normalizePassphrase(passphrase);
    const length = Array.from(normalized).length;
    if (length < MIN_PASSPHRASE_LENGTH) {
      throw new SealmeshError(
        'SEALMESH_ERR_SEAL_KEY_WEAK',
        `passphrase seal: the passphrase has ${length} characters, fewer than the minimum of ${MIN_PASSPHRASE_LENGTH}; choose a longer one`,
      );
    }

    const params: PassphraseParams = {
      kdf: 'scrypt',
      salt: randomBytes(SALT_BYTES).toString('base64'),
      ...DEFAULT_SCRYPT_COST,
      keyLength: KEY_BYTES,
    };
    const kek = await deriveKek(normalized, params);
    const provider = new PassphraseSealProvider(kek);
    kek.fill(0);
    return { provider, params };
  }

  /**
   * Derives the KEK from `passphrase` and the persisted `params`. It does not check the
   * passphrase, because nothing derived from it is stored: a wrong one shows up as
   * SEALMESH_ERR_SEAL_UNWRAP_FAILED on the first unwrap. Throws SEALMESH_ERR_INVALID_ARGUMENT when
   * `params` is malformed or outside the accepted bounds. It accepts a passphrase shorter than the
   * minimum, so raising the minimum later does not lock out existing passphrases.
   */
  static async open(passphrase: string, params: PassphraseParams): Promise<PassphraseSealProvider> {
    validateParams(params);
    const kek = await deriveKek(normalizePassphrase(passphrase), params);
    const provider = new PassphraseSealProvider(kek);
    kek.fill(0);
    return provider;
  }
}

/**
 * Applies Unicode NFC normalisation, so the same passphrase typed on systems that compose accented
 * characters differently derives the same key.
 */
function normalizePassphrase(passphrase: string): string {
  if (typeof passphrase !== 'string' || passphrase === '') {
    throw new SealmeshError('SEALMESH_ERR_SEAL_KEY_MISSING', 'passphrase seal: the passphrase is empty; supply one');
  }
  return passphrase.normalize('NFC');
}

/**
 * Rejects parameters that are not what `create` writes or that would make scrypt weaker than
 * N = 2^14 or need more than 1 GiB of memory. A weakened copy would not reveal the key, but a
 * huge one could stall start-up, so bounds are checked before deriving.
 */
function validateParams(params: PassphraseParams): void {
  const invalid = (reason: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `passphrase seal: the stored KDF parameters are invalid: ${reason}; restore them from a backup`);

  if (typeof params !== 'object' || params === null) {
    throw invalid('expected an object');
  }
  if (params.kdf !== 'scrypt') {
    throw invalid(`kdf is ${JSON.stringify(params.kdf)}, expected "scrypt"`);
  }
  if (typeof params.salt !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(params.salt) || params.salt.length % 4 !== 0) {
    throw invalid('salt is not base64');
  }
  const saltBytes = Buffer.from(params.salt, 'base64');
  if (saltBytes.length < SALT_BYTES) {
    throw invalid(`salt is ${saltBytes.length} bytes, fewer than ${SALT_BYTES}`);
  }
  const { N, r, p } = params;
  if (!Number.isSafeInteger(N) || N < MIN_N || (N & (N - 1)) !== 0) {
    throw invalid(`N is ${String(N)}, expected a power of two of at least ${MIN_N}`);
  }
  if (!Number.isSafeInteger(r) || r < 1 || r > MAX_R) {
    throw invalid(`r is ${String(r)}, expected 1 to ${MAX_R}`);
  }
  if (!Number.isSafeInteger(p) || p < 1 || p > MAX_P) {
    throw invalid(`p is ${String(p)}, expected 1 to ${MAX_P}`);
  }
  if (scryptMemoryBytes(N, r, p) > MAX_SCRYPT_MEMORY_BYTES) {
    throw invalid(`N = ${N} with r = ${r} needs more than 1 GiB of memory`);
  }
  if (params.keyLength !== KEY_BYTES) {
    throw invalid(`keyLength is ${String(params.keyLength)}, expected ${KEY_BYTES}`);
  }
}

/**
 * Memory that OpenSSL's scrypt allocates: 128·r·(N + 2) bytes for V plus 128·r·p bytes for B.
 * node:crypto rejects a derivation when this exceeds `maxmem`, whose default is 32 MiB.
 */
function scryptMemoryBytes(N: number, r: number, p: number): number {
  return 128 * r * (N + 2) + 128 * r * p;
}

/** Runs scrypt off the main thread and returns the 32-byte KEK. */
function deriveKek(passphrase: string, params: PassphraseParams): Promise<Buffer> {
  const salt = Buffer.from(params.salt, 'base64');
  const options: ScryptOptions = {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: scryptMemoryBytes(params.N, params.r, params.p),
  };
  return new Promise((resolve, reject) => {
    scrypt(passphrase, salt, KEY_BYTES, options, (error, key) => {
      if (error !== null) {
        reject(new SealmeshError('SEALMESH_ERR_INTERNAL', `passphrase seal: scrypt failed: ${error.message}`, { cause: error }));
      } else {
        resolve(key);
      }
    });
  });
}
