/**
 * The forms of private key that Node.js's `tls.createSecureContext` accepts. The proxy passes its
 * key as a PEM Buffer and zeroes it (src/proxy/identity.ts), because PEM is the only form that
 * works. A failure here means Node.js changed, and a KeyObject or DER key may now avoid the PEM copy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { connect, createSecureContext, createServer } from 'node:tls';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';
import { generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

test('secure context takes a PEM Buffer', () => {
  assert.doesNotThrow(() => createSecureContext({ key: Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' })) }));
});

test('secure context rejects a KeyObject', () => {
  assert.throws(() => createSecureContext({ key: privateKey as unknown as Buffer }), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('secure context rejects DER', () => {
  assert.throws(() => createSecureContext({ key: privateKey.export({ type: 'pkcs8', format: 'der' }) }));
});

test('zeroed PEM leaves the context usable', async () => {
  const keys = await generateKeyPair();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      keys,
      name: 'CN=zeroed-key-test',
      serialNumber: '01',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    },
    nodeCrypto,
  );
  const pem = await privateKeyToPem(keys.privateKey);
  assert.match(pem.subarray(0, 27).toString('ascii'), /^-----BEGIN PRIVATE KEY-----$/);
  const secureContext = createSecureContext({ key: pem, cert: certificate.toString('pem'), minVersion: 'TLSv1.3' });
  pem.fill(0);
  assert.ok(pem.every((byte) => byte === 0), 'the PEM Buffer is all zeros');

  // A handshake after the zeroing proves OpenSSL kept its own copy of the key.
  const server = createServer({ SNICallback: (_name, callback) => callback(null, secureContext), minVersion: 'TLSv1.3' }, (socket) => socket.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: certificate.toString('pem'), checkServerIdentity: () => undefined }, () => {
        socket.setEncoding('utf8');
        let text = '';
        socket.on('data', (chunk: string) => {
          text += chunk;
        });
        socket.on('end', () => resolve(text));
      });
      socket.once('error', reject);
    });
    assert.equal(reply, 'ok');
  } finally {
    server.close();
  }
});
