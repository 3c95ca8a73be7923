/**
 * Certificate profiles of the sealmesh CA: the self-signed root, the intermediate that signs
 * leaves, and leaf certificates. Each function fixes the extensions of one profile, so the
 * profiles can be read and reviewed in one place.
 *
 * Every certificate carries a critical keyUsage (SPIFFE X509-SVID §4.3) and a critical
 * basicConstraints (X509-SVID §4.1, RFC 5280 §4.2.1.9), and the CA certificates carry the trust
 * domain's SPIFFE ID `spiffe://<trust-domain>` with no path (X509-SVID §3.2).
 */
import { isIP } from 'node:net';
import { SealmeshError } from '../errors/index.ts';
import { parseSpiffeId } from '../spiffe/index.ts';
import type { CaSigningKey } from './custody.ts';
import { ECDSA_SHA256, exportSpki, toArrayBuffer } from './keys.ts';
import { nodeCrypto, x509 } from './x509.ts';

/** A CA certificate together with the key that signs under it. */
export interface Issuer {
  certificate: x509.X509Certificate;
  key: CaSigningKey;
}

/** Validity and serial number shared by every profile. */
export interface CertificateTiming {
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

/** Creates the self-signed root: CA with no path length limit, keyCertSign and cRLSign. */
export async function createRootCertificate(
  options: CertificateTiming & { key: CaSigningKey; trustDomain: string },
): Promise<x509.X509Certificate> {
  const spkiDer = await exportSpki(options.key.publicKey, options.key.crypto);
  const name = `O=sealmesh, CN=sealmesh root CA ${options.trustDomain}`;
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: options.serialNumber,
      subject: name,
      issuer: name,
      notBefore: options.notBefore,
      notAfter: options.notAfter,
      publicKey: toArrayBuffer(spkiDer),
      signingKey: options.key.privateKey,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await subjectKeyIdentifier(spkiDer),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${options.trustDomain}` }]),
      ],
    },
    options.key.crypto,
  );
}

/**
 * Creates an intermediate signed by `issuer`: CA with pathLenConstraint 0, so it can sign leaves
 * but no further CAs.
 */
export async function createIntermediateCertificate(
  options: CertificateTiming & { key: CaSigningKey; issuer: Issuer; trustDomain: string },
): Promise<x509.X509Certificate> {
  const spkiDer = await exportSpki(options.key.publicKey, options.key.crypto);
  return signCertificate(options.issuer, {
    ...options,
    spkiDer,
    subject: `O=sealmesh, CN=sealmesh intermediate CA ${options.trustDomain}`,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await subjectKeyIdentifier(spkiDer),
      authorityKeyIdentifier(options.issuer),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${options.trustDomain}` }]),
    ],
  });
}

/**
 * Creates a leaf: not a CA, digitalSignature only, and serverAuth plus clientAuth so the same
 * certificate serves both ends of an mTLS connection (X509-SVID §4.4). `names` becomes the whole
 * subjectAltName. An SVID passes exactly one URI there.
 */
export async function createLeafCertificate(
  options: CertificateTiming & { spkiDer: Uint8Array; subject: string; names: x509.JsonGeneralNames; issuer: Issuer },
): Promise<x509.X509Certificate> {
  return signCertificate(options.issuer, {
    ...options,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await subjectKeyIdentifier(options.spkiDer),
      authorityKeyIdentifier(options.issuer),
      new x509.SubjectAlternativeNameExtension(options.names),
    ],
  });
}

/**
 * Returns the subjectAltName entries of a server certificate: each DNS name, each IP address and
 * the optional SPIFFE ID `uri`, which must be in `trustDomain`.
 * Throws SEALMESH_ERR_INVALID_ARGUMENT for an invalid entry or an empty list, and
 * SEALMESH_ERR_SPIFFE_ID_INVALID when `uri` is not a sealmesh SPIFFE ID.
 */
export function serverCertificateNames(
  options: { dnsNames: string[]; ipAddresses: string[]; uri?: string },
  trustDomain: string,
): x509.JsonGeneralNames {
  const names: x509.JsonGeneralNames = [];
  for (const dnsName of options.dnsNames) {
    if (!isDnsName(dnsName)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `DNS name ${JSON.stringify(dnsName)} is invalid: use a host name without wildcards`);
    }
    names.push({ type: 'dns', value: dnsName });
  }
  for (const address of options.ipAddresses) {
    if (isIP(address) === 0) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `IP address ${JSON.stringify(address)} is invalid: use an IPv4 or IPv6 address`);
    }
    names.push({ type: 'ip', value: address });
  }
  if (options.uri !== undefined) {
    const id = parseSpiffeId(options.uri);
    if (id.trustDomain !== trustDomain) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `server SPIFFE ID ${options.uri} is outside trust domain ${trustDomain}: use a SPIFFE ID of this mesh`);
    }
    names.push({ type: 'url', value: options.uri });
  }
  if (names.length === 0) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'server certificate has no names: pass at least one DNS name, IP address or URI');
  }
  return names;
}

/** Accepts host names of letters, digits, '-' and '_' in labels of 1 to 63 characters, at most 253 in all. */
function isDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label));
}

async function signCertificate(
  issuer: Issuer,
  options: CertificateTiming & { spkiDer: Uint8Array; subject: string; extensions: x509.Extension[] },
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: options.serialNumber,
      subject: options.subject,
      // The issuer name is copied from the issuer certificate so that it matches byte for byte.
      issuer: issuer.certificate.subjectName,
      notBefore: options.notBefore,
      notAfter: options.notAfter,
      publicKey: toArrayBuffer(options.spkiDer),
      signingKey: issuer.key.privateKey,
      signingAlgorithm: ECDSA_SHA256,
      extensions: options.extensions,
    },
    issuer.key.crypto,
  );
}

/** RFC 5280 §4.2.1.2 method 1: the SHA-1 hash of the subjectPublicKey bits. */
async function subjectKeyIdentifier(spkiDer: Uint8Array): Promise<x509.SubjectKeyIdentifierExtension> {
  return x509.SubjectKeyIdentifierExtension.create(toArrayBuffer(spkiDer), false, nodeCrypto);
}

/** RFC 5280 §4.2.1.1: the authority key identifier repeats the issuer's subject key identifier. */
function authorityKeyIdentifier(issuer: Issuer): x509.AuthorityKeyIdentifierExtension {
  const keyId = issuer.certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  if (keyId === undefined) throw new Error('issuer certificate has no subjectKeyIdentifier extension');
  return new x509.AuthorityKeyIdentifierExtension(keyId);
}
