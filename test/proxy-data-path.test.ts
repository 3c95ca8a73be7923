import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { BufferedReader, closeAfterFlush, READ_BUFFER_BYTES, relay } from '../src/proxy/relay.ts';
import { MAX_SESSION_AGE_MS, PeerSessionCache } from '../src/proxy/tls-sessions.ts';
import { allow, startEchoApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Listens on 127.0.0.1 with half-open sockets; `close` destroys every accepted socket. */
async function listen(onConnection: (socket: Socket) => void): Promise<{ server: Server; port: number; close: () => void }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    server,
    port: address.port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Sends `payload` over a new connection to `port`, half-closes, and returns everything read back until the peer ends. */
function halfCloseRoundTrip(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      resolve(Buffer.concat(chunks));
      socket.destroy();
    });
    socket.on('error', reject);
    socket.end(payload);
  });
}

/** Sends `payload` to an echo service at `port` and returns as many bytes as came back, within 10 s. */
function echoRoundTrip(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let received = 0;
    const timer = setTimeout(() => socket.destroy(new Error(`echo returned ${received} of ${payload.length} bytes within 10 s`)), 10_000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < payload.length) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks));
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.write(payload);
  });
}

/** Like halfCloseRoundTrip, but reads nothing for the first 300 ms, so that writes towards the client queue up. */
function slowReaderRoundTrip(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.pause();
    setTimeout(() => socket.resume(), 300);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      resolve(Buffer.concat(chunks));
      socket.destroy();
    });
    socket.on('error', reject);
    socket.end(payload);
  });
}

const digest = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('relay', () => {
  test('carries 8 MiB both ways with half-close', async () => {
    // The far end echoes everything, but reads slowly at first, so the relay must hold back.
    const echo = await listen((socket) => {
      socket.pause();
      setTimeout(() => socket.resume(), 200);
      socket.pipe(socket);
    });
    const front = await listen((socket) => {
      const upstream = connect({ host: '127.0.0.1', port: echo.port, allowHalfOpen: true });
      relay(socket, upstream);
      socket.on('close', () => upstream.destroy());
      upstream.on('close', () => socket.destroy());
    });
    const payload = randomBytes(8 * 1024 * 1024);
    const received = await halfCloseRoundTrip(front.port, payload);
    assert.equal(received.length, payload.length);
    assert.equal(digest(received), digest(payload));
    front.close();
    echo.close();
  });

  test('pauses the source while the sink is full', async () => {
    let paused = false;
    const sink = await listen((socket) => {
      // Never reads until the check below, so the relay's write buffer fills.
      socket.pause();
    });
    const front = await listen((socket) => {
      const upstream = connect({ host: '127.0.0.1', port: sink.port });
      upstream.on('error', () => socket.destroy());
      relay(socket, upstream);
      socket.on('pause', () => {
        paused = true;
      });
      socket.on('close', () => upstream.destroy());
    });
    const client = connect({ host: '127.0.0.1', port: front.port });
    client.on('error', () => {});
    const chunk = Buffer.alloc(64 * 1024);
    for (let index = 0; index < 256 && !paused; index += 1) {
      client.write(chunk);
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(paused, 'the relay never paused the source socket');
    client.destroy();
    front.close();
    sink.close();
  });
});

describe('close after flush', () => {
  test('slow reader still gets queued bytes', async () => {
    const payload = randomBytes(4 * 1024 * 1024);
    let queued = 0;
    const front = await listen((socket) => {
      socket.write(payload);
      queued = socket.writableLength;
      closeAfterFlush(socket);
    });
    const received = await slowReaderRoundTrip(front.port, Buffer.alloc(0));
    assert.ok(queued > 0, 'the test client read the payload before the close, so nothing was queued');
    assert.equal(received.length, payload.length);
    assert.equal(digest(received), digest(payload));
    front.close();
  });

  test('reader that never reads is cut off', async () => {
    let queued = 0;
    let serverClosed!: () => void;
    const closed = new Promise<void>((resolve) => {
      serverClosed = resolve;
    });
    const front = await listen((socket) => {
      socket.once('close', serverClosed);
      socket.write(randomBytes(4 * 1024 * 1024));
      queued = socket.writableLength;
      closeAfterFlush(socket, 200);
    });
    const client = connect({ host: '127.0.0.1', port: front.port });
    client.pause();
    client.on('error', () => undefined);
    try {
      await closed;
      assert.ok(queued > 0, 'the payload was still queued when the other leg closed');
    } finally {
      client.destroy();
      front.close();
    }
  });

  test('idle socket destroyed at once', async () => {
    const closed = new Promise<boolean>((resolve) => {
      void listen((socket) => {
        socket.once('close', () => resolve(true));
        closeAfterFlush(socket);
      }).then(({ port, close }) => {
        const client = connect({ host: '127.0.0.1', port });
        client.on('error', () => undefined);
        client.on('close', close);
      });
    });
    assert.equal(await closed, true);
  });
});

describe('buffered reader', () => {
  test('carries 8 MiB both ways into a slow sink', async () => {
    const echo = await listen((socket) => socket.pipe(socket));
    const front = await listen((socket) => {
      const reader = new BufferedReader();
      const upstream = connect({ host: '127.0.0.1', port: echo.port, allowHalfOpen: true, onread: reader.onread });
      relay(socket, upstream, { b: reader });
      socket.on('close', () => closeAfterFlush(upstream));
      upstream.on('close', () => closeAfterFlush(socket));
    });
    const payload = randomBytes(8 * 1024 * 1024);
    // The client reads slowly at first, so the reader's writes queue up and it must switch buffers.
    const received = await slowReaderRoundTrip(front.port, payload);
    assert.equal(received.length, payload.length);
    assert.equal(digest(received), digest(payload));
    front.close();
    echo.close();
  });

  test('delivers chunks read before start', async () => {
    const greeting = randomBytes(3 * READ_BUFFER_BYTES);
    const origin = await listen((socket) => socket.end(greeting));
    const front = await listen((socket) => {
      const reader = new BufferedReader();
      const upstream = connect({ host: '127.0.0.1', port: origin.port, allowHalfOpen: true, onread: reader.onread });
      // The origin's bytes and its end arrive before the relay starts.
      setTimeout(() => relay(socket, upstream, { b: reader }), 200);
      upstream.on('close', () => socket.destroy());
    });
    const received = await halfCloseRoundTrip(front.port, Buffer.alloc(0));
    assert.equal(received.length, greeting.length);
    assert.equal(digest(received), digest(greeting));
    front.close();
    origin.close();
  });

  test('pauses the source while the sink is full', async () => {
    let paused = false;
    const firehose = await listen((socket) => {
      const chunk = Buffer.alloc(READ_BUFFER_BYTES);
      const send = (): void => {
        while (!socket.destroyed && socket.write(chunk));
        if (!socket.destroyed) socket.once('drain', send);
      };
      send();
    });
    const front = await listen((socket) => {
      const reader = new BufferedReader();
      const upstream = connect({ host: '127.0.0.1', port: firehose.port, onread: reader.onread });
      upstream.on('error', () => socket.destroy());
      upstream.on('pause', () => {
        paused = true;
      });
      relay(socket, upstream, { b: reader });
      socket.on('close', () => upstream.destroy());
    });
    // Never reads, so the front's write buffer towards this client fills.
    const client = connect({ host: '127.0.0.1', port: front.port });
    client.pause();
    client.on('error', () => {});
    const deadline = Date.now() + 10_000;
    while (!paused && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(paused, 'the reader never paused its source socket');
    client.destroy();
    front.close();
    firehose.close();
  });
});

describe('peer session cache', () => {
  const context = createSecureContext({});
  const session = Buffer.from('session');

  test('returns a session only for the verified peer', () => {
    const cache = new PeerSessionCache();
    assert.equal(cache.get('a', context, 'default/api'), undefined);
    cache.set('a', context, 'default/api', session, Date.now() + 3_600_000);
    assert.equal(cache.get('a', context, 'default/api')?.session, session);
    assert.equal(cache.get('a', context, 'default/db'), undefined);
    // A mismatch drops the entry for good.
    assert.equal(cache.get('a', context, 'default/api'), undefined);
  });

  test('drops every session on a new client context', () => {
    const cache = new PeerSessionCache();
    cache.get('a', context, 'default/api');
    cache.set('a', context, 'default/api', session, Date.now() + 3_600_000);
    const renewed = createSecureContext({});
    assert.equal(cache.get('a', renewed, 'default/api'), undefined);
    assert.equal(cache.get('a', context, 'default/api'), undefined);
  });

  test('expires at the peer notAfter or the age limit', () => {
    const cache = new PeerSessionCache();
    const now = 1_000_000;
    cache.get('a', context, 'default/api', now);
    cache.set('a', context, 'default/api', session, now + 10_000, now);
    assert.equal(cache.get('a', context, 'default/api', now + 9_999)?.session, session);
    assert.equal(cache.get('a', context, 'default/api', now + 10_000), undefined);
    cache.set('b', context, 'default/api', session, now + 3_600_000, now);
    assert.equal(cache.get('b', context, 'default/api', now + MAX_SESSION_AGE_MS - 1)?.session, session);
    assert.equal(cache.get('b', context, 'default/api', now + MAX_SESSION_AGE_MS), undefined);
  });

  test('ticket after resumption keeps the first expiry', () => {
    const cache = new PeerSessionCache();
    const now = 1_000_000;
    cache.get('a', context, 'default/api', now);
    // Without a verified certificate and without an earlier session there is nothing to extend.
    cache.set('a', context, 'default/api', session, undefined, now);
    assert.equal(cache.size, 0);
    cache.set('a', context, 'default/api', session, now + 3_600_000, now);
    const later = Buffer.from('later');
    cache.set('a', context, 'default/api', later, undefined, now + 100_000);
    assert.equal(cache.get('a', context, 'default/api', now + MAX_SESSION_AGE_MS - 1)?.session, later);
    assert.equal(cache.get('a', context, 'default/api', now + MAX_SESSION_AGE_MS - 1)?.peerNotAfter, now + 3_600_000, 'the certificate expiry of the full handshake is kept');
    assert.equal(cache.get('a', context, 'default/api', now + MAX_SESSION_AGE_MS), undefined);
  });
});

describe('upstream TLS session resumption', () => {
  let mesh: TestServer;
  let web: SidecarProxy;
  let api: SidecarProxy;
  let closeApp: () => Promise<void>;

  before(async () => {
    mesh = await startServer();
    const app = await startEchoApp();
    closeApp = app.close;
    api = await startProxy(mesh, 'api', app.port);
    web = await startProxy(mesh, 'web', 1, ['api']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await closeApp?.();
    await mesh?.stop();
  });

  const resumed = async (): Promise<number> => (await web.metrics.resumedSessions.get()).values.find((value) => value.labels.upstream === 'api')?.value ?? 0;

  test('second connection resumes the session', async () => {
    const port = web.upstreamPort('api')!;
    const payload = randomBytes(64 * 1024);
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), 0);
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), 1);
  });

  test('later connections reuse the first ticket', async () => {
    const port = web.upstreamPort('api')!;
    const payload = randomBytes(1024);
    const before = await resumed();
    for (let index = 0; index < 4; index += 1) assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    // Resumed connections store no new ticket, so all four resumed the session of an earlier full handshake.
    assert.equal(await resumed(), before + 4);
  });

  test('declined session is replaced by a new one', async () => {
    const port = web.upstreamPort('api')!;
    const payload = randomBytes(1024);
    // The server-side proxy's new context comes with new ticket keys, so it cannot resume the cached session.
    await api.renewNow();
    const before = await resumed();
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), before);
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), before + 1);
  });

  test('carries 8 MiB through both proxies to a slow client', async () => {
    // The server-side proxy writes the app's reads to TLS and the client-side proxy writes TLS
    // reads to the client, both from reused read buffers, while their writes queue up.
    const payload = randomBytes(8 * 1024 * 1024);
    const received = await slowReaderRoundTrip(web.upstreamPort('api')!, payload);
    assert.equal(received.length, payload.length);
    assert.equal(digest(received), digest(payload));
  });

  test('renewed SVID starts with a full handshake', async () => {
    const port = web.upstreamPort('api')!;
    const before = await resumed();
    await web.renewNow();
    const payload = randomBytes(1024);
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), before);
    assert.equal(digest(await echoRoundTrip(port, payload)), digest(payload));
    assert.equal(await resumed(), before + 1);
  });
});
