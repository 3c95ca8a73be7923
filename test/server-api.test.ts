import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { generateCsr, generateKeyPair } from '../src/pki/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { startServer, type TestServer } from './helpers/mesh.ts';

/** Sends a raw HTTPS request and returns status and parsed body. */
function raw(
  mesh: TestServer,
  method: string,
  path: string,
  options: { body?: string | Buffer; token?: string; contentType?: string } = {},
): Promise<{ status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    const req = request(new URL(path, mesh.url), { method, headers, ca: mesh.ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, body: text.length > 0 ? JSON.parse(text) : {} });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

async function csrFor(spiffeId: string): Promise<string> {
  return generateCsr(spiffeId, await generateKeyPair());
}

describe('control-plane API', () => {
  let mesh: TestServer;

  before(async () => {
    mesh = await startServer();
  });

  after(async () => {
    await mesh?.stop();
  });

  test('trust bundle file holds only public certificates', () => {
    const path = join(mesh.dir, 'trust-bundle.pem');
    const text = readFileSync(path, 'utf8');
    assert.match(text, /BEGIN CERTIFICATE/);
    assert.doesNotMatch(text, /PRIVATE KEY/);
    assert.equal(statSync(path).mode & 0o777, 0o644);
  });

  test('status reports the trust domain', async () => {
    const status = await mesh.anonymous.get<{ trustDomain: string; initialized: boolean }>('/v1/status');
    assert.equal(status.trustDomain, mesh.server.trustDomain);
    assert.equal(status.initialized, true);
  });

  test('generated trust domain is unique', async () => {
    const other = await startServer();
    try {
      assert.notEqual(other.server.trustDomain, mesh.server.trustDomain);
      assert.match(other.server.trustDomain, /^[0-9a-f]{16}\.sealmesh$/);
    } finally {
      await other.stop();
    }
  });

  test('operator init succeeds only once', async () => {
    await rejectsWith(mesh.anonymous.post('/v1/operator/init', {}), 'SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED');
  });

  test('malformed JSON body is rejected', async () => {
    const response = await raw(mesh, 'POST', '/v1/intentions', { body: '{"source":', token: mesh.operatorToken });
    assert.equal(response.status, 400);
    assert.equal(response.body.error?.code, 'SEALMESH_ERR_BAD_REQUEST');
  });

  test('oversized body is rejected', async () => {
    const response = await raw(mesh, 'POST', '/v1/intentions', { body: JSON.stringify({ source: 'x'.repeat(600 * 1024) }), token: mesh.operatorToken });
    assert.equal(response.status, 413);
    assert.equal(response.body.error?.code, 'SEALMESH_ERR_BODY_TOO_LARGE');
  });

  test('unknown field is rejected', async () => {
    const response = await raw(mesh, 'POST', '/v1/intentions', {
      body: JSON.stringify({ source: 'web', destination: 'api', action: 'allow', priority: 1 }),
      token: mesh.operatorToken,
    });
    assert.equal(response.status, 400);
    assert.equal(response.body.error?.code, 'SEALMESH_ERR_BAD_REQUEST');
  });

  test('non-JSON content type is rejected', async () => {
    const response = await raw(mesh, 'POST', '/v1/intentions', { body: 'source=web', contentType: 'text/plain', token: mesh.operatorToken });
    assert.equal(response.status, 415);
    assert.equal(response.body.error?.code, 'SEALMESH_ERR_UNSUPPORTED_MEDIA_TYPE');
  });

  test('unknown route returns not found', async () => {
    const response = await raw(mesh, 'GET', '/v1/nothing');
    assert.equal(response.status, 404);
    assert.equal(response.body.error?.code, 'SEALMESH_ERR_NOT_FOUND');
  });

  test('missing token is rejected', async () => {
    await rejectsWith(mesh.anonymous.get('/v1/intentions'), 'SEALMESH_ERR_ACL_TOKEN_MISSING');
  });

  test('wrong token is rejected', async () => {
    await rejectsWith(mesh.anonymous.with({ token: 'smt_not-a-real-token' }).get('/v1/intentions'), 'SEALMESH_ERR_ACL_TOKEN_INVALID');
  });

  test('read token cannot write', async () => {
    const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read' });
    const reader = mesh.anonymous.with({ token });
    await reader.get('/v1/intentions');
    await rejectsWith(reader.post('/v1/intentions', { source: 'a', destination: 'b', action: 'allow' }), 'SEALMESH_ERR_ACL_PERMISSION_DENIED');
  });

  test('join token cannot read the catalog', async () => {
    const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
    await rejectsWith(mesh.anonymous.with({ token }).get('/v1/catalog/services'), 'SEALMESH_ERR_ACL_PERMISSION_DENIED');
  });

  test('join token without service is rejected', async () => {
    await rejectsWith(mesh.operator.post('/v1/acl/tokens', { kind: 'join' }), 'SEALMESH_ERR_BAD_REQUEST');
  });

  test('join token for reserved namespace is rejected', async () => {
    await rejectsWith(mesh.operator.post('/v1/acl/tokens', { kind: 'join', service: 'sealmesh/server' }), 'SEALMESH_ERR_BAD_REQUEST');
  });

  test('token list holds no secrets', async () => {
    const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read', description: 'listing' });
    const list = await mesh.operator.get<{ tokens: unknown[] }>('/v1/acl/tokens');
    assert.ok(list.tokens.length >= 2);
    assert.ok(!JSON.stringify(list).includes(token));
    assert.ok(!JSON.stringify(list).includes(mesh.operatorToken));
  });

  describe('enrollment', () => {
    const enrollBody = (csr: string) => ({ csr, address: '127.0.0.1', port: 20000, upstreams: [] });

    test('join token enrolls its own service', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      const result = await mesh.anonymous.with({ token }).post<{ spiffeId: string; chainPem: string }>('/v1/svid/enroll', enrollBody(await csrFor(id)));
      assert.equal(result.spiffeId, id);
      assert.match(result.chainPem, /BEGIN CERTIFICATE[\s\S]+BEGIN CERTIFICATE/);
    });

    test('reused join token is rejected', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      const client = mesh.anonymous.with({ token });
      await client.post('/v1/svid/enroll', enrollBody(await csrFor(id)));
      await rejectsWith(client.post('/v1/svid/enroll', enrollBody(await csrFor(id))), 'SEALMESH_ERR_ACL_TOKEN_USED');
    });

    test('concurrent use of one join token succeeds once', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      const client = mesh.anonymous.with({ token });
      const bodies = await Promise.all([csrFor(id), csrFor(id), csrFor(id)]);
      const results = await Promise.allSettled(bodies.map((csr) => client.post('/v1/svid/enroll', enrollBody(csr))));
      assert.equal(results.filter((result) => result.status === 'fulfilled').length, 1);
    });

    test('expired join token is rejected', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api', ttlSeconds: 1 });
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      await rejectsWith(mesh.anonymous.with({ token }).post('/v1/svid/enroll', enrollBody(await csrFor(id))), 'SEALMESH_ERR_ACL_TOKEN_EXPIRED');
    });

    test('CSR for another service is rejected', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/db`;
      await rejectsWith(mesh.anonymous.with({ token }).post('/v1/svid/enroll', enrollBody(await csrFor(id))), 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH');
    });

    test('rejected CSR leaves the token usable', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const client = mesh.anonymous.with({ token });
      await rejectsWith(client.post('/v1/svid/enroll', enrollBody('not a csr')), 'SEALMESH_ERR_CSR_MALFORMED');
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      await client.post('/v1/svid/enroll', enrollBody(await csrFor(id)));
    });

    test('oversized CSR is rejected', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const huge = `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(20_000)}\n-----END CERTIFICATE REQUEST-----\n`;
      await rejectsWith(mesh.anonymous.with({ token }).post('/v1/svid/enroll', enrollBody(huge)), 'SEALMESH_ERR_CSR_TOO_LARGE');
    });

    test('evidence from unknown provider is rejected', async () => {
      const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      await rejectsWith(
        mesh.anonymous.with({ token }).post('/v1/svid/enroll', { ...enrollBody(await csrFor(id)), evidence: { provider: 'magic', data: '' } }),
        'SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED',
      );
    });

    test('renewal without client certificate is rejected', async () => {
      const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/api`;
      await rejectsWith(
        mesh.anonymous.post('/v1/svid/renew', { csr: await csrFor(id), instanceId: '00000000-0000-4000-8000-000000000000' }),
        'SEALMESH_ERR_PEER_NO_CERTIFICATE',
      );
    });
  });

  test('rejections are counted in metrics', async () => {
    const text = await mesh.operator.get<string>('/v1/metrics');
    assert.match(text, /sealmesh_server_rejections_total\{code="SEALMESH_ERR_ACL_TOKEN_MISSING"\} [1-9]/);
  });

  test('intention CRUD round trip', async () => {
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    await rejectsWith(mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'deny' }), 'SEALMESH_ERR_CONFLICT');
    const { intentions } = await mesh.operator.get<{ intentions: Array<{ source: string; action: string }> }>('/v1/intentions');
    assert.ok(intentions.some((entry) => entry.source === 'web' && entry.action === 'allow'));
    await mesh.operator.delete('/v1/intentions?source=web&destination=api');
    await rejectsWith(mesh.operator.delete('/v1/intentions?source=web&destination=api'), 'SEALMESH_ERR_NOT_FOUND');
  });
});
