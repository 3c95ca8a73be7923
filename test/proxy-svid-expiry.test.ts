import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { startEchoApp, startProxy, startServer, type TestServer } from './helpers/mesh.ts';

let mesh: TestServer;
let app: Awaited<ReturnType<typeof startEchoApp>>;
let proxy: SidecarProxy | undefined;

before(async () => {
  mesh = await startServer();
  app = await startEchoApp();
});

after(async () => {
  await proxy?.stop();
  await app?.close();
  await mesh?.stop();
});

test('proxy halts when its SVID expires unrenewed', async () => {
  // By the proxy's clock, which runs 298 s ahead, its 300 s SVID expires about 2 s after enrollment,
  // long before the renewal that the real clock schedules.
  proxy = await startProxy(mesh, 'api', app.port, [], { svidTtlSeconds: 300, now: () => Date.now() + 298_000 });
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the proxy did not halt within 15 s')), 15_000).unref());

  const error = await Promise.race([proxy.halted, timeout]);

  assert.equal(error.code, 'SEALMESH_ERR_SVID_EXPIRED');
  assert.match(error.message, /restart the proxy with a new join token/);
  const rejections = await proxy.metrics.rejections.get();
  assert.equal(rejections.values.find((value) => value.labels.code === 'SEALMESH_ERR_SVID_EXPIRED')?.value, 1);
});
