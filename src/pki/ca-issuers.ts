/**
 * Creation of the CA certificates together with their keys: a root and an intermediate, each with
 * a new key pair in the custody.
 */
import { CLOCK_SKEW_SECONDS, INTERMEDIATE_VALIDITY_SECONDS, ROOT_VALIDITY_YEARS, toPem, truncateToSecond } from './ca-types.ts';
import { createIntermediateCertificate, createRootCertificate, rootSubject, type CertificateTiming, type Issuer } from './certificates.ts';
import type { KeyCustody } from './custody.ts';
import { randomSerialNumber } from './keys.ts';

/** What creating a CA certificate needs from the CA. */
export interface IssuerContext {
  custody: KeyCustody;
  trustDomain: string;
  now: () => Date;
}

/** A CA certificate with its key, the key's custody label and the certificate's PEM. */
export interface CreatedIssuer extends Issuer {
  keyLabel: string;
  pem: string;
}

/**
 * Creates a root valid for ROOT_VALIDITY_YEARS with a new key `root-<serial>` in the custody. A
 * root made by a rotation gets a subject of its own (see `rootSubject`).
 */
export async function createRootIssuer(context: IssuerContext, rotated: boolean): Promise<CreatedIssuer> {
  const now = truncateToSecond(context.now());
  const notAfter = new Date(now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + ROOT_VALIDITY_YEARS);
  const serialNumber = randomSerialNumber();
  const keyLabel = `root-${serialNumber}`;
  const key = await context.custody.generate(keyLabel);
  const certificate = await createRootCertificate({
    key,
    trustDomain: context.trustDomain,
    serialNumber,
    notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
    notAfter,
    subject: rootSubject(context.trustDomain, rotated ? serialNumber : undefined),
  });
  return { certificate, key, keyLabel, pem: toPem(certificate) };
}

/**
 * Creates an intermediate signed by `root` with a new key `intermediate-<serial>` in the custody,
 * valid for INTERMEDIATE_VALIDITY_SECONDS but never past the root's notAfter.
 */
export async function createIntermediateIssuer(context: IssuerContext, root: Issuer): Promise<CreatedIssuer & { rootSerial: string }> {
  const now = truncateToSecond(context.now());
  const fullTerm = new Date(now.getTime() + INTERMEDIATE_VALIDITY_SECONDS * 1000);
  const timing: CertificateTiming = {
    serialNumber: randomSerialNumber(),
    notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
    notAfter: fullTerm > root.certificate.notAfter ? root.certificate.notAfter : fullTerm,
  };
  const keyLabel = `intermediate-${timing.serialNumber}`;
  const key = await context.custody.generate(keyLabel);
  const certificate = await createIntermediateCertificate({ ...timing, key, issuer: root, trustDomain: context.trustDomain });
  return { certificate, key, keyLabel, pem: toPem(certificate), rootSerial: root.certificate.serialNumber };
}
