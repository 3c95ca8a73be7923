import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as createTlsServer,
  type SecureContext,
  type TLSSocket,
} from 'node:tls';
import { pino } from 'pino';
import type { Registry } from 'prom-client';
import { silentLogger } from '../src/log/index.ts';
import { CertificateAuthority, generateCsr, generateKeyPair, privateKeyToPem, spiffeIdFromPeerCertificate, SealedKeyCustody } from '../src/pki/index.ts';
import { STORE_KEYS, type IntermediateRecord } from '../src/pki/ca-records.ts';
import type { Issuer } from '../src/pki/certificates.ts';
import { signLeafCertificate } from '../src/pki/leaf-certificate.ts';
import { exportSpki, randomSerialNumber } from '../src/pki/keys.ts';
import { x509 } from '../src/pki/x509.ts';
import { parseUpstream, type SidecarProxy } from '../src/proxy/index.ts';
import { ProxyMetrics } from '../src/proxy/metrics.ts';
import { connectPeer } from '../src/proxy/http/peer-connector.ts';
import { OutboundListener } from '../src/proxy/outbound.ts';
import { PeerSessionCache } from '../src/proxy/tls-sessions.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { SqliteStore } from '../src/store/index.ts';
import { TLS_CLIENT_OPTIONS, TLS_SERVER_OPTIONS } from '../src/tls/index.ts';
import { allow, eventually, startHttpApp, startProxy, startServer, tempDir, waitForDecision, type TestServer } from './helpers/mesh.ts';

/** Upper bound for any single connection in these tests to finish, in milliseconds. */
const CONNECTION_TIMEOUT_MS = 5_000;
const HTTP_REQUEST = 'GET /probe HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n';

/** A private key and certificate chain, both PEM, in the shape `tls.connect` accepts. */
interface Credentials {
  key: Buffer;
  cert: string;
}

interface ProbeResult {
  /** Decrypted application bytes received before the connection closed. */
  received: Buffer;
  /** The first error the client socket emitted, if any. */
  error: (Error & { code?: string }) | undefined;
}

/**
 * Returns the value of one counter series from a Prometheus registry, or 0 when the series has not
 * been created yet. `labels` is the exact label text, such as `code="SEALMESH_ERR_INTENTION_DENIED"`.
 */
async function counterValue(registry: Registry, metric: string, labels: string): Promise<number> {
  const text = await registry.getSingleMetricAsString(metric);
  const prefix = `${metric}{${labels}} `;
  const line = text.split('\n').find((candidate) => candidate.startsWith(prefix));
  return line === undefined ? 0 : Number(line.slice(prefix.length));
}

/** Waits until a counter reaches `expected`, then checks that it did not pass it. */
async function expectCounter(registry: Registry, metric: string, labels: string, expected: number): Promise<void> {
  await eventually(async () => (await counterValue(registry, metric, labels)) >= expected, 3_000, `${metric}{${labels}} to reach ${expected}`);
  assert.equal(await counterValue(registry, metric, labels), expected, `${metric}{${labels}}`);
}

/** Resolves once `socket` closes, or rejects after CONNECTION_TIMEOUT_MS and destroys it. */
function waitForClose(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.closed) {
      resolve();
      return;
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection still open after ${CONNECTION_TIMEOUT_MS} ms`));
    }, CONNECTION_TIMEOUT_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Resolves once `socket` is connected over TCP. */
function waitForConnect(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve()).once('error', reject);
  });
}

/**
 * Opens a TLS connection to `port`, sends one HTTP request once the client considers the handshake
 * done, and collects every byte until the connection closes. With TLS 1.3 the client finishes its
 * side of the handshake before the server has checked the client certificate, so a rejection shows
 * up only as an alert or a close after the request is written.
 */
async function tlsProbe(port: number, ca: string[], credentials?: Credentials): Promise<ProbeResult> {
  const socket = tlsConnect({
    ...TLS_CLIENT_OPTIONS,
    host: '127.0.0.1',
    port,
    ca,
    ...credentials,
    // The proxy's SVID names a SPIFFE ID, not 127.0.0.1, and these tests check the client side only.
    checkServerIdentity: () => undefined,
  });
  const chunks: Buffer[] = [];
  let error: ProbeResult['error'];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (failure: Error) => {
    error ??= failure;
  });
  socket.once('secureConnect', () => socket.write(HTTP_REQUEST));
  await waitForClose(socket);
  return { received: Buffer.concat(chunks), error };
}

/** Opens a plain TCP connection to `port`, writes `payload` and collects every byte until the connection closes. */
async function rawProbe(port: number, payload: string | Buffer): Promise<Buffer> {
  const socket = netConnect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  socket.once('connect', () => socket.write(payload));
  await waitForClose(socket);
  return Buffer.concat(chunks);
}

/** Issues a real SVID for `service` in the default namespace from the mesh CA. */
async function issueMeshSvid(mesh: TestServer, service: string): Promise<Credentials> {
  return issueSvidFrom(mesh.server.ca, service);
}

async function issueSvidFrom(ca: CertificateAuthority, service: string): Promise<Credentials> {
  const keys = await generateKeyPair();
  const entitled = { trustDomain: ca.trustDomain, namespace: 'default', service };
  const csrPem = await generateCsr(formatSpiffeId(entitled), keys);
  const issued = await ca.issueSvid({ csrPem, entitled });
  return { key: await privateKeyToPem(keys.privateKey), cert: issued.chainPem };
}

/** Loads the mesh intermediate and its signing key from the control plane's store. */
async function loadIntermediate(store: SqliteStore): Promise<{ issuer: Issuer; pem: string }> {
  const record = await store.get(STORE_KEYS.intermediate);
  assert.ok(record !== undefined, `${STORE_KEYS.intermediate} is missing from the store`);
  const stored = JSON.parse(Buffer.from(record.value).toString('utf8')) as IntermediateRecord;
  const key = await new SealedKeyCustody(store).load(stored.keyLabel);
  assert.ok(key !== undefined, `intermediate key ${stored.keyLabel} is missing from the store`);
  return { issuer: { certificate: new x509.X509Certificate(stored.certificatePem), key }, pem: stored.certificatePem };
}

/**
 * Signs a leaf with the mesh intermediate that the CA itself would never issue: any subjectAltName
 * and any validity period. The chain includes the intermediate, so only the chosen defect differs
 * from a real SVID.
 */
async function signLeaf(
  intermediate: { issuer: Issuer; pem: string },
  names: x509.JsonGeneralNames,
  validity: { notBefore: Date; notAfter: Date },
): Promise<Credentials> {
  const keys = await generateKeyPair();
  const certificate = await signLeafCertificate({
    serialNumber: randomSerialNumber(),
    ...validity,
    spkiDer: await exportSpki(keys.publicKey),
    subject: 'O=sealmesh, CN=peer-check',
    names,
    issuer: intermediate.issuer,
  });
  return { key: await privateKeyToPem(keys.privateKey), cert: `${certificate.pem}${intermediate.pem}` };
}

/** Returns the first bytes a TLS 1.3 client sends, captured by a local TCP server that sends nothing back. */
async function captureClientHello(): Promise<Buffer> {
  const sink = createNetServer();
  const captured = new Promise<Buffer>((resolve) => {
    sink.once('connection', (socket) => {
      socket.on('error', () => undefined);
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', () => resolve()));
  const client = tlsConnect({ ...TLS_CLIENT_OPTIONS, host: '127.0.0.1', port: (sink.address() as AddressInfo).port, rejectUnauthorized: false });
  client.on('error', () => undefined);
  try {
    return await captured;
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => sink.close(() => resolve()));
  }
}

interface FakeUpstream {
  port: number;
  /** TCP connections accepted, one per dial attempt. */
  connections: () => number;
  /** Application bytes received after a completed handshake. */
  bytesReceived: () => number;
  /** Services named by the client certificates of completed handshakes. */
  peers: string[];
  close: () => Promise<void>;
}

/** Starts an mTLS echo server that presents `credentials`, standing in for an upstream instance. */
async function startFakeUpstream(credentials: Credentials, ca: string[], trustDomain: string): Promise<FakeUpstream> {
  let connections = 0;
  let bytesReceived = 0;
  const peers: string[] = [];
  const sockets = new Set<Socket>();
  const server = createTlsServer({ ...TLS_SERVER_OPTIONS, ...credentials, ca, requestCert: true, rejectUnauthorized: true }, (socket: TLSSocket) => {
    peers.push(spiffeIdFromPeerCertificate(socket.getPeerX509Certificate()!, trustDomain).service);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      bytesReceived += chunk.length;
      socket.write(chunk);
    });
  });
  server.on('connection', (socket: Socket) => {
    connections += 1;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    bytesReceived: () => bytesReceived,
    peers,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('inbound and upstream peer checks', () => {
  const dataDir = tempDir();
  const otherCaDir = tempDir();
  let otherStore: SqliteStore | undefined;
  let mesh: TestServer;
  let api: SidecarProxy;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let intermediate: { issuer: Issuer; pem: string };
  let web: Credentials;
  let appConnections = 0;
  let appRequests = 0;
  /** Warnings the api proxy logged, parsed from its JSON log lines. */
  const proxyWarnings: Array<{ code?: string; reason?: string }> = [];
  const handshakeFailed = 'code="SEALMESH_ERR_TLS_HANDSHAKE_FAILED"';
  const rejectionsMetric = 'sealmesh_proxy_rejections_total';

  before(async () => {
    const store = SqliteStore.open(join(dataDir.path, 'sealmesh.db'));
    mesh = await startServer({ store, dataDir: dataDir.path });
    app = await startHttpApp('api');
    app.server.on('connection', () => {
      appConnections += 1;
    });
    app.server.on('request', () => {
      appRequests += 1;
    });
    // The periodic TCP health check also connects to the app, so an hour-long interval keeps it out of the counts.
    const log = pino({ level: 'warn' }, { write: (line: string) => proxyWarnings.push(JSON.parse(line) as (typeof proxyWarnings)[number]) });
    api = await startProxy(mesh, 'api', app.port, [], { healthCheckIntervalMs: 3_600_000, log });
    await allow(mesh, 'web', 'api');
    await waitForDecision(api, 'web', true);
    intermediate = await loadIntermediate(store);
    web = await issueMeshSvid(mesh, 'web');
  });

  after(async () => {
    await api?.stop();
    await app?.close();
    await mesh?.stop();
    await otherStore?.close();
    dataDir.remove();
    otherCaDir.remove();
  });

  /** Returns the proxy's rejection count for `code`. */
  function rejections(code: string): Promise<number> {
    return counterValue(api.metrics.registry, rejectionsMetric, `code="${code}"`);
  }

  /** Returns the reason of the last handshake failure the proxy logged. */
  function lastHandshakeFailureReason(): string | undefined {
    return proxyWarnings.findLast((line) => line.code === 'SEALMESH_ERR_TLS_HANDSHAKE_FAILED')?.reason;
  }

  /** Checks that a valid web client still gets an HTTP 200 from the app through the proxy. */
  async function assertWebServed(): Promise<void> {
    const requestsBefore = appRequests;
    const result = await tlsProbe(api.inboundPort, mesh.ca, web);
    assert.equal(result.error, undefined, `valid web client failed: ${String(result.error)}`);
    assert.match(result.received.toString('utf8'), /^HTTP\/1\.1 200 /);
    assert.equal(appRequests, requestsBefore + 1);
  }

  test('client without certificate rejected', async () => {
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca);

    assert.equal(result.received.length, 0);
    assert.equal(result.error?.code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    assert.equal(lastHandshakeFailureReason(), 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    assert.equal(appConnections, connectionsBefore);
  });

  test('certificate from another CA rejected', async () => {
    // Same trust domain and service as a real web SVID. Only the root differs.
    otherStore = SqliteStore.open(join(otherCaDir.path, 'other.db'));
    const otherCa = await CertificateAuthority.open({ store: otherStore, custody: new SealedKeyCustody(otherStore), trustDomain: mesh.server.trustDomain });
    const foreign = await issueSvidFrom(otherCa, 'web');
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca, foreign);

    assert.equal(result.received.length, 0);
    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    assert.equal(lastHandshakeFailureReason(), 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY');
    assert.equal(appConnections, connectionsBefore);
  });

  test('expired certificate rejected', async () => {
    const hour = 3_600_000;
    const expired = await signLeaf(intermediate, [{ type: 'url', value: `spiffe://${mesh.server.trustDomain}/ns/default/svc/web` }], {
      notBefore: new Date(Date.now() - 3 * hour),
      notAfter: new Date(Date.now() - hour),
    });
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca, expired);

    assert.equal(result.received.length, 0);
    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    assert.equal(lastHandshakeFailureReason(), 'CERT_HAS_EXPIRED');
    assert.equal(appConnections, connectionsBefore);
  });

  test('connection closed at client SVID expiry', async () => {
    const closedMetric = 'sealmesh_proxy_connections_closed_cert_expired_total';
    const closedBefore = await counterValue(api.metrics.registry, closedMetric, 'direction="inbound"');
    // Valid for the handshake, expired 3 s later.
    const shortLived = await signLeaf(intermediate, [{ type: 'url', value: formatSpiffeId({ trustDomain: mesh.server.trustDomain, namespace: 'default', service: 'web' }) }], {
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_000),
    });
    const socket = tlsConnect({ ...TLS_CLIENT_OPTIONS, host: '127.0.0.1', port: api.inboundPort, ca: mesh.ca, ...shortLived, checkServerIdentity: () => undefined });
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => undefined);
    socket.once('secureConnect', () => socket.write('GET /kept-alive HTTP/1.1\r\nHost: api\r\n\r\n'));
    await eventually(() => /^HTTP\/1\.1 200 /.test(Buffer.concat(received).toString('utf8')), 5_000, 'the response on the kept-alive connection');
    assert.equal(socket.closed, false, 'the connection is open before the SVID expires');

    await waitForClose(socket);
    await expectCounter(api.metrics.registry, closedMetric, 'direction="inbound"', closedBefore + 1);
  });

  test('certificate with two URI SANs rejected', async () => {
    const trustDomain = mesh.server.trustDomain;
    const twoIds = await signLeaf(
      intermediate,
      [
        { type: 'url', value: `spiffe://${trustDomain}/ns/default/svc/web` },
        { type: 'url', value: `spiffe://${trustDomain}/ns/default/svc/batch` },
      ],
      { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) },
    );
    const sanInvalidBefore = await rejections('SEALMESH_ERR_PEER_SAN_INVALID');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca, twoIds);

    assert.equal(result.received.length, 0);
    await expectCounter(api.metrics.registry, rejectionsMetric, 'code="SEALMESH_ERR_PEER_SAN_INVALID"', sanInvalidBefore + 1);
    assert.equal(appConnections, connectionsBefore);
  });

  test('foreign trust domain rejected', async () => {
    const foreignId = await signLeaf(intermediate, [{ type: 'url', value: 'spiffe://other.sealmesh/ns/default/svc/web' }], {
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
    });
    const foreignBefore = await rejections('SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca, foreignId);

    assert.equal(result.received.length, 0);
    await expectCounter(api.metrics.registry, rejectionsMetric, 'code="SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN"', foreignBefore + 1);
    assert.equal(appConnections, connectionsBefore);
  });

  test('service without intention denied', async () => {
    const batch = await issueMeshSvid(mesh, 'batch');
    const deniedBefore = await rejections('SEALMESH_ERR_INTENTION_DENIED');
    const deniedConnectionsBefore = await counterValue(api.metrics.registry, 'sealmesh_proxy_inbound_connections_total', 'result="denied"');
    const connectionsBefore = appConnections;

    const result = await tlsProbe(api.inboundPort, mesh.ca, batch);

    assert.equal(result.received.length, 0);
    await expectCounter(api.metrics.registry, rejectionsMetric, 'code="SEALMESH_ERR_INTENTION_DENIED"', deniedBefore + 1);
    assert.equal(await counterValue(api.metrics.registry, 'sealmesh_proxy_inbound_connections_total', 'result="denied"'), deniedConnectionsBefore + 1);
    assert.equal(appConnections, connectionsBefore);

    // Positive control: the same listener serves a service that an intention allows.
    await assertWebServed();
    assert.equal(appConnections, connectionsBefore + 1);
  });

  test('plaintext HTTP to inbound port rejected', async () => {
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;

    const received = await rawProbe(api.inboundPort, HTTP_REQUEST);

    assert.ok(!received.toString('latin1').includes('HTTP/'), 'no HTTP response comes back');
    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    assert.equal(lastHandshakeFailureReason(), 'ERR_SSL_HTTP_REQUEST');
    assert.equal(appConnections, connectionsBefore);
  });

  test('silent TCP client does not block others', async () => {
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;
    const silent = netConnect({ host: '127.0.0.1', port: api.inboundPort });
    silent.on('error', () => undefined);
    await waitForConnect(silent);

    try {
      await assertWebServed();
      assert.equal(silent.closed, false, 'the silent connection is still open');
    } finally {
      silent.destroy();
    }

    // Closing before the handshake completes counts as a failed handshake.
    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    assert.equal(appConnections, connectionsBefore + 1, 'only the valid web connection reached the app');
  });

  test('client stopping mid-handshake does not block others', async () => {
    const clientHello = await captureClientHello();
    assert.equal(clientHello[0], 0x16, 'captured bytes start a TLS handshake record');
    const failedBefore = await rejections('SEALMESH_ERR_TLS_HANDSHAKE_FAILED');
    const connectionsBefore = appConnections;
    const stalled = netConnect({ host: '127.0.0.1', port: api.inboundPort });
    stalled.on('error', () => undefined);
    await waitForConnect(stalled);
    stalled.write(clientHello.subarray(0, Math.floor(clientHello.length / 2)));

    try {
      await assertWebServed();
      assert.equal(stalled.closed, false, 'the stalled connection is still open');
    } finally {
      stalled.destroy();
    }

    await expectCounter(api.metrics.registry, rejectionsMetric, handshakeFailed, failedBefore + 1);
    await assertWebServed();
    assert.equal(appConnections, connectionsBefore + 2, 'only the two valid web connections reached the app');
  });

  describe('upstream identity check', () => {
    const upstream = parseUpstream('api=127.0.0.1:0');
    const closers: Array<() => Promise<void> | void> = [];
    let webContext: SecureContext;

    before(() => {
      webContext = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...web, ca: mesh.ca });
    });

    after(async () => {
      for (const close of closers.reverse()) await close();
    });

    /** Starts an outbound listener for `api` whose only endpoint is `port`. */
    async function startOutbound(port: number, metrics: ProxyMetrics): Promise<number> {
      const listener = new OutboundListener({
        upstream,
        trustDomain: () => mesh.server.trustDomain,
        endpoints: () => [{ instanceId: 'fake-api', address: '127.0.0.1', port, spiffeId: formatSpiffeId({ trustDomain: mesh.server.trustDomain, namespace: 'default', service: 'api' }) }],
        secureContext: () => webContext,
        log: silentLogger(),
        metrics,
      });
      const listenPort = await listener.start();
      closers.push(() => {
        listener.stopAccepting();
        listener.destroyAll();
      });
      return listenPort;
    }

    test('instance with another SVID rejected', async () => {
      const impostor = await startFakeUpstream(await issueMeshSvid(mesh, 'db'), mesh.ca, mesh.server.trustDomain);
      closers.push(impostor.close);
      const metrics = new ProxyMetrics();
      const port = await startOutbound(impostor.port, metrics);

      const received = await rawProbe(port, 'GET / HTTP/1.1\r\nHost: api\r\n\r\n');

      assert.equal(received.length, 0);
      assert.ok(impostor.connections() >= 1, 'the listener dialled the impostor');
      assert.equal(impostor.bytesReceived(), 0, 'no application byte reached the impostor');
      // Every dial attempt fails the identity check and is counted once.
      await expectCounter(metrics.registry, rejectionsMetric, 'code="SEALMESH_ERR_PEER_IDENTITY_MISMATCH"', impostor.connections());
      assert.equal(await counterValue(metrics.registry, 'sealmesh_proxy_upstream_connections_total', 'upstream="api",result="connected"'), 0);
    });

    test('upstream connection closed at server SVID expiry', async () => {
      const shortLived = await signLeaf(intermediate, [{ type: 'url', value: formatSpiffeId({ trustDomain: mesh.server.trustDomain, namespace: 'default', service: 'api' }) }], {
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_000),
      });
      const upstreamServer = await startFakeUpstream(shortLived, mesh.ca, mesh.server.trustDomain);
      closers.push(upstreamServer.close);
      const metrics = new ProxyMetrics();
      const port = await startOutbound(upstreamServer.port, metrics);

      const client = netConnect({ host: '127.0.0.1', port });
      client.on('error', () => undefined);
      const echoed = new Promise<string>((resolve) => client.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8'))));
      client.write('ping');
      assert.equal(await echoed, 'ping');

      await waitForClose(client);
      assert.equal(await counterValue(metrics.registry, 'sealmesh_proxy_connections_closed_cert_expired_total', 'direction="outbound"'), 1);
    });

    test('pooled peer connection closed at server SVID expiry', async () => {
      const notAfter = new Date(Date.now() + 3_000);
      const shortLived = await signLeaf(intermediate, [{ type: 'url', value: formatSpiffeId({ trustDomain: mesh.server.trustDomain, namespace: 'default', service: 'api' }) }], {
        notBefore: new Date(Date.now() - 60_000),
        notAfter,
      });
      const upstreamServer = await startFakeUpstream(shortLived, mesh.ca, mesh.server.trustDomain);
      closers.push(upstreamServer.close);
      const expired: number[] = [];
      const target = {
        endpoint: { instanceId: 'fake-api', address: '127.0.0.1', port: upstreamServer.port, spiffeId: '', protocol: 'http' as const },
        expected: { namespace: 'default', service: 'api' },
        trustDomain: mesh.server.trustDomain,
        secureContext: webContext,
        alpn: ['http/1.1'],
        connectTimeoutMs: 5_000,
      };

      const socket = await connectPeer(target, new PeerSessionCache(), (_socket, notAfter) => expired.push(notAfter));
      assert.equal(socket.closed, false);

      await waitForClose(socket);
      // Certificate times have whole seconds.
      assert.deepEqual(expired, [Math.floor(notAfter.getTime() / 1000) * 1000]);
    });

    test('instance with the upstream SVID connects', async () => {
      const genuine = await startFakeUpstream(await issueMeshSvid(mesh, 'api'), mesh.ca, mesh.server.trustDomain);
      closers.push(genuine.close);
      const metrics = new ProxyMetrics();
      const port = await startOutbound(genuine.port, metrics);

      const client = netConnect({ host: '127.0.0.1', port });
      client.on('error', () => undefined);
      client.setTimeout(CONNECTION_TIMEOUT_MS, () => client.destroy());
      const echoed = new Promise<string>((resolve, reject) => {
        client.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')));
        client.once('close', () => reject(new Error('connection closed before the echo arrived')));
      });
      client.write('ping');
      try {
        assert.equal(await echoed, 'ping');
      } finally {
        client.destroy();
      }
      assert.deepEqual(genuine.peers, ['web']);
      assert.equal(await counterValue(metrics.registry, 'sealmesh_proxy_upstream_connections_total', 'upstream="api",result="connected"'), 1);
      assert.equal(await counterValue(metrics.registry, 'sealmesh_proxy_tls_handshakes_total', 'direction="outbound",resumed="false"'), 1);
      assert.equal(await counterValue(metrics.registry, rejectionsMetric, 'code="SEALMESH_ERR_PEER_IDENTITY_MISMATCH"'), 0);
    });
  });

  test('plaintext to control plane rejected', async () => {
    const registry = mesh.server.metrics.registry;
    const metric = 'sealmesh_server_rejections_total';
    const failedBefore = await counterValue(registry, metric, handshakeFailed);

    const received = await rawProbe(mesh.server.address.port, 'GET /v1/bundle HTTP/1.1\r\nHost: localhost\r\n\r\n');

    assert.ok(!received.toString('latin1').includes('HTTP/'), 'no HTTP response comes back');
    await expectCounter(registry, metric, handshakeFailed, failedBefore + 1);
  });
});
