/**
 * Verification of Intel DCAP quotes (SGX quote v3, TDX quote v4 and v5) against collateral, in
 * the order documented in docs/architecture.md ("Attestation: Intel DCAP verifier"). Each check
 * raises its own `SEALMESH_ERR_DCAP_…` code and nothing is returned unless every check passed.
 */
import { createHash, createPublicKey, timingSafeEqual, verify as verifySignature, type KeyObject, type X509Certificate } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import type { DcapCollateral } from '../collateral.ts';
import type { AttestationResult, TcbStatus } from '../index.ts';
import { INTEL_SGX_ROOT_CA_SPKI_SHA256, commonName, parsePemChain, verifyCertificateChain } from './chain.ts';
import { isRevoked, verifyCrl, type CheckedCrl } from './crl.ts';
import { verifyQeIdentity, verifyTcbInfo, type QeIdentity, type TcbInfo } from './documents.ts';
import { parsePckExtension, type PckExtension } from './pck.ts';
import { parseQuote, type DcapQuote } from './quote.ts';
import { checkQeIdentity, checkTdxModule, combineTcbStatus, matchPlatformTcbLevel, mergeAdvisoryIds, type LevelMatch } from './tcb.ts';

const ROOT_CA_NAME = 'Intel SGX Root CA';
const PCK_CERTIFICATE_NAME = 'Intel SGX PCK Certificate';
const PLATFORM_CA_NAME = 'Intel SGX PCK Platform CA';
const PROCESSOR_CA_NAME = 'Intel SGX PCK Processor CA';
const TCB_SIGNING_NAME = 'Intel SGX TCB Signing';

/** A quote whose PCK chain and SGX extension passed, ready for collateral checks. */
export interface PreparedQuote {
  quote: DcapQuote;
  /** PCK certificate, PCK CA, root. */
  pckChain: [X509Certificate, X509Certificate, X509Certificate];
  pck: PckExtension;
  pckCa: 'processor' | 'platform';
}

export interface VerifyQuoteOptions {
  /**
   * Report data the quote must carry (64 bytes), compared in constant time. `null` skips the
   * comparison, for callers that inspect a quote without binding it to an enrollment.
   */
  expectedReportData: Uint8Array | null;
  /** TEE type the caller accepts; a quote of the other type is rejected. */
  teeType?: 'sgx' | 'tdx';
  /** SHA-256 of the trusted root's SubjectPublicKeyInfo; Intel's SGX Root CA unless a test overrides it. */
  trustedRootSpkiSha256?: string;
}

/** Everything `verifyQuote` established, beyond the claims in `result`. */
export interface DcapVerification {
  result: AttestationResult;
  quote: DcapQuote;
  pck: PckExtension;
  pckCa: 'processor' | 'platform';
  /** Status of the selected platform TCB level, before TDX module and QE statuses are applied. */
  platformTcb: LevelMatch;
  tdxModuleTcb?: LevelMatch;
  qeTcb: LevelMatch;
  tcbInfo: TcbInfo;
  qeIdentity: QeIdentity;
}

/** Parses a quote, verifies its PCK chain to the pinned root at `now` and decodes the PCK extension. */
export function prepareQuote(quoteBytes: Uint8Array, now: Date, options: Omit<VerifyQuoteOptions, 'expectedReportData'> = {}): PreparedQuote {
  const quote = parseQuote(quoteBytes);
  if (options.teeType !== undefined && quote.header.teeType !== options.teeType) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED',
      `DCAP quote is a ${quote.header.teeType.toUpperCase()} quote, but this verifier accepts ${options.teeType.toUpperCase()} quotes only`,
    );
  }

  const chain = parsePemChain(quote.signatureData.pckChainPem, 'pck', 'PCK certificate chain');
  verifyCertificateChain(chain, {
    kind: 'pck',
    label: 'PCK certificate chain',
    length: 3,
    commonNames: [PCK_CERTIFICATE_NAME, (name) => name === PLATFORM_CA_NAME || name === PROCESSOR_CA_NAME, ROOT_CA_NAME],
    trustedRootSpkiSha256: options.trustedRootSpkiSha256 ?? INTEL_SGX_ROOT_CA_SPKI_SHA256,
    now,
  });
  const pckChain = chain as PreparedQuote['pckChain'];
  const pckCa = commonName(pckChain[1].subject) === PLATFORM_CA_NAME ? 'platform' : 'processor';
  return { quote, pckChain, pck: parsePckExtension(pckChain[0]), pckCa };
}

/** Imports a raw P-256 public key (x‖y, 64 bytes). */
function importRawP256(raw: Buffer): KeyObject {
  try {
    return createPublicKey({
      format: 'jwk',
      key: { kty: 'EC', crv: 'P-256', x: raw.subarray(0, 32).toString('base64url'), y: raw.subarray(32, 64).toString('base64url') },
    });
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID', 'DCAP quote attestation key is not a point on P-256', { cause: error });
  }
}

function verifyP256(data: Buffer, signature: Buffer, key: KeyObject): boolean {
  return verifySignature('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
}

/** Checks both CRLs and the revocation of the PCK CA and PCK certificate; returns the checked root CRL. */
async function checkRevocation(prepared: PreparedQuote, collateral: DcapCollateral, now: Date, rootPin: string): Promise<CheckedCrl> {
  const [pckCertificate, pckCaCertificate, root] = prepared.pckChain;
  const rootCrl = await verifyCrl(collateral.rootCaCrl, root, now, 'Intel SGX Root CA CRL');
  if (isRevoked(rootCrl, pckCaCertificate)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_CA_REVOKED', `${commonName(pckCaCertificate.subject)} (serial ${pckCaCertificate.serialNumber}) is revoked by the Intel SGX Root CA CRL`);
  }

  const crlChain = parsePemChain(collateral.pckCrlIssuerChain, 'collateral', 'PCK CRL issuer chain');
  verifyCertificateChain(crlChain, {
    kind: 'collateral',
    label: 'PCK CRL issuer chain',
    length: 2,
    commonNames: [commonName(pckCaCertificate.subject) ?? PLATFORM_CA_NAME, ROOT_CA_NAME],
    trustedRootSpkiSha256: rootPin,
    now,
    leafIsCa: true,
  });
  const crlIssuer = crlChain[0]!;
  if (!pckCertificate.checkIssued(crlIssuer)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_CRL_INVALID', `PCK CRL issuer chain starts at ${commonName(crlIssuer.subject)}, not at the CA that issued the PCK certificate`);
  }
  if (isRevoked(rootCrl, crlIssuer)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_CA_REVOKED', `PCK CRL issuer ${commonName(crlIssuer.subject)} (serial ${crlIssuer.serialNumber}) is revoked by the Intel SGX Root CA CRL`);
  }
  const pckCrl = await verifyCrl(collateral.pckCrl, crlIssuer, now, 'PCK CRL');
  if (isRevoked(pckCrl, pckCertificate)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_PCK_REVOKED', `PCK certificate (serial ${pckCertificate.serialNumber}) is revoked by the PCK CRL`);
  }
  return rootCrl;
}

/** Verifies a TCB signing chain from collateral, including its revocation by the root CRL. */
function verifyTcbSigningChain(pem: string, label: string, now: Date, rootPin: string, rootCrl: CheckedCrl): X509Certificate {
  const chain = parsePemChain(pem, 'collateral', label);
  verifyCertificateChain(chain, { kind: 'collateral', label, length: 2, commonNames: [TCB_SIGNING_NAME, ROOT_CA_NAME], trustedRootSpkiSha256: rootPin, now });
  const signer = chain[0]!;
  if (isRevoked(rootCrl, signer)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_CA_REVOKED', `${label} certificate ${commonName(signer.subject)} (serial ${signer.serialNumber}) is revoked by the Intel SGX Root CA CRL`);
  }
  return signer;
}

/** Checks the QE report signature, the binding of the attestation key, and the quote signature. */
function checkSignatures(prepared: PreparedQuote): void {
  const { quote, pckChain } = prepared;
  const data = quote.signatureData;
  if (!verifyP256(data.qeReportRaw, data.qeReportSignature, pckChain[0].publicKey)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QE_REPORT_SIGNATURE_INVALID', 'QE report signature does not verify with the PCK certificate key');
  }

  const expectedQeReportData = Buffer.concat([createHash('sha256').update(data.attestationKey).update(data.qeAuthData).digest(), Buffer.alloc(32)]);
  if (!timingSafeEqual(expectedQeReportData, data.qeReport.reportData)) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QE_REPORT_DATA_MISMATCH',
      'QE report data is not SHA-256(attestation key ‖ QE authentication data) followed by 32 zero bytes, so the attestation key is not bound to the QE',
    );
  }

  if (!verifyP256(quote.signedRegion, data.signature, importRawP256(data.attestationKey))) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID', 'DCAP quote signature over header and body does not verify with the attestation key');
  }
}

function checkTcbInfoApplies(tcbInfo: TcbInfo, prepared: PreparedQuote): void {
  const teeType = prepared.quote.header.teeType;
  const mismatch = (message: string) => new SealmeshError('SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH', message);
  if (tcbInfo.id !== teeType.toUpperCase()) {
    throw mismatch(`TCB info id ${tcbInfo.id} does not match the quote's TEE type ${teeType.toUpperCase()}`);
  }
  if (!Buffer.from(tcbInfo.fmspc, 'hex').equals(prepared.pck.fmspc)) {
    throw mismatch(`TCB info FMSPC ${tcbInfo.fmspc.toLowerCase()} differs from the PCK certificate's FMSPC ${prepared.pck.fmspc.toString('hex')}`);
  }
  if (!Buffer.from(tcbInfo.pceId, 'hex').equals(prepared.pck.pceId)) {
    throw mismatch(`TCB info PCE id ${tcbInfo.pceId.toLowerCase()} differs from the PCK certificate's PCE id ${prepared.pck.pceId.toString('hex')}`);
  }
}

/** Maps every QE level status other than UpToDate and Revoked to OutOfDate, as the QVL does. */
function qeComponentStatus(status: TcbStatus): TcbStatus {
  return status === 'UpToDate' || status === 'Revoked' ? status : 'OutOfDate';
}

function moduleComponentStatus(level: LevelMatch | undefined): TcbStatus | undefined {
  if (level === undefined) return undefined;
  if (level.status !== 'UpToDate' && level.status !== 'OutOfDate' && level.status !== 'Revoked') {
    throw new SealmeshError('SEALMESH_ERR_DCAP_TCB_INFO_INVALID', `TDX module TCB level status ${level.status} is not UpToDate, OutOfDate or Revoked`);
  }
  return level.status;
}

function buildResult(prepared: PreparedQuote, now: Date, tcbStatus: TcbStatus, advisoryIds: string[]): AttestationResult {
  const { quote, pck } = prepared;
  const body = quote.body;
  const base = {
    provider: quote.header.teeType,
    insecure: false,
    verifiedAt: now.toISOString(),
    debug: body.report.debug,
    reportData: body.report.reportData.toString('hex'),
    tcbStatus,
    advisoryIds,
    dcap: {
      teeType: quote.header.teeType,
      quoteVersion: quote.header.version,
      fmspc: pck.fmspc.toString('hex'),
      pceSvn: pck.tcb.pceSvn,
      cpuSvn: pck.tcb.cpuSvn.toString('hex'),
    },
  };
  if (body.type === 'sgx-enclave-report') {
    return {
      ...base,
      measurements: { mrEnclave: body.report.mrEnclave.toString('hex'), mrSigner: body.report.mrSigner.toString('hex') },
      isvProdId: body.report.isvProdId,
      isvSvn: body.report.isvSvn,
    };
  }
  const report = body.report;
  const measurements: Record<string, string> = {
    mrTd: report.mrTd.toString('hex'),
    rtMr0: report.rtMr[0].toString('hex'),
    rtMr1: report.rtMr[1].toString('hex'),
    rtMr2: report.rtMr[2].toString('hex'),
    rtMr3: report.rtMr[3].toString('hex'),
    mrConfigId: report.mrConfigId.toString('hex'),
    mrOwner: report.mrOwner.toString('hex'),
    mrOwnerConfig: report.mrOwnerConfig.toString('hex'),
    mrSeam: report.mrSeam.toString('hex'),
  };
  if (report.mrServiceTd !== undefined) measurements.mrServiceTd = report.mrServiceTd.toString('hex');
  return { ...base, measurements };
}

/** Verifies a prepared quote against collateral; see `verifyQuote`. */
export async function verifyPreparedQuote(prepared: PreparedQuote, collateral: DcapCollateral, now: Date, options: VerifyQuoteOptions): Promise<DcapVerification> {
  const rootPin = options.trustedRootSpkiSha256 ?? INTEL_SGX_ROOT_CA_SPKI_SHA256;
  const rootCrl = await checkRevocation(prepared, collateral, now, rootPin);
  checkSignatures(prepared);

  const tcbSigner = verifyTcbSigningChain(collateral.tcbInfoIssuerChain, 'TCB info issuer chain', now, rootPin, rootCrl);
  const tcbInfo = verifyTcbInfo(collateral.tcbInfo, collateral.tcbInfoSignature, tcbSigner, now);
  checkTcbInfoApplies(tcbInfo, prepared);

  const body = prepared.quote.body;
  const tdReport = body.type === 'sgx-enclave-report' ? undefined : body.report;
  const platformTcb = matchPlatformTcbLevel(tcbInfo, prepared.pck.tcb, tdReport?.teeTcbSvn);
  // NOTE: TD report 1.5 quotes are not checked for the TDRelaunchAdvised statuses that Intel's QVL derives from TEE_TCB_SVN2; their status is computed as for TD report 1.0.
  const tdxModuleTcb = tdReport === undefined ? undefined : checkTdxModule(tcbInfo, tdReport);

  const qeSigner = verifyTcbSigningChain(collateral.qeIdentityIssuerChain, 'QE identity issuer chain', now, rootPin, rootCrl);
  const qeIdentity = verifyQeIdentity(collateral.qeIdentity, collateral.qeIdentitySignature, qeSigner, now);
  const qeTcb = checkQeIdentity(qeIdentity, prepared.quote.signatureData.qeReport, prepared.quote.header.teeType);

  const withModule = combineTcbStatus(platformTcb.status, moduleComponentStatus(tdxModuleTcb));
  const tcbStatus = combineTcbStatus(withModule, qeComponentStatus(qeTcb.status));
  if (tcbStatus === 'Revoked') {
    let part = 'QE';
    if (platformTcb.status === 'Revoked') part = 'platform';
    else if (tdxModuleTcb?.status === 'Revoked') part = 'TDX module';
    throw new SealmeshError('SEALMESH_ERR_DCAP_TCB_REVOKED', `the ${part} TCB level of this ${prepared.quote.header.teeType.toUpperCase()} quote is Revoked`);
  }

  const actualReportData = body.report.reportData;
  if (options.expectedReportData !== null) {
    const expected = Buffer.from(options.expectedReportData);
    if (expected.length !== actualReportData.length || !timingSafeEqual(expected, actualReportData)) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH', 'DCAP quote report data differs from the expected report data, so the quote is not bound to this enrollment');
    }
  }

  const result = buildResult(prepared, now, tcbStatus, mergeAdvisoryIds(platformTcb, tdxModuleTcb, qeTcb));
  return { result, quote: prepared.quote, pck: prepared.pck, pckCa: prepared.pckCa, platformTcb, tdxModuleTcb, qeTcb, tcbInfo, qeIdentity };
}

/**
 * Verifies a DCAP quote against collateral at time `now`: PCK chain, CRLs and revocation, PCK
 * extension, QE report signature and binding, quote signature, TCB info, TCB level, QE identity
 * and report data. Returns the claims with the combined TCB status, or raises the code of the
 * first failed check; a Revoked result is raised as `SEALMESH_ERR_DCAP_TCB_REVOKED`.
 */
export async function verifyQuote(quote: Uint8Array, collateral: DcapCollateral, now: Date, options: VerifyQuoteOptions): Promise<DcapVerification> {
  const prepared = prepareQuote(quote, now, options);
  return verifyPreparedQuote(prepared, collateral, now, options);
}
