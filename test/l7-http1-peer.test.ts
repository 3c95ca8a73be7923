import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { createSecureContext } from 'node:tls';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { PeerSessionCache } from '../src/proxy/tls-sessions.ts';
import { PeerPool } from '../src/proxy/http/peer-pool.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { TLS_CLIENT_OPTIONS, TLS_SERVER_OPTIONS } from '../src/tls/index.ts';
import { startServer, type TestServer } from './helpers/mesh.ts';

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
  let pool: PeerPool;

  before(async () => {
    mesh = await startServer();
    const api = await svid(mesh, 'api');
    // A peer proxy without HTTP/2: it offers only http/1.1 and requires a client certificate.
    peer = createHttpsServer({ ...TLS_SERVER_OPTIONS, ...api, ca: mesh.server.ca.bundle(), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'] }, (req, res) => {
      res.end(`${req.httpVersion} ${req.url}`);
    });
    peer.on('secureConnection', () => (connections += 1));
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', () => resolve()));
    port = (peer.address() as { port: number }).port;
    const web = await svid(mesh, 'web');
    const secureContext = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...web, ca: mesh.server.ca.bundle() });
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
      const body = await new Promise<string>((resolve, reject) => {
        const req = request({ agent: channel.agent, host: '127.0.0.1', port, path }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(body, `1.1 ${path}`);
    }
    // The ALPN probe used one connection; the three requests shared one kept-alive connection.
    assert.equal(connections - connectionsBefore, 1);
  });
});
