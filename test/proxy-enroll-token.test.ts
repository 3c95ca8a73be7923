import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { joinToken, startHttpApp, startProxy, startServer, type TestServer } from './helpers/mesh.ts';

let mesh: TestServer;
let app: Awaited<ReturnType<typeof startHttpApp>>;

before(async () => {
  mesh = await startServer();
  app = await startHttpApp('web');
});

after(async () => {
  await app?.close();
  await mesh?.stop();
});

test('join token of another service is explained', async () => {
  const token = await joinToken(mesh, 'api');
  await assert.rejects(startProxy(mesh, 'web', app.port, [], { joinToken: token }), (error: unknown) => {
    assert.ok(isSealmeshError(error, 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH'), String(error));
    assert.match(error.message, /^the join token is bound to spiffe:\/\/\S+\/svc\/api, not to service web; /, 'both services are named');
    assert.match(error.message, /sealmesh token create --service web/, 'the fix is named');
    assert.doesNotMatch(error.message, /: put spiffe:/, "the server's CSR advice is not the last word");
    return true;
  });
});
