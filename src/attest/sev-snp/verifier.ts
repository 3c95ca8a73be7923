/**
 * The SEV-SNP evidence verifier: decides whether an attestation report was produced by genuine
 * AMD firmware for the enrollment at hand. The checks run in a fixed order, each with its own
 * error code, and any check that cannot decide rejects.
 */
import { createHash, timingSafeEqual, verify as verifySignature } from 'node:crypto';
import { isSealmeshError, SealmeshError, type ErrorCode } from '../../errors/index.ts';
import type { SnpCertificates, SnpCollateralRequest, SnpCollateralSource } from '../collateral.ts';
import type { AttestationResult, Evidence, EvidenceVerifier } from '../index.ts';
import { MAX_SNP_CERT_TABLE_BYTES, parseSnpCertTable } from './cert-table.ts';
import { checkAmdCrl, type SnpCrlSource } from './crl.ts';
import {
  checkValidity,
  parseAmdCertificate,
  readVekClaims,
  requireCaCertificate,
  requireP384Key,
  verifyAmdSignature,
  type AmdCertificate,
  type AmdCertificateRole,
  type VekClaims,
} from './certificates.ts';
import { parseSnpReport, SNP_PRODUCT_LINES, SNP_REPORT_SIZE, type SnpProductLine, type SnpReport } from './report.ts';
import { AMD_ARK_SPKI_SHA256 } from './roots.ts';

export const SEV_SNP_PROVIDER = 'sev-snp';

export interface SevSnpVerifierOptions {
  /** Source of the VCEK or VLEK, ASK and ARK when the evidence does not carry all of them. */
  collateral?: SnpCollateralSource;
  /**
   * Source of the ARK's CRL: the ASK (or ASVK) and the VCEK (or VLEK) must not be revoked, and a
   * CRL that cannot be fetched rejects the evidence. Without it every report is rejected with
   * SEALMESH_ERR_SNP_CRL_SOURCE_MISSING. `'unchecked'` skips revocation, for offline checks of
   * recorded evidence whose CRL is not at hand; the server never sets it.
   */
  crl?: SnpCrlSource | 'unchecked';
  /**
   * Product line to request from `collateral` for version 2 reports, which carry no CPUID. The
   * pinned ARK still decides; a different ARK is rejected.
   */
  productLine?: SnpProductLine;
  /**
   * Replaces the pinned AMD roots: SHA-256 of each trusted ARK's DER SubjectPublicKeyInfo, lowercase
   * hex, by product line. For tests that build their own chains; production leaves it unset.
   */
  trustedArkSpkiSha256?: Readonly<Partial<Record<SnpProductLine, string>>>;
}

// Product names in the VCEK productName extension (such as `Milan-B0`), by the prefix before the
// stepping, mapped to the product line whose ARK signs them. Siena shares Genoa's keys.
const PRODUCT_NAME_LINES: ReadonlyMap<string, SnpProductLine> = new Map([
  ['Milan', 'Milan'],
  ['Genoa', 'Genoa'],
  ['Siena', 'Genoa'],
  ['Turin', 'Turin'],
]);

/**
 * Number of decoded certificates each verifier keeps, by role and SHA-256 of their DER. Decoding
 * one AMD certificate with @peculiar/asn1-schema took about 10 ms of CPU on a 2-core AMD EPYC
 * virtual machine with Node.js 24.21, and a fleet presents few distinct ARKs, ASKs and VCEKs. Only
 * the decoding is reused, so every check still runs on every verification.
 */
const PARSED_CERTIFICATE_CACHE_SIZE = 256;

// Subject common names AMD gives the two kinds of report-signing certificates.
const VEK_COMMON_NAMES = { vcek: 'SEV-VCEK', vlek: 'SEV-VLEK' } as const;

/** The certificates to check, with where they came from for error messages. */
interface CertificateSet extends SnpCertificates {
  source: string;
}

/**
 * Verifies SEV-SNP evidence: `data` is the base64 attestation report and `aux`, when present, the
 * base64 certificate table from configfs-tsm `auxblob`. See `verify` for the checks.
 */
export class SevSnpVerifier implements EvidenceVerifier {
  readonly provider = SEV_SNP_PROVIDER;
  readonly #collateral: SnpCollateralSource | undefined;
  readonly #crl: SnpCrlSource | 'unchecked' | undefined;
  readonly #productLine: SnpProductLine | undefined;
  readonly #trustedArks: ReadonlyMap<string, SnpProductLine>;
  readonly #parsed = new Map<string, AmdCertificate>();

  constructor(options: SevSnpVerifierOptions = {}) {
    this.#collateral = options.collateral;
    this.#crl = options.crl;
    if (options.productLine !== undefined && !SNP_PRODUCT_LINES.includes(options.productLine)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `productLine ${JSON.stringify(options.productLine)} is not one of ${SNP_PRODUCT_LINES.join(', ')}`);
    }
    this.#productLine = options.productLine;
    const pins = options.trustedArkSpkiSha256 ?? AMD_ARK_SPKI_SHA256;
    const trusted = new Map<string, SnpProductLine>();
    for (const [productLine, digest] of Object.entries(pins)) {
      if (!SNP_PRODUCT_LINES.includes(productLine as SnpProductLine) || typeof digest !== 'string' || !/^[0-9a-f]{64}$/.test(digest)) {
        throw new SealmeshError(
          'SEALMESH_ERR_INVALID_ARGUMENT',
          `trustedArkSpkiSha256 entry ${JSON.stringify(productLine)} must map Milan, Genoa or Turin to 64 lowercase hex digits`,
        );
      }
      trusted.set(digest, productLine as SnpProductLine);
    }
    this.#trustedArks = trusted;
  }

  /**
   * Verifies `evidence` at `now` and returns the claims it proves. Checks, in order:
   * 1. the report parses (length, version, policy, signature algorithm, signing key; `parseSnpReport`);
   * 2. the certificates come from the evidence's certificate table, else from the collateral source;
   * 3. the ARK's public key is a pinned AMD root, of the product line the report's CPUID names;
   * 4. the ARK is self-signed, the ASK (or ASVK) is signed by the ARK and the VCEK (or VLEK) by
   *    the ASK, all with RSASSA-PSS SHA-384, and the ARK and ASK are CA certificates;
   * 5. every certificate is valid at `now`;
   * 6. the certificate is the kind of key the report names (VCEK or VLEK) and has a P-384 key,
   *    and the ARK and ASK (or ASVK) names match that kind and the product line;
   * 7. the ARK's CRL, from the CRL source (required), is current, signed by the ARK, and revokes
   *    neither the ASK nor the VCEK;
   * 8. the report signature over bytes [0, 0x2A0) verifies with the VCEK or VLEK key;
   * 9. the certificate's product name matches the product line, its TCB extensions equal the
   *    report's reported TCB, and a VCEK's hwID equals the report's chip id;
   * 10. the report data equals `expectedReportData` (compared in constant time).
   *
   * Every failure throws a SealmeshError whose code names the check; see `src/errors/codes.ts`.
   */
  async verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    if (typeof evidence !== 'object' || evidence === null) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'evidence must be an object with provider, data and optional aux');
    }
    if (evidence.provider !== SEV_SNP_PROVIDER) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `evidence from provider ${JSON.stringify(evidence.provider)} was passed to the SEV-SNP verifier`);
    }
    if (!(expectedReportData instanceof Uint8Array) || expectedReportData.length !== 64) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `expected report data must be 64 bytes, got ${expectedReportData?.length ?? 'none'}`);
    }
    if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'verification time must be a valid Date');
    }

    const report = parseSnpReport(decodeBase64(evidence.data, SNP_REPORT_SIZE, 'SEALMESH_ERR_SNP_REPORT_MALFORMED', 'SEV-SNP report'));
    const certificates = await this.#certificatesFor(report, evidence, now);
    const { productLine, ark, ask, vek } = this.#verifyChain(report, certificates, now);
    await this.#checkRevocation(productLine, report.signingKey, ark, [ask, vek], now);

    const signatureValid = verifyReportSignature(report, vek);
    if (!signatureValid) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
        `SEV-SNP report signature does not verify with the ${vek.role} from ${certificates.source}`,
      );
    }

    checkVekClaims(report, vek, readVekClaims(vek), productLine);

    if (!timingSafeEqual(report.reportData, expectedReportData)) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_REPORT_DATA_MISMATCH',
        'SEV-SNP report data differs from the expected report data: the evidence was produced for another key or nonce',
      );
    }

    return {
      provider: SEV_SNP_PROVIDER,
      insecure: false,
      verifiedAt: now.toISOString(),
      debug: report.policy.debug,
      reportData: hex(report.reportData),
      measurements: { measurement: hex(report.measurement), hostData: hex(report.hostData) },
      tcbStatus: 'UpToDate',
      snp: {
        vmpl: report.vmpl,
        policy: {
          debug: report.policy.debug,
          smt: report.policy.smt,
          migrationAgent: report.policy.migrationAgent,
          singleSocket: report.policy.singleSocket,
          abiMajor: report.policy.abiMajor,
          abiMinor: report.policy.abiMinor,
        },
        reportedTcb: { ...report.reportedTcb },
        productLine,
        chipId: hex(report.chipId),
        signingKey: report.signingKey,
      },
    };
  }

  async #certificatesFor(report: SnpReport, evidence: Evidence, now: Date): Promise<CertificateSet> {
    const role = report.signingKey;
    let fromEvidence: Partial<SnpCertificates> = {};
    if (evidence.aux !== undefined && evidence.aux !== '') {
      const table = parseSnpCertTable(decodeBase64(evidence.aux, MAX_SNP_CERT_TABLE_BYTES, 'SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED', 'SEV-SNP certificate table'));
      fromEvidence = { vcek: table[role], ask: table.ask, ark: table.ark };
    }
    if (fromEvidence.vcek !== undefined && fromEvidence.ask !== undefined && fromEvidence.ark !== undefined) {
      return { vcek: fromEvidence.vcek, ask: fromEvidence.ask, ark: fromEvidence.ark, source: 'the evidence' };
    }

    const missing = [
      fromEvidence.vcek === undefined ? role.toUpperCase() : undefined,
      fromEvidence.ask === undefined ? 'ASK' : undefined,
      fromEvidence.ark === undefined ? 'ARK' : undefined,
    ].filter((name) => name !== undefined);
    if (this.#collateral === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_CERTIFICATES_MISSING',
        `SEV-SNP evidence lacks the ${missing.join(', ')} certificate and this verifier has no collateral source: send the configfs-tsm auxblob in aux or configure a collateral source`,
      );
    }

    const productLine = report.productLine ?? this.#productLine;
    if (productLine === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_PRODUCT_UNKNOWN',
        `SEV-SNP report version ${report.version} carries no CPUID, so the product line for the collateral request is unknown: set the verifier's productLine or send the certificates in aux`,
      );
    }
    const request: SnpCollateralRequest = { productLine, chipId: hex(report.chipId), reportedTcb: { ...report.reportedTcb }, signingKey: role };
    let fetched: SnpCertificates;
    try {
      fetched = await this.#collateral.certificates(request, now);
    } catch (error) {
      if (isSealmeshError(error)) throw error;
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_COLLATERAL_UNAVAILABLE',
        `SEV-SNP collateral source failed to return the ${missing.join(', ')} certificate for ${productLine}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    return {
      vcek: fromEvidence.vcek ?? fetched.vcek,
      ask: fromEvidence.ask ?? fetched.ask,
      ark: fromEvidence.ark ?? fetched.ark,
      source: fromEvidence.vcek === undefined ? 'the collateral source' : 'the evidence',
    };
  }

  #parseCertificate(der: Uint8Array, role: AmdCertificateRole): AmdCertificate {
    const key = `${role}:${createHash('sha256').update(der).digest('hex')}`;
    const cached = this.#parsed.get(key);
    if (cached !== undefined) {
      return cached;
    }
    const parsed = parseAmdCertificate(Uint8Array.from(der), role);
    if (this.#parsed.size >= PARSED_CERTIFICATE_CACHE_SIZE) {
      // Maps iterate in insertion order, so this drops the oldest entry.
      this.#parsed.delete(this.#parsed.keys().next().value!);
    }
    this.#parsed.set(key, parsed);
    return parsed;
  }

  async #checkRevocation(
    productLine: SnpProductLine,
    signingKey: 'vcek' | 'vlek',
    ark: AmdCertificate,
    revocable: AmdCertificate[],
    now: Date,
  ): Promise<void> {
    if (this.#crl === 'unchecked') {
      return;
    }
    if (this.#crl === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_CRL_SOURCE_MISSING',
        'SEV-SNP evidence needs the AMD CRL to check that its ASK and VCEK are not revoked, and this server has no source for it: start it with --collateral-dir (file sev-snp/<product>/crl.der) or --kds-url',
      );
    }
    let crl: Uint8Array;
    try {
      crl = await this.#crl.crl(productLine, signingKey, now);
    } catch (error) {
      // A source's own error already names what failed and how to fix it.
      if (isSealmeshError(error)) throw error;
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_COLLATERAL_UNAVAILABLE',
        `SEV-SNP CRL source failed to return the ${productLine} ${signingKey.toUpperCase()} CRL: ${(error as Error).message}`,
        { cause: error },
      );
    }
    checkAmdCrl(crl, ark, revocable, now);
  }

  #verifyChain(
    report: SnpReport,
    certificates: CertificateSet,
    now: Date,
  ): { productLine: SnpProductLine; ark: AmdCertificate; ask: AmdCertificate; vek: AmdCertificate } {
    const ark = this.#parseCertificate(certificates.ark, 'ARK');
    const ask = this.#parseCertificate(certificates.ask, 'ASK');
    const vek = this.#parseCertificate(certificates.vcek, report.signingKey === 'vcek' ? 'VCEK' : 'VLEK');

    const arkDigest = createHash('sha256').update(ark.spkiDer).digest('hex');
    const productLine = this.#trustedArks.get(arkDigest);
    if (productLine === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_ARK_UNTRUSTED',
        `ARK public key (SPKI SHA-256 ${arkDigest}) is not a pinned AMD root for Milan, Genoa or Turin`,
      );
    }
    const expectedLine = report.productLine ?? this.#productLine;
    if (expectedLine !== undefined && expectedLine !== productLine) {
      const origin = report.productLine === undefined ? 'the verifier is configured for' : 'the report CPUID names';
      throw new SealmeshError('SEALMESH_ERR_SNP_PRODUCT_MISMATCH', `ARK is the ${productLine} root, but ${origin} ${expectedLine}`);
    }
    if (report.productLine === undefined && productLine === 'Turin') {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_PRODUCT_MISMATCH',
        `ARK is the Turin root, but the report is version ${report.version}, which Turin firmware does not produce`,
      );
    }

    verifyAmdSignature(ark, ark, 'SEALMESH_ERR_SNP_ARK_SIGNATURE_INVALID');
    requireCaCertificate(ark);
    verifyAmdSignature(ask, ark, 'SEALMESH_ERR_SNP_ASK_SIGNATURE_INVALID');
    requireCaCertificate(ask);
    verifyAmdSignature(vek, ask, 'SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID');

    for (const certificate of [ark, ask, vek]) {
      checkValidity(certificate, now);
    }

    const expectedName = VEK_COMMON_NAMES[report.signingKey];
    if (vek.commonName !== expectedName) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_SIGNING_KEY_MISMATCH',
        `SEV-SNP report names the ${report.signingKey.toUpperCase()} as signer, but the certificate from ${certificates.source} is ${JSON.stringify(vek.commonName ?? '')}, not ${expectedName}`,
      );
    }
    requireP384Key(vek);
    checkChainNames(report.signingKey, productLine, ark, ask);
    return { productLine, ark, ask, vek };
  }
}

/**
 * Checks the names AMD gives the chain: `ARK-<product>` for the ARK, and `SEV-<product>` for the
 * ASK or `SEV-VLEK-<product>` for the ASVK that issues VLEKs.
 */
function checkChainNames(signingKey: 'vcek' | 'vlek', productLine: SnpProductLine, ark: AmdCertificate, ask: AmdCertificate): void {
  if (ark.commonName !== `ARK-${productLine}`) {
    throw new SealmeshError('SEALMESH_ERR_SNP_PRODUCT_MISMATCH', `ARK common name ${JSON.stringify(ark.commonName ?? '')} is not ARK-${productLine}`);
  }
  const expected = signingKey === 'vcek' ? `SEV-${productLine}` : `SEV-VLEK-${productLine}`;
  if (ask.commonName === expected) {
    return;
  }
  const kindMatches = (ask.commonName ?? '').startsWith('SEV-VLEK-') === (signingKey === 'vlek');
  throw new SealmeshError(
    kindMatches ? 'SEALMESH_ERR_SNP_PRODUCT_MISMATCH' : 'SEALMESH_ERR_SNP_SIGNING_KEY_MISMATCH',
    `ASK common name ${JSON.stringify(ask.commonName ?? '')} is not ${expected}, the ${signingKey === 'vcek' ? 'ASK' : 'ASVK'} that issues ${signingKey.toUpperCase()}s for ${productLine}`,
  );
}

function verifyReportSignature(report: SnpReport, vek: AmdCertificate): boolean {
  try {
    return verifySignature('sha384', report.signedBytes, { key: vek.publicKey, dsaEncoding: 'ieee-p1363' }, report.signatureP1363);
  } catch {
    // OpenSSL rejects R or S outside the curve order by throwing; that is an invalid signature.
    return false;
  }
}

/** Step 9 of `verify`: the VCEK or VLEK describes the platform that produced the report. */
function checkVekClaims(report: SnpReport, vek: AmdCertificate, claims: VekClaims, productLine: SnpProductLine): void {
  if (claims.productName === undefined && vek.role === 'VCEK') {
    throw new SealmeshError('SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID', 'VCEK certificate lacks the productName extension (1.3.6.1.4.1.3704.1.2)');
  }
  if (claims.productName !== undefined) {
    const namedLine = PRODUCT_NAME_LINES.get(claims.productName.split('-')[0] ?? '');
    if (namedLine !== productLine) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_PRODUCT_MISMATCH',
        `${vek.role} product name ${JSON.stringify(claims.productName)} does not belong to the ${productLine} product line of its ARK`,
      );
    }
  }

  const turin = productLine === 'Turin';
  if (turin !== (claims.fmc !== undefined)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID',
      turin ? `${vek.role} certificate for Turin lacks the fmcSPL extension (1.3.6.1.4.1.3704.1.3.9)` : `${vek.role} certificate for ${productLine} carries an fmcSPL extension, which only Turin defines`,
    );
  }
  const reported = report.reportedTcb;
  const mismatches = (['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const)
    .filter((component) => reported[component] !== claims[component])
    .map((component) => `${component} ${String(reported[component])} in the report, ${String(claims[component])} in the ${vek.role}`);
  if (mismatches.length > 0) {
    throw new SealmeshError('SEALMESH_ERR_SNP_TCB_MISMATCH', `SEV-SNP reported TCB differs from the ${vek.role} TCB: ${mismatches.join('; ')}`);
  }

  if (vek.role === 'VCEK' && claims.hwId === undefined) {
    throw new SealmeshError('SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID', 'VCEK certificate lacks the hwID extension (1.3.6.1.4.1.3704.1.4)');
  }
  if (claims.hwId !== undefined && !timingSafeEqual(claims.hwId, report.chipId)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_CHIP_ID_MISMATCH',
      `SEV-SNP report chip id ${hex(report.chipId).slice(0, 16)}… differs from the ${vek.role} hwID ${hex(claims.hwId).slice(0, 16)}…: the certificate belongs to another processor`,
    );
  }
}

/** Decodes canonical base64 of at most `maxBytes` bytes; anything else is rejected with `code`. */
function decodeBase64(text: unknown, maxBytes: number, code: ErrorCode, what: string): Uint8Array {
  if (typeof text !== 'string' || text.length > Math.ceil(maxBytes / 3) * 4) {
    throw new SealmeshError(code, `${what} must be a base64 string of at most ${maxBytes} bytes`);
  }
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) {
    throw new SealmeshError(code, `${what} is not canonical base64`);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
