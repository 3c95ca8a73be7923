import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { connect as connectTcp, createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createSecureContext, type SecureContext } from 'node:tls';
import { promisify } from 'node:util';
import { ApiClient, ControlConnection } from '../src/client/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { WATCH_SUPERSEDED_GRACE_MS } from '../src/server/watch-bindings.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { TLS_CLIENT_OPTIONS } from '../src/tls/index.ts';
import { joinToken, startServer, tempDir, type TestServer } from './helpers/mesh.ts';

const run = promisify(execFile);

interface Svid {
  instanceId: string;
  chainPem: string;
  bundle: string[];
  notAfter: string;
}

/** A simulated proxy: its current SVID as a TLS context and its persistent connection. */
interface Caller {
  svid: Svid;
  context: SecureContext;
  connection: ControlConnection;
  client: ApiClient;
}

async function keyAndCsr(mesh: TestServer, service: string): Promise<{ csr: string; keyPem: Buffer }> {
  const keys = await generateKeyPair();
  const csr = await generateCsr(formatSpiffeId({ trustDomain: mesh.server.trustDomain, namespace: 'default', service }), keys);
  return { csr, keyPem: await privateKeyToPem(keys.privateKey) };
}

function contextFor(mesh: TestServer, keyPem: Buffer, svid: Svid): SecureContext {
  return createSecureContext({ ...TLS_CLIENT_OPTIONS, key: keyPem, cert: svid.chainPem, ca: [...new Set([...mesh.ca, ...svid.bundle])] });
}

/** Enrolls `service` with a join token and opens its persistent connection with the SVID. */
async function enrollCaller(mesh: TestServer, service: string, ttlSeconds?: number): Promise<Caller> {
  const { csr, keyPem } = await keyAndCsr(mesh, service);
  const svid = await mesh.anonymous.with({ token: await joinToken(mesh, service) }).post<Svid>('/v1/svid/enroll', {
    csr,
    address: '127.0.0.1',
    port: 20_000,
    upstreams: [],
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  });
  const caller: Partial<Caller> = { svid, context: contextFor(mesh, keyPem, svid) };
  caller.connection = new ControlConnection(mesh.url, () => caller.context as SecureContext);
  caller.client = mesh.anonymous.with({ connection: caller.connection });
  return caller as Caller;
}

/** Renews over the caller's persistent connection and returns the new SVID with its context. */
async function renewCaller(mesh: TestServer, caller: Caller, service: string): Promise<{ svid: Svid; context: SecureContext }> {
  const { csr, keyPem } = await keyAndCsr(mesh, service);
  const svid = await caller.client.post<Svid>('/v1/svid/renew', { csr, instanceId: caller.svid.instanceId });
  return { svid, context: contextFor(mesh, keyPem, svid) };
}

function reportHealth(caller: Caller): Promise<unknown> {
  return caller.client.put('/v1/agent/health', { instanceId: caller.svid.instanceId, status: 'passing' });
}

function rejectedWith(code: ErrorCode): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  };
}

/** Resolves once `stream` has ended or closed, whichever comes first. */
async function streamEnd(stream: Readable): Promise<void> {
  stream.resume();
  await Promise.race([once(stream, 'end'), once(stream, 'close')]);
}

async function rejectionCount(mesh: TestServer, code: ErrorCode): Promise<number> {
  const text = await mesh.operator.get<string>('/v1/metrics');
  const match = new RegExp(`sealmesh_server_rejections_total\\{code="${code}"\\} (\\d+)`).exec(text);
  return match === null ? 0 : Number(match[1]);
}

describe('persistent control-plane connection', () => {
  /** Added to the CA's clock, so that a test can issue an SVID that expires within seconds. */
  let caClockOffsetMs = 0;
  let mesh: TestServer;
  const callers: Caller[] = [];

  before(async () => {
    mesh = await startServer({ caClock: () => new Date(Date.now() + caClockOffsetMs) });
  });

  after(async () => {
    for (const caller of callers) caller.connection.close();
    await mesh.stop();
  });

  test('watch and renewal share one connection', async () => {
    const caller = await enrollCaller(mesh, 'web');
    callers.push(caller);
    const watch = await caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`);
    await reportHealth(caller);
    const renewed = await renewCaller(mesh, caller, 'web');
    assert.notEqual(renewed.svid.chainPem, caller.svid.chainPem);
    assert.equal(caller.connection.sessionsOpened, 1, 'the watch stream, the health report and the renewal used one TLS connection');

    // The proxy moves to a connection with the new SVID, and its calls work there.
    caller.svid = renewed.svid;
    caller.context = renewed.context;
    caller.connection.rotate();
    const moved = await caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`);
    await reportHealth(caller);
    assert.equal(caller.connection.sessionsOpened, 2);
    watch.destroy();
    moved.destroy();
  });

  test('superseded SVID connection is rejected', async () => {
    const caller = await enrollCaller(mesh, 'api');
    callers.push(caller);
    const oldWatch = await caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`);
    const before = await rejectionCount(mesh, 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH');
    const renewed = await renewCaller(mesh, caller, 'api');

    // The old connection still carries the superseded SVID: every call on it fails.
    await assert.rejects(reportHealth(caller), rejectedWith('SEALMESH_ERR_SVID_INSTANCE_MISMATCH'));
    await assert.rejects(caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`), rejectedWith('SEALMESH_ERR_SVID_INSTANCE_MISMATCH'));
    await assert.rejects(renewCaller(mesh, caller, 'api'), rejectedWith('SEALMESH_ERR_SVID_INSTANCE_MISMATCH'));
    assert.equal(caller.connection.sessionsOpened, 1);

    // The watch stream opened with the superseded SVID ends after the grace period.
    const started = Date.now();
    await streamEnd(oldWatch);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= WATCH_SUPERSEDED_GRACE_MS - 1_000, `the stream ended after ${elapsed} ms, before the grace period`);
    assert.ok((await rejectionCount(mesh, 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH')) >= before + 4, 'each rejection and the ended stream are counted');

    caller.svid = renewed.svid;
    caller.context = renewed.context;
    caller.connection.rotate();
    await reportHealth(caller);
  });

  test('deregistered instance connection is rejected', async () => {
    const caller = await enrollCaller(mesh, 'db');
    callers.push(caller);
    await reportHealth(caller);
    await caller.client.post('/v1/agent/deregister', { instanceId: caller.svid.instanceId });
    await assert.rejects(renewCaller(mesh, caller, 'db'), rejectedWith('SEALMESH_ERR_SVID_INSTANCE_MISMATCH'));
    await assert.rejects(caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`), rejectedWith('SEALMESH_ERR_NOT_FOUND'));
    assert.equal(caller.connection.sessionsOpened, 1);
  });

  test('expired client certificate connection is rejected', async () => {
    // With the CA's clock 297 s behind, a 300 s SVID expires 3 s from now on the real clock.
    const lifetimeMs = 3_000;
    caClockOffsetMs = -(300_000 - lifetimeMs);
    let caller: Caller;
    try {
      caller = await enrollCaller(mesh, 'cache', 300);
    } finally {
      caClockOffsetMs = 0;
    }
    callers.push(caller);
    const notAfter = Date.parse(caller.svid.notAfter);
    assert.ok(notAfter - Date.now() <= lifetimeMs, `the SVID expires at ${caller.svid.notAfter}`);
    assert.ok(notAfter > Date.now(), 'the SVID is still valid for its handshake');

    const watch = await caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`);
    await reportHealth(caller);
    const before = await rejectionCount(mesh, 'SEALMESH_ERR_PEER_CERT_EXPIRED');

    // The server ends the watch stream when the certificate expires.
    await streamEnd(watch);
    assert.ok(Date.now() >= notAfter - 50, 'the stream ended at the certificate expiry, not before');

    // The connection stays open, but each request on it is rejected.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, notAfter + 100 - Date.now())));
    await assert.rejects(reportHealth(caller), rejectedWith('SEALMESH_ERR_PEER_CERT_EXPIRED'));
    await assert.rejects(renewCaller(mesh, caller, 'cache'), rejectedWith('SEALMESH_ERR_PEER_CERT_EXPIRED'));
    await assert.rejects(caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`), rejectedWith('SEALMESH_ERR_PEER_CERT_EXPIRED'));
    assert.equal(caller.connection.sessionsOpened, 1, 'the rejected requests used the established connection');
    assert.ok((await rejectionCount(mesh, 'SEALMESH_ERR_PEER_CERT_EXPIRED')) >= before + 4, 'each rejection and the ended stream are counted');
  });

  test('silent connection is replaced', async () => {
    // A TCP relay in front of the server that can stop forwarding on its open connections without
    // closing them, as a vanished peer or a dropped route does.
    const pairs: Array<[Socket, Socket]> = [];
    const relay = createTcpServer((client) => {
      const upstream = connectTcp(mesh.server.address.port, '127.0.0.1');
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      pairs.push([client, upstream]);
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    const relayPort = (relay.address() as { port: number }).port;
    try {
      const enrolled = await enrollCaller(mesh, 'queue');
      enrolled.connection.close();
      const caller: Caller = { ...enrolled, connection: new ControlConnection(`https://127.0.0.1:${relayPort}`, () => enrolled.context, { intervalMs: 200, timeoutMs: 300 }) };
      caller.client = mesh.anonymous.with({ url: caller.connection.url, connection: caller.connection });
      callers.push(caller);
      const watch = await caller.client.stream(`/v1/watch?instance=${caller.svid.instanceId}`);
      await reportHealth(caller);

      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
      const ended = await Promise.race([
        streamEnd(watch).then(() => 'ended'),
        once(watch, 'error').then(() => 'failed'),
        new Promise((resolve) => setTimeout(() => resolve('still open'), 5_000)),
      ]);
      assert.notEqual(ended, 'still open', 'the watch stream on the silent connection ends');
      await reportHealth(caller);
      assert.equal(caller.connection.sessionsOpened, 2, 'the next request opened a new connection');
    } finally {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      relay.close();
    }
  });

  test('curl over HTTP/1.1 and HTTP/2', async () => {
    const bundle = join(tempDir().path, 'bundle.pem');
    writeFileSync(bundle, mesh.ca.join('\n'));
    for (const version of ['--http1.1', '--http2']) {
      const { stdout } = await run('curl', ['--silent', '--show-error', version, '--cacert', bundle, '--write-out', '\\n%{http_version}', `${mesh.url}/v1/bundle`]);
      const [body, httpVersion] = stdout.split('\n');
      assert.equal(httpVersion, version === '--http1.1' ? '1.1' : '2', `curl ${version} negotiated HTTP/${httpVersion}`);
      assert.equal((JSON.parse(body ?? '') as { trustDomain: string }).trustDomain, mesh.server.trustDomain);
    }
    const { stdout } = await run('curl', ['--silent', '--http1.1', '--cacert', bundle, '--header', `Authorization: Bearer ${mesh.operatorToken}`, `${mesh.url}/v1/catalog/services`]);
    assert.ok(Array.isArray((JSON.parse(stdout) as { services: unknown }).services));
  });

  test('HTTP/1.1 API client still works', async () => {
    const client = new ApiClient({ url: mesh.url, ca: mesh.ca, token: mesh.operatorToken });
    const { services } = await client.get<{ services: unknown[] }>('/v1/catalog/services');
    assert.ok(Array.isArray(services));
  });
});

test('refused connect is not counted as opened', async () => {
  // A port that was just free, so the connection attempt is refused before any TLS handshake.
  const listener = createTcpServer().listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const { port } = listener.address() as AddressInfo;
  await new Promise((resolve) => listener.close(resolve));

  const connection = new ControlConnection(`https://127.0.0.1:${port}`, () => createSecureContext(TLS_CLIENT_OPTIONS));
  try {
    await assert.rejects(connection.request('GET', '/v1/bundle', {}, undefined, 5_000), /ECONNREFUSED/);
    await assert.rejects(connection.request('GET', '/v1/bundle', {}, undefined, 5_000), /ECONNREFUSED/);
    assert.equal(connection.sessionsOpened, 0);
  } finally {
    connection.close();
  }
});
