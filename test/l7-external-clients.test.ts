import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { eventually, httpGet, startProxy, startServer, tempDir, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

// The clients run as child processes while the proxies run in this process, so they must never
// be started synchronously.
const run = promisify(execFile);

/** Returns the value of one series from Prometheus text, or undefined when it is absent. */
function series(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** An HTTP/1.1 app that returns the method, path, transfer encoding, length and SHA-256 of the body. */
function startDigestApp(): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer((req, res) => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
    });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, path: req.url, transferEncoding: req.headers['transfer-encoding'] ?? null, length, sha256: hash.digest('hex') }));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

describe('curl through two proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startDigestApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let url: string;
  const dir = tempDir();

  before(async () => {
    mesh = await startServer();
    app = await startDigestApp();
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http' });
    web = await startProxy(mesh, 'web', 1, ['api']);
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', replace: true, permissions: [{ action: 'deny', http: { methods: ['DELETE'] } }] });
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
    url = `http://127.0.0.1:${web.upstreamPort('api')!}`;
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => {
      app?.server.closeAllConnections();
      app?.server.close(() => resolve());
    });
    await mesh?.stop();
    dir.remove();
  });

  test('allowed GET', async () => {
    const { stdout } = await run('curl', ['-sS', '--http1.1', '-w', '\n%{http_code}', `${url}/items/1`]);
    const [body, status] = stdout.split('\n');
    assert.equal(status, '200');
    const reply = JSON.parse(body!) as { method: string; path: string };
    assert.equal(reply.method, 'GET');
    assert.equal(reply.path, '/items/1');
  });

  test('denied DELETE names the intention', async () => {
    const { stdout } = await run('curl', ['-sS', '--http1.1', '-X', 'DELETE', '-D', '-', '-w', '%{http_code}', `${url}/items/1`]);
    assert.match(stdout, /^HTTP\/1\.1 403 /);
    assert.match(stdout, /x-sealmesh-error: SEALMESH_ERR_L7_REQUEST_DENIED/i);
    assert.match(stdout, /request denied by intention web -> api/);
    assert.ok(stdout.endsWith('403'));
  });

  test('chunked upload arrives whole', async () => {
    const path = join(dir.path, 'upload.bin');
    const content = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let index = 0; index < content.length; index += 1) content[index] = (index * 31) & 0xff;
    writeFileSync(path, content);
    const { stdout } = await run('curl', ['-sS', '--http1.1', '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${path}`, '-w', '\n%{http_code}', `${url}/upload`], { maxBuffer: 1024 * 1024 });
    const [body, status] = stdout.split('\n');
    assert.equal(status, '200');
    const reply = JSON.parse(body!) as { method: string; transferEncoding: string | null; length: number; sha256: string };
    assert.equal(reply.method, 'POST');
    assert.equal(reply.transferEncoding, 'chunked');
    assert.equal(reply.length, content.length);
    assert.equal(reply.sha256, createHash('sha256').update(content).digest('hex'));
  });
});

describe('h2load through two proxies', () => {
  let mesh: TestServer;
  let api: SidecarProxy;
  let web: SidecarProxy;
  const app = createHttp2Server((req, res) => res.end(`ok ${req.url}`));
  const REQUESTS = 200;

  before(async () => {
    mesh = await startServer();
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    api = await startProxy(mesh, 'api', (app.address() as { port: number }).port, [], { protocol: 'http2', admin: { host: '127.0.0.1', port: 0 } });
    web = await startProxy(mesh, 'web', 1, ['api'], { admin: { host: '127.0.0.1', port: 0 } });
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', replace: true });
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    await mesh?.stop();
  });

  test('bounded run succeeds and is counted', async () => {
    const { stdout } = await run('h2load', ['-n', String(REQUESTS), '-c', '4', '-m', '10', '-T', '30', `http://127.0.0.1:${web.upstreamPort('api')!}/load`], { timeout: 60_000 });
    assert.match(stdout, /Application protocol: h2c/);
    assert.match(stdout, new RegExp(`requests: ${REQUESTS} total, ${REQUESTS} started, ${REQUESTS} done, ${REQUESTS} succeeded, 0 failed, 0 errored, 0 timeout`));
    assert.match(stdout, new RegExp(`status codes: ${REQUESTS} 2xx, 0 3xx, 0 4xx, 0 5xx`));

    const outbound = 'direction="outbound",source="web",destination="api",method="GET",status="2xx"';
    const inbound = 'direction="inbound",source="web",destination="api",method="GET",status="2xx"';
    // The proxies count a request once its response has ended, which may follow the client's read.
    await eventually(async () => series((await httpGet(web.adminPort!, '/metrics')).body, 'sealmesh_proxy_http_requests_total', outbound) === REQUESTS, 5_000, 'outbound count');
    await eventually(async () => series((await httpGet(api.adminPort!, '/metrics')).body, 'sealmesh_proxy_http_requests_total', inbound) === REQUESTS, 5_000, 'inbound count');
    const webText = (await httpGet(web.adminPort!, '/metrics')).body;
    const apiText = (await httpGet(api.adminPort!, '/metrics')).body;
    const total = (text: string, direction: string): number =>
      text
        .split('\n')
        .filter((line) => line.startsWith(`sealmesh_proxy_http_requests_total{direction="${direction}"`))
        .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
    assert.equal(total(webText, 'outbound'), REQUESTS);
    assert.equal(total(apiText, 'inbound'), REQUESTS);
  });

  test('HTTP/1.1 client gets a readable refusal', async () => {
    const { stdout } = await run('curl', ['-sS', '--http1.1', '-D', '-', '-w', '%{http_code}', `http://127.0.0.1:${web.upstreamPort('api')!}/h1`]);
    assert.match(stdout, /^HTTP\/1\.1 505 /);
    assert.match(stdout, /x-sealmesh-error: SEALMESH_ERR_L7_PROTOCOL_MISMATCH/i);
    assert.match(stdout, /upstream api uses protocol http2: send cleartext HTTP\/2 with prior knowledge \(h2c\)/);
    const metrics = (await httpGet(web.adminPort!, '/metrics')).body;
    assert.equal(series(metrics, 'sealmesh_proxy_rejections_total', 'code="SEALMESH_ERR_L7_PROTOCOL_MISMATCH"'), 1);
  });
});
