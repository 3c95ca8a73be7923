/**
 * Certificate profiles of the sealmesh CA: the self-signed root and the intermediate that signs
 * leaves. Each function fixes the extensions of one profile. The leaf profile is in
 * leaf-certificate.ts, which encodes it without the generator because it is on the hot path.
 *
 * Every certificate carries a critical keyUsage (SPIFFE X509-SVID §4.3) and a critical
 * basicConstraints (X509-SVID §4.1, RFC 5280 §4.2.1.9), and the CA certificates carry the trust
 * domain's SPIFFE ID `spiffe://<trust-domain>` with no path (X509-SVID §3.2).
 */
import type { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { SealmeshError } from '../errors/index.ts';
import { parseSpiffeId } from '../spiffe/index.ts';
import type { CaSigningKey } from './custody.ts';
import { ECDSA_SHA256, P256_KEY_ALGORITHM, toArrayBuffer } from './keys.ts';
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

/**
 * Returns the subject name of a root. The first root of a cluster keeps the plain name; a root made
 * by a rotation adds the first 8 hex digits of its serial number, so that it never shares a name
 * with the root it replaces. Path building in OpenSSL matches issuers by name first, and the
 * cross-signed certificate would otherwise look self-issued.
 */
export function rootSubject(trustDomain: string, rotatedSerial?: string): string {
  const base = `O=sealmesh, CN=sealmesh root CA ${trustDomain}`;
  return rotatedSerial === undefined ? base : `${base} ${rotatedSerial.slice(0, 8)}`;
}

/** Creates the self-signed root: CA with no path length limit, keyCertSign and cRLSign. */
export async function createRootCertificate(
  options: CertificateTiming & { key: CaSigningKey; trustDomain: string; subject?: string },
): Promise<x509.X509Certificate> {
  const spkiDer = options.key.spki;
  const name = options.subject ?? rootSubject(options.trustDomain);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: options.serialNumber,
      subject: name,
      issuer: name,
      notBefore: options.notBefore,
      notAfter: options.notAfter,
      publicKey: toArrayBuffer(spkiDer),
      signingKey: SIGNING_KEY_HANDLE,
      signingAlgorithm: ECDSA_SHA256,
      extensions: rootExtensions(spkiDer, options.trustDomain, await subjectKeyIdentifier(spkiDer)),
    },
    signingProvider(options.key),
  );
}

/**
 * Creates the cross-signed form of `root`: the same subject, public key and CA extensions, issued
 * and signed by `issuer`, the root it replaces. A peer that still trusts only the old root builds
 * leaf → new intermediate → this certificate → old root, so SVIDs under the new root verify there
 * during a rotation (RFC 4158 §2.3 calls this a cross-certificate).
 */
export async function createCrossCertificate(
  options: CertificateTiming & { root: x509.X509Certificate; issuer: Issuer; trustDomain: string },
): Promise<x509.X509Certificate> {
  const spkiDer = new Uint8Array(options.root.publicKey.rawData);
  const subjectKeyId = options.root.getExtension(x509.SubjectKeyIdentifierExtension);
  if (subjectKeyId === null) throw new Error('root certificate has no subjectKeyIdentifier extension');
  return signCertificate(options.issuer, {
    ...options,
    spkiDer,
    subject: options.root.subjectName,
    extensions: [...rootExtensions(spkiDer, options.trustDomain, subjectKeyId), authorityKeyIdentifier(options.issuer)],
  });
}

function rootExtensions(spkiDer: Uint8Array, trustDomain: string, subjectKeyId: x509.SubjectKeyIdentifierExtension): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    subjectKeyId,
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
  ];
}

/**
 * Creates an intermediate signed by `issuer`: CA with pathLenConstraint 0, so it can sign leaves
 * but no further CAs.
 */
export async function createIntermediateCertificate(
  options: CertificateTiming & { key: CaSigningKey; issuer: Issuer; trustDomain: string },
): Promise<x509.X509Certificate> {
  const spkiDer = options.key.spki;
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
    // A zone ID (`fe80::1%eth0`) names an interface of one host and has no form in a certificate.
    if (isIP(address) === 0 || address.includes('%')) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `IP address ${JSON.stringify(address)} is invalid: use an IPv4 or IPv6 address without a zone ID`);
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
  options: CertificateTiming & { spkiDer: Uint8Array; subject: string | x509.Name; extensions: x509.Extension[] },
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
      signingKey: SIGNING_KEY_HANDLE,
      signingAlgorithm: ECDSA_SHA256,
      extensions: options.extensions,
    },
    signingProvider(issuer.key),
  );
}

/**
 * Stands for the CA private key in @peculiar/x509's generator, which reads only its `algorithm`
 * (to choose ecdsa-with-SHA256) and passes it back to `subtle.sign` of the provider below. It holds
 * no key material.
 */
const SIGNING_KEY_HANDLE = {
  type: 'private',
  extractable: false,
  algorithm: P256_KEY_ALGORITHM,
  usages: ['sign'],
} as unknown as webcrypto.CryptoKey;

/**
 * Returns the WebCrypto provider that the certificate generator signs through. Only `subtle.sign`
 * is used with it (checked against @peculiar/x509 2.2.0: serial numbers and public keys are passed
 * as bytes), and it hands the to-be-signed bytes to the custody's key. The generator turns the
 * r || s result into the DER ECDSA-Sig-Value that X.509 requires (RFC 5758 §3.2).
 */
function signingProvider(key: CaSigningKey): webcrypto.Crypto {
  const subtle = {
    sign: async (_algorithm: unknown, _key: unknown, data: ArrayBuffer | ArrayBufferView): Promise<ArrayBuffer> => {
      const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
      return toArrayBuffer(await key.sign(bytes));
    },
  };
  return { subtle, getRandomValues: nodeCrypto.getRandomValues.bind(nodeCrypto) } as unknown as webcrypto.Crypto;
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
