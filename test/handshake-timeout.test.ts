import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { startHttpApp, startProxy, startServer, type TestServer } from './helpers/mesh.ts';

/** The TLS handshake timeout of the proxy and the server, plus a margin for a loaded machine. */
const CLOSE_WITHIN_MS = 15_000;

let mesh: TestServer;
let proxy: SidecarProxy;
let closeApp: () => Promise<void>;

before(async () => {
  mesh = await startServer();
  const app = await startHttpApp('api');
  closeApp = app.close;
  proxy = await startProxy(mesh, 'api', app.port);
});

after(async () => {
  await proxy?.stop();
  await closeApp?.();
  await mesh?.stop();
});

/** Opens a TCP connection that sends `bytes` and then nothing, and resolves with how long it stayed open. */
function stall(port: number, bytes: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const opened = Date.now();
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write(bytes));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection still open after ${CLOSE_WITHIN_MS} ms`));
    }, CLOSE_WITHIN_MS);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - opened);
    });
  });
}

// The three cases wait out the same timeout, so they run at once.
describe('stalled TLS handshakes', { concurrency: true }, () => {
  test('proxy drops a silent client', async () => {
    const openMs = await stall(proxy.inboundPort, Buffer.alloc(0));
    assert.ok(openMs >= 5_000, `closed after ${openMs} ms, before the handshake timeout`);
  });

  test('proxy drops a partial ClientHello', async () => {
    await stall(proxy.inboundPort, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
  });

  test('server drops a silent client', async () => {
    await stall(mesh.server.address.port, Buffer.alloc(0));
  });
});
