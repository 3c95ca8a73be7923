import assert from 'node:assert/strict';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { connectPeer, sessionCacheKey, type PeerTarget } from '../src/proxy/http/peer-connector.ts';
import { PeerSessionCache } from '../src/proxy/tls-sessions.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { TLS_CLIENT_OPTIONS } from '../src/tls/index.ts';
import { allow, eventually, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Builds a client context with a real SVID for `service` from the mesh CA. */
async function svidContext(mesh: TestServer, service: string): Promise<SecureContext> {
  const keys = await generateKeyPair();
  const entitled = { trustDomain: mesh.server.ca.trustDomain, namespace: 'default', service };
  const issued = await mesh.server.ca.issueSvid({ csrPem: await generateCsr(formatSpiffeId(entitled), keys), entitled });
  return createSecureContext({ ...TLS_CLIENT_OPTIONS, key: await privateKeyToPem(keys.privateKey), cert: issued.chainPem, ca: mesh.server.ca.bundle() });
}

/** Sends one HTTP/1.1 request on a connected socket and returns the raw response. */
function exchange(socket: TLSSocket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.once('error', reject);
    socket.write(`GET ${path} HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n`);
  });
}

describe('TLS session resumption between proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let api: SidecarProxy;
  let target: PeerTarget;
  const sessions = new PeerSessionCache();
  /** The session cached for the api instance, as connectPeer looks it up. */
  const cached = (): Buffer | undefined => sessions.get(sessionCacheKey(target), target.secureContext, 'default/api')?.session;

  before(async () => {
    mesh = await startServer();
    app = await startHttpApp('api');
    app.server.removeAllListeners('request');
    app.server.on('request', (req, res) => res.end(String(req.headers['x-forwarded-client-cert'] ?? 'none')));
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http' });
    await allow(mesh, 'web', 'api');
    await waitForDecision(api, 'web', true);
    target = {
      endpoint: { instanceId: api.instanceId, address: '127.0.0.1', port: api.inboundPort, spiffeId: api.spiffeId!, protocol: 'http' },
      expected: { namespace: 'default', service: 'api' },
      trustDomain: mesh.server.ca.trustDomain,
      secureContext: await svidContext(mesh, 'web'),
      alpn: ['http/1.1'],
      connectTimeoutMs: 5_000,
    };
  });

  after(async () => {
    await api?.stop();
    await app?.close();
    await mesh?.stop();
  });

  test('second connection resumes', async () => {
    const first = await connectPeer(target, sessions);
    assert.equal(first.isSessionReused(), false);
    assert.match(await exchange(first, '/one'), /URI=spiffe:\/\/[^/]+\/ns\/default\/svc\/web/);
    await eventually(() => cached() !== undefined, 5_000, 'a session ticket');

    const second = await connectPeer(target, sessions);
    assert.equal(second.isSessionReused(), true);
    // The inbound proxy still reads the caller's SPIFFE ID from the resumed session.
    assert.match(await exchange(second, '/two'), /URI=spiffe:\/\/[^/]+\/ns\/default\/svc\/web/);
  });

  test('session verified for another identity is not offered', async () => {
    const key = sessionCacheKey(target);
    const ticket = cached();
    assert.ok(ticket !== undefined);
    // A genuine ticket of the api instance, recorded as if its handshake had verified db: looking it
    // up for api must not offer it, so the next connection runs a full handshake.
    sessions.set(key, target.secureContext, 'default/db', ticket, Date.now() + 60_000);
    assert.equal(cached(), undefined);
    const socket = await connectPeer(target, sessions);
    assert.equal(socket.isSessionReused(), false);
    await exchange(socket, '/full');
  });

  test('expired session is not offered', async () => {
    const key = sessionCacheKey(target);
    await eventually(() => cached() !== undefined, 5_000, 'a session ticket');
    sessions.set(key, target.secureContext, 'default/api', cached()!, Date.now() - 1);
    const socket = await connectPeer(target, sessions);
    assert.equal(socket.isSessionReused(), false);
    // Reading the response also receives the new ticket that the next test resumes.
    await exchange(socket, '/fresh');
  });

  test('resumed caller is denied after intention change', async () => {
    await eventually(() => cached() !== undefined, 5_000, 'a session ticket');
    await allow(mesh, 'web', 'api', 'deny');
    await waitForDecision(api, 'web', false);
    const socket = await connectPeer(target, sessions);
    assert.equal(socket.isSessionReused(), true);
    const response = await exchange(socket, '/three');
    assert.match(response, /^HTTP\/1\.1 403/);
    assert.match(response, /request denied by intention web -> api/);
    await allow(mesh, 'web', 'api');
  });
});

describe('TCP service half-close', () => {
  let mesh: TestServer;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let app: NetServer;

  before(async () => {
    mesh = await startServer();
    // The app responds only after the client has finished sending, which needs a half-open connection.
    app = createNetServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => socket.end(`got:${Buffer.concat(chunks).toString('utf8')}`));
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    api = await startProxy(mesh, 'api', (app.address() as { port: number }).port);
    web = await startProxy(mesh, 'web', 1, ['api']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    await mesh?.stop();
  });

  test('response after client end arrives', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = netConnect({ host: '127.0.0.1', port: web.upstreamPort('api')!, allowHalfOpen: true });
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => {
        socket.end();
        resolve(Buffer.concat(chunks).toString('utf8'));
      });
      socket.on('error', reject);
      socket.on('connect', () => socket.end('hello'));
    });
    assert.equal(reply, 'got:hello');
  });
});
