import assert from 'node:assert/strict';
import { createServer as createHttpServer, request, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { parseUpstream, type SidecarProxy } from '../src/proxy/index.ts';
import { resolveTrafficSettings } from '../src/proxy/traffic/index.ts';
import { parseTraceparent } from '../src/proxy/http/trace-context.ts';
import { allow, eventually, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

type Line = Record<string, unknown>;

/** An HTTP/1.1 app that returns the request headers it received as JSON. */
function startHeaderApp(): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer((req, res) => {
    let length = 0;
    req.on('data', (chunk: Buffer) => (length += chunk.length));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': 'session=app-cookie-value' });
      res.end(JSON.stringify({ headers: req.headers, length }));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

function send(port: number, options: { method?: string; path: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path, headers: options.headers ?? {}, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

describe('access log and trace context across two proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHeaderApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let port: number;
  const inboundLines: string[] = [];
  const outboundLines: string[] = [];
  const parsed = (lines: string[]): Line[] => lines.map((line) => JSON.parse(line) as Line);
  const findLine = async (lines: string[], path: string): Promise<Line> => {
    await eventually(() => parsed(lines).some((line) => line.path === path), 5_000, `access log line for ${path}`);
    return parsed(lines).find((line) => line.path === path)!;
  };

  before(async () => {
    mesh = await startServer();
    app = await startHeaderApp();
    // The inbound side samples nothing, so only the responses it generates itself reach its log.
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http', accessLog: { sampleRate: 0, write: (line) => inboundLines.push(line) } });
    web = await startProxy(mesh, 'web', 1, ['api'], { accessLog: { sampleRate: 1, write: (line) => outboundLines.push(line) } });
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', replace: true, permissions: [{ action: 'deny', http: { methods: ['DELETE'] } }] });
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
    port = web.upstreamPort('api')!;
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await new Promise<void>((resolve) => {
      app?.server.closeAllConnections();
      app?.server.close(() => resolve());
    });
    await mesh?.stop();
  });

  test('app sees caller trace with new parent', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    const response = await send(port, { path: '/traced', headers: { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: 'congo=t61rcWkgMzE' } });
    assert.equal(response.status, 200);
    const seen = (JSON.parse(response.body) as { headers: IncomingHttpHeaders }).headers;
    const received = parseTraceparent(seen.traceparent);
    assert.ok(received !== undefined, `app got a valid traceparent, got ${String(seen.traceparent)}`);
    assert.equal(received.traceId, traceId);
    assert.notEqual(received.parentId, callerSpan);
    assert.equal(received.flags, 1);
    assert.equal(seen.tracestate, 'congo=t61rcWkgMzE');

    const outbound = await findLine(outboundLines, '/traced');
    assert.equal(outbound.trace_id, traceId);
    assert.equal(outbound.parent_span_id, callerSpan);
    // The app's parent is the inbound proxy's span, whose own parent is the outbound proxy's span.
    assert.notEqual(outbound.span_id, received.parentId);
  });

  test('outbound line fields', async () => {
    const body = 'x'.repeat(1234);
    const response = await send(port, { method: 'POST', path: '/a/./b/../upload?token=query-secret', headers: { authorization: 'Bearer header-secret', cookie: 'session=cookie-secret' }, body });
    assert.equal(response.status, 200);
    const line = await findLine(outboundLines, '/a/upload');
    assert.equal(line.type, 'access');
    assert.equal(line.direction, 'outbound');
    assert.equal(line.source, 'web');
    assert.equal(line.destination, 'api');
    assert.equal(line.method, 'POST');
    assert.equal(line.protocol, 'HTTP/1.1');
    assert.equal(line.status, 200);
    assert.equal(line.bytes_received, 1234);
    assert.equal(line.bytes_sent, Buffer.byteLength(response.body));
    assert.equal(line.retries, 0);
    assert.equal(typeof line.upstream_instance, 'string');
    assert.match(String(line.upstream_address), /^127\.0\.0\.1:\d+$/);
    assert.equal(typeof line.duration_ms, 'number');
    assert.ok(!Number.isNaN(Date.parse(String(line.timestamp))));
    assert.match(String(line.trace_id), /^[0-9a-f]{32}$/);
    assert.match(String(line.span_id), /^[0-9a-f]{16}$/);
    assert.equal(line.parent_span_id, undefined);
    assert.equal(line.response_flag, undefined);
    assert.equal(line.source_spiffe_id, undefined);
  });

  test('no header value or query in lines', async () => {
    await send(port, { path: '/secrets?api_key=query-secret', headers: { authorization: 'Bearer header-secret', cookie: 'session=cookie-secret' } });
    await findLine(outboundLines, '/secrets');
    const all = [...outboundLines, ...inboundLines].join('');
    for (const secret of ['query-secret', 'header-secret', 'cookie-secret', 'app-cookie-value', 'api_key']) assert.ok(!all.includes(secret), `${secret} found in the access log`);
  });

  test('malformed traceparent starts a trace', async () => {
    const bad = `ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`;
    const response = await send(port, { path: '/malformed', headers: { traceparent: bad, tracestate: 'congo=t61rcWkgMzE' } });
    const seen = (JSON.parse(response.body) as { headers: IncomingHttpHeaders }).headers;
    const received = parseTraceparent(seen.traceparent);
    assert.ok(received !== undefined);
    assert.notEqual(received.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(seen.tracestate, undefined);
    const line = await findLine(outboundLines, '/malformed');
    assert.equal(line.trace_id, received.traceId);
  });

  test('denial logged despite zero sampling', async () => {
    const allowedBefore = parsed(inboundLines).length;
    const response = await send(port, { method: 'DELETE', path: '/items/7?confirm=yes', headers: { traceparent: '00-11112222333344445555666677778888-1111222233334444-01' } });
    assert.equal(response.status, 403);
    assert.equal(response.headers['x-sealmesh-error'], 'SEALMESH_ERR_L7_REQUEST_DENIED');
    const inbound = await findLine(inboundLines, '/items/7');
    assert.equal(parsed(inboundLines).length, allowedBefore + 1, 'only the denial is in the unsampled inbound log');
    assert.equal(inbound.direction, 'inbound');
    assert.equal(inbound.status, 403);
    assert.equal(inbound.response_flag, 'SEALMESH_ERR_L7_REQUEST_DENIED');
    assert.equal(inbound.source, 'web');
    assert.match(String(inbound.source_spiffe_id), /^spiffe:\/\/[^/]+\/ns\/default\/.*web$/);
    assert.equal(inbound.trace_id, '11112222333344445555666677778888');
    assert.equal(inbound.bytes_sent, Buffer.byteLength(response.body));
    const outbound = await findLine(outboundLines, '/items/7');
    assert.equal(outbound.status, 403);
    assert.equal(outbound.span_id, inbound.parent_span_id);
    // The outbound proxy relayed the 403, so it has no response flag of its own.
    assert.equal(outbound.response_flag, undefined);
  });

  test('allowed requests absent from unsampled log', async () => {
    await findLine(outboundLines, '/traced');
    assert.ok(parsed(inboundLines).every((line) => line.response_flag !== undefined));
  });
});

describe('access log of proxy-generated errors', () => {
  let mesh: TestServer;
  let app: HttpServer;
  let slow: SidecarProxy;
  let tiny: SidecarProxy;
  let web: SidecarProxy;
  const lines: string[] = [];
  const parsed = (): Line[] => lines.map((line) => JSON.parse(line) as Line);

  before(async () => {
    mesh = await startServer();
    // Every response takes 1 s, longer than the request timeout of `slow`.
    app = createHttpServer((_req, res) => setTimeout(() => res.end('late\n'), 1_000));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    const port = (app.address() as { port: number }).port;
    slow = await startProxy(mesh, 'slow', port, [], { protocol: 'http' });
    tiny = await startProxy(mesh, 'tiny', port, [], { protocol: 'http' });
    web = await startProxy(mesh, 'web', 1, [], {
      upstreams: [
        { ...parseUpstream('slow=127.0.0.1:0'), traffic: resolveTrafficSettings({ requestTimeoutMs: 200 }) },
        { ...parseUpstream('tiny=127.0.0.1:0'), traffic: resolveTrafficSettings({ limits: { maxConcurrentRequests: 1 } }) },
      ],
      accessLog: { sampleRate: 0, write: (line) => lines.push(line) },
    });
    for (const [service, proxy] of [['slow', slow], ['tiny', tiny]] as const) {
      await allow(mesh, 'web', service);
      await waitForEndpoints(web, service);
      await waitForDecision(proxy, 'web', true);
    }
  });

  after(async () => {
    await web?.stop();
    await tiny?.stop();
    await slow?.stop();
    await new Promise<void>((resolve) => {
      app?.closeAllConnections();
      app?.close(() => resolve());
    });
    await mesh?.stop();
  });

  test('upstream timeout logged unsampled', async () => {
    const response = await send(web.upstreamPort('slow')!, { path: '/report' });
    assert.equal(response.status, 504);
    await eventually(() => parsed().some((line) => line.destination === 'slow'), 5_000, 'access line of the timeout');
    const line = parsed().find((candidate) => candidate.destination === 'slow')!;
    assert.equal(line.status, 504);
    assert.equal(line.response_flag, 'SEALMESH_ERR_L7_UPSTREAM_TIMEOUT');
    assert.equal(line.bytes_sent, Buffer.byteLength(response.body));
    assert.equal(typeof line.upstream_instance, 'string');
  });

  test('circuit open logged unsampled', async () => {
    const port = web.upstreamPort('tiny')!;
    const responses = await Promise.all([send(port, { path: '/first' }), new Promise((resolve) => setTimeout(resolve, 200)).then(() => send(port, { path: '/second' }))]);
    assert.deepEqual(responses.map((response) => response.status), [200, 503]);
    await eventually(() => parsed().some((line) => line.path === '/second'), 5_000, 'access line of the rejection');
    const line = parsed().find((candidate) => candidate.path === '/second')!;
    assert.equal(line.status, 503);
    assert.equal(line.response_flag, 'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN');
    assert.equal(line.upstream_instance, undefined);
    // The request that succeeded was not sampled.
    assert.ok(!parsed().some((candidate) => candidate.path === '/first'));
  });
});
