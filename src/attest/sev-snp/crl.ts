/**
 * Revocation of AMD SEV-SNP signing keys. Each ARK issues a CRL (served by AMD's Key Distribution
 * Service at `/vcek/v1/<product>/crl`, and at `/vlek/v1/<product>/crl` for the VLEK chain) that
 * lists the ASKs and ASVKs AMD has revoked. It is signed with RSASSA-PSS SHA-384 like the
 * certificates.
 */
import { constants, verify as verifySignature } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList } from '@peculiar/asn1-x509';
import { SealmeshError } from '../../errors/index.ts';
import { AMD_PSS_SALT_LENGTH, parseAmdCertificate, pssSha384Problem, type AmdCertificate } from './certificates.ts';
import { DerError, encodingOf, readChildren, readSingleElement } from './der.ts';
import type { SnpProductLine } from './report.ts';

/** Source of the ARK's CRL, which `SevSnpVerifier` consults when revocation checking is enabled. */
export interface SnpCrlSource {
  /** Returns the DER CRL of the `productLine` ARK for the chain that issues `signingKey` certificates. */
  crl(productLine: SnpProductLine, signingKey: 'vcek' | 'vlek', now: Date): Promise<Uint8Array>;
}

/** Largest CRL accepted, in bytes. AMD's CRLs list a handful of keys and take about 1 KiB. */
export const MAX_AMD_CRL_BYTES = 256 * 1024;

/**
 * Checks that the certificates under an ARK are not revoked by its CRL at `now`. The ARK must
 * already be trusted (pinned and self-signed), as `SevSnpVerifier` establishes before it calls this.
 *
 * Throws SEALMESH_ERR_SNP_CRL_INVALID when the CRL is not DER, is larger than MAX_AMD_CRL_BYTES,
 * or is not signed by the ARK with RSASSA-PSS SHA-384 and salt 48. The same code rejects a CRL
 * with a critical extension, because AMD defines none and RFC 5280 §5.2 requires rejecting unknown
 * ones, and a CRL whose thisUpdate is after `now` or whose nextUpdate is before it. Throws
 * SEALMESH_ERR_SNP_CERTIFICATE_REVOKED when it lists the serial number of a certificate in
 * `revocable`.
 */
export function checkAmdCrl(crlDer: Uint8Array, ark: AmdCertificate, revocable: readonly AmdCertificate[], now: Date): void {
  const fail = (detail: string, cause?: unknown): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_SNP_CRL_INVALID', `AMD CRL ${detail}`, cause === undefined ? undefined : { cause });
  if (crlDer.length > MAX_AMD_CRL_BYTES) {
    throw fail(`is ${crlDer.length} bytes, above the maximum of ${MAX_AMD_CRL_BYTES}`);
  }

  let tbs: Uint8Array;
  let tbsSignatureAlgorithm: Uint8Array;
  let issuerDer: Uint8Array;
  let outerSignatureAlgorithm: Uint8Array;
  let crl: CertificateList;
  try {
    const outer = readSingleElement(crlDer);
    const parts = readChildren(crlDer, outer);
    if (outer.tag !== 0x30 || parts.length !== 3 || parts[0]!.tag !== 0x30) {
      throw new DerError('is not a SEQUENCE of TBSCertList, signatureAlgorithm and signatureValue');
    }
    tbs = encodingOf(crlDer, parts[0]!);
    outerSignatureAlgorithm = encodingOf(crlDer, parts[1]!);
    // TBSCertList: version (optional INTEGER), signature, issuer, thisUpdate, ...
    const fields = readChildren(crlDer, parts[0]!);
    const first = fields[0]?.tag === 0x02 ? 1 : 0;
    const signatureField = fields[first];
    const issuerField = fields[first + 1];
    if (signatureField === undefined || issuerField === undefined) {
      throw new DerError('has a truncated TBSCertList');
    }
    tbsSignatureAlgorithm = encodingOf(crlDer, signatureField);
    issuerDer = encodingOf(crlDer, issuerField);
    crl = AsnConvert.parse(crlDer, CertificateList);
  } catch (error) {
    throw fail(`is not a valid DER CertificateList: ${(error as Error).message}`, error);
  }

  if (!Buffer.from(outerSignatureAlgorithm).equals(tbsSignatureAlgorithm)) {
    throw fail('names different algorithms in signatureAlgorithm and in the TBSCertList signature field');
  }
  const problem = pssSha384Problem(crl.signatureAlgorithm);
  if (problem !== undefined) {
    throw fail(`${problem}, but AMD signs CRLs with RSASSA-PSS, SHA-384 and a 48-byte salt`);
  }
  if (!Buffer.from(issuerDer).equals(ark.subjectDer)) {
    throw fail('is not issued by the ARK: its issuer name differs from the ARK subject name');
  }
  const signed = verifySignature(
    'sha384',
    tbs,
    { key: ark.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: AMD_PSS_SALT_LENGTH },
    new Uint8Array(crl.signature),
  );
  if (!signed) {
    throw fail('signature does not verify with the ARK');
  }

  const critical = (crl.tbsCertList.crlExtensions ?? []).find((extension) => extension.critical);
  if (critical !== undefined) {
    throw fail(`marks the extension ${critical.extnID} critical`);
  }
  const thisUpdate = crl.tbsCertList.thisUpdate.getTime();
  const nextUpdate = crl.tbsCertList.nextUpdate?.getTime();
  if (now.getTime() < thisUpdate.getTime()) {
    throw fail(`is not valid before its thisUpdate ${thisUpdate.toISOString()}, and verification time is ${now.toISOString()}`);
  }
  if (nextUpdate === undefined || now.getTime() > nextUpdate.getTime()) {
    throw fail(`is stale: its nextUpdate is ${nextUpdate?.toISOString() ?? 'absent'} and verification time is ${now.toISOString()}; fetch a current CRL`);
  }

  const revoked = new Set((crl.tbsCertList.revokedCertificates ?? []).map((entry) => serialKey(new Uint8Array(entry.userCertificate))));
  for (const certificate of revocable) {
    if (revoked.has(serialKey(certificate.serialNumber))) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_CERTIFICATE_REVOKED',
        `${certificate.role} certificate with serial number ${serialKey(certificate.serialNumber)} is revoked by the ${ark.role} CRL`,
      );
    }
  }
}

/**
 * Checks AMD certificates, given as DER, against the ARK's CRL at `now`; see `checkAmdCrl`. The
 * caller must already have verified the chain and the ARK pin, as `SevSnpVerifier` does.
 */
export function checkSnpRevocation(crlDer: Uint8Array, certificates: { ark: Uint8Array; ask: Uint8Array; vcek?: Uint8Array }, now: Date): void {
  const ark = parseAmdCertificate(certificates.ark, 'ARK');
  const revocable = [parseAmdCertificate(certificates.ask, 'ASK')];
  if (certificates.vcek !== undefined) {
    revocable.push(parseAmdCertificate(certificates.vcek, 'VCEK'));
  }
  checkAmdCrl(crlDer, ark, revocable, now);
}

// Serial numbers compared as unsigned hex without leading zero bytes, because DER adds a zero byte
// before a serial whose top bit is set.
function serialKey(serial: Uint8Array): string {
  let start = 0;
  while (start < serial.length - 1 && serial[start] === 0) {
    start += 1;
  }
  return Buffer.from(serial.subarray(start)).toString('hex');
}
