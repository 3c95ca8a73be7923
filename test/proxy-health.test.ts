import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { AppMonitor, type HealthReport } from '../src/proxy/app-monitor.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { ProxyMetrics } from '../src/proxy/metrics.ts';
import type { ServiceSummary } from '../src/server/index.ts';
import { allow, eventually, httpGet, startProxy, startServer, tempDir, testLogger, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Starts an HTTP app whose /healthz responds with the status code `status()` returns. */
async function startHealthApp(status: () => number, port = 0): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer((req, res) => {
    const code = req.url === '/healthz' ? status() : 200;
    res.writeHead(code, { 'content-type': 'text/plain' }).end(`${code}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return { server, port: (server.address() as { port: number }).port };
}

/** Starts a TCP server that accepts connections and never sends a byte. */
async function startHangingApp(): Promise<{ server: NetServer; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { server, port: (server.address() as { port: number }).port, sockets };
}

/** Returns a free TCP port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function closeServer(server: HttpServer | NetServer | undefined): Promise<void> {
  if (server === undefined || !server.listening) return Promise.resolve();
  if ('closeAllConnections' in server) server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Sends a request with any method to the health endpoint. */
function healthRequest(port: number, method: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

async function instanceOf(mesh: TestServer, service: string): Promise<ServiceSummary['instances'][number] | undefined> {
  const { services } = await mesh.operator.get<{ services: ServiceSummary[] }>('/v1/catalog/services');
  return services.find((summary) => summary.name === service)?.instances[0];
}

describe('proxy health endpoint', () => {
  const serverDir = tempDir();
  let mesh: TestServer;
  const proxies: SidecarProxy[] = [];
  const servers: Array<HttpServer | NetServer> = [];
  let hanging: Awaited<ReturnType<typeof startHangingApp>>;

  before(async () => {
    mesh = await startServer({ dataDir: serverDir.path });
    hanging = await startHangingApp();
    servers.push(hanging.server);
  });

  after(async () => {
    for (const proxy of proxies) await proxy.stop();
    for (const socket of hanging?.sockets ?? []) socket.destroy();
    for (const server of servers) await closeServer(server);
    await mesh?.stop();
    serverDir.remove();
  });

  async function proxyFor(service: string, appPort: number, appHealthPath?: string, extra: Parameters<typeof startProxy>[4] = {}): Promise<SidecarProxy> {
    const proxy = await startProxy(mesh, service, appPort, [], {
      health: { host: '127.0.0.1', port: 0 },
      ...(appHealthPath !== undefined ? { appHealthPath } : {}),
      ...extra,
    });
    proxies.push(proxy);
    return proxy;
  }

  test('HTTP check of an app that is up passes', async () => {
    const app = await startHealthApp(() => 200);
    servers.push(app.server);
    const proxy = await proxyFor('http-up', app.port, '/healthz');
    const response = await httpGet(proxy.healthPort!, '/healthz');
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { status: 'passing' });
  });

  test('HTTP check of an app answering 500 fails', async () => {
    const app = await startHealthApp(() => 500);
    servers.push(app.server);
    const proxy = await proxyFor('http-error', app.port, '/healthz');
    const response = await httpGet(proxy.healthPort!, '/healthz');
    assert.equal(response.status, 503);
    assert.deepEqual(JSON.parse(response.body), { status: 'critical', reason: `GET /healthz on the app at 127.0.0.1:${app.port} returned HTTP 500` });
  });

  test('HTTP check of an app that is down fails', async () => {
    const port = await closedPort();
    const proxy = await proxyFor('http-down', port, '/healthz');
    const response = await httpGet(proxy.healthPort!, '/healthz');
    assert.equal(response.status, 503);
    const body = JSON.parse(response.body) as { status: string; reason: string };
    assert.equal(body.status, 'critical');
    assert.match(body.reason, /failed: ECONNREFUSED$/);
  });

  test('HTTP check of a hanging app times out', async () => {
    const proxy = await proxyFor('http-hanging', hanging.port, '/healthz');
    const startedAt = Date.now();
    const response = await httpGet(proxy.healthPort!, '/healthz');
    const elapsed = Date.now() - startedAt;
    assert.equal(response.status, 503);
    assert.deepEqual(JSON.parse(response.body), { status: 'critical', reason: `GET /healthz on the app at 127.0.0.1:${hanging.port} did not answer within 2000 ms` });
    assert.ok(elapsed >= 1_900, `responded after ${elapsed} ms, before the 2 s timeout`);
    assert.ok(elapsed < 4_000, `responded after ${elapsed} ms`);
  });

  test('TCP check of an app that is up passes', async () => {
    const proxy = await proxyFor('tcp-up', hanging.port);
    const response = await httpGet(proxy.healthPort!, '/healthz');
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { status: 'passing' });
  });

  test('TCP check of an app that is down fails', async () => {
    const port = await closedPort();
    const proxy = await proxyFor('tcp-down', port);
    const response = await httpGet(proxy.healthPort!, '/healthz');
    assert.equal(response.status, 503);
    assert.deepEqual(JSON.parse(response.body), { status: 'critical', reason: `connection to the app at 127.0.0.1:${port} failed: ECONNREFUSED` });
  });

  test('only GET /healthz served', async () => {
    const proxy = proxies[0]!;
    assert.equal(await healthRequest(proxy.healthPort!, 'POST', '/healthz'), 405);
    assert.equal(await healthRequest(proxy.healthPort!, 'GET', '/metrics'), 404);
    assert.equal(await healthRequest(proxy.healthPort!, 'GET', '/'), 404);
  });

  test('catalog shows the instance critical after the app goes down', async () => {
    let status = 200;
    const app = await startHealthApp(() => status);
    servers.push(app.server);
    const api = await proxyFor('health-api', app.port, '/healthz', { healthCheckIntervalMs: 100 });
    const web = await startProxy(mesh, 'health-web', 1, ['health-api']);
    proxies.push(web);
    await allow(mesh, 'health-web', 'health-api');
    await waitForEndpoints(web, 'health-api');
    assert.equal((await instanceOf(mesh, 'health-api'))?.health, 'passing');

    await closeServer(app.server);

    // A check in flight while the app closes fails with ECONNRESET; the checks after it find the port closed.
    const refused = /GET \/healthz on the app at 127\.0\.0\.1:\d+ failed: ECONNREFUSED/;
    await eventually(async () => refused.test((await instanceOf(mesh, 'health-api'))?.healthOutput ?? ''), 5_000, 'the check output to report the closed port');
    const instance = await instanceOf(mesh, 'health-api');
    assert.equal(instance?.health, 'critical');
    assert.match(instance?.healthOutput ?? '', refused);
    await eventually(() => web.endpoints('health-api').length === 0, 5_000, 'the endpoint to leave the other proxy\'s snapshot');
    assert.equal((await httpGet(api.healthPort!, '/healthz')).status, 503);

    // A failing health path counts as down too, and recovery brings the endpoint back.
    status = 503;
    const restarted = await startHealthApp(() => status, app.port);
    servers.push(restarted.server);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await instanceOf(mesh, 'health-api'))?.health, 'critical');
    status = 200;
    await eventually(async () => (await instanceOf(mesh, 'health-api'))?.health === 'passing', 5_000, 'the instance to pass again');
    await waitForEndpoints(web, 'health-api');
  });
});

describe('app monitor', () => {
  test('start sends one report with the measured health', async () => {
    const app = await startHealthApp(() => 503);
    const reports: HealthReport[] = [];
    const monitor = new AppMonitor({
      app: { host: '127.0.0.1', port: app.port },
      httpPath: '/healthz',
      perimeter: 'warn',
      timeoutMs: 2_000,
      metrics: new ProxyMetrics(),
      log: testLogger('app-monitor'),
      report: async (report) => {
        reports.push(report);
      },
      setServing: () => undefined,
    });
    try {
      await monitor.start(60_000, 60_000);
      await eventually(() => reports.length > 0, 5_000, 'the first report');
      // A report sent between the two first checks would claim `passing` for an app that fails.
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(reports.length, 1);
      assert.equal(reports[0]?.status, 'critical');
      assert.equal(reports[0]?.appExposure?.exposed, false);
    } finally {
      monitor.stop();
      await closeServer(app.server);
    }
  });
});
