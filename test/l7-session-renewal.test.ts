import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, httpGet, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

let mesh: TestServer;
let app: Awaited<ReturnType<typeof startHttpApp>>;
let api: SidecarProxy;
let web: SidecarProxy;
let port: number;

/** Counts the outbound handshakes of `proxy`, resumed or not. */
async function outboundHandshakes(proxy: SidecarProxy): Promise<number> {
  const metric = await proxy.metrics.http.handshakes.get();
  return metric.values.filter((value) => value.labels.direction === 'outbound').reduce((sum, value) => sum + value.value, 0);
}

before(async () => {
  mesh = await startServer();
  app = await startHttpApp('api');
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
  await app?.close();
  await mesh?.stop();
});

test('renewal retires the pooled session', async () => {
  assert.equal((await httpGet(port, '/one')).status, 200);
  assert.equal((await httpGet(port, '/two')).status, 200);
  assert.equal(await outboundHandshakes(web), 1, 'both requests share one session');

  await web.renewNow();
  assert.equal((await httpGet(port, '/three')).status, 200);
  assert.equal(await outboundHandshakes(web), 2, 'the request after the renewal dials a new session');
  assert.equal((await httpGet(port, '/four')).status, 200);
  assert.equal(await outboundHandshakes(web), 2, 'the new session is reused');
});
