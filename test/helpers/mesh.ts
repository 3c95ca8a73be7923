import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../../src/client/index.ts';
import { ControlPlane, type ServerOptions } from '../../src/server/index.ts';
import { SidecarProxy, type ProxyOptions } from '../../src/proxy/index.ts';
import { parseUpstream } from '../../src/proxy/index.ts';
import { createLogger, silentLogger, type Logger } from '../../src/log/index.ts';

/** Logger for components started by tests: silent unless SEALMESH_TEST_LOG names a level. */
export function testLogger(component: string): Logger {
  const level = process.env.SEALMESH_TEST_LOG;
  return level === undefined || level === '' ? silentLogger() : createLogger({ component, level });
}

/** Temporary directories of this test process, removed when it exits if a test did not remove them. */
const createdDirs = new Set<string>();
process.once('exit', () => {
  for (const path of createdDirs) {
    rmSync(path, { recursive: true, force: true });
    // A server whose data directory is the temporary directory itself puts its key file beside it.
    rmSync(`${path}.seal-key`, { force: true });
  }
});

export function tempDir(prefix = 'sealmesh-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  createdDirs.add(path);
  return {
    path,
    remove: () => {
      rmSync(path, { recursive: true, force: true });
      rmSync(`${path}.seal-key`, { force: true });
      createdDirs.delete(path);
    },
  };
}

export interface TestServer {
  server: ControlPlane;
  dir: string;
  url: string;
  ca: string[];
  /** Client without a token. */
  anonymous: ApiClient;
  /** Client with the first operator token. */
  operator: ApiClient;
  operatorToken: string;
  stop: () => Promise<void>;
}

/** Starts a control plane on 127.0.0.1 with a free port and initialises it. */
export async function startServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  // The data directory sits inside a private temporary directory, so that the key file the server
  // creates beside it is removed with it.
  const dir = options.dataDir ?? join(tempDir().path, 'data');
  const server = new ControlPlane({ dataDir: dir, host: '127.0.0.1', port: 0, leaseSeconds: 5, log: testLogger('server'), ...options });
  await server.start();
  const ca = server.ca.bundle();
  const anonymous = new ApiClient({ url: server.url, ca });
  const { token } = await anonymous.post<{ token: string }>('/v1/operator/init', {});
  let stopped = false;
  return {
    server,
    dir,
    url: server.url,
    ca,
    anonymous,
    operator: anonymous.with({ token }),
    operatorToken: token,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await server.stop();
    },
  };
}

export async function joinToken(mesh: TestServer, service: string, ttlSeconds?: number): Promise<string> {
  const result = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', {
    kind: 'join',
    service,
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  });
  return result.token;
}

export async function allow(mesh: TestServer, source: string, destination: string, action: 'allow' | 'deny' = 'allow'): Promise<void> {
  await mesh.operator.post('/v1/intentions', { source, destination, action, replace: true });
}

/** Starts a proxy for `service` in this process with a fresh join token. */
export async function startProxy(
  mesh: TestServer,
  service: string,
  appPort: number,
  upstreams: string[] = [],
  extra: Partial<ProxyOptions> = {},
): Promise<SidecarProxy> {
  const proxy = new SidecarProxy({
    service,
    joinToken: await joinToken(mesh, service),
    serverUrl: mesh.url,
    serverCa: mesh.ca,
    listen: { host: '127.0.0.1', port: 0 },
    app: { host: '127.0.0.1', port: appPort },
    upstreams: upstreams.map((name) => parseUpstream(`${name}=127.0.0.1:0`)),
    drainSeconds: 1,
    log: testLogger(`proxy-${service}`),
    ...extra,
  });
  await proxy.start();
  return proxy;
}

async function listen(server: HttpServer | NetServer): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  return address.port;
}

/** Starts an HTTP app that responds to every request with its name and the request path. */
export async function startHttpApp(name: string): Promise<{ port: number; server: HttpServer; close: () => Promise<void> }> {
  const server = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ app: name, path: req.url }));
  });
  const port = await listen(server);
  return {
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Starts a TCP app that echoes every byte back. */
export async function startEchoApp(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createNetServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  const port = await listen(server);
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** GETs a path on 127.0.0.1 and returns status and body; connection errors reject. */
export function httpGet(port: number, path = '/', agent?: import('node:http').Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 5_000, agent: agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Polls `check` every 50 ms until it returns true or `timeoutMs` passes. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Waits until the proxy has a snapshot in which `upstream` has at least `count` endpoints. */
export async function waitForEndpoints(proxy: SidecarProxy, upstream: string, count = 1): Promise<void> {
  await eventually(() => proxy.endpoints(upstream).length >= count, 5_000, `${count} endpoint(s) of ${upstream}`);
}

/** Waits until the proxy's snapshot gives `expected` for connections from `source`. */
export async function waitForDecision(proxy: SidecarProxy, source: string, expected: boolean): Promise<void> {
  const [namespace, service] = source.includes('/') ? source.split('/') : ['default', source];
  const peer = { trustDomain: '', namespace: namespace ?? 'default', service: service ?? source };
  await eventually(() => proxy.authorize(peer).allowed === expected, 5_000, `${source} ${expected ? 'allowed' : 'denied'} at ${proxy.identity.service}`);
}
