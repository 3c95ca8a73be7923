import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { Extensions } from '@peculiar/asn1-x509';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { generateCsr, generateKeyPair, validateCsr } from '../src/pki/index.ts';
import { CsrDecodeError, decodeBasicConstraintsCa, decodeCertificationRequest, decodeGeneralNames } from '../src/pki/csr-decode.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';
import type { SpiffeId } from '../src/spiffe/index.ts';
import { tempDir } from './helpers/mesh.ts';

const run = promisify(execFile);
const entitled: SpiffeId = { trustDomain: 'example.sealmesh', namespace: 'default', service: 'web' };
const entitledUri = 'spiffe://example.sealmesh/ns/default/svc/web';

function derOf(pem: string): Uint8Array {
  return new Uint8Array(Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64'));
}

function pemOf(der: Uint8Array): string {
  const lines = Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

async function assertRejects(csrPem: string, code: ErrorCode, detail?: RegExp): Promise<void> {
  await assert.rejects(validateCsr(csrPem, entitled), (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (detail !== undefined) assert.match(error.message, detail);
    return true;
  });
}

/** Makes a P-256 CSR with openssl(1) for `uri`, with extra `-addext` values and digest. */
async function opensslCsr(options: { sans?: string; addext?: string[]; digest?: string } = {}): Promise<string> {
  const dir = tempDir('sealmesh-openssl-csr-').path;
  const out = join(dir, 'req.pem');
  const args = ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', out, '-subj', '/O=sealmesh/CN=web'];
  args.push(`-${options.digest ?? 'sha256'}`);
  args.push('-addext', `subjectAltName=${options.sans ?? `URI:${entitledUri}`}`);
  for (const extension of options.addext ?? []) args.push('-addext', extension);
  await run('openssl', args);
  return readFileSync(out, 'utf8');
}

/** Builds a CSR with @peculiar/x509 that requests `extensions`, signed with a P-256 key. */
async function peculiarCsr(extensions: x509.Extension[]): Promise<string> {
  const keys = (await nodeCrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=web', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' }, extensions }, nodeCrypto);
  return csr.toString('pem');
}

test('decoder matches the ASN.1 library', async () => {
  const csrs = [
    await generateCsr(entitledUri, await generateKeyPair()),
    await peculiarCsr([new x509.SubjectAlternativeNameExtension([{ type: 'url', value: entitledUri }]), new x509.BasicConstraintsExtension(false, 2, true)]),
    await opensslCsr({ addext: ['basicConstraints=critical,CA:FALSE', 'keyUsage=digitalSignature'] }),
  ];
  for (const pem of csrs) {
    const der = derOf(pem);
    const decoded = decodeCertificationRequest(der);
    const reference = AsnConvert.parse(der, CertificationRequest);
    assert.equal(decoded.version, reference.certificationRequestInfo.version);
    assert.deepEqual(Buffer.from(decoded.spkiDer), Buffer.from(AsnConvert.serialize(reference.certificationRequestInfo.subjectPKInfo)));
    assert.deepEqual(Buffer.from(decoded.infoDer), Buffer.from(AsnConvert.serialize(reference.certificationRequestInfo)));
    assert.equal(decoded.signatureAlgorithm, reference.signatureAlgorithm.algorithm);
    assert.deepEqual(Buffer.from(decoded.signature), Buffer.from(reference.signature));
    const attribute = reference.certificationRequestInfo.attributes.find((entry) => entry.type === '1.2.840.113549.1.9.14');
    const expected = AsnConvert.parse(attribute?.values[0] ?? new ArrayBuffer(0), Extensions);
    assert.deepEqual([...decoded.extensions.keys()], Array.from(expected, (extension) => extension.extnID));
    for (const extension of expected) {
      assert.deepEqual(Buffer.from(decoded.extensions.get(extension.extnID) ?? []), Buffer.from(extension.extnValue.buffer));
    }
  }
});

test('openssl CSR is accepted', async () => {
  for (const digest of ['sha256', 'sha384', 'sha512']) {
    const validated = await validateCsr(await opensslCsr({ digest }), entitled);
    assert.equal(validated.spiffeId, entitledUri, `digest ${digest}`);
  }
  const withConstraints = await validateCsr(await opensslCsr({ addext: ['basicConstraints=critical,CA:FALSE'] }), entitled);
  assert.equal(withConstraints.spiffeId, entitledUri);
});

test('openssl CSR rejections', async () => {
  await assertRejects(await opensslCsr({ addext: ['basicConstraints=critical,CA:TRUE'] }), 'SEALMESH_ERR_CSR_CA_REQUESTED');
  await assertRejects(await opensslCsr({ sans: `URI:${entitledUri},DNS:web.example.com` }), 'SEALMESH_ERR_CSR_SAN_INVALID', /a URI and a DNS name/);
  await assertRejects(await opensslCsr({ sans: 'IP:127.0.0.1' }), 'SEALMESH_ERR_CSR_SAN_INVALID', /an IP address instead of a URI/);
  await assertRejects(await opensslCsr({ sans: 'URI:spiffe://example.sealmesh/ns/default/svc/api' }), 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH');
});

test('every truncation is malformed', async () => {
  const der = derOf(await generateCsr(entitledUri, await generateKeyPair()));
  for (let length = 1; length < der.length; length += 1) {
    await assertRejects(pemOf(der.subarray(0, length)), 'SEALMESH_ERR_CSR_MALFORMED');
  }
});

test('every changed byte is rejected with a CSR code', async () => {
  const der = derOf(await generateCsr(entitledUri, await generateKeyPair()));
  const codes = new Set<string>();
  for (let index = 0; index < der.length; index += 1) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const changed = Uint8Array.from(der);
      changed[index] = (changed[index] as number) ^ mask;
      await assert.rejects(validateCsr(pemOf(changed), entitled), (error) => {
        assert.ok(isSealmeshError(error), `byte ${index} ^ 0x${mask.toString(16)}: expected a SealmeshError, got ${String(error)}`);
        assert.match(error.code, /^SEALMESH_ERR_CSR_/, `byte ${index} ^ 0x${mask.toString(16)}`);
        codes.add(error.code);
        return true;
      });
    }
  }
  assert.ok(codes.has('SEALMESH_ERR_CSR_MALFORMED'));
  assert.ok(codes.has('SEALMESH_ERR_CSR_BAD_SIGNATURE'));
});

/** Encodes one DER element with a short-form length. */
function tlv(tag: number, ...contents: number[][]): number[] {
  const body = contents.flat();
  assert.ok(body.length < 0x80);
  return [tag, body.length, ...body];
}

const malformedDer: Array<{ name: string; der: number[]; detail: RegExp }> = [
  { name: 'indefinite length', der: [0x30, 0x80, 0x00, 0x00], detail: /indefinite length/ },
  { name: 'long-form length below 128', der: [0x30, 0x81, 0x03, 0x02, 0x01, 0x00], detail: /shortest form/ },
  { name: 'length with a leading zero byte', der: [0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x00], detail: /shortest form/ },
  { name: 'length of five bytes', der: [0x30, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00], detail: /5-byte length/ },
  { name: 'multi-byte tag', der: [0x1f, 0x81, 0x01, 0x00], detail: /multi-byte tag/ },
  { name: 'not a SEQUENCE', der: tlv(0x31, tlv(0x02, [0])), detail: /tag 0x31, expected 0x30/ },
  { name: 'two fields', der: tlv(0x30, tlv(0x30, []), tlv(0x30, [])), detail: /2 fields, expected 3/ },
  {
    name: 'version with a redundant zero byte',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0, 0]), tlv(0x30, []), tlv(0x30, [])), tlv(0x30, tlv(0x06, [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])), tlv(0x03, [0, 1])),
    detail: /INTEGER that is not in its shortest form/,
  },
  {
    name: 'signature with unused bits',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, []), tlv(0x30, [])), tlv(0x30, tlv(0x06, [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])), tlv(0x03, [4, 0xf0])),
    detail: /BIT STRING of whole bytes/,
  },
  {
    name: 'OID with a leading zero group',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, []), tlv(0x30, [])), tlv(0x30, tlv(0x06, [0x2a, 0x80, 0x01])), tlv(0x03, [0, 1])),
    detail: /leading zero group/,
  },
  {
    name: 'OID ending inside a subidentifier',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, []), tlv(0x30, [])), tlv(0x30, tlv(0x06, [0x2a, 0x86])), tlv(0x03, [0, 1])),
    detail: /ends inside a subidentifier/,
  },
  {
    name: 'attributes with the wrong tag',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, []), tlv(0x30, []), tlv(0x31, [])), tlv(0x30, tlv(0x06, [0x2a, 0x03])), tlv(0x03, [0, 1])),
    detail: /expected \[0\]/,
  },
  {
    name: 'subject RDN that is not a SET',
    der: tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, tlv(0x30, [])), tlv(0x30, [])), tlv(0x30, tlv(0x06, [0x2a, 0x03])), tlv(0x03, [0, 1])),
    detail: /relative distinguished name at offset \d+ is not a SET/,
  },
  {
    name: 'element overrunning its SEQUENCE',
    der: [0x30, 0x05, 0x30, 0x07, 0x02, 0x01, 0x00],
    detail: /more than its enclosing element contains/,
  },
];

for (const entry of malformedDer) {
  test(`malformed DER: ${entry.name}`, async () => {
    await assertRejects(pemOf(Uint8Array.from(entry.der)), 'SEALMESH_ERR_CSR_MALFORMED', entry.detail);
  });
}

test('two extensionRequest attributes are malformed', () => {
  const extensionRequest = tlv(0x30, tlv(0x06, [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e]), tlv(0x31, tlv(0x30, [])));
  const der = tlv(0x30, tlv(0x30, tlv(0x02, [0]), tlv(0x30, []), tlv(0x30, []), tlv(0xa0, extensionRequest, extensionRequest)), tlv(0x30, tlv(0x06, [0x2a, 0x03])), tlv(0x03, [0, 1]));
  assert.throws(() => decodeCertificationRequest(Uint8Array.from(der)), (error) => error instanceof CsrDecodeError && /more than one extensionRequest/.test(error.message));
});

test('basicConstraints decoding', () => {
  assert.equal(decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x00])), false);
  assert.equal(decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x03, 0x01, 0x01, 0xff])), true);
  assert.equal(decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x01])), true);
  assert.equal(decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x00])), false);
  assert.throws(() => decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x03, 0x01, 0x01, 0x01])), /BOOLEAN other than 0x00 or 0xff/);
  assert.throws(() => decodeBasicConstraintsCa(Uint8Array.from([0x30, 0x03, 0x01, 0x01, 0xff, 0x00])), /bytes follow/);
});

test('CSR with a non-DER BOOLEAN in basicConstraints is malformed', async () => {
  const nonDer = new x509.Extension('2.5.29.19', true, Uint8Array.from([0x30, 0x03, 0x01, 0x01, 0x01]));
  await assertRejects(await peculiarCsr([new x509.SubjectAlternativeNameExtension([{ type: 'url', value: entitledUri }]), nonDer]), 'SEALMESH_ERR_CSR_MALFORMED', /2\.5\.29\.19 cannot be decoded/);
});

test('general names decoding', () => {
  const uri = Buffer.from(entitledUri, 'latin1');
  assert.deepEqual(decodeGeneralNames(Uint8Array.from([0x30, uri.length + 2, 0x86, uri.length, ...uri])), [{ kind: 'uniformResourceIdentifier', uri: entitledUri }]);
  assert.deepEqual(decodeGeneralNames(Uint8Array.from([0x30, 0x04, 0x82, 0x02, 0x61, 0x62])), [{ kind: 'dNSName' }]);
  assert.throws(() => decodeGeneralNames(Uint8Array.from([0x30, 0x03, 0x86, 0x01, 0xc3])), /outside IA5String/);
  assert.throws(() => decodeGeneralNames(Uint8Array.from([0x30, 0x02, 0x89, 0x00])), /not one of \[0\] to \[8\]/);
  assert.throws(() => decodeGeneralNames(Uint8Array.from([0x30, 0x02, 0x04, 0x00])), /not one of \[0\] to \[8\]/);
  assert.throws(() => decodeGeneralNames(Uint8Array.from([0x30, 0x02, 0xa6, 0x00])), /not a primitive IA5String/);
});

test('CSR key is returned as exported SPKI', async () => {
  const keys = await generateKeyPair();
  const validated = await validateCsr(await generateCsr(entitledUri, keys), entitled);
  assert.deepEqual(Buffer.from(validated.spkiDer), Buffer.from(validated.publicKey.export({ format: 'der', type: 'spki' })));
  assert.deepEqual(Buffer.from(validated.spkiDer), Buffer.from(await nodeCrypto.subtle.exportKey('spki', keys.publicKey)));
});
