import { createServer, request, type Server } from 'node:http';

/**
 * The three demo apps of dev mode: web calls api, api calls db, and web also tries db directly,
 * which the dev intentions deny. Each calls its upstreams through its own sidecar's loopback
 * listener and contains no TLS or identity code.
 */
export interface DemoApp {
  name: string;
  server: Server;
  port: number;
}

/** GETs `http://127.0.0.1:<port><path>`, such as a sidecar's upstream listener, and parses a JSON body. */
export function httpGet(port: number, path = '/'): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: 5_000, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // Keep the text as it is.
        }
        resolve({ status: response.statusCode ?? 0, body });
      });
      response.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

function sendJson(response: import('node:http').ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('demo app did not bind a TCP port');
  return address.port;
}

/**
 * Starts the demo apps. `upstreamPorts` gives, per app, the loopback ports of its sidecar's upstream
 * listeners.
 */
export async function startDemoApps(upstreamPorts: { web: { api: number; db: number }; api: { db: number } }): Promise<DemoApp[]> {
  const db = createServer((_request, response) => {
    sendJson(response, 200, { service: 'db', rows: [{ id: 1, item: 'tea' }, { id: 2, item: 'coffee' }] });
  });

  const api = createServer((_request, response) => {
    httpGet(upstreamPorts.api.db).then(
      (result) => sendJson(response, 200, { service: 'api', db: result.body }),
      (error: Error & { code?: string }) => sendJson(response, 502, { service: 'api', error: `db unreachable through the mesh: ${error.code ?? error.message}` }),
    );
  });

  const web = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    // `/db` calls db directly, which no intention allows: the destination proxy closes the connection.
    const target = path === '/db' ? { name: 'db', port: upstreamPorts.web.db } : { name: 'api', port: upstreamPorts.web.api };
    httpGet(target.port).then(
      (result) => sendJson(response, 200, { service: 'web', [target.name]: result.body }),
      (error: Error & { code?: string }) =>
        sendJson(response, 502, {
          service: 'web',
          error: `web -> ${target.name} failed: the mesh closed the connection (${error.code ?? error.message}); no intention allows web to call ${target.name}`,
        }),
    );
  });

  const apps: DemoApp[] = [];
  for (const [name, server] of [['db', db], ['api', api], ['web', web]] as const) {
    apps.push({ name, server, port: await listen(server) });
  }
  return apps;
}

