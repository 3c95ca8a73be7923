/**
 * Searches text (heap snapshot strings, logs, metrics) for secrets in every encoding a program
 * might produce: raw bytes as Latin-1 characters, hex, base64, base64url and PEM.
 *
 * An ECDSA P-256 private key is found without knowing it: each candidate 32-byte window is used as
 * a scalar, and a window is the key when its public point equals a known public key, which the
 * test reads from the key's certificate. Candidates are the 32 bytes after a PKCS#8 or SEC1 DER
 * prefix (raw, or inside a base64 run), the bodies of PEM private-key blocks, every window of a hex
 * run, every window of a base64 or base64url run of up to 96 characters and the first and last 32
 * bytes of a longer one, and every window of a Latin-1 string near a byte outside printable ASCII.
 * NOTE: a scalar in the middle of a base64 run longer than 96 characters, not behind a DER prefix,
 * is missed; trying every window of every run would take hours on a 30 MB snapshot. A random
 * 32-byte scalar is entirely printable ASCII with probability (98/256)^32, about 5e-14, so the
 * last filter misses a raw scalar only with that probability.
 */
import { createECDH, createPrivateKey, createPublicKey, type X509Certificate } from 'node:crypto';

/** A P-256 key to look for, named by its public point (65 bytes, uncompressed). */
export interface KeyTarget {
  name: string;
  publicPoint: Buffer;
}

/** A secret whose bytes are known to the test, such as a token or a key-encryption key. */
export interface ExactTarget {
  name: string;
  bytes: Buffer;
}

export interface Finding {
  target: string;
  form: string;
  where: string;
}

/** DER of a PKCS#8 PrivateKeyInfo for P-256 up to the OCTET STRING that contains the scalar. */
const PKCS8_P256_PREFIX = Buffer.from('308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420', 'hex');
/** DER of a SEC1 ECPrivateKey up to the OCTET STRING that contains the scalar. */
const SEC1_P256_PREFIX = Buffer.from('30770201010420', 'hex');
/**
 * Longest base64 run whose every window is tried. Longer runs, mostly source text such as paths and
 * identifiers, are searched for the DER prefixes and tried at their first and last 32 bytes.
 */
const MAX_WINDOWED_BASE64_RUN = 96;
/** The order n of the P-256 group; a scalar is valid when 0 < d < n. */
const P256_ORDER = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');

/** Returns the uncompressed public point of a certificate's P-256 key. */
export function publicPointOf(certificate: X509Certificate): Buffer {
  const jwk = certificate.publicKey.export({ format: 'jwk' });
  if (jwk.crv !== 'P-256' || jwk.x === undefined || jwk.y === undefined) throw new Error(`certificate ${certificate.subject} has no P-256 key`);
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
}

/** Returns the text forms in which `bytes` could appear: hex, base64, base64url and Latin-1. */
export function textForms(bytes: Buffer): Array<{ form: string; text: string }> {
  const base64 = bytes.toString('base64');
  return [
    { form: 'hex', text: bytes.toString('hex') },
    { form: 'HEX', text: bytes.toString('hex').toUpperCase() },
    { form: 'base64', text: base64.replace(/=+$/, '') },
    { form: 'base64url', text: bytes.toString('base64url') },
    { form: 'latin1', text: bytes.toString('latin1') },
  ];
}

function isPrintable(code: number): boolean {
  return (code >= 0x20 && code <= 0x7e) || code === 0x09 || code === 0x0a || code === 0x0d;
}

/** Returns the string's characters as bytes when every one is below 256, else undefined. */
function latin1Bytes(text: string): Buffer | undefined {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return undefined;
  return Buffer.from(text, 'latin1');
}

export class SecretScanner {
  readonly #keys: KeyTarget[];
  readonly #exact: Array<{ name: string; forms: Array<{ form: string; text: string }> }>;
  readonly #ecdh = createECDH('prime256v1');
  readonly #checked = new Set<string>();
  readonly findings: Finding[] = [];
  /** Private-key PEM blocks whose key is none of the targets. */
  readonly otherPrivateKeys: string[] = [];
  /** Number of distinct 32-byte windows tried as a scalar. */
  candidates = 0;
  readonly byForm: Record<string, number> = {};

  constructor(keys: KeyTarget[], exact: ExactTarget[] = []) {
    this.#keys = keys;
    this.#exact = exact.map((target) => ({
      name: target.name,
      forms: [{ form: 'raw', text: target.bytes.toString('utf8') }, ...textForms(target.bytes)].filter((entry) => entry.text.length >= 16),
    }));
  }

  /** Scans each string; `where` names the source in findings. */
  scan(strings: Iterable<string>, where: string): void {
    for (const text of strings) {
      if (text.length < 16) continue;
      this.#scanExact(text, where);
      if (this.#keys.length > 0) this.#scanKeys(text, where);
    }
  }

  #scanExact(text: string, where: string): void {
    for (const target of this.#exact) {
      for (const { form, text: needle } of target.forms) {
        if (text.includes(needle)) this.findings.push({ target: target.name, form, where });
      }
    }
  }

  #scanKeys(text: string, where: string): void {
    for (const match of text.matchAll(/-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----([\s\S]*?)-----END \1-----/g)) {
      this.#checkPem(match[1] ?? '', match[2] ?? '', where);
    }
    const bytes = latin1Bytes(text);
    if (bytes !== undefined) {
      this.#afterPrefix(bytes, PKCS8_P256_PREFIX, 'PKCS#8 DER', where);
      this.#afterPrefix(bytes, SEC1_P256_PREFIX, 'SEC1 DER', where);
      this.#binaryWindows(bytes, where);
    }
    for (const match of text.matchAll(/[0-9a-fA-F]{64,}/g)) {
      const run = match[0];
      for (const start of [0, 1]) {
        const decoded = Buffer.from(run.slice(start, start + Math.floor((run.length - start) / 2) * 2), 'hex');
        this.#allWindows(decoded, 'hex', where);
      }
    }
    for (const match of text.matchAll(/[A-Za-z0-9+/_-]{43,}/g)) {
      const run = match[0].replaceAll('-', '+').replaceAll('_', '/');
      for (let start = 0; start < 4; start++) {
        const usable = Math.floor((run.length - start) / 4) * 4;
        const tail = run.length - start - usable;
        // A final group of 2 or 3 characters still decodes to 1 or 2 bytes.
        const decoded = Buffer.from(run.slice(start, start + usable + (tail >= 2 ? tail : 0)), 'base64');
        this.#afterPrefix(decoded, PKCS8_P256_PREFIX, 'PKCS#8 DER as base64', where);
        this.#afterPrefix(decoded, SEC1_P256_PREFIX, 'SEC1 DER as base64', where);
        if (run.length <= MAX_WINDOWED_BASE64_RUN) {
          this.#allWindows(decoded, 'base64', where);
        } else {
          this.#tryScalar(decoded.subarray(0, 32), 'base64', where);
          this.#tryScalar(decoded.subarray(decoded.length - 32), 'base64', where);
        }
      }
    }
  }

  #checkPem(label: string, body: string, where: string): void {
    const der = Buffer.from(body.replace(/\s+/g, ''), 'base64');
    let point: Buffer | undefined;
    try {
      const type = label === 'EC PRIVATE KEY' ? 'sec1' : 'pkcs8';
      const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type })).export({ format: 'jwk' });
      if (jwk.x !== undefined && jwk.y !== undefined) point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
    } catch {
      point = undefined;
    }
    const target = point === undefined ? undefined : this.#keys.find((key) => key.publicPoint.equals(point));
    if (target !== undefined) this.findings.push({ target: target.name, form: `PEM ${label}`, where });
    else this.otherPrivateKeys.push(`${label} in ${where}`);
  }

  #afterPrefix(bytes: Buffer, prefix: Buffer, form: string, where: string): void {
    let at = bytes.indexOf(prefix);
    while (at !== -1) {
      this.#tryScalar(bytes.subarray(at + prefix.length, at + prefix.length + 32), form, where);
      at = bytes.indexOf(prefix, at + 1);
    }
  }

  #binaryWindows(bytes: Buffer, where: string): void {
    if (bytes.length < 32) return;
    let lastStart = -1;
    for (let i = 0; i < bytes.length; i++) {
      if (isPrintable(bytes[i] ?? 0)) continue;
      const from = Math.max(lastStart + 1, i - 31, 0);
      const to = Math.min(i, bytes.length - 32);
      for (let start = from; start <= to; start++) this.#tryScalar(bytes.subarray(start, start + 32), 'latin1', where);
      lastStart = Math.max(lastStart, to);
    }
  }

  #allWindows(bytes: Buffer, form: string, where: string): void {
    for (let start = 0; start + 32 <= bytes.length; start++) this.#tryScalar(bytes.subarray(start, start + 32), form, where);
  }

  #tryScalar(scalar: Buffer, form: string, where: string): void {
    if (scalar.length !== 32 || Buffer.compare(scalar, P256_ORDER) >= 0 || scalar.every((byte) => byte === 0)) return;
    const id = scalar.toString('latin1');
    if (this.#checked.has(id)) return;
    this.#checked.add(id);
    this.candidates++;
    this.byForm[form] = (this.byForm[form] ?? 0) + 1;
    this.#ecdh.setPrivateKey(scalar);
    const point = this.#ecdh.getPublicKey();
    const target = this.#keys.find((key) => key.publicPoint.equals(point));
    if (target !== undefined) this.findings.push({ target: target.name, form, where });
  }
}

/**
 * Returns the strings of a V8 heap snapshot file's JSON. V8 shortens each string to
 * --heap-snapshot-string-limit characters (1024 by default), so the process that wrote it must
 * raise that limit for the scan to cover whole strings.
 */
export function heapSnapshotStrings(json: string): string[] {
  const parsed = JSON.parse(json) as { strings?: unknown };
  if (!Array.isArray(parsed.strings)) throw new Error('the file is not a V8 heap snapshot: no strings array');
  return parsed.strings as string[];
}
