import assert from 'node:assert/strict';
import type { webcrypto } from 'node:crypto';
import { test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { generateCsr, generateKeyPair, MAX_CSR_BYTES, validateCsr } from '../src/pki/index.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';
import type { SpiffeId } from '../src/spiffe/index.ts';

const entitled: SpiffeId = { trustDomain: 'example.sealmesh', namespace: 'default', service: 'web' };
const entitledUri = 'spiffe://example.sealmesh/ns/default/svc/web';

type KeyPair = webcrypto.CryptoKeyPair;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' };
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' };

async function keyPair(algorithm: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams | webcrypto.Algorithm): Promise<KeyPair> {
  return (await nodeCrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as KeyPair;
}

/** Builds a PEM CSR with the given key, signature algorithm and requested extensions. */
async function buildCsr(options: {
  keys?: KeyPair;
  signingAlgorithm?: webcrypto.Algorithm | webcrypto.EcdsaParams;
  extensions?: x509.Extension[];
}): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'CN=web',
      keys: options.keys ?? (await keyPair(EC_P256)),
      signingAlgorithm: options.signingAlgorithm ?? ECDSA_SHA256,
      extensions: options.extensions ?? [],
    },
    nodeCrypto,
  );
  return csr.toString('pem');
}

function san(names: x509.JsonGeneralNames): x509.SubjectAlternativeNameExtension {
  return new x509.SubjectAlternativeNameExtension(names);
}

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function pemOf(label: string, der: Uint8Array): string {
  const lines = Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

async function assertRejects(csrPem: string, code: ErrorCode, identity: SpiffeId = entitled): Promise<void> {
  await assert.rejects(validateCsr(csrPem, identity), (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

test('valid CSR returns the public key', async () => {
  const keys = await generateKeyPair();
  const csrPem = await generateCsr(entitledUri, keys);

  const result = await validateCsr(csrPem, entitled);

  const expected = Buffer.from(await nodeCrypto.subtle.exportKey('spki', keys.publicKey));
  assert.ok(expected.equals(Buffer.from(result.spkiDer)), 'spkiDer is the CSR key');
  assert.equal(result.publicKey.type, 'public');
  assert.equal(result.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.equal(result.spiffeId, entitledUri);
});

test('workload CSR decodes as PKCS#10', async () => {
  const keys = await generateKeyPair();
  const csr = new x509.Pkcs10CertificateRequest(await generateCsr(entitledUri, keys));

  assert.equal(csr.subject, 'O=sealmesh, CN=web');
  assert.equal((csr.signatureAlgorithm as { name?: string }).name, 'ECDSA');
  assert.ok(await csr.verify(), 'self-signature verifies');
  const extension = csr.extensions.find((entry) => entry.type === '2.5.29.17');
  assert.ok(extension !== undefined, 'CSR requests a subjectAltName');
  assert.deepEqual(new x509.SubjectAlternativeNameExtension(extension.rawData).names.toJSON(), [{ type: 'url', value: entitledUri }]);
  const expected = Buffer.from(await nodeCrypto.subtle.exportKey('spki', keys.publicKey));
  assert.ok(expected.equals(Buffer.from(csr.publicKey.rawData)), 'CSR carries the public key');
});

test('CSR with non-CA basicConstraints is accepted', async () => {
  const csrPem = await buildCsr({ extensions: [san([{ type: 'url', value: entitledUri }]), new x509.BasicConstraintsExtension(false)] });

  await validateCsr(csrPem, entitled);
});

test('CSR signed with ECDSA SHA-384 is accepted', async () => {
  const csrPem = await buildCsr({
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams,
    extensions: [san([{ type: 'url', value: entitledUri }])],
  });

  await validateCsr(csrPem, entitled);
});

const rejectionCases: { name: string; code: ErrorCode; csr: () => Promise<string>; identity?: SpiffeId }[] = [
  {
    name: 'oversized CSR',
    code: 'SEALMESH_ERR_CSR_TOO_LARGE',
    csr: async () => (await generateCsr(entitledUri, await generateKeyPair())) + ' '.repeat(MAX_CSR_BYTES),
  },
  { name: 'garbage text', code: 'SEALMESH_ERR_CSR_MALFORMED', csr: async () => 'this is not a certificate request' },
  { name: 'empty text', code: 'SEALMESH_ERR_CSR_MALFORMED', csr: async () => '' },
  {
    name: 'PEM with wrong label',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => pemOf('CERTIFICATE', derOf(await generateCsr(entitledUri, await generateKeyPair()))),
  },
  {
    name: 'PEM body that is not base64',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => '-----BEGIN CERTIFICATE REQUEST-----\n%%%%\n-----END CERTIFICATE REQUEST-----\n',
  },
  {
    name: 'PEM with non-PKCS#10 DER',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => pemOf('CERTIFICATE REQUEST', new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])),
  },
  {
    name: 'bytes appended after the DER',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => pemOf('CERTIFICATE REQUEST', Buffer.concat([derOf(await generateCsr(entitledUri, await generateKeyPair())), Buffer.from([0, 0])])),
  },
  {
    name: 'two PEM blocks',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => (await generateCsr(entitledUri, await generateKeyPair())) + '\n' + (await generateCsr(entitledUri, await generateKeyPair())),
  },
  {
    name: 'RSA key',
    code: 'SEALMESH_ERR_CSR_UNSUPPORTED_KEY',
    csr: async () =>
      buildCsr({
        keys: await keyPair({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }),
        signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
        extensions: [san([{ type: 'url', value: entitledUri }])],
      }),
  },
  {
    name: 'P-384 key',
    code: 'SEALMESH_ERR_CSR_UNSUPPORTED_KEY',
    csr: async () =>
      buildCsr({
        keys: await keyPair({ name: 'ECDSA', namedCurve: 'P-384' }),
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams,
        extensions: [san([{ type: 'url', value: entitledUri }])],
      }),
  },
  {
    name: 'Ed25519 key',
    code: 'SEALMESH_ERR_CSR_UNSUPPORTED_KEY',
    csr: async () =>
      buildCsr({ keys: await keyPair({ name: 'Ed25519' }), signingAlgorithm: { name: 'Ed25519' }, extensions: [san([{ type: 'url', value: entitledUri }])] }),
  },
  {
    name: 'tampered signature',
    code: 'SEALMESH_ERR_CSR_BAD_SIGNATURE',
    csr: async () => {
      const der = derOf(await generateCsr(entitledUri, await generateKeyPair()));
      // The DER ends with the ECDSA signature's s value, so flipping the last byte keeps the
      // structure intact and changes only the signature.
      der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
      return pemOf('CERTIFICATE REQUEST', der);
    },
  },
  {
    name: 'signature by another key',
    code: 'SEALMESH_ERR_CSR_BAD_SIGNATURE',
    csr: async () => {
      const signer = await keyPair(EC_P256);
      const claimed = await keyPair(EC_P256);
      return buildCsr({ keys: { publicKey: claimed.publicKey, privateKey: signer.privateKey }, extensions: [san([{ type: 'url', value: entitledUri }])] });
    },
  },
  {
    name: 'CA basicConstraints',
    code: 'SEALMESH_ERR_CSR_CA_REQUESTED',
    csr: async () => buildCsr({ extensions: [san([{ type: 'url', value: entitledUri }]), new x509.BasicConstraintsExtension(true, 0, true)] }),
  },
  { name: 'no SAN extension', code: 'SEALMESH_ERR_CSR_SAN_INVALID', csr: async () => buildCsr({}) },
  { name: 'DNS SAN', code: 'SEALMESH_ERR_CSR_SAN_INVALID', csr: async () => buildCsr({ extensions: [san([{ type: 'dns', value: 'web.example.com' }])] }) },
  { name: 'IP SAN', code: 'SEALMESH_ERR_CSR_SAN_INVALID', csr: async () => buildCsr({ extensions: [san([{ type: 'ip', value: '127.0.0.1' }])] }) },
  { name: 'email SAN', code: 'SEALMESH_ERR_CSR_SAN_INVALID', csr: async () => buildCsr({ extensions: [san([{ type: 'email', value: 'web@example.com' }])] }) },
  { name: 'otherName SAN', code: 'SEALMESH_ERR_CSR_SAN_INVALID', csr: async () => buildCsr({ extensions: [san([{ type: 'upn', value: 'web@example.com' }])] }) },
  {
    name: 'two URI SANs',
    code: 'SEALMESH_ERR_CSR_SAN_INVALID',
    csr: async () =>
      buildCsr({
        extensions: [
          san([
            { type: 'url', value: entitledUri },
            { type: 'url', value: 'spiffe://example.sealmesh/ns/default/svc/db' },
          ]),
        ],
      }),
  },
  {
    name: 'URI and DNS SANs',
    code: 'SEALMESH_ERR_CSR_SAN_INVALID',
    csr: async () =>
      buildCsr({
        extensions: [
          san([
            { type: 'url', value: entitledUri },
            { type: 'dns', value: 'web.example.com' },
          ]),
        ],
      }),
  },
  {
    name: 'non-SPIFFE URI',
    code: 'SEALMESH_ERR_CSR_SAN_INVALID',
    csr: async () => buildCsr({ extensions: [san([{ type: 'url', value: 'https://example.sealmesh/ns/default/svc/web' }])] }),
  },
  {
    name: 'SPIFFE URI without the sealmesh path',
    code: 'SEALMESH_ERR_CSR_SAN_INVALID',
    csr: async () => buildCsr({ extensions: [san([{ type: 'url', value: 'spiffe://example.sealmesh/web' }])] }),
  },
  {
    name: 'trust-domain SPIFFE ID',
    code: 'SEALMESH_ERR_CSR_SAN_INVALID',
    csr: async () => buildCsr({ extensions: [san([{ type: 'url', value: 'spiffe://example.sealmesh' }])] }),
  },
  {
    name: 'SAN extension repeated',
    code: 'SEALMESH_ERR_CSR_MALFORMED',
    csr: async () => buildCsr({ extensions: [san([{ type: 'url', value: entitledUri }]), san([{ type: 'url', value: entitledUri }])] }),
  },
  {
    name: 'wrong service',
    code: 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH',
    csr: async () => generateCsr('spiffe://example.sealmesh/ns/default/svc/db', await generateKeyPair()),
  },
  {
    name: 'wrong namespace',
    code: 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH',
    csr: async () => generateCsr('spiffe://example.sealmesh/ns/payments/svc/web', await generateKeyPair()),
  },
  {
    name: 'wrong trust domain',
    code: 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH',
    csr: async () => generateCsr('spiffe://other.sealmesh/ns/default/svc/web', await generateKeyPair()),
  },
];

for (const rejection of rejectionCases) {
  test(`CSR rejected: ${rejection.name}`, async () => {
    await assertRejects(await rejection.csr(), rejection.code, rejection.identity);
  });
}

test('CSR size limit applies to the text', async () => {
  const csrPem = await generateCsr(entitledUri, await generateKeyPair());
  const padded = csrPem + ' '.repeat(MAX_CSR_BYTES - Buffer.byteLength(csrPem));

  await validateCsr(padded, entitled);
  await assertRejects(padded + ' ', 'SEALMESH_ERR_CSR_TOO_LARGE');
});

test('generateCsr rejects invalid SPIFFE ID', async () => {
  const keys = await generateKeyPair();

  await assert.rejects(generateCsr('https://example.com', keys), (error) => isSealmeshError(error, 'SEALMESH_ERR_SPIFFE_ID_INVALID'));
});
