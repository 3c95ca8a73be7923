/**
 * CRL checks for Intel DCAP: the Intel SGX Root CA CRL (revokes PCK CAs and the TCB signing
 * certificate) and the PCK CRL of the PCK Platform or Processor CA (revokes PCK certificates).
 */
import type { X509Certificate } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import { x509 } from '../../pki/x509.ts';
import { commonName } from './chain.ts';

export interface CheckedCrl {
  crl: x509.X509Crl;
  /** Name of the CRL in messages. */
  label: string;
}

function invalid(message: string, cause?: unknown): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_DCAP_CRL_INVALID', message, { cause });
}

/** Accepts a CRL in DER, or in PEM as some caching services serve it. */
function decodeCrl(bytes: Uint8Array, label: string): x509.X509Crl {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buffer.subarray(0, 32).toString('latin1');
  try {
    if (text.startsWith('-----BEGIN X509 CRL-----')) {
      return new x509.X509Crl(buffer.toString('latin1'));
    }
    return new x509.X509Crl(buffer);
  } catch (error) {
    throw invalid(`${label} is not a valid DER or PEM X.509 CRL`, error);
  }
}

/**
 * Parses a CRL and checks that `issuer` issued and signed it and that `now` lies in
 * [thisUpdate, nextUpdate]. A CRL without nextUpdate is rejected, since its freshness is unknown.
 */
export async function verifyCrl(bytes: Uint8Array, issuer: X509Certificate, now: Date, label: string): Promise<CheckedCrl> {
  const crl = decodeCrl(bytes, label);
  const issuerCertificate = new x509.X509Certificate(issuer.raw);
  if (!Buffer.from(crl.issuerName.toArrayBuffer()).equals(Buffer.from(issuerCertificate.subjectName.toArrayBuffer()))) {
    throw invalid(`${label} was issued by ${JSON.stringify(crl.issuer)}, not by ${JSON.stringify(commonName(issuer.subject))}`);
  }
  let signatureValid: boolean;
  try {
    signatureValid = await crl.verify({ publicKey: issuerCertificate });
  } catch (error) {
    throw invalid(`${label} signature could not be checked`, error);
  }
  if (!signatureValid) {
    throw invalid(`${label} signature does not verify with the key of ${JSON.stringify(commonName(issuer.subject))}`);
  }
  const nextUpdate = crl.nextUpdate;
  if (nextUpdate === undefined) {
    throw invalid(`${label} has no nextUpdate`);
  }
  if (now < crl.thisUpdate || now > nextUpdate) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_CRL_NOT_VALID_AT_TIME',
      `${label} is valid from ${crl.thisUpdate.toISOString()} to ${nextUpdate.toISOString()}, which does not include the verification time ${now.toISOString()}`,
    );
  }
  return { crl, label };
}

/** Returns true when the CRL lists the certificate's serial number. */
export function isRevoked(checked: CheckedCrl, certificate: X509Certificate): boolean {
  return checked.crl.findRevoked(new x509.X509Certificate(certificate.raw)) !== null;
}
