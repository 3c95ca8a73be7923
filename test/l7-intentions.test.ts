import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { runCli } from './helpers/cli.ts';
import { eventually, startHttpApp, startProxy, startServer, tempDir, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

const PERMISSIONS = [
  { action: 'deny', http: { pathPrefix: '/admin' } },
  { action: 'allow', http: { pathPrefix: '/', methods: ['GET', 'POST'] } },
  { action: 'allow', http: { pathExact: '/upload', methods: ['PUT'], header: [{ name: 'x-token', exact: 'secret' }] } },
];

/** Sends a request with a raw request target, so that no client rewrites the path first. */
function send(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers['x-sealmesh-error'] !== undefined ? { error: String(res.headers['x-sealmesh-error']) } : {}) }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function counter(proxy: SidecarProxy, labels: Record<string, string>): Promise<number> {
  const metric = await proxy.metrics.http.denials.get();
  return metric.values.filter((value) => Object.entries(labels).every(([name, wanted]) => value.labels[name as keyof typeof value.labels] === wanted)).reduce((sum, value) => sum + value.value, 0);
}

describe('L7 intentions across two proxies', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let port: number;

  before(async () => {
    mesh = await startServer();
    app = await startHttpApp('api');
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http' });
    web = await startProxy(mesh, 'web', 1, ['api']);
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'deny', permissions: PERMISSIONS });
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

  // [method, raw path, headers, expected status, path the app receives]
  const table: Array<[string, string, Record<string, string>, number, string | undefined]> = [
    ['GET', '/public', {}, 200, '/public'],
    ['GET', '/public?q=1', {}, 200, '/public?q=1'],
    ['POST', '/public', {}, 200, '/public'],
    ['GET', '/x/./y//z', {}, 200, '/x/y/z'],
    ['GET', '/%7euser', {}, 200, '/~user'],
    ['GET', '/admin', {}, 403, undefined],
    ['GET', '/./admin', {}, 403, undefined],
    ['GET', '//admin', {}, 403, undefined],
    ['GET', '/%61dmin', {}, 403, undefined],
    ['GET', '/%61%64%6d%69%6e/users', {}, 403, undefined],
    ['GET', '/x/../admin', {}, 403, undefined],
    ['GET', '/x/%2e%2e/admin', {}, 403, undefined],
    ['GET', '/admin/', {}, 403, undefined],
    ['DELETE', '/public', {}, 403, undefined],
    ['PUT', '/upload', { 'x-token': 'secret' }, 200, '/upload'],
    ['PUT', '/upload', { 'x-token': 'guess' }, 403, undefined],
    ['PUT', '/upload', {}, 403, undefined],
    ['GET', '/a%2Fb', {}, 400, undefined],
    ['GET', '/a%2fb', {}, 400, undefined],
    ['GET', '/a%5Cb', {}, 400, undefined],
    ['GET', '/a%00b', {}, 400, undefined],
    ['GET', '/a%zz', {}, 400, undefined],
    ['GET', '/../etc/passwd', {}, 400, undefined],
    ['GET', '/%2e%2e/etc/passwd', {}, 400, undefined],
  ];
  for (const [method, path, headers, status, seen] of table) {
    test(`${method} ${path}${Object.keys(headers).length > 0 ? ` with ${JSON.stringify(headers)}` : ''} -> ${status}`, async () => {
      const response = await send(port, method, path, headers);
      assert.equal(response.status, status, response.body);
      if (seen !== undefined) {
        assert.equal((JSON.parse(response.body) as { path: string }).path, seen);
      }
      if (status === 403) {
        assert.equal(response.error, 'SEALMESH_ERR_L7_REQUEST_DENIED');
        assert.equal(response.body, 'request denied by intention web -> api\n');
      }
      if (status === 400) assert.equal(response.error, 'SEALMESH_ERR_L7_PATH_INVALID');
    });
  }

  test('denials are counted by reason', async () => {
    const denied = table.filter((row) => row[3] === 403).length;
    const invalid = table.filter((row) => row[3] === 400).length;
    assert.equal(await counter(api, { source: 'web', destination: 'api', reason: 'intention' }), denied);
    assert.equal(await counter(api, { source: 'web', destination: 'api', reason: 'invalid_path' }), invalid);
  });

  test('permission change applies without reconnecting', async () => {
    await mesh.operator.post('/v1/intentions', {
      source: 'web',
      destination: 'api',
      action: 'deny',
      permissions: [{ action: 'allow', http: { pathPrefix: '/admin' } }],
      replace: true,
    });
    await eventually(async () => (await send(port, 'GET', '/admin')).status === 200, 5_000, '/admin allowed');
    assert.equal((await send(port, 'GET', '/public')).status, 403);
  });

  test('default policy denial names the policy', async () => {
    await mesh.operator.delete('/v1/intentions?source=web&destination=api');
    await eventually(async () => (await send(port, 'GET', '/admin')).status === 403, 5_000, '/admin denied');
    const response = await send(port, 'GET', '/admin');
    assert.equal(response.error, 'SEALMESH_ERR_L7_REQUEST_DENIED');
    assert.equal(response.body, 'request denied by the default policy (web -> api)\n');
  });
});

describe('L7 permissions on a TCP service', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let api: SidecarProxy;

  before(async () => {
    mesh = await startServer();
    app = await startHttpApp('api');
    api = await startProxy(mesh, 'api', app.port);
  });

  after(async () => {
    await api?.stop();
    await app?.close();
    await mesh?.stop();
  });

  test('intention with permissions denies', async () => {
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', permissions: [{ action: 'allow', http: { pathPrefix: '/' } }] });
    await eventually(() => api.authorize({ trustDomain: '', namespace: 'default', service: 'web' }).reason.includes('L7 permissions on a tcp service'), 5_000, 'the intention to arrive');
    assert.equal(api.authorize({ trustDomain: '', namespace: 'default', service: 'web' }).allowed, false);
  });
});

describe('L7 permissions in the API and CLI', () => {
  let mesh: TestServer;
  let caFile: string;

  before(async () => {
    mesh = await startServer();
    caFile = join(tempDir().path, 'ca.pem');
    writeFileSync(caFile, mesh.ca.join('\n'));
  });

  after(async () => {
    await mesh?.stop();
  });

  test('API stores and lists permissions', async () => {
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'deny', permissions: PERMISSIONS });
    const { intentions } = await mesh.operator.get<{ intentions: Array<{ source: string; permissions?: unknown[] }> }>('/v1/intentions');
    assert.equal(intentions[0]?.permissions?.length, 3);
  });

  test('API rejects an invalid regex', async () => {
    await assert.rejects(
      mesh.operator.post('/v1/intentions', { source: 'web', destination: 'db', action: 'deny', permissions: [{ action: 'allow', http: { pathRegex: '(a)\\1' } }] }),
      { code: 'SEALMESH_ERR_BAD_REQUEST' },
    );
  });

  test('CLI reads a permissions file', async () => {
    const file = join(tempDir().path, 'permissions.yaml');
    writeFileSync(file, '- action: deny\n  http:\n    pathPrefix: /admin\n- action: allow\n  http:\n    methods: [GET]\n');
    const connection = ['--addr', mesh.url, '--ca-file', caFile, '--token', mesh.operatorToken];
    const result = await runCli(['intention', 'create', 'web', 'billing', '--deny', '--permissions-file', file, ...connection]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'Created: web => billing (deny, 2 L7 permissions)\n');

    const listed = await runCli(['intention', 'list', ...connection]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^SOURCE\s+DESTINATION\s+ACTION\s+PERMISSIONS\s/m);
    assert.match(listed.stdout, /^web\s+billing\s+deny\s+2 L7\s/m);
  });

  test('CLI rejects a bad permissions file', async () => {
    const file = join(tempDir().path, 'permissions.json');
    writeFileSync(file, JSON.stringify([{ action: 'allow', http: { pathPrefix: '/a/../b' } }]));
    const connection = ['--addr', mesh.url, '--ca-file', caFile, '--token', mesh.operatorToken];
    const result = await runCli(['intention', 'create', 'web', 'billing', '--deny', '--replace', '--permissions-file', file, ...connection]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /SEALMESH_ERR_L7_PERMISSION_INVALID/);
    assert.match(result.stderr, /not normalised; write "\/b"/);
    assert.match(result.stderr, /is invalid: permission 1, http\.pathPrefix \(line 1, column \d+\): /, 'the problem is located by permission number and field');
  });

  test('CLI locates a bad value by line', async () => {
    const file = join(tempDir().path, 'permissions.yaml');
    writeFileSync(file, '- action: deny\n  http:\n    pathPrefix: /admin\n- action: allow\n  http:\n    pathPrefix: /\n    methods: [GET, POTS]\n');
    const connection = ['--addr', mesh.url, '--ca-file', caFile, '--token', mesh.operatorToken];
    const result = await runCli(['intention', 'create', 'web', 'billing', '--deny', '--replace', '--permissions-file', file, ...connection]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /SEALMESH_ERR_L7_PERMISSION_INVALID/);
    assert.match(result.stderr, /permission 2, http\.methods\[1\] \(line 7, column 20\): /, 'list positions are bracketed and the line and column are given');
    assert.match(result.stderr, /; found "POTS"/, 'the rejected value is named');
  });
});
