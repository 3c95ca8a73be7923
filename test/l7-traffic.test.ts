import assert from 'node:assert/strict';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseUpstream, type SidecarProxy } from '../src/proxy/index.ts';
import { resolveTrafficSettings, type TrafficSettingsInput } from '../src/proxy/traffic/index.ts';
import { allow, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

interface App {
  server: HttpServer;
  port: number;
  hits: Map<string, number>;
}

/** Starts an HTTP app that responds with `status` after `delayMs` and counts requests by method and path. */
async function startApp(name: string, status: number, delayMs = 0): Promise<App> {
  const hits = new Map<string, number>();
  const server = createHttpServer((req, res) => {
    const key = `${req.method} ${req.url}`;
    hits.set(key, (hits.get(key) ?? 0) + 1);
    req.resume();
    setTimeout(() => res.writeHead(status, { 'content-type': 'text/plain' }).end(name), delayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { server, port: (server.address() as { port: number }).port, hits };
}

/** Returns a TCP port on 127.0.0.1 that nothing listens on. */
async function deadPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function send(port: number, method = 'GET', path = '/', body?: string): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, ...(res.headers['x-sealmesh-error'] !== undefined ? { error: String(res.headers['x-sealmesh-error']) } : {}) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function metricSum(proxy: SidecarProxy, name: 'retries' | 'ejections' | 'circuitBreakerTrips', labels: Record<string, string>): Promise<number> {
  const metric = await proxy.metrics.traffic[name].get();
  return metric.values
    .filter((value) => Object.entries(labels).every(([label, wanted]) => (value.labels as Record<string, unknown>)[label] === wanted))
    .reduce((sum, value) => sum + value.value, 0);
}

describe('traffic management across proxies', () => {
  let mesh: TestServer;
  const apps: App[] = [];
  const proxies: SidecarProxy[] = [];
  let web: SidecarProxy;

  async function instance(service: string, status: number, delayMs = 0, advertisePort?: number): Promise<App> {
    const app = await startApp(`${service}-${apps.length}`, status, delayMs);
    apps.push(app);
    proxies.push(await startProxy(mesh, service, app.port, [], { protocol: 'http', ...(advertisePort !== undefined ? { advertise: { host: '127.0.0.1', port: advertisePort } } : {}) }));
    return app;
  }

  before(async () => {
    mesh = await startServer();
    await instance('api', 200);
    // Registered at a port where nothing listens: every connect to it fails.
    await instance('api', 200, 0, await deadPort());
    await instance('flaky', 200);
    await instance('flaky', 500);
    await instance('slow', 200, 400);
    await instance('slow', 200, 400);
    await instance('tiny', 200, 300);
    await instance('gateway', 503);
    await instance('gateway', 200);
    const settings: Record<string, TrafficSettingsInput> = {
      api: { passiveHealthCheck: { maxFailures: 2, maxEjectionPercent: 50 } },
      flaky: { passiveHealthCheck: { maxFailures: 3, maxEjectionPercent: 50 } },
      slow: { perTryTimeoutMs: 150, requestTimeoutMs: 2_000, retry: { numRetries: 1, retryOn: ['connect_failure', 'refused_stream', 'per_try_timeout'] } },
      tiny: { limits: { maxConcurrentRequests: 2 } },
      gateway: { retry: { numRetries: 1, retryOn: ['gateway_error'] }, passiveHealthCheck: { maxEjectionPercent: 0 } },
    };
    web = await startProxy(mesh, 'web', 1, [], {
      upstreams: Object.entries(settings).map(([name, input]) => ({ ...parseUpstream(`${name}=127.0.0.1:0`), traffic: resolveTrafficSettings(input) })),
    });
    proxies.push(web);
    for (const service of ['api', 'flaky', 'slow', 'tiny', 'gateway']) {
      await allow(mesh, 'web', service);
      await waitForEndpoints(web, service, service === 'tiny' ? 1 : 2);
    }
    for (const proxy of proxies.slice(0, -1)) await waitForDecision(proxy, 'web', true);
  });

  after(async () => {
    for (const proxy of proxies.reverse()) await proxy.stop();
    for (const app of apps) {
      app.server.closeAllConnections();
      await new Promise<void>((resolve) => app.server.close(() => resolve()));
    }
    await mesh?.stop();
  });

  test('connect failures retry and eject', async () => {
    const port = web.upstreamPort('api')!;
    const statuses: number[] = [];
    for (let index = 0; index < 10; index += 1) statuses.push((await send(port)).status);
    assert.deepEqual(statuses, Array(10).fill(200));
    assert.ok((await metricSum(web, 'retries', { upstream: 'api', cause: 'connect_failure' })) >= 1);
    assert.equal(await metricSum(web, 'ejections', { upstream: 'api' }), 1);

    // With the dead instance ejected, no request tries it again.
    const retriesBefore = await metricSum(web, 'retries', { upstream: 'api' });
    for (let index = 0; index < 10; index += 1) assert.equal((await send(port)).status, 200);
    assert.equal(await metricSum(web, 'retries', { upstream: 'api' }), retriesBefore);
  });

  test('consecutive 5xx eject an instance', async () => {
    const port = web.upstreamPort('flaky')!;
    const failing = apps[3]!;
    for (let index = 0; index < 12; index += 1) await send(port, 'GET', `/warm/${index}`);
    assert.equal(await metricSum(web, 'ejections', { upstream: 'flaky' }), 1);
    const failingHits = [...failing.hits.values()].reduce((sum, value) => sum + value, 0);
    assert.equal(failingHits, 3, 'the failing instance served exactly the three 5xx that ejected it');
    for (let index = 0; index < 6; index += 1) assert.equal((await send(port, 'GET', `/after/${index}`)).status, 200);
  });

  test('per-try timeout retries idempotent requests', async () => {
    const port = web.upstreamPort('slow')!;
    const response = await send(port, 'GET', '/idempotent');
    // Both instances are slower than the per-try timeout, so both tries time out.
    assert.equal(response.status, 504);
    assert.equal(response.error, 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT');
    assert.equal(await metricSum(web, 'retries', { upstream: 'slow', cause: 'per_try_timeout' }), 1);
    const hits = (apps[4]!.hits.get('GET /idempotent') ?? 0) + (apps[5]!.hits.get('GET /idempotent') ?? 0);
    assert.equal(hits, 2);
  });

  test('non-idempotent request is never retried', async () => {
    const port = web.upstreamPort('slow')!;
    const retriesBefore = await metricSum(web, 'retries', { upstream: 'slow' });
    const response = await send(port, 'POST', '/order', 'item=1');
    assert.equal(response.status, 504);
    assert.equal(await metricSum(web, 'retries', { upstream: 'slow' }), retriesBefore);
    const hits = (apps[4]!.hits.get('POST /order') ?? 0) + (apps[5]!.hits.get('POST /order') ?? 0);
    assert.equal(hits, 1);
  });

  test('circuit breaker rejects a burst', async () => {
    const port = web.upstreamPort('tiny')!;
    const responses = await Promise.all(Array.from({ length: 10 }, (_, index) => send(port, 'GET', `/burst/${index}`)));
    const ok = responses.filter((response) => response.status === 200);
    const rejected = responses.filter((response) => response.status === 503);
    assert.equal(ok.length, 2);
    assert.equal(rejected.length, 8);
    for (const response of rejected) {
      assert.equal(response.error, 'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN');
      assert.match(response.body, /^upstream tiny has reached its circuit-breaker limit limits\.max_concurrent_requests = 2; /);
    }
    assert.equal(await metricSum(web, 'circuitBreakerTrips', { upstream: 'tiny', reason: 'max_concurrent_requests' }), 8);
  });

  test('gateway errors retry idempotent requests only', async () => {
    const port = web.upstreamPort('gateway')!;
    const unavailable = apps[7]!;
    // Round robin sends some of these first to the instance that returns 503, and each such try is retried.
    for (let index = 0; index < 4; index += 1) {
      const response = await send(port, 'GET', `/read/${index}`);
      assert.equal(response.status, 200);
      assert.equal(response.body, 'gateway-8');
    }
    const firstTries = [...unavailable.hits.keys()].filter((key) => key.startsWith('GET /read/')).length;
    assert.ok(firstTries >= 1);
    assert.equal(await metricSum(web, 'retries', { upstream: 'gateway', cause: 'gateway_error' }), firstTries);

    // A POST that reached the app is not sent again: its 503 goes back to the client as the app sent it.
    const statuses: number[] = [];
    for (let index = 0; index < 2; index += 1) statuses.push((await send(port, 'POST', `/write/${index}`, 'x')).status);
    assert.deepEqual(statuses.toSorted(), [200, 503]);
    assert.equal(await metricSum(web, 'retries', { upstream: 'gateway', cause: 'gateway_error' }), firstTries);
  });
});
