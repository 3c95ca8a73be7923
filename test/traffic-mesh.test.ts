import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Registry } from 'prom-client';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { parseUpstream } from '../src/proxy/index.ts';
import { resolveTrafficSettings, type TrafficSettingsInput } from '../src/proxy/traffic/index.ts';
import { allow, eventually, httpGet, startEchoApp, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Returns the value of the metric sample whose labels contain `labels`, or 0 when there is none. */
async function metricValue(registry: Registry, name: string, labels: string): Promise<number> {
  const text = await registry.metrics();
  const line = text.split('\n').find((entry) => entry.startsWith(`${name}{`) && entry.includes(labels));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/** Returns an upstream listener spec of `service` with traffic settings. */
function upstreamWith(service: string, input: TrafficSettingsInput): ReturnType<typeof parseUpstream> {
  return { ...parseUpstream(`${service}=127.0.0.1:0`), traffic: resolveTrafficSettings(input) };
}

/** Returns a TCP port on 127.0.0.1 that nothing listens on when this returns. */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  return address.port;
}

/**
 * A plain TCP forwarder on a fixed port to a proxy's inbound listener. Stopping it makes the port
 * refuse connections, as a stopped inbound listener does; starting it again restores the instance.
 */
class InboundGate {
  readonly port: number;
  readonly #target: () => number;
  readonly #sockets = new Set<Socket>();
  #server: NetServer | undefined;

  constructor(port: number, target: () => number) {
    this.port = port;
    this.#target = target;
  }

  async open(): Promise<void> {
    const server = createNetServer((socket) => {
      const upstream = netConnect({ host: '127.0.0.1', port: this.#target() });
      for (const end of [socket, upstream]) {
        this.#sockets.add(end);
        end.once('close', () => this.#sockets.delete(end));
        end.on('error', () => undefined);
      }
      socket.once('close', () => upstream.destroy());
      upstream.once('close', () => socket.destroy());
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
  }

  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Sends `count` requests one after another and counts the responses by the app that served them. */
async function requestsByApp(port: number, count: number): Promise<Map<string, number>> {
  const served = new Map<string, number>();
  for (let i = 0; i < count; i += 1) {
    const response = await httpGet(port, `/request-${i}`);
    assert.equal(response.status, 200, `request ${i}`);
    const app = (JSON.parse(response.body) as { app: string }).app;
    served.set(app, (served.get(app) ?? 0) + 1);
  }
  return served;
}

/** Opens a TCP connection and resolves once it is connected. */
function openConnection(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves with the bytes a connection received once it closes. */
function bytesUntilClose(socket: Socket): Promise<number> {
  return new Promise((resolve) => {
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(received));
  });
}

/** Writes to a connection and resolves with the first chunk it receives back. */
function echo(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')));
    socket.once('close', () => reject(new Error('connection closed before the echo arrived')));
    socket.write(text);
  });
}

describe('traffic management through real proxies', () => {
  let mesh: TestServer;
  const proxies: SidecarProxy[] = [];
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    mesh = await startServer();
    for (const target of ['api', 'store', 'echo', 'down']) await allow(mesh, 'web', target);
  });

  after(async () => {
    for (const proxy of proxies.reverse()) await proxy.stop();
    for (const close of closers.reverse()) await close();
    await mesh?.stop();
  });

  /** Starts an app named `name` and a proxy of `service` in front of it. */
  async function startInstance(service: string, name: string, extra: Parameters<typeof startProxy>[4] = {}): Promise<SidecarProxy> {
    const app = await startHttpApp(name);
    closers.push(app.close);
    const proxy = await startProxy(mesh, service, app.port, [], extra);
    proxies.push(proxy);
    await waitForDecision(proxy, 'web', true);
    return proxy;
  }

  async function startClient(service: string, input: TrafficSettingsInput, instances: number): Promise<SidecarProxy> {
    const web = await startProxy(mesh, 'web', 1, [], { upstreams: [upstreamWith(service, input)] });
    proxies.push(web);
    await waitForEndpoints(web, service, instances);
    return web;
  }

  describe('load balancing', () => {
    before(async () => {
      for (const name of ['api-1', 'api-2', 'api-3']) await startInstance('api', name);
    });

    test('round robin spreads evenly', async () => {
      const web = await startClient('api', { loadBalancer: 'round_robin' }, 3);
      const served = await requestsByApp(web.upstreamPort('api')!, 30);
      assert.deepEqual([...served.entries()].sort(), [['api-1', 10], ['api-2', 10], ['api-3', 10]]);
    });

    test('least request avoids the busy instance', async () => {
      const web = await startClient('api', { loadBalancer: 'least_request' }, 3);
      const port = web.upstreamPort('api')!;
      const traffic = web.traffic('api')!;
      // A kept-open connection makes one instance busy, and the app's response names that instance.
      const held = await openConnection(port);
      closers.push(async () => {
        held.destroy();
      });
      const reply = await echo(held, 'GET /held HTTP/1.1\r\nHost: api\r\n\r\n');
      const busy = /"app":"(api-\d)"/.exec(reply)?.[1];
      assert.ok(busy !== undefined, `the held connection was served: ${reply}`);

      const served = new Map<string, number>();
      for (let i = 0; i < 30; i += 1) {
        // Each short connection must be over in the proxy before the next pick, so that only the
        // held connection counts as active.
        await eventually(() => traffic.status().instances.reduce((sum, instance) => sum + instance.active, 0) === 1, 5_000, 'only the held connection active');
        const response = await httpGet(port, `/short-${i}`);
        const app = (JSON.parse(response.body) as { app: string }).app;
        served.set(app, (served.get(app) ?? 0) + 1);
      }
      assert.equal(served.get(busy), undefined, `no short request went to the busy ${busy}`);
      assert.equal(served.size, 2, 'both idle instances served requests');
      held.destroy();
    });
  });

  test('refusing instance ejected, then tried again', async () => {
    const gate = new InboundGate(await freePort(), () => bad.inboundPort);
    closers.push(() => gate.close());
    await gate.open();
    await startInstance('store', 'store-good');
    const bad = await startInstance('store', 'store-bad', { advertise: { host: '127.0.0.1', port: gate.port } });
    const web = await startClient('store', { loadBalancer: 'round_robin', passiveHealthCheck: { maxFailures: 2, baseEjectionTimeMs: 2_500, maxEjectionPercent: 50 } }, 2);
    const port = web.upstreamPort('store')!;
    const registry = web.metrics.registry;
    const failed = (): Promise<number> => metricValue(registry, 'sealmesh_proxy_upstream_connections_total', 'upstream="store",result="failed"');

    const before = await requestsByApp(port, 10);
    assert.equal(before.get('store-good'), 5);
    assert.equal(before.get('store-bad'), 5);

    // The bad instance stops accepting: every request still succeeds on the good one, and after
    // two consecutive connect failures the bad one is ejected.
    await gate.close();
    const during = await requestsByApp(port, 10);
    assert.deepEqual([...during.entries()], [['store-good', 10]]);
    assert.equal(await failed(), 2, 'two failed dials to the bad instance');
    assert.equal(await metricValue(registry, 'sealmesh_proxy_outlier_ejections_total', 'upstream="store",cause="consecutive_connect_failures"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_outlier_ejected_instances', 'upstream="store"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_retries_total', 'upstream="store",cause="connect_failure"'), 2);
    assert.equal(web.traffic('store')!.status().instances.find((instance) => instance.instanceId === bad.instanceId)?.ejected, true);

    // While ejected, the bad instance is not dialled at all.
    await requestsByApp(port, 5);
    assert.equal(await failed(), 2, 'no dial to the ejected instance');

    // Once it accepts again and its ejection time has passed, it serves again.
    await gate.open();
    await eventually(async () => (await metricValue(registry, 'sealmesh_proxy_outlier_ejected_instances', 'upstream="store"')) === 0, 5_000, 'the ejection to end');
    const after = await requestsByApp(port, 10);
    assert.equal(after.get('store-bad'), 5, 'the bad instance is back in the rotation');
    assert.equal(await failed(), 2);
  });

  test('circuit breaker closes connections beyond max connections', async () => {
    const app = await startEchoApp();
    closers.push(app.close);
    const echoProxy = await startProxy(mesh, 'echo', app.port);
    proxies.push(echoProxy);
    await waitForDecision(echoProxy, 'web', true);
    const web = await startClient('echo', { limits: { maxConnections: 3 } }, 1);
    const port = web.upstreamPort('echo')!;
    const registry = web.metrics.registry;

    const open: Socket[] = [];
    for (let i = 0; i < 3; i += 1) {
      const socket = await openConnection(port);
      assert.equal(await echo(socket, `held-${i}`), `held-${i}`);
      open.push(socket);
    }
    const burst = await Promise.all(Array.from({ length: 5 }, () => openConnection(port)));
    const received = await Promise.all(burst.map((socket) => {
      const closed = bytesUntilClose(socket);
      socket.write('refused?');
      return closed;
    }));
    assert.deepEqual(received, [0, 0, 0, 0, 0], 'each connection beyond the limit is closed without a byte');
    assert.equal(await metricValue(registry, 'sealmesh_proxy_circuit_breaker_trips_total', 'upstream="echo",reason="max_connections"'), 5);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_connections_total', 'upstream="echo",result="circuit_open"'), 5);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_rejections_total', 'code="SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN"'), 5);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_active_connections', 'upstream="echo"'), 3);

    // The held connections still work, and a freed slot admits a new connection.
    assert.equal(await echo(open[0]!, 'still'), 'still');
    open[0]!.destroy();
    await eventually(async () => (await metricValue(registry, 'sealmesh_proxy_upstream_active_connections', 'upstream="echo"')) === 2, 5_000, 'the slot to be freed');
    const next = await openConnection(port);
    assert.equal(await echo(next, 'admitted'), 'admitted');
    for (const socket of [...open, next]) socket.destroy();
  });

  test('retry budget exhausted under a storm of failures', async (t) => {
    const refusing = await freePort();
    await startInstance('down', 'down-1', { advertise: { host: '127.0.0.1', port: refusing } });
    const web = await startClient(
      'down',
      { retry: { numRetries: 3, budgetPercent: 20, minRetriesPerSecond: 2, backoffBaseIntervalMs: 200, backoffMaxIntervalMs: 1_000 } },
      1,
    );
    const port = web.upstreamPort('down')!;
    const registry = web.metrics.registry;

    const storm = await Promise.all(Array.from({ length: 40 }, () => openConnection(port)));
    const received = await Promise.all(storm.map(bytesUntilClose));
    assert.ok(received.every((bytes) => bytes === 0), 'every connection is closed without a byte');

    const exhausted = await metricValue(registry, 'sealmesh_proxy_upstream_retry_budget_exhausted_total', 'upstream="down"');
    const retries = await metricValue(registry, 'sealmesh_proxy_upstream_retries_total', 'upstream="down",cause="connect_failure"');
    t.diagnostic(`40 failing connections: ${retries} retries made, ${exhausted} denied by the budget`);
    assert.ok(exhausted > 0, `the budget ran out (${exhausted} denials)`);
    assert.ok(retries > 0, 'some retries were made');
    assert.ok(retries < 40 * 3, `the budget held retries below the per-connection maximum (${retries} retries)`);
    assert.equal(web.traffic('down')!.status().retriesInProgress, 0, 'every retry released the budget');
  });
});
