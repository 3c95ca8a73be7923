import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { isSealmeshError } from '../src/errors/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import type { ServiceSummary } from '../src/server/index.ts';
import { runCli } from './helpers/cli.ts';
import { allow, eventually, httpGet, startProxy, startServer, tempDir, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Starts an HTTP app on `host`, on `port` or a free one, and returns its server and port. */
async function startApp(host: string, port = 0): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('app\n'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host.includes(':') }, () => resolve());
  });
  return { server, port: (server.address() as { port: number }).port };
}

function closeApp(server: Server | undefined): Promise<void> {
  if (server === undefined || !server.listening) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function metricValue(proxy: SidecarProxy, name: string): Promise<number> {
  const text = await proxy.metrics.registry.getSingleMetricAsString(name);
  const line = text.split('\n').find((entry) => entry.startsWith(name));
  return Number(line?.split(' ').at(-1));
}

async function instanceOf(mesh: TestServer, service: string): Promise<ServiceSummary['instances'][number] | undefined> {
  const { services } = await mesh.operator.get<{ services: ServiceSummary[] }>('/v1/catalog/services');
  return services.find((summary) => summary.name === service)?.instances[0];
}

describe('app exposure at the proxy', () => {
  const serverDir = tempDir();
  let mesh: TestServer;
  const apps: Server[] = [];
  const proxies: SidecarProxy[] = [];

  before(async () => {
    mesh = await startServer({ dataDir: serverDir.path });
  });

  after(async () => {
    for (const proxy of proxies) await proxy.stop();
    for (const app of apps) await closeApp(app);
    await mesh?.stop();
    serverDir.remove();
  });

  test('strict mode refuses an app on 0.0.0.0', async () => {
    const app = await startApp('0.0.0.0');
    apps.push(app.server);
    await assert.rejects(startProxy(mesh, 'strict-v4', app.port, [], { perimeter: 'strict' }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_APP_EXPOSED'), String(error));
      assert.ok(error.message.includes(`0.0.0.0:${app.port}`), error.message);
      assert.ok(error.message.includes(`bind the app to 127.0.0.1:${app.port}`), error.message);
      assert.ok(error.message.includes('Unix socket'), error.message);
      return true;
    });
  });

  test('strict mode refuses an app on ::', async () => {
    const app = await startApp('::');
    apps.push(app.server);
    await assert.rejects(startProxy(mesh, 'strict-v6', app.port, [], { perimeter: 'strict' }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_APP_EXPOSED'), String(error));
      assert.ok(error.message.includes(`[::]:${app.port}`), error.message);
      return true;
    });
  });

  test('strict refusal leaves the join token unused', async () => {
    const { tokens } = await mesh.operator.get<{ tokens: Array<{ service?: string; usedAt?: string }> }>('/v1/acl/tokens');
    const strict = tokens.filter((record) => record.service === 'strict-v4' || record.service === 'strict-v6');
    assert.equal(strict.length, 2);
    for (const record of strict) assert.equal(record.usedAt, undefined);
  });

  test('strict mode starts with an app on 127.0.0.1', async () => {
    const app = await startApp('127.0.0.1');
    apps.push(app.server);
    const proxy = await startProxy(mesh, 'strict-ok', app.port, [], { perimeter: 'strict' });
    proxies.push(proxy);
    assert.deepEqual(proxy.appExposure, { exposed: false, bindings: [] });
    assert.equal(await metricValue(proxy, 'sealmesh_proxy_app_exposed'), 0);
  });

  test('warn mode counts an exposed app', async () => {
    const app = await startApp('0.0.0.0');
    apps.push(app.server);
    const proxy = await startProxy(mesh, 'warned', app.port, [], { exposureCheckIntervalMs: 100 });
    proxies.push(proxy);
    assert.deepEqual(proxy.appExposure, { exposed: true, bindings: [`0.0.0.0:${app.port}`] });
    assert.equal(await metricValue(proxy, 'sealmesh_proxy_app_exposed'), 1);
    await eventually(async () => (await metricValue(proxy, 'sealmesh_proxy_app_exposure_detections_total')) >= 2, 3_000, 'a second detection');
    assert.equal(proxy.appHealth.status, 'passing', 'warn mode keeps serving');
  });

  test('warn mode shows the exposure in the catalog', async () => {
    const port = (apps.at(-1)?.address() as { port: number }).port;
    await eventually(async () => (await instanceOf(mesh, 'warned'))?.appExposure?.exposed === true, 5_000, 'the exposure in the catalog');
    const instance = await instanceOf(mesh, 'warned');
    assert.deepEqual(instance?.appExposure, { exposed: true, bindings: [`0.0.0.0:${port}`] });
    assert.equal(instance?.health, 'passing');
  });

  test('service list shows the exposure column', async () => {
    const port = (apps.at(-1)?.address() as { port: number }).port;
    const result = await runCli(['service', 'list', '--addr', mesh.url, '--ca-file', join(serverDir.path, 'trust-bundle.pem'), '--token', mesh.operatorToken]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /SVID EXPIRES\s+APP EXPOSED$/);
    assert.match(lines.find((line) => line.startsWith('warned ')) ?? '', new RegExp(`yes \\(0\\.0\\.0\\.0:${port}\\)$`));
    assert.match(lines.find((line) => line.startsWith('strict-ok ')) ?? '', /\sno$/);
  });

  test('strict mode stops serving on exposure', async () => {
    const app = await startApp('127.0.0.1');
    apps.push(app.server);
    const port = app.port;
    const api = await startProxy(mesh, 'rebinding', port, [], { perimeter: 'strict', exposureCheckIntervalMs: 100 });
    proxies.push(api);
    const web = await startProxy(mesh, 'rebinding-client', 1, ['rebinding']);
    proxies.push(web);
    await allow(mesh, 'rebinding-client', 'rebinding');
    await waitForEndpoints(web, 'rebinding');
    await waitForDecision(api, 'rebinding-client', true);

    // An established connection through the api proxy. The app keeps running, so only the
    // suspension can close it.
    const socket = connect({ host: '127.0.0.1', port: web.upstreamPort('rebinding')! });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write('GET / HTTP/1.1\r\nHost: rebinding\r\n\r\n');
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));

    // The app opens a second listener on every IPv6 interface, on the same port.
    const exposed = await startApp('::', port);
    apps.push(exposed.server);
    await eventually(() => api.appHealth.status === 'critical', 3_000, 'the proxy to notice the exposure');
    assert.match(api.appHealth.output, new RegExp(`\\[::\\]:${port}`));
    // The app's own keep-alive timeout (5 s in Node) would close the connection too, but later.
    const timedOut = new Promise<string>((resolve) => setTimeout(() => resolve('still open'), 2_000).unref());
    assert.equal(await Promise.race([closed.then(() => 'closed'), timedOut]), 'closed');
    await assert.rejects(httpGet(web.upstreamPort('rebinding')!, '/'));
    await eventually(async () => (await instanceOf(mesh, 'rebinding'))?.health === 'critical', 5_000, 'the catalog to show the instance critical');
    await eventually(() => web.endpoints('rebinding').length === 0, 5_000, 'the endpoint to leave the client\'s snapshot');

    // With the app on loopback only again, traffic flows.
    await closeApp(exposed.server);
    await eventually(() => api.appHealth.status === 'passing', 3_000, 'the proxy to resume');
    await waitForEndpoints(web, 'rebinding');
    await eventually(async () => (await httpGet(web.upstreamPort('rebinding')!, '/').catch(() => ({ status: 0 }))).status === 200, 5_000, 'traffic after the second listener closes');
  });
});
