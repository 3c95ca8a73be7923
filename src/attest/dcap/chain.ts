/**
 * Certificate chain checks for Intel DCAP: the PCK chain in a quote and the issuer chains of TCB
 * info, QE identity and the PCK CRL. Every chain must end at the Intel SGX Root CA, identified by
 * the SHA-256 of its SubjectPublicKeyInfo, and every certificate must be valid at `now`.
 */
import { X509Certificate, createHash, timingSafeEqual } from 'node:crypto';
import { SealmeshError, type ErrorCode } from '../../errors/index.ts';

/**
 * SHA-256 of the SubjectPublicKeyInfo (DER) of the Intel SGX Root CA ("CN=Intel SGX Root CA,
 * O=Intel Corporation, L=Santa Clara, ST=CA, C=US", valid 2018-05-21 to 2049-12-31), the trust
 * anchor of every SGX and TDX PCK chain and of Intel's TCB signing chain. Intel re-issued the root
 * certificate with the same key, so pinning the key rather than the certificate accepts either.
 */
export const INTEL_SGX_ROOT_CA_SPKI_SHA256 = 'a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e';

/** Kind of chain, so that failures of the quote's chain and of collateral chains get their own codes. */
export type ChainKind = 'pck' | 'collateral';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function chainError(kind: ChainKind, message: string, cause?: unknown): SealmeshError {
  const code: ErrorCode = kind === 'pck' ? 'SEALMESH_ERR_DCAP_PCK_CHAIN_INVALID' : 'SEALMESH_ERR_DCAP_COLLATERAL_CHAIN_INVALID';
  return new SealmeshError(code, message, { cause });
}

/** Parses a PEM bundle into certificates in their order in the text. */
export function parsePemChain(pem: string, kind: ChainKind, label: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    throw chainError(kind, `${label} contains no PEM certificate`);
  }
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw chainError(kind, `${label} certificate ${index} is not a valid X.509 certificate`, error);
    }
  });
}

/** Returns the lowercase hex SHA-256 of a certificate's SubjectPublicKeyInfo. */
export function spkiSha256(certificate: X509Certificate): string {
  return createHash('sha256').update(certificate.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** Returns the value of the first CN attribute of a distinguished name in Node's multi-line form. */
export function commonName(distinguishedName: string): string | undefined {
  for (const line of distinguishedName.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return undefined;
}

export interface ChainExpectation {
  kind: ChainKind;
  /** Name of the chain in messages, such as `PCK certificate chain`. */
  label: string;
  /** Exact number of certificates, leaf first, root last. */
  length: number;
  /** Expected CN of each certificate, leaf first; a function checks names with variants. */
  commonNames: ReadonlyArray<string | ((name: string) => boolean)>;
  /** Pinned SHA-256 of the root's SubjectPublicKeyInfo, lowercase hex. */
  trustedRootSpkiSha256: string;
  now: Date;
  /** True when the first certificate is itself a CA, as in the PCK CRL issuer chain. */
  leafIsCa?: boolean;
}

/**
 * Checks a chain given leaf first: length and common names, each certificate issued and signed by
 * the next, CA flags, a self-signed root whose key matches the pin, and every validity window at
 * `now`. Raises the chain kind's error code, `SEALMESH_ERR_DCAP_ROOT_UNTRUSTED` for a root that
 * does not match the pin, and `SEALMESH_ERR_DCAP_CERT_NOT_VALID_AT_TIME` for a validity failure.
 */
export function verifyCertificateChain(chain: X509Certificate[], expectation: ChainExpectation): void {
  const { kind, label } = expectation;
  if (chain.length !== expectation.length) {
    throw chainError(kind, `${label} has ${chain.length} certificates; expected ${expectation.length} (leaf, intermediates, root)`);
  }
  chain.forEach((certificate, index) => {
    const name = commonName(certificate.subject) ?? '';
    const expected = expectation.commonNames[index];
    const matches = typeof expected === 'function' ? expected(name) : expected === name;
    if (!matches) {
      throw chainError(kind, `${label} certificate ${index} has CN ${JSON.stringify(name)}, which is not the expected Intel SGX certificate name`);
    }
    const mustBeCa = index > 0 || expectation.leafIsCa === true;
    if (certificate.ca !== mustBeCa) {
      throw chainError(kind, `${label} certificate ${index} (${name}) ${mustBeCa ? 'is not a CA certificate' : 'is a CA certificate but must be a leaf'}`);
    }
  });

  const root = chain[chain.length - 1]!;
  const pinned = Buffer.from(expectation.trustedRootSpkiSha256, 'hex');
  const actual = Buffer.from(spkiSha256(root), 'hex');
  if (pinned.length !== actual.length || !timingSafeEqual(pinned, actual)) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_ROOT_UNTRUSTED',
      `${label} ends at a root whose public key SHA-256 is ${actual.toString('hex')}, not the pinned Intel SGX Root CA key`,
    );
  }

  for (let index = 0; index < chain.length; index += 1) {
    const certificate = chain[index]!;
    const issuer = chain[Math.min(index + 1, chain.length - 1)]!;
    if (!certificate.checkIssued(issuer)) {
      throw chainError(kind, `${label} certificate ${index} (${commonName(certificate.subject)}) was not issued by the next certificate`);
    }
    if (!certificate.verify(issuer.publicKey)) {
      throw chainError(kind, `${label} certificate ${index} (${commonName(certificate.subject)}) has a signature that does not verify with its issuer's key`);
    }
  }

  for (const certificate of chain) {
    if (expectation.now < certificate.validFromDate || expectation.now > certificate.validToDate) {
      throw new SealmeshError(
        'SEALMESH_ERR_DCAP_CERT_NOT_VALID_AT_TIME',
        `${label} certificate ${JSON.stringify(commonName(certificate.subject))} is valid from ${certificate.validFromDate.toISOString()} to ` +
          `${certificate.validToDate.toISOString()}, which does not include the verification time ${expectation.now.toISOString()}`,
      );
    }
  }
}
