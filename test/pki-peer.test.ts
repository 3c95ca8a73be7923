import assert from 'node:assert/strict';
import { X509Certificate, type webcrypto } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { connect, createServer, type PeerCertificate } from 'node:tls';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import { generateKeyPair, privateKeyToPem, spiffeIdFromPeerCertificate } from '../src/pki/index.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';

const trustDomain = 'example.sealmesh';
const webUri = 'spiffe://example.sealmesh/ns/default/svc/web';

/** Issues a self-signed certificate with the given subjectAltName entries, as the peer under test. */
async function selfSigned(
  names: x509.JsonGeneralNames | undefined,
  options: { ca?: boolean } = {},
): Promise<{ pem: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = await generateKeyPair();
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(options.ca ?? false, undefined, true)];
  if (names !== undefined) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    { name: 'CN=peer', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams, extensions },
    nodeCrypto,
  );
  return { pem: certificate.toString('pem'), keys };
}

async function peerOf(names: x509.JsonGeneralNames | undefined, options: { ca?: boolean } = {}): Promise<X509Certificate> {
  return new X509Certificate((await selfSigned(names, options)).pem);
}

function assertCode(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

test('peer SPIFFE ID from one URI SAN', async () => {
  const peer = await peerOf([{ type: 'url', value: webUri }]);

  assert.deepEqual(spiffeIdFromPeerCertificate(peer, trustDomain), { trustDomain, namespace: 'default', service: 'web' });
});

test('peer SPIFFE ID next to DNS and IP SANs', async () => {
  const peer = await peerOf([
    { type: 'dns', value: 'localhost' },
    { type: 'ip', value: '127.0.0.1' },
    { type: 'url', value: 'spiffe://example.sealmesh/ns/sealmesh/svc/server' },
  ]);

  assert.deepEqual(spiffeIdFromPeerCertificate(peer, trustDomain), { trustDomain, namespace: 'sealmesh', service: 'server' });
});

test('peer rejected: two URI SANs', async () => {
  const peer = await peerOf([
    { type: 'url', value: webUri },
    { type: 'url', value: 'spiffe://example.sealmesh/ns/default/svc/db' },
  ]);

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_SAN_INVALID');
});

test('peer rejected: DNS SAN without URI', async () => {
  const peer = await peerOf([{ type: 'dns', value: 'web.example.com' }]);

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_SAN_INVALID');
});

test('peer rejected: no SAN extension', async () => {
  const peer = await peerOf(undefined);

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_SAN_INVALID');
});

test('peer rejected: quoted SAN entry', async () => {
  // Node prints this URI quoted because of the comma. Split naively, it would look like two entries.
  const peer = await peerOf([{ type: 'url', value: `${webUri}, URI:spiffe://example.sealmesh/ns/default/svc/db` }]);

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_SAN_INVALID');
});

test('peer rejected: URI not a sealmesh SPIFFE ID', async () => {
  for (const uri of ['https://example.sealmesh/ns/default/svc/web', 'spiffe://example.sealmesh', 'spiffe://example.sealmesh/web']) {
    const peer = await peerOf([{ type: 'url', value: uri }]);

    assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_SAN_INVALID');
  }
});

test('peer rejected: foreign trust domain', async () => {
  const peer = await peerOf([{ type: 'url', value: 'spiffe://other.sealmesh/ns/default/svc/web' }]);

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN');
});

test('peer rejected: CA certificate', async () => {
  const peer = await peerOf([{ type: 'url', value: webUri }], { ca: true });

  assertCode(() => spiffeIdFromPeerCertificate(peer, trustDomain), 'SEALMESH_ERR_PEER_CERT_UNTRUSTED');
});

test('peer rejected: empty PeerCertificate', () => {
  // tls.TLSSocket#getPeerCertificate() returns an empty object when the peer sent no certificate.
  assertCode(() => spiffeIdFromPeerCertificate({} as PeerCertificate, trustDomain), 'SEALMESH_ERR_PEER_NO_CERTIFICATE');
});

test('peer SPIFFE ID from a TLS PeerCertificate', async (t) => {
  const { pem, keys } = await selfSigned([
    { type: 'dns', value: 'localhost' },
    { type: 'url', value: webUri },
  ]);
  const server = createServer({ key: await privateKeyToPem(keys.privateKey), cert: pem }, (socket) => socket.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());

  // The certificate is self-signed, so this test reads it without verifying the chain.
  const socket = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false });
  await once(socket, 'secureConnect');
  const peer = socket.getPeerCertificate();
  socket.destroy();

  assert.equal(peer.subjectaltname, `DNS:localhost, URI:${webUri}`);
  assert.deepEqual(spiffeIdFromPeerCertificate(peer, trustDomain), { trustDomain, namespace: 'default', service: 'web' });
  assertCode(() => spiffeIdFromPeerCertificate(peer, 'other.sealmesh'), 'SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN');
});
