import assert from 'node:assert/strict';
import { X509Certificate, type webcrypto } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { isSealmeshError } from '../src/errors/index.ts';
import {
  CertificateAuthority,
  CLOCK_SKEW_SECONDS,
  DEFAULT_SVID_TTL_SECONDS,
  generateCsr,
  generateKeyPair,
  MAX_SVID_TTL_SECONDS,
  MIN_SVID_TTL_SECONDS,
  privateKeyToPem,
  spiffeIdFromPeerCertificate,
  SealedKeyCustody,
  type IssuedSvid,
} from '../src/pki/index.ts';
import { x509 } from '../src/pki/x509.ts';
import type { SpiffeId } from '../src/spiffe/index.ts';
import { SqliteStore } from '../src/store/sqlite.ts';

const trustDomain = 'example.sealmesh';
const DAY_MS = 24 * 3600 * 1000;
const SKEW_MS = CLOCK_SKEW_SECONDS * 1000;
/** A whole-second instant, so certificate times equal it exactly. */
const T0 = new Date('2031-03-01T12:00:00.000Z');

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-pki-ca-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: TestContext, dir = tempDir(t)): SqliteStore {
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(() => store.close());
  return store;
}

async function openCa(t: TestContext, options: { store?: SqliteStore; now?: () => Date; trustDomain?: string } = {}): Promise<CertificateAuthority> {
  const store = options.store ?? openStore(t);
  return CertificateAuthority.open({
    store,
    custody: new SealedKeyCustody(store),
    trustDomain: options.trustDomain ?? trustDomain,
    ...(options.now ? { now: options.now } : {}),
  });
}

function identity(service: string, namespace = 'default'): SpiffeId {
  return { trustDomain, namespace, service };
}

async function issue(
  ca: CertificateAuthority,
  service: string,
  ttlSeconds?: number,
): Promise<{ svid: IssuedSvid; keys: webcrypto.CryptoKeyPair; leaf: x509.X509Certificate }> {
  const keys = await generateKeyPair();
  const id = identity(service);
  const csrPem = await generateCsr(`spiffe://${id.trustDomain}/ns/${id.namespace}/svc/${id.service}`, keys);
  const svid = await ca.issueSvid({ csrPem, entitled: id, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) });
  return { svid, keys, leaf: new x509.X509Certificate(svid.certificatePem) };
}

function extension<T extends x509.Extension>(certificate: x509.X509Certificate, type: new (raw: ArrayBuffer) => T): T {
  const found = certificate.getExtension(type);
  assert.ok(found, `certificate has a ${type.name}`);
  return found;
}

function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g) ?? [];
}

test('root certificate profile', async (t) => {
  const ca = await openCa(t, { now: () => T0 });
  const [rootPem] = ca.bundle();
  assert.ok(rootPem);
  const root = new x509.X509Certificate(rootPem);

  assert.equal(ca.bundle().length, 1);
  assert.equal(root.subject, `O=sealmesh, CN=sealmesh root CA ${trustDomain}`);
  assert.equal(root.issuer, root.subject);
  assert.equal(await root.isSelfSigned(), true);
  assert.equal(root.notBefore.getTime(), T0.getTime() - SKEW_MS);
  assert.equal(root.notAfter.toISOString(), '2041-03-01T12:00:00.000Z');
  assert.match(root.serialNumber, /^[0-9a-f]{32}$/);

  const basic = extension(root, x509.BasicConstraintsExtension);
  assert.equal(basic.ca, true);
  assert.equal(basic.critical, true);
  const keyUsage = extension(root, x509.KeyUsagesExtension);
  assert.equal(keyUsage.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  assert.equal(keyUsage.critical, true);
  assert.ok(extension(root, x509.SubjectKeyIdentifierExtension).keyId);
  assert.deepEqual(extension(root, x509.SubjectAlternativeNameExtension).names.toJSON(), [{ type: 'url', value: `spiffe://${trustDomain}` }]);
  assert.equal(ca.rootFingerprintSha256(), new X509Certificate(rootPem).fingerprint256);
  assert.match(ca.rootFingerprintSha256(), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  assert.equal(ca.bundlePem(), rootPem);
});

test('intermediate certificate profile', async (t) => {
  const ca = await openCa(t, { now: () => T0 });
  const root = new x509.X509Certificate(ca.bundle()[0] ?? '');
  const intermediate = new x509.X509Certificate(ca.intermediatePem());

  assert.equal(intermediate.subject, `O=sealmesh, CN=sealmesh intermediate CA ${trustDomain}`);
  assert.equal(intermediate.issuer, root.subject);
  assert.equal(intermediate.notBefore.getTime(), T0.getTime() - SKEW_MS);
  assert.equal(intermediate.notAfter.getTime(), T0.getTime() + 365 * DAY_MS);
  assert.notEqual(intermediate.serialNumber, root.serialNumber);

  const basic = extension(intermediate, x509.BasicConstraintsExtension);
  assert.equal(basic.ca, true);
  assert.equal(basic.pathLength, 0);
  assert.equal(basic.critical, true);
  const keyUsage = extension(intermediate, x509.KeyUsagesExtension);
  assert.equal(keyUsage.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  assert.equal(keyUsage.critical, true);
  assert.equal(extension(intermediate, x509.AuthorityKeyIdentifierExtension).keyId, extension(root, x509.SubjectKeyIdentifierExtension).keyId);
  assert.deepEqual(extension(intermediate, x509.SubjectAlternativeNameExtension).names.toJSON(), [{ type: 'url', value: `spiffe://${trustDomain}` }]);

  const nodeIntermediate = new X509Certificate(ca.intermediatePem());
  const nodeRoot = new X509Certificate(ca.bundlePem());
  assert.equal(nodeIntermediate.checkIssued(nodeRoot), true);
  assert.equal(nodeIntermediate.verify(nodeRoot.publicKey), true);
});

test('CA state is persisted in the store', async (t) => {
  const store = openStore(t);
  const ca = await openCa(t, { store });
  const root = new x509.X509Certificate(ca.bundlePem());

  const rootRecord = await store.get(`ca/roots/${root.serialNumber}`);
  assert.ok(rootRecord);
  assert.equal(Buffer.from(rootRecord.value).toString(), ca.bundlePem());
  const intermediateRecord = await store.get('ca/intermediate');
  assert.ok(intermediateRecord);
  const stored = JSON.parse(Buffer.from(intermediateRecord.value).toString()) as { certificatePem: string; keyLabel: string };
  assert.equal(stored.certificatePem, ca.intermediatePem());
  assert.ok(await store.get(`ca/keys/${stored.keyLabel}`), 'intermediate key is in the custody');
});

test('reopening loads the same root and intermediate', async (t) => {
  const dir = tempDir(t);
  const firstStore = SqliteStore.open(join(dir, 'store.db'));
  const first = await openCa(t, { store: firstStore });
  const bundle = first.bundle();
  const intermediatePem = first.intermediatePem();
  const fingerprint = first.rootFingerprintSha256();
  await firstStore.close();

  const second = await openCa(t, { store: openStore(t, dir) });

  assert.deepEqual(second.bundle(), bundle);
  assert.equal(second.intermediatePem(), intermediatePem);
  assert.equal(second.rootFingerprintSha256(), fingerprint);
  const { leaf } = await issue(second, 'web');
  assert.equal(new X509Certificate(leaf.toString('pem')).verify(new X509Certificate(intermediatePem).publicKey), true);
});

test('concurrent first opens agree on one CA', async (t) => {
  const store = openStore(t);

  const [first, second] = await Promise.all([openCa(t, { store }), openCa(t, { store })]);

  assert.deepEqual(second.bundle(), first.bundle());
  assert.equal(second.intermediatePem(), first.intermediatePem());
  assert.equal((await store.list('ca/roots/')).length, 1);
  // Both opens generated a root and an intermediate key, which shows that the losing open took
  // the conflict path. The loser's two keys stay in the custody unused.
  assert.equal((await store.list('ca/keys/')).length, 4);
});

test('reopening with another trust domain fails', async (t) => {
  const store = openStore(t);
  await openCa(t, { store });

  await assert.rejects(openCa(t, { store, trustDomain: 'other.sealmesh' }), (error) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'));
});

test('open rejects invalid trust domain', async (t) => {
  await assert.rejects(openCa(t, { trustDomain: 'Not Valid' }), (error) => isSealmeshError(error, 'SEALMESH_ERR_TRUST_DOMAIN_INVALID'));
});

test('intermediate renewed within 30 days of expiry', async (t) => {
  const store = openStore(t);
  let now = T0;
  const clock = (): Date => now;
  const first = await openCa(t, { store, now: clock });
  const firstIntermediate = first.intermediatePem();

  now = new Date(T0.getTime() + 334 * DAY_MS);
  const early = await openCa(t, { store, now: clock });
  assert.equal(early.intermediatePem(), firstIntermediate, 'intermediate kept with 31 days left');

  now = new Date(T0.getTime() + 336 * DAY_MS);
  const late = await openCa(t, { store, now: clock });
  const renewed = new x509.X509Certificate(late.intermediatePem());
  assert.notEqual(late.intermediatePem(), firstIntermediate, 'intermediate replaced with 29 days left');
  assert.equal(renewed.notAfter.getTime(), now.getTime() + 365 * DAY_MS);
  assert.deepEqual(late.bundle(), first.bundle(), 'root unchanged');
  const nodeRenewed = new X509Certificate(late.intermediatePem());
  assert.equal(nodeRenewed.verify(new X509Certificate(late.bundlePem()).publicKey), true);

  const reopened = await openCa(t, { store, now: clock });
  assert.equal(reopened.intermediatePem(), late.intermediatePem(), 'renewed intermediate persisted');
});

test('intermediate renewed before issuing from a long-running CA', async (t) => {
  let now = T0;
  const ca = await openCa(t, { now: () => now });
  const firstIntermediate = ca.intermediatePem();

  now = new Date(T0.getTime() + 340 * DAY_MS);
  const { svid } = await issue(ca, 'web');

  assert.notEqual(ca.intermediatePem(), firstIntermediate);
  assert.equal(splitPem(svid.chainPem)[1], ca.intermediatePem());
});

test('leaf SVID profile', async (t) => {
  const ca = await openCa(t, { now: () => T0 });
  const intermediate = new x509.X509Certificate(ca.intermediatePem());

  const { svid, leaf } = await issue(ca, 'web');

  const uri = `spiffe://${trustDomain}/ns/default/svc/web`;
  assert.equal(svid.spiffeId, uri);
  assert.deepEqual(extension(leaf, x509.SubjectAlternativeNameExtension).names.toJSON(), [{ type: 'url', value: uri }]);
  assert.equal(new X509Certificate(svid.certificatePem).subjectAltName, `URI:${uri}`);
  assert.equal(leaf.subject, 'O=sealmesh, CN=web');
  assert.equal(leaf.issuer, intermediate.subject);

  const basic = extension(leaf, x509.BasicConstraintsExtension);
  assert.equal(basic.ca, false);
  assert.equal(basic.critical, true);
  const keyUsage = extension(leaf, x509.KeyUsagesExtension);
  assert.equal(keyUsage.usages, x509.KeyUsageFlags.digitalSignature);
  assert.equal(keyUsage.critical, true);
  assert.deepEqual([...extension(leaf, x509.ExtendedKeyUsageExtension).usages], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  assert.ok(extension(leaf, x509.SubjectKeyIdentifierExtension).keyId);
  assert.equal(extension(leaf, x509.AuthorityKeyIdentifierExtension).keyId, extension(intermediate, x509.SubjectKeyIdentifierExtension).keyId);

  assert.equal(svid.notBefore.getTime(), T0.getTime() - SKEW_MS);
  assert.equal(svid.notAfter.getTime(), T0.getTime() + DEFAULT_SVID_TTL_SECONDS * 1000);
  assert.equal(leaf.notBefore.getTime(), svid.notBefore.getTime());
  assert.equal(leaf.notAfter.getTime(), svid.notAfter.getTime());
  assert.equal(svid.serialNumber, leaf.serialNumber);
  assert.match(svid.serialNumber, /^[0-9a-f]{32}$/);
  assert.deepEqual(splitPem(svid.chainPem), [svid.certificatePem, ca.intermediatePem()]);
});

test('leaf serial numbers are unique', async (t) => {
  const ca = await openCa(t);
  const serials = new Set<string>();

  for (let i = 0; i < 20; i++) serials.add((await issue(ca, 'web')).svid.serialNumber);

  assert.equal(serials.size, 20);
});

test('leaf chain verifies with node:crypto', async (t) => {
  const ca = await openCa(t);
  const { svid } = await issue(ca, 'web');
  const [leafPem, intermediatePem] = splitPem(svid.chainPem);
  const leaf = new X509Certificate(leafPem ?? '');
  const intermediate = new X509Certificate(intermediatePem ?? '');
  const root = new X509Certificate(ca.bundlePem());

  assert.equal(leaf.checkIssued(intermediate), true);
  assert.equal(leaf.verify(intermediate.publicKey), true);
  assert.equal(intermediate.checkIssued(root), true);
  assert.equal(intermediate.verify(root.publicKey), true);
  assert.equal(leaf.verify(root.publicKey), false, 'the leaf is not signed by the root directly');
  assert.equal(leaf.ca, false);
});

test('TTL bounds accepted', async (t) => {
  const ca = await openCa(t, { now: () => T0 });

  for (const ttlSeconds of [MIN_SVID_TTL_SECONDS, MAX_SVID_TTL_SECONDS]) {
    const { svid } = await issue(ca, 'web', ttlSeconds);

    assert.equal(svid.notAfter.getTime(), T0.getTime() + ttlSeconds * 1000, `TTL ${ttlSeconds}`);
  }
});

test('TTL outside bounds rejected', async (t) => {
  const ca = await openCa(t);
  const keys = await generateKeyPair();
  const csrPem = await generateCsr(`spiffe://${trustDomain}/ns/default/svc/web`, keys);

  for (const ttlSeconds of [MIN_SVID_TTL_SECONDS - 1, MAX_SVID_TTL_SECONDS + 1, 0, -60, 600.5, Number.NaN]) {
    await assert.rejects(
      ca.issueSvid({ csrPem, entitled: identity('web'), ttlSeconds }),
      (error) => isSealmeshError(error, 'SEALMESH_ERR_TTL_OUT_OF_BOUNDS'),
      `TTL ${ttlSeconds}`,
    );
  }
});

test('leaf notAfter clamped to intermediate notAfter', async (t) => {
  const store = openStore(t);
  let now = T0;
  const ca = await openCa(t, { store, now: () => now });
  const rootNotAfter = new x509.X509Certificate(ca.bundlePem()).notAfter;

  // Three days before the root expires, the renewed intermediate ends with the root.
  now = new Date(rootNotAfter.getTime() - 3 * DAY_MS);
  const { svid } = await issue(ca, 'web', MAX_SVID_TTL_SECONDS);

  assert.equal(new x509.X509Certificate(ca.intermediatePem()).notAfter.getTime(), rootNotAfter.getTime());
  assert.equal(svid.notAfter.getTime(), rootNotAfter.getTime());
  const intermediateBefore = ca.intermediatePem();
  await issue(ca, 'web');
  assert.equal(ca.intermediatePem(), intermediateBefore, 'an intermediate that ends with the root is not renewed again');
});

test('issueSvid rejects CSR for another identity', async (t) => {
  const ca = await openCa(t);
  const csrPem = await generateCsr(`spiffe://${trustDomain}/ns/default/svc/db`, await generateKeyPair());

  await assert.rejects(ca.issueSvid({ csrPem, entitled: identity('web') }), (error) => isSealmeshError(error, 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH'));
});

test('server certificate names and profile', async (t) => {
  const ca = await openCa(t, { now: () => T0 });
  const keys = await generateKeyPair();

  const issued = await ca.issueServerCertificate({
    publicKey: keys.publicKey,
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1', '::1'],
    uri: `spiffe://${trustDomain}/ns/sealmesh/svc/server`,
    ttlSeconds: MAX_SVID_TTL_SECONDS,
  });

  const node = new X509Certificate(issued.certificatePem);
  assert.equal(node.subjectAltName, `DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:spiffe://${trustDomain}/ns/sealmesh/svc/server`);
  assert.equal(node.ca, false);
  assert.equal(node.checkHost('localhost'), 'localhost');
  assert.equal(node.checkIP('127.0.0.1'), '127.0.0.1');
  const leaf = new x509.X509Certificate(issued.certificatePem);
  assert.deepEqual([...extension(leaf, x509.ExtendedKeyUsageExtension).usages], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  assert.equal(issued.notAfter.getTime(), T0.getTime() + MAX_SVID_TTL_SECONDS * 1000);
  assert.deepEqual(splitPem(issued.chainPem), [issued.certificatePem, ca.intermediatePem()]);
});

test('server certificate rejects invalid input', async (t) => {
  const ca = await openCa(t);
  const keys = await generateKeyPair();
  const p384 = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const base = { publicKey: keys.publicKey, dnsNames: ['localhost'], ipAddresses: [] as string[] };
  const invalid = [
    { name: 'wildcard DNS name', options: { ...base, dnsNames: ['*.example.com'] } },
    { name: 'DNS name with space', options: { ...base, dnsNames: ['bad host'] } },
    { name: 'invalid IP address', options: { ...base, ipAddresses: ['300.1.1.1'] } },
    { name: 'IPv6 address with zone ID', options: { ...base, ipAddresses: ['fe80::1%eth0'] } },
    { name: 'foreign SPIFFE ID', options: { ...base, uri: 'spiffe://other.sealmesh/ns/sealmesh/svc/server' } },
    { name: 'no names', options: { ...base, dnsNames: [] } },
    { name: 'P-384 key', options: { ...base, publicKey: p384.publicKey } },
  ];

  for (const { name, options } of invalid) {
    await assert.rejects(ca.issueServerCertificate(options), (error) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'), name);
  }
});

/**
 * Starts a TLS 1.3 server that requests a client certificate and verifies it against `ca`. With
 * `rejectUnauthorized` (the default) Node closes a connection whose client certificate fails.
 */
async function startMtlsServer(
  t: TestContext,
  options: { key: Buffer; cert: string; ca: string[]; rejectUnauthorized?: boolean },
): Promise<{ port: number; accepted: Promise<TLSSocket>; clientError: Promise<Error> }> {
  const server = createServer({ rejectUnauthorized: true, ...options, minVersion: 'TLSv1.3', requestCert: true });
  const accepted = once(server, 'secureConnection').then(([socket]) => socket as TLSSocket);
  const clientError = once(server, 'tlsClientError').then(([error]) => error as Error);
  // Neither promise settles in every test; a rejection on close must not fail the test.
  accepted.catch(() => undefined);
  clientError.catch(() => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, accepted, clientError };
}

/** Resolves to true when `promise` settles within `ms` milliseconds, false otherwise. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(resolve, ms, false);
  });
  const settled = promise.then(
    () => true,
    () => true,
  );
  const result = await Promise.race([settled, timeout]);
  clearTimeout(timer);
  return result;
}

test('mTLS handshake between two SVIDs succeeds', async (t) => {
  const ca = await openCa(t);
  const server = await issue(ca, 'api');
  const client = await issue(ca, 'web');
  const listener = await startMtlsServer(t, { key: await privateKeyToPem(server.keys.privateKey), cert: server.svid.chainPem, ca: ca.bundle() });

  const socket = connect({
    host: '127.0.0.1',
    port: listener.port,
    key: await privateKeyToPem(client.keys.privateKey),
    cert: client.svid.chainPem,
    ca: ca.bundle(),
    minVersion: 'TLSv1.3',
    // The SVID carries no host name, so the peer is identified by its SPIFFE ID below. Node still
    // verifies the chain against `ca`.
    checkServerIdentity: () => undefined,
  });
  t.after(() => socket.destroy());
  await once(socket, 'secureConnect');
  const accepted = await listener.accepted;

  assert.equal(socket.authorized, true, String(socket.authorizationError));
  assert.equal(accepted.authorized, true, String(accepted.authorizationError));
  const serverCertificate = socket.getPeerX509Certificate();
  const clientCertificate = accepted.getPeerX509Certificate();
  assert.ok(serverCertificate, 'server presented a certificate');
  assert.ok(clientCertificate, 'client presented a certificate');
  assert.deepEqual(spiffeIdFromPeerCertificate(serverCertificate, trustDomain), identity('api'));
  assert.deepEqual(spiffeIdFromPeerCertificate(clientCertificate, trustDomain), identity('web'));
  accepted.destroy();
});

test('mTLS server rejects a client SVID from another CA', async (t) => {
  const ca = await openCa(t);
  // Same trust domain name, different keys: trust comes from the bundle, not from the name.
  const otherCa = await openCa(t);
  const server = await issue(ca, 'api');
  const intruder = await issue(otherCa, 'web');
  const listener = await startMtlsServer(t, { key: await privateKeyToPem(server.keys.privateKey), cert: server.svid.chainPem, ca: ca.bundle() });

  const socket = connect({
    host: '127.0.0.1',
    port: listener.port,
    key: await privateKeyToPem(intruder.keys.privateKey),
    cert: intruder.svid.chainPem,
    ca: ca.bundle(),
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => undefined);
  t.after(() => socket.destroy());
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));

  // In TLS 1.3 the client finishes its side of the handshake before the server checks the client
  // certificate, so the rejection shows as the server closing the connection.
  await listener.clientError;
  await once(socket, 'close');
  assert.equal(await settlesWithin(listener.accepted, 100), false, 'server never accepted the connection');
  assert.deepEqual(received, []);
});

test('mTLS server reports why a foreign client SVID failed', async (t) => {
  const ca = await openCa(t);
  const otherCa = await openCa(t);
  const server = await issue(ca, 'api');
  const intruder = await issue(otherCa, 'web');
  const listener = await startMtlsServer(t, {
    key: await privateKeyToPem(server.keys.privateKey),
    cert: server.svid.chainPem,
    ca: ca.bundle(),
    rejectUnauthorized: false,
  });

  const socket = connect({
    host: '127.0.0.1',
    port: listener.port,
    key: await privateKeyToPem(intruder.keys.privateKey),
    cert: intruder.svid.chainPem,
    ca: ca.bundle(),
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  t.after(() => socket.destroy());
  const accepted = await listener.accepted;
  t.after(() => accepted.destroy());

  assert.equal(accepted.authorized, false);
  assert.equal(String(accepted.authorizationError), 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY');
});

test('mTLS client rejects a server SVID from another CA', async (t) => {
  const ca = await openCa(t);
  const otherCa = await openCa(t);
  const impostor = await issue(otherCa, 'api');
  const client = await issue(ca, 'web');
  const listener = await startMtlsServer(t, { key: await privateKeyToPem(impostor.keys.privateKey), cert: impostor.svid.chainPem, ca: otherCa.bundle() });

  const socket = connect({
    host: '127.0.0.1',
    port: listener.port,
    key: await privateKeyToPem(client.keys.privateKey),
    cert: client.svid.chainPem,
    ca: ca.bundle(),
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  t.after(() => socket.destroy());
  const [error] = (await once(socket, 'error').catch((caught: unknown) => [caught])) as [NodeJS.ErrnoException];

  assert.equal(error.code, 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY');
  assert.equal(socket.authorized, false);
});
