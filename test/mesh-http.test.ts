import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { pino } from 'pino';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, eventually, waitForDecision, httpGet, startEchoApp, startHttpApp, startProxy, startServer, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

describe('HTTP across two proxies', () => {
  let mesh: TestServer;
  let web: SidecarProxy;
  let api: SidecarProxy;
  let db: SidecarProxy;
  const closers: Array<() => Promise<void>> = [];
  const dbLogLines: string[] = [];

  before(async () => {
    mesh = await startServer();
    const apiApp = await startHttpApp('api');
    const dbApp = await startHttpApp('db');
    closers.push(apiApp.close, dbApp.close);
    api = await startProxy(mesh, 'api', apiApp.port);
    db = await startProxy(mesh, 'db', dbApp.port, [], { log: pino({ level: 'info' }, { write: (line: string) => dbLogLines.push(line) }) });
    web = await startProxy(mesh, 'web', 1, ['api', 'db']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForEndpoints(web, 'db');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await Promise.all([web, api, db].map((proxy) => proxy?.stop()));
    for (const close of closers) await close();
    await mesh?.stop();
  });

  test('allowed request reaches the app', async () => {
    const response = await httpGet(web.upstreamPort('api')!, '/orders');
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { app: 'api', path: '/orders' });
  });

  test('request without intention is denied', async () => {
    await assert.rejects(httpGet(web.upstreamPort('db')!, '/'), /socket hang up|ECONNRESET/);
  });

  test('denied connection is counted', async () => {
    const text = await db.metrics.registry.getSingleMetricAsString('sealmesh_proxy_inbound_connections_total');
    assert.match(text, /result="denied"} [1-9]/);
  });

  test('intention created live allows traffic', async () => {
    await allow(mesh, 'web', 'db');
    await eventually(async () => (await httpGet(web.upstreamPort('db')!, '/').catch(() => ({ status: 0 }))).status === 200, 3_000, 'web -> db allowed');
  });

  test('deny intention closes open connections', async () => {
    const socket = connect({ host: '127.0.0.1', port: web.upstreamPort('db')! });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write('GET / HTTP/1.1\r\nHost: db\r\n\r\n');
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    const changedAt = Date.now();
    await allow(mesh, 'web', 'db', 'deny');
    await closed;
    assert.ok(Date.now() - changedAt < 3_000, 'connection closed within 3 s of the change');
    const closing = dbLogLines
      .map((line) => JSON.parse(line) as { level: number; code?: string; source?: string; msg: string })
      .find((entry) => entry.msg === 'closing an established connection that an intention now denies');
    assert.ok(closing !== undefined, `no closing line in the db proxy log:\n${dbLogLines.join('')}`);
    assert.equal(closing.code, 'SEALMESH_ERR_INTENTION_DENIED');
    assert.equal(closing.level, 40, 'logged as a warning, like a denied new connection');
    assert.equal(closing.source, 'web');
  });

  test('exact intention beats wildcard deny', async () => {
    await allow(mesh, '*', 'api', 'deny');
    // `web -> api` allow is more specific than `* -> api` deny.
    const response = await httpGet(web.upstreamPort('api')!, '/still');
    assert.equal(response.status, 200);
    await mesh.operator.delete(`/v1/intentions?source=${encodeURIComponent('*')}&destination=api`);
  });

  test('upstream with no instance closes the connection', async () => {
    const echo = await startEchoApp();
    closers.push(echo.close);
    const lonely = await startProxy(mesh, 'lonely', echo.port, ['nowhere']);
    try {
      await assert.rejects(httpGet(lonely.upstreamPort('nowhere')!, '/'), /socket hang up|ECONNRESET/);
      const text = await lonely.metrics.registry.getSingleMetricAsString('sealmesh_proxy_rejections_total');
      assert.match(text, /SEALMESH_ERR_NO_HEALTHY_ENDPOINT/);
    } finally {
      await lonely.stop();
    }
  });
});
