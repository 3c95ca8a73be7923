import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Agent, createServer as createHttpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect as http2Connect, createServer as createHttp2Server, type Http2Server } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { Readable } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Starts an HTTP/1.1 app that returns what it received and can stream large bodies. */
function startEchoHttpApp(): Promise<{ server: HttpServer; port: number; sockets: () => number }> {
  let sockets = 0;
  const server = createHttpServer((req, res) => {
    if (req.url?.startsWith('/download/') === true) {
      const total = Number(req.url.slice('/download/'.length));
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (sent < total) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
    });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, path: req.url, headers: req.headers, length, sha256: hash.digest('hex') }));
    });
  });
  server.on('connection', () => (sockets += 1));
  server.on('checkContinue', (req, res) => {
    if (req.headers['x-reject'] !== undefined) {
      res.writeHead(417, { 'content-type': 'text/plain' }).end('rejected before the body\n');
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (socket, req) => {
    socket.send(`hello ${String(req.headers['x-forwarded-client-cert'] !== undefined)}`);
    socket.on('message', (data) => socket.send(`echo ${String(data)}`));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port, sockets: () => sockets })));
}

function send(port: number, options: { method?: string; path?: string; headers?: Record<string, string>; body?: Readable | string; agent?: Agent }): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path ?? '/', headers: options.headers ?? {}, agent: options.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.body instanceof Readable) options.body.pipe(req);
    else req.end(options.body);
  });
}

describe('HTTP/1.1 service across two proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startEchoHttpApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let port: number;

  before(async () => {
    mesh = await startServer();
    app = await startEchoHttpApp();
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http' });
    web = await startProxy(mesh, 'web', 1, ['api']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
    port = web.upstreamPort('api')!;
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => {
      app?.server.closeAllConnections();
      app?.server.close(() => resolve());
    });
    await mesh?.stop();
  });

  test('protocol is registered in the catalog', async () => {
    const endpoint = web.endpoints('api')[0];
    assert.equal(endpoint?.protocol, 'http');
    assert.equal(web.upstreamProtocol('api'), 'http');
  });

  test('requests share one pooled connection between proxies', async () => {
    const before = await handshakes(web);
    const agent = new Agent({ keepAlive: true });
    for (let index = 0; index < 5; index += 1) {
      const response = await send(port, { path: `/item/${index}`, agent });
      assert.equal(response.status, 200);
      assert.equal(JSON.parse(response.body.toString()).path, `/item/${index}`);
    }
    agent.destroy();
    const after = await handshakes(web);
    assert.ok(after - before <= 1, `expected at most one new handshake, saw ${after - before}`);
  });

  test('large chunked request body streams through', async () => {
    const size = 24 * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024, 3);
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= size) return void this.push(null);
        sent += chunk.length;
        this.push(chunk);
      },
    });
    const expected = createHash('sha256');
    for (let offset = 0; offset < size; offset += chunk.length) expected.update(chunk);
    const response = await send(port, { method: 'POST', path: '/upload', body });
    const result = JSON.parse(response.body.toString()) as { length: number; sha256: string; headers: Record<string, string> };
    assert.equal(response.status, 200);
    assert.equal(result.length, size);
    assert.equal(result.sha256, expected.digest('hex'));
  });

  test('large response body streams back', async () => {
    const size = 16 * 1024 * 1024;
    const response = await send(port, { path: `/download/${size}` });
    assert.equal(response.status, 200);
    assert.equal(response.body.length, size);
  });

  test('expect 100-continue gets the app answer', async () => {
    const accepted = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/continue', headers: { expect: '100-continue', 'content-length': '5' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, continued }));
      });
      req.on('continue', () => {
        continued = true;
        req.end('hello');
      });
      req.on('error', reject);
    });
    assert.equal(accepted.continued, true);
    assert.equal(accepted.status, 200);

    const rejected = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/continue', headers: { expect: '100-continue', 'content-length': '5', 'x-reject': '1' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, continued }));
      });
      req.on('continue', () => {
        continued = true;
        req.end('hello');
      });
      req.on('error', reject);
    });
    assert.equal(rejected.continued, false);
    assert.equal(rejected.status, 417);
  });

  test('x-forwarded-client-cert names the caller', async () => {
    const response = await send(port, { path: '/xfcc', headers: { 'x-forwarded-client-cert': 'By=spiffe://evil/x;URI=spiffe://evil/admin' } });
    const { headers } = JSON.parse(response.body.toString()) as { headers: Record<string, string> };
    const trustDomain = mesh.server.trustDomain;
    assert.equal(
      headers['x-forwarded-client-cert'],
      `By=spiffe://${trustDomain}/ns/default/svc/api;Hash=${web.svid!.certificateSha256};URI=spiffe://${trustDomain}/ns/default/svc/web`,
    );
  });

  test('websocket upgrade passes through', async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      socket.on('message', (data) => {
        messages.push(String(data));
        if (messages.length === 1) socket.send('ping');
        if (messages.length === 2) resolve();
      });
      socket.on('error', reject);
    });
    socket.close();
    assert.deepEqual(messages, ['hello true', 'echo ping']);
  });
});

async function handshakes(proxy: SidecarProxy): Promise<number> {
  const metric = await proxy.metrics.http.handshakes.get();
  return metric.values.filter((value) => value.labels.direction === 'outbound').reduce((sum, value) => sum + value.value, 0);
}

export { createHttp2Server, http2Connect, type Http2Server };
