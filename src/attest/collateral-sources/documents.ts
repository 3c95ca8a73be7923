import { x509 } from '../../pki/x509.ts';
import { SealmeshError } from '../../errors/index.ts';

/**
 * Parsing helpers for collateral documents as Intel's PCS, a PCCS, AMD's KDS or a collateral
 * directory serve them, and the expiry of each.
 */

export function invalidCollateral(what: string, reason: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID', `${what} is invalid: ${reason}`);
}

/**
 * Returns the exact text of the top-level member `name` of the JSON object `text`. Intel signs the
 * bytes of `tcbInfo` and `enclaveIdentity` as served, so they must not be parsed and re-serialised.
 */
export function rawJsonMember(text: string, name: string, what: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalidCollateral(what, 'it is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || !Object.hasOwn(parsed, name)) {
    throw invalidCollateral(what, `it has no top-level member ${JSON.stringify(name)}`);
  }
  // Scan the text for the member at depth 1, skipping over strings.
  let depth = 0;
  let index = 0;
  while (index < text.length) {
    const char = text[index]!;
    if (char === '"') {
      const end = endOfString(text, index);
      if (depth === 1) {
        const key = JSON.parse(text.slice(index, end + 1)) as string;
        let after = end + 1;
        while (/\s/.test(text[after] ?? '')) after += 1;
        if (text[after] === ':' && key === name) {
          let start = after + 1;
          while (/\s/.test(text[start] ?? '')) start += 1;
          return text.slice(start, endOfValue(text, start) + 1);
        }
      }
      index = end + 1;
      continue;
    }
    if (char === '{' || char === '[') depth += 1;
    else if (char === '}' || char === ']') depth -= 1;
    index += 1;
  }
  throw invalidCollateral(what, `member ${JSON.stringify(name)} was not found in the text`);
}

function endOfString(text: string, start: number): number {
  let index = start + 1;
  while (index < text.length) {
    if (text[index] === '\\') index += 2;
    else if (text[index] === '"') return index;
    else index += 1;
  }
  return text.length - 1;
}

/** Returns the index of the last character of the JSON value starting at `start`. */
function endOfValue(text: string, start: number): number {
  const first = text[start];
  if (first === '"') return endOfString(text, start);
  if (first !== '{' && first !== '[') {
    let index = start;
    while (index + 1 < text.length && !/[,}\]\s]/.test(text[index + 1]!)) index += 1;
    return index;
  }
  let depth = 0;
  let index = start;
  while (index < text.length) {
    const char = text[index]!;
    if (char === '"') {
      index = endOfString(text, index) + 1;
      continue;
    }
    if (char === '{' || char === '[') depth += 1;
    else if (char === '}' || char === ']') {
      depth -= 1;
      if (depth === 0) return index;
    }
    index += 1;
  }
  return text.length - 1;
}

/** Parses a signed Intel collateral body (`{"tcbInfo": {...}, "signature": "hex"}` and the like). */
export function parseSignedJson(text: string, member: 'tcbInfo' | 'enclaveIdentity', what: string): { body: string; signature: string; nextUpdate: Date } {
  const body = rawJsonMember(text, member, what);
  const parsed = JSON.parse(text) as Record<string, unknown>;
  const signature = parsed.signature;
  if (typeof signature !== 'string' || !/^[0-9a-fA-F]+$/.test(signature)) throw invalidCollateral(what, 'signature is not hex text');
  const nextUpdate = new Date(String((JSON.parse(body) as { nextUpdate?: unknown }).nextUpdate));
  if (Number.isNaN(nextUpdate.getTime())) throw invalidCollateral(what, `${member}.nextUpdate is not a date`);
  return { body, signature: signature.toLowerCase(), nextUpdate };
}

/** Decodes a CRL served as DER, PEM or hex text of DER (older PCCS versions). */
export function decodeCrl(bytes: Uint8Array, what: string): { der: Uint8Array; nextUpdate: Date } {
  const text = Buffer.from(bytes).toString('latin1').trim();
  let der: Uint8Array;
  // OpenSSL labels a PEM CRL `X509 CRL`; some tools write `CRL`.
  if (/^-----BEGIN (X509 )?CRL-----/.test(text)) {
    der = new Uint8Array(Buffer.from(text.replace(/-----(BEGIN|END) (X509 )?CRL-----/g, '').replace(/\s+/g, ''), 'base64'));
  } else if (/^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0) {
    der = new Uint8Array(Buffer.from(text, 'hex'));
  } else {
    der = new Uint8Array(bytes);
  }
  let crl: x509.X509Crl;
  try {
    crl = new x509.X509Crl(der);
  } catch {
    throw invalidCollateral(what, 'it is not a CRL in DER, PEM or hex');
  }
  if (crl.nextUpdate === undefined) throw invalidCollateral(what, 'the CRL has no nextUpdate');
  return { der, nextUpdate: crl.nextUpdate };
}

/** Parses a PEM chain, returns it normalised and the earliest notAfter among its certificates. */
export function parsePemChain(text: string, what: string, minimum = 1): { pem: string; certificates: x509.X509Certificate[]; notAfter: Date } {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length < minimum) throw invalidCollateral(what, `it contains ${blocks.length} PEM certificate(s), expected at least ${minimum}`);
  let certificates: x509.X509Certificate[];
  try {
    certificates = blocks.map((block) => new x509.X509Certificate(block));
  } catch {
    throw invalidCollateral(what, 'a certificate cannot be decoded');
  }
  const notAfter = new Date(Math.min(...certificates.map((certificate) => certificate.notAfter.getTime())));
  return { pem: `${certificates.map((certificate) => certificate.toString('pem')).join('\n')}\n`, certificates, notAfter };
}

/** Decodes one certificate given as DER or PEM. */
export function decodeCertificate(bytes: Uint8Array, what: string): { der: Uint8Array; notAfter: Date } {
  const text = Buffer.from(bytes).toString('latin1');
  try {
    const certificate = text.includes('-----BEGIN CERTIFICATE-----') ? new x509.X509Certificate(text) : new x509.X509Certificate(new Uint8Array(bytes));
    return { der: new Uint8Array(certificate.rawData), notAfter: certificate.notAfter };
  } catch {
    throw invalidCollateral(what, 'it is not an X.509 certificate in DER or PEM');
  }
}

/** Throws COLLATERAL_INVALID when a document expired before `now`. */
export function checkNotExpired(what: string, expiresAt: Date, now: Date): void {
  if (expiresAt.getTime() <= now.getTime()) {
    throw invalidCollateral(what, `it expired at ${expiresAt.toISOString()}; refresh it from Intel's PCS, the PCCS or AMD's KDS`);
  }
}
