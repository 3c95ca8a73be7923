import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey, generateKeyPairSync, sign, type webcrypto } from 'node:crypto';
import { test } from 'node:test';
import { createRootCertificate } from '../src/pki/certificates.ts';
import type { CaSigningKey } from '../src/pki/custody.ts';
import { sequenceElements } from '../src/pki/der.ts';
import { randomSerialNumber } from '../src/pki/keys.ts';
import { signLeafCertificate } from '../src/pki/leaf-certificate.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';

/** Creates an in-process P-256 signing key that signs as the custodies do: r || s over SHA-256. */
function processKey(label: string): CaSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    label,
    spki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
    sign: async (data) => new Uint8Array(sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })),
  };
}

async function issuer(): Promise<{ certificate: x509.X509Certificate; key: CaSigningKey }> {
  const key = processKey('root');
  const certificate = await createRootCertificate({
    key,
    trustDomain: 'example.sealmesh',
    serialNumber: randomSerialNumber(),
    notBefore: new Date('2030-01-01T00:00:00Z'),
    notAfter: new Date('2060-01-01T00:00:00Z'),
  });
  return { certificate, key };
}

/** The same leaf built by @peculiar/x509's generator, the reference for the DER encoder. */
async function referenceLeaf(
  ca: { certificate: x509.X509Certificate; key: CaSigningKey },
  fields: { serialNumber: string; notBefore: Date; notAfter: Date; spkiDer: Uint8Array; subject: string; names: x509.JsonGeneralNames },
): Promise<Uint8Array> {
  const subjectKeyId = await x509.SubjectKeyIdentifierExtension.create(new Uint8Array(fields.spkiDer).buffer, false, nodeCrypto);
  const keyId = ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId as string;
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signer = await nodeCrypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: fields.serialNumber,
    subject: fields.subject,
    issuer: ca.certificate.subjectName,
    notBefore: fields.notBefore,
    notAfter: fields.notAfter,
    publicKey: new Uint8Array(fields.spkiDer).buffer,
    signingKey: signer as webcrypto.CryptoKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      subjectKeyId,
      new x509.AuthorityKeyIdentifierExtension(keyId),
      new x509.SubjectAlternativeNameExtension(fields.names),
    ],
  });
  return new Uint8Array(certificate.rawData);
}

const CASES: Array<{ name: string; serialNumber: string; notAfter: Date; names: x509.JsonGeneralNames }> = [
  { name: 'SVID', serialNumber: randomSerialNumber(), notAfter: new Date('2030-01-02T00:00:00Z'), names: [{ type: 'url', value: 'spiffe://example.sealmesh/ns/default/sa/web' }] },
  { name: 'serial with high bit', serialNumber: `ff${randomSerialNumber().slice(2)}`, notAfter: new Date('2030-01-02T00:00:00Z'), names: [{ type: 'url', value: 'spiffe://example.sealmesh/ns/a/sa/b' }] },
  { name: 'serial with low first byte', serialNumber: `01${randomSerialNumber().slice(2)}`, notAfter: new Date('2030-01-02T00:00:00Z'), names: [{ type: 'url', value: 'spiffe://example.sealmesh/ns/a/sa/b' }] },
  {
    name: 'server names',
    serialNumber: randomSerialNumber(),
    notAfter: new Date('2030-01-02T00:00:00Z'),
    names: [
      { type: 'dns', value: 'localhost' },
      { type: 'ip', value: '127.0.0.1' },
      { type: 'ip', value: '::1' },
      { type: 'ip', value: 'fe80::1:2' },
      { type: 'url', value: 'spiffe://example.sealmesh' },
    ],
  },
  { name: 'GeneralizedTime after 2049', serialNumber: randomSerialNumber(), notAfter: new Date('2051-06-30T23:59:59Z'), names: [{ type: 'url', value: 'spiffe://example.sealmesh/ns/default/sa/web' }] },
];

for (const leafCase of CASES) {
  test(`leaf DER matches generator: ${leafCase.name}`, async () => {
    const ca = await issuer();
    const leafKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    const spkiDer = new Uint8Array(leafKey.export({ format: 'der', type: 'spki' }));
    const fields = { serialNumber: leafCase.serialNumber, notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: leafCase.notAfter, spkiDer, subject: 'O=sealmesh, CN=web', names: leafCase.names };

    const leaf = await signLeafCertificate({ ...fields, issuer: ca });
    const reference = await referenceLeaf(ca, fields);
    assert.deepEqual(Buffer.from(sequenceElements(leaf.der)[0] as Uint8Array), Buffer.from(sequenceElements(reference)[0] as Uint8Array));

    const parsed = new X509Certificate(leaf.pem);
    const root = new X509Certificate(ca.certificate.toString('pem'));
    assert.equal(parsed.verify(createPublicKey(root.publicKey.export({ format: 'pem', type: 'spki' }))), true);
    assert.equal(parsed.checkIssued(root), true);
    assert.equal(parsed.serialNumber.toLowerCase(), leafCase.serialNumber);
    assert.equal(leaf.serialNumber, new x509.X509Certificate(leaf.der).serialNumber);
    assert.deepEqual(Buffer.from(parsed.raw), Buffer.from(leaf.der));
  });
}

test('leaf DER encodes IPv4-mapped IPv6 address', async () => {
  // @peculiar/x509 2.2.0 encodes the dotted tail of such an address differently, so this case is
  // checked against OpenSSL's reading of the certificate instead of against the generator.
  const ca = await issuer();
  const spkiDer = new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }));
  const leaf = await signLeafCertificate({
    serialNumber: randomSerialNumber(),
    notBefore: new Date('2030-01-01T00:00:00Z'),
    notAfter: new Date('2030-01-02T00:00:00Z'),
    spkiDer,
    subject: 'O=sealmesh, CN=sealmesh server',
    names: [{ type: 'ip', value: '::ffff:192.0.2.1' }, { type: 'ip', value: '2001:db8::8:800:200c:417a' }],
    issuer: ca,
  });
  assert.equal(new X509Certificate(leaf.pem).subjectAltName, 'IP Address:0:0:0:0:0:FFFF:C000:201, IP Address:2001:DB8:0:0:8:800:200C:417A');
});
