import assert from 'node:assert/strict';
import { type Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { createSecureContext, type SecureContext } from 'node:tls';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { PeerSessionCache } from '../src/proxy/tls-sessions.ts';
import { PeerPool } from '../src/proxy/http/peer-pool.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { TLS_CLIENT_OPTIONS, TLS_SERVER_OPTIONS } from '../src/tls/index.ts';
import { eventually, startServer, type TestServer } from './helpers/mesh.ts';

/** Issues a real SVID for `service` from the mesh CA, as PEM key and chain. */
async function svid(mesh: TestServer, service: string): Promise<{ key: Buffer | string; cert: string }> {
  const keys = await generateKeyPair();
  const entitled = { trustDomain: mesh.server.ca.trustDomain, namespace: 'default', service };
  const issued = await mesh.server.ca.issueSvid({ csrPem: await generateCsr(formatSpiffeId(entitled), keys), entitled });
  return { key: await privateKeyToPem(keys.privateKey), cert: issued.chainPem };
}

describe('peer that negotiates only HTTP/1.1', () => {
  let mesh: TestServer;
  let peer: HttpsServer;
  let port: number;
  let connections = 0;
  /** The peer's connection that carried each request path, and the connections that have closed. */
  const socketOf = new Map<string, Socket>();
  const closed = new WeakSet<Socket>();
  /** Responses to `/slow` requests, which the test sends when it calls them. */
  const pendingSlowResponses: Array<() => void> = [];
  let pool: PeerPool;
  let secureContext: SecureContext;

  /** Sends a GET through `agent` and resolves with the response body. */
  function get(agent: Agent, path: string): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const req = request({ agent, host: '127.0.0.1', port, path }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
  }

  before(async () => {
    mesh = await startServer();
    const api = await svid(mesh, 'api');
    // A peer proxy without HTTP/2: it offers only http/1.1 and requires a client certificate.
    peer = createHttpsServer({ ...TLS_SERVER_OPTIONS, ...api, ca: mesh.server.ca.bundle(), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'] }, (req, res) => {
      const answer = (): void => {
        res.end(`${req.httpVersion} ${req.url}`);
      };
      socketOf.set(req.url ?? '', req.socket);
      if (req.url === '/slow') pendingSlowResponses.push(answer);
      else answer();
    });
    peer.on('secureConnection', (socket) => {
      connections += 1;
      socket.on('close', () => closed.add(socket));
    });
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', () => resolve()));
    port = (peer.address() as { port: number }).port;
    const web = await svid(mesh, 'web');
    secureContext = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...web, ca: mesh.server.ca.bundle() });
    pool = new PeerPool({
      expected: { namespace: 'default', service: 'api' },
      trustDomain: () => mesh.server.ca.trustDomain,
      secureContext: () => secureContext,
      alpn: () => ['h2', 'http/1.1'],
      connectTimeoutMs: 5_000,
      sessions: new PeerSessionCache(),
    });
  });

  after(async () => {
    pool?.close();
    peer?.closeAllConnections();
    await new Promise<void>((resolve) => peer?.close(() => resolve()));
    await mesh?.stop();
  });

  test('falls back to a keep-alive agent', async () => {
    const endpoint = { instanceId: 'peer-1', address: '127.0.0.1', port, spiffeId: '', protocol: 'http' as const };
    const channel = await pool.channel(endpoint);
    assert.equal(channel.kind, 'h1');
    assert.equal((await pool.channel(endpoint)).kind, 'h1');
    if (channel.kind !== 'h1') return;
    const connectionsBefore = connections;
    for (const path of ['/one', '/two', '/three']) {
      assert.equal(await get(channel.agent, path), `1.1 ${path}`);
    }
    // The ALPN probe used one connection; the three requests shared one kept-alive connection.
    assert.equal(connections - connectionsBefore, 1);
  });

  test('a new SVID retires the keep-alive connections after their requests', async () => {
    const endpoint = { instanceId: 'peer-2', address: '127.0.0.1', port, spiffeId: '', protocol: 'http' as const };
    const first = await pool.channel(endpoint);
    assert.equal(first.kind, 'h1');
    if (first.kind !== 'h1') return;
    // One connection busy with a request that the peer has not responded to yet, and one idle kept-alive connection.
    const slow = get(first.agent, '/slow');
    await eventually(() => pendingSlowResponses.length === 1, 5_000, 'the peer holds the slow request');
    assert.equal(await get(first.agent, '/idle'), '1.1 /idle');
    const busySocket = socketOf.get('/slow') as Socket;
    const idleSocket = socketOf.get('/idle') as Socket;
    assert.notEqual(busySocket, idleSocket);

    const renewed = await svid(mesh, 'web');
    secureContext = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...renewed, ca: mesh.server.ca.bundle() });
    const second = await pool.channel(endpoint);
    assert.equal(second.kind, 'h1');
    if (second.kind !== 'h1') return;
    assert.notEqual(second.agent, first.agent, 'the renewal replaced the agent');
    // The idle connection closes at once; the busy one stays until its response ends.
    await eventually(() => closed.has(idleSocket), 5_000, 'the idle connection to close');
    assert.equal(closed.has(busySocket), false, 'the busy connection stays open until its response');
    (pendingSlowResponses.shift() as () => void)();
    assert.equal(await slow, '1.1 /slow');
    await eventually(() => closed.has(busySocket), 5_000, 'the busy connection to close after its response');

    const connectionsBefore = connections;
    assert.equal(await get(second.agent, '/after'), '1.1 /after');
    assert.equal(connections - connectionsBefore, 1, 'the request after the renewal dials a new connection');
  });
});

