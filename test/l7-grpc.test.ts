import assert from 'node:assert/strict';
import { connect as http2Connect, constants as h2, createServer as createHttp2Server, type ClientHttp2Session } from 'node:http2';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { pino } from 'pino';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, eventually, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

interface EchoMessage {
  text: string;
  count: number;
}

type EchoClient = grpc.Client & {
  Unary(message: EchoMessage, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null, reply?: EchoMessage) => void): grpc.ClientUnaryCall;
  ServerStream(message: EchoMessage): grpc.ClientReadableStream<EchoMessage>;
  ClientStream(callback: (error: grpc.ServiceError | null, reply?: EchoMessage) => void): grpc.ClientWritableStream<EchoMessage>;
  Bidi(): grpc.ClientDuplexStream<EchoMessage, EchoMessage>;
};

const definition = protoLoader.loadSync(join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'echo.proto'), { defaults: true });
const loaded = grpc.loadPackageDefinition(definition) as unknown as { sealmesh: { test: { Echo: grpc.ServiceClientConstructor } } };
const Echo = loaded.sealmesh.test.Echo;

/** Starts a gRPC app that implements every call kind and sets a custom trailer on each call. */
async function startGrpcApp(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  const trailer = (): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    metadata.set('x-app-trailer', 'kept');
    return metadata;
  };
  server.addService(Echo.service, {
    Unary: (call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) => {
      if (call.request.text === 'fail') {
        callback({ code: grpc.status.FAILED_PRECONDITION, details: 'asked to fail', metadata: trailer() });
        return;
      }
      const caller = String(call.metadata.get('x-forwarded-client-cert')[0] ?? '');
      callback(null, { text: `${call.request.text}|${caller.includes('URI=spiffe://') ? 'xfcc' : 'none'}`, count: call.request.count + 1 }, trailer());
    },
    ServerStream: (call: grpc.ServerWritableStream<EchoMessage, EchoMessage>) => {
      for (let index = 0; index < call.request.count; index += 1) call.write({ text: `${call.request.text}-${index}`, count: index });
      call.end(trailer());
    },
    ClientStream: (call: grpc.ServerReadableStream<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) => {
      const texts: string[] = [];
      call.on('data', (message: EchoMessage) => texts.push(message.text));
      call.on('end', () => callback(null, { text: texts.join(','), count: texts.length }, trailer()));
    },
    Bidi: (call: grpc.ServerDuplexStream<EchoMessage, EchoMessage>) => {
      call.on('data', (message: EchoMessage) => call.write({ text: `echo ${message.text}`, count: message.count }));
      call.on('end', () => call.end(trailer()));
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error !== null ? reject(error) : resolve(bound)));
  });
  return { server, port };
}

describe('gRPC service across two proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startGrpcApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let client: EchoClient;

  before(async () => {
    mesh = await startServer();
    app = await startGrpcApp();
    api = await startProxy(mesh, 'echo', app.port, [], { protocol: 'grpc' });
    web = await startProxy(mesh, 'web', 1, ['echo']);
    await allow(mesh, 'web', 'echo');
    await waitForEndpoints(web, 'echo');
    await waitForDecision(api, 'web', true);
    client = new Echo(`127.0.0.1:${web.upstreamPort('echo')!}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  });

  after(async () => {
    client?.close();
    await web?.stop();
    await api?.stop();
    app?.server.forceShutdown();
    await mesh?.stop();
  });

  test('unary call keeps status and trailers', async () => {
    const trailers = new Promise<grpc.Metadata>((resolve) => {
      const call = client.Unary({ text: 'hi', count: 1 }, new grpc.Metadata(), (error, reply) => {
        assert.equal(error, null);
        assert.deepEqual(reply, { text: 'hi|xfcc', count: 2 });
      });
      call.on('status', (status: grpc.StatusObject) => resolve(status.metadata));
    });
    assert.deepEqual((await trailers).get('x-app-trailer'), ['kept']);
  });

  test('unary error status passes through', async () => {
    const error = await new Promise<grpc.ServiceError>((resolve) => {
      client.Unary({ text: 'fail', count: 0 }, new grpc.Metadata(), (failure) => resolve(failure!));
    });
    assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(error.details, 'asked to fail');
    assert.deepEqual(error.metadata.get('x-app-trailer'), ['kept']);
  });

  test('server streaming delivers every message', async () => {
    const call = client.ServerStream({ text: 'item', count: 50 });
    const received: string[] = [];
    call.on('data', (message: EchoMessage) => received.push(message.text));
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    assert.equal(status.code, grpc.status.OK);
    assert.equal(received.length, 50);
    assert.equal(received[49], 'item-49');
    assert.deepEqual(status.metadata.get('x-app-trailer'), ['kept']);
  });

  test('client streaming sums the stream', async () => {
    const reply = await new Promise<EchoMessage>((resolve, reject) => {
      const call = client.ClientStream((error, message) => (error !== null ? reject(error) : resolve(message!)));
      for (const text of ['a', 'b', 'c']) call.write({ text, count: 0 });
      call.end();
    });
    assert.deepEqual(reply, { text: 'a,b,c', count: 3 });
  });

  test('bidi streaming interleaves messages', async () => {
    const call = client.Bidi();
    const replies: string[] = [];
    // Each message is sent only after the reply to the previous one arrived, which proves that
    // both directions stay open at the same time through both proxies.
    await new Promise<void>((resolve, reject) => {
      call.on('data', (message: EchoMessage) => {
        replies.push(message.text);
        if (replies.length < 5) call.write({ text: `m${replies.length}`, count: replies.length });
        else call.end();
      });
      call.on('status', (status: grpc.StatusObject) => (status.code === grpc.status.OK ? resolve() : reject(new Error(status.details))));
      call.write({ text: 'm0', count: 0 });
    });
    assert.deepEqual(replies, ['echo m0', 'echo m1', 'echo m2', 'echo m3', 'echo m4']);
  });

  test('denied call gets PERMISSION_DENIED', async () => {
    await allow(mesh, 'web', 'echo', 'deny');
    await waitForDecision(api, 'web', false);
    const error = await new Promise<grpc.ServiceError>((resolve) => {
      client.Unary({ text: 'hi', count: 0 }, new grpc.Metadata(), (failure) => resolve(failure!));
    });
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(error.details, /web -> echo/);
    await allow(mesh, 'web', 'echo');
    await waitForDecision(api, 'web', true);
  });
});

describe('HTTP/2 service across two proxies', () => {
  let mesh: TestServer;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let session: ClientHttp2Session;
  const app = createHttp2Server((req, res) => {
    // Each response waits a little, so that concurrent streams overlap on the shared sessions.
    setTimeout(() => res.end(`${req.httpVersion} ${req.url}`), 20);
  });

  before(async () => {
    mesh = await startServer();
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    api = await startProxy(mesh, 'api', (app.address() as { port: number }).port, [], { protocol: 'http2' });
    web = await startProxy(mesh, 'web', 1, ['api']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
    session = http2Connect(`http://127.0.0.1:${web.upstreamPort('api')!}`);
  });

  after(async () => {
    session?.close();
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    await mesh?.stop();
  });

  test('multiplexed streams all complete', async () => {
    const responses = await Promise.all(
      Array.from({ length: 40 }, (_, index) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const stream = session.request({ [h2.HTTP2_HEADER_PATH]: `/stream/${index}` });
          let status = 0;
          let body = '';
          stream.on('response', (headers) => (status = Number(headers[h2.HTTP2_HEADER_STATUS])));
          stream.setEncoding('utf8');
          stream.on('data', (chunk: string) => (body += chunk));
          stream.on('end', () => resolve({ status, body }));
          stream.on('error', reject);
        }),
      ),
    );
    responses.forEach((response, index) => {
      assert.equal(response.status, 200);
      assert.equal(response.body, `2.0 /stream/${index}`);
    });
  });
});

describe('gRPC stream denied in flight', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startGrpcApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let client: EchoClient;
  const accessLines: string[] = [];
  const echoLogLines: string[] = [];

  before(async () => {
    mesh = await startServer();
    app = await startGrpcApp();
    api = await startProxy(mesh, 'echo', app.port, [], { protocol: 'grpc', log: pino({ level: 'info' }, { write: (line: string) => echoLogLines.push(line) }) });
    web = await startProxy(mesh, 'web', 1, ['echo'], { accessLog: { sampleRate: 1, write: (line) => accessLines.push(line) } });
    await allow(mesh, 'web', 'echo');
    await waitForEndpoints(web, 'echo');
    await waitForDecision(api, 'web', true);
    client = new Echo(`127.0.0.1:${web.upstreamPort('echo')!}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  });

  after(async () => {
    client?.close();
    await web?.stop();
    await api?.stop();
    app?.server.forceShutdown();
    await mesh?.stop();
  });

  test('bidi call ends with PERMISSION_DENIED', async () => {
    const call = client.Bidi();
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('error', () => undefined);
    const first = new Promise<EchoMessage>((resolve) => call.once('data', resolve));
    call.write({ text: 'before', count: 1 });
    assert.equal((await first).text, 'echo before');

    const deniedAt = Date.now();
    await allow(mesh, 'web', 'echo', 'deny');
    await waitForDecision(api, 'web', false);
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the client saw no status within 3 s of the deny')), 3_000).unref());
    const ended = await Promise.race([status, timeout]);
    assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
    assert.match(ended.details, /web -> echo/);
    assert.ok(Date.now() - deniedAt < 3_000);

    const lines = (): Array<Record<string, unknown>> => accessLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    await eventually(() => lines().some((line) => line.path === '/sealmesh.test.Echo/Bidi'), 5_000, 'access line of the call');
    const line = lines().find((candidate) => candidate.path === '/sealmesh.test.Echo/Bidi')!;
    assert.equal(line.protocol, 'gRPC');
    assert.equal(line.status, 200);
    assert.equal(line.grpc_status, grpc.status.PERMISSION_DENIED);

    const aborting = echoLogLines
      .map((entry) => JSON.parse(entry) as { level: number; code?: string; msg: string })
      .find((entry) => entry.msg === 'aborting an HTTP exchange that an intention now denies');
    assert.ok(aborting !== undefined, 'the echo proxy logged the abort');
    assert.equal(aborting.code, 'SEALMESH_ERR_INTENTION_DENIED');
    assert.equal(aborting.level, 40, 'logged as a warning, like a denied request');
  });
});

describe('gRPC app connection lost mid-stream', () => {
  let mesh: TestServer;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let client: EchoClient;
  // A gRPC app that sends its headers and one message, then drops the connection. Node ends a
  // stream before it resets it, so a reset alone would reach the proxy as a complete response.
  const app = createHttp2Server();
  app.on('stream', (stream) => {
    stream.on('error', () => undefined);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    const payload = Buffer.from([0x0a, 0x02, 0x68, 0x69]);
    const frame = Buffer.alloc(5 + payload.length);
    frame.writeUInt32BE(payload.length, 1);
    payload.copy(frame, 5);
    stream.write(frame, () => setTimeout(() => stream.session?.destroy(), 50));
  });

  before(async () => {
    mesh = await startServer();
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    api = await startProxy(mesh, 'echo', (app.address() as { port: number }).port, [], { protocol: 'grpc' });
    web = await startProxy(mesh, 'web', 1, ['echo']);
    await allow(mesh, 'web', 'echo');
    await waitForEndpoints(web, 'echo');
    await waitForDecision(api, 'web', true);
    client = new Echo(`127.0.0.1:${web.upstreamPort('echo')!}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  });

  after(async () => {
    client?.close();
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    await mesh?.stop();
  });

  test('client gets UNAVAILABLE promptly', async () => {
    const call = client.Bidi();
    call.on('error', () => undefined);
    const received: string[] = [];
    call.on('data', (message: EchoMessage) => received.push(message.text));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.write({ text: 'go', count: 0 });
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the client saw no status within 3 s of the reset')), 3_000).unref());
    const ended = await Promise.race([status, timeout]);
    assert.equal(ended.code, grpc.status.UNAVAILABLE);
    assert.match(ended.details, /upstream reset the stream/);
    assert.deepEqual(received, ['hi']);
  });
});
