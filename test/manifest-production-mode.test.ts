import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { FileManifestSigner, formatPosture, effectivePosture, generateOperatorKey, initManifest, manifestDigest, nextManifest, signManifest, type SignedManifest } from '../src/manifest/index.ts';
import { ControlPlane } from '../src/server/index.ts';
import { isSealmeshError } from '../src/errors/index.ts';
import { generateCsr, generateKeyPair } from '../src/pki/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { joinToken, startHttpApp, startProxy, startServer, tempDir, testLogger, type TestServer } from './helpers/mesh.ts';
import { freePort, waitForExit } from './helpers/cli.ts';
import { createJoinToken, spawnSealmesh, startServerProcess, stopProcesses } from './helpers/process-mesh.ts';

const TRUST_DOMAIN = 'mode-test.sealmesh';
const operator = generateOperatorKey('ed25519');
const signer = FileManifestSigner.fromPem(operator.privateKeyPem);

async function genesis(): Promise<SignedManifest> {
  return signManifest(initManifest({ trustDomain: TRUST_DOMAIN, operatorKeys: [{ publicKeyPem: operator.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 }), signer);
}

async function counterValue(counter: { get: () => Promise<{ values: Array<{ labels: Record<string, unknown>; value: number }> }> }, code: string): Promise<number> {
  const { values } = await counter.get();
  return values.find((entry) => entry.labels.code === code)?.value ?? 0;
}

describe('manifest requiring production mode', () => {
  test('posture shows the requirement', async () => {
    const v1 = await genesis();
    const required = await signManifest(nextManifest(v1, { hardening: { requireProductionMode: true } }), signer);
    assert.equal(effectivePosture(v1.manifest).hardening.requireProductionMode, false);
    assert.equal(effectivePosture(required.manifest).hardening.requireProductionMode, true);
    assert.match(formatPosture(effectivePosture(required.manifest)), /production mode: +required of the server and every proxy/);
  });

  describe('development server', () => {
    let mesh: TestServer;

    before(async () => {
      mesh = await startServer({ trustDomain: TRUST_DOMAIN });
    });

    after(async () => {
      await mesh?.stop();
    });

    test('apply is rejected and audited', async () => {
      const v1 = await genesis();
      const draft = initManifest({ trustDomain: TRUST_DOMAIN, operatorKeys: [{ publicKeyPem: operator.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 });
      draft.manifest.hardening = { requireProductionMode: true };
      const signedRequired = await signManifest(draft, signer);
      await assert.rejects(mesh.operator.post('/v1/manifest', signedRequired), (error: unknown) => {
        assert.ok(isSealmeshError(error), String(error));
        assert.equal(error.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
        assert.match(error.message, /runs in development mode/);
        return true;
      });
      const { entries } = await mesh.operator.get<{ entries: Array<{ action: string; details: { code?: string; version?: number; digest?: string } | null }> }>('/v1/audit');
      const rejected = entries.filter((entry) => entry.action === 'manifest.reject');
      assert.equal(rejected.length, 1);
      assert.equal(rejected[0]?.details?.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
      assert.equal(rejected[0]?.details?.version, 1, 'the audit entry names the rejected version');
      assert.equal(rejected[0]?.details?.digest, manifestDigest(signedRequired.manifest), 'and its digest');
      assert.equal(await counterValue(mesh.server.metrics.rejections, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED'), 1);

      // Nothing was stored: the same cluster still accepts a genesis without the requirement.
      await mesh.operator.post('/v1/manifest', v1);
      const current = await mesh.operator.get<{ manifest: { version: number } | null }>('/v1/manifest');
      assert.equal(current.manifest?.version, 1);
    });
  });

  describe('production server', () => {
    let mesh: TestServer;
    let app: Awaited<ReturnType<typeof startHttpApp>>;
    let v1: SignedManifest;
    const proxies: SidecarProxy[] = [];

    before(async () => {
      mesh = await startServer({ trustDomain: TRUST_DOMAIN, runMode: 'production' });
      app = await startHttpApp('api');
      v1 = await genesis();
      await mesh.operator.post('/v1/manifest', v1);
    });

    after(async () => {
      for (const proxy of proxies) await proxy.stop();
      await app?.close();
      await mesh?.stop();
    });

    test('development proxy enrolls without the requirement', async () => {
      const proxy = await startProxy(mesh, 'api', app.port);
      proxies.push(proxy);
      assert.ok(proxy.spiffeId?.endsWith('/svc/api'), `enrolled as ${String(proxy.spiffeId)}`);
      assert.equal(proxy.enforcedManifest?.posture.hardening.requireProductionMode ?? false, false);
    });

    test('development proxy refuses to run', async () => {
      // The proxy enrolled under version 1; version 2 reaches it in a snapshot.
      const proxy = proxies[0];
      assert.ok(proxy !== undefined, 'the previous test started a development proxy');
      await mesh.operator.post('/v1/manifest', await signManifest(nextManifest(v1, { defaultPolicy: 'allow', hardening: { requireProductionMode: true } }), signer));
      const halted = await Promise.race([proxy.halted, new Promise<undefined>((resolve) => setTimeout(resolve, 10_000, undefined))]);
      assert.ok(halted !== undefined, 'the proxy halts within 10 s of receiving the manifest');
      assert.equal(halted.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
      assert.match(halted.message, /manifest version 2 sets hardening\.requireProductionMode, but this proxy runs in development mode/);
      assert.equal(await counterValue(proxy.metrics.rejections, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED'), 1);

      // Inbound connections are closed without reaching the app.
      const closed = await new Promise<boolean>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: proxy.inboundPort, rejectUnauthorized: false });
        socket.once('secureConnect', () => socket.once('close', () => resolve(true)));
        socket.once('error', () => resolve(true));
        socket.setTimeout(5_000, () => {
          socket.destroy();
          resolve(false);
        });
      });
      assert.equal(closed, true, 'the suspended listener closes the connection');
    });

    test('development proxy is rejected at enrollment', async () => {
      const { token, accessorId } = await mesh.operator.post<{ token: string; accessorId: string }>('/v1/acl/tokens', { kind: 'join', service: 'api' });
      const rejectedBefore = await counterValue(mesh.server.metrics.rejections, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
      // A proxy that starts anyway is kept for `after` to stop, so a failure here does not hang the run.
      const error = await startProxy(mesh, 'api', app.port, [], { joinToken: token }).then(
        (proxy) => {
          proxies.push(proxy);
          return undefined;
        },
        (reason: unknown) => reason,
      );
      assert.ok(isSealmeshError(error), `enrollment is rejected, not ${String(error)}`);
      assert.equal(error.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
      assert.match(error.message, /manifest version 2 sets hardening\.requireProductionMode, but the enrolling proxy runs in development mode/);
      assert.match(error.message, /restart it with --mode production/);
      assert.match(error.message, /the join token was not used and is still valid/);
      assert.equal(await counterValue(mesh.server.metrics.rejections, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED'), rejectedBefore + 1);

      const { tokens } = await mesh.operator.get<{ tokens: Array<{ accessorId: string; usedAt?: string }> }>('/v1/acl/tokens');
      const record = tokens.find((entry) => entry.accessorId === accessorId);
      assert.ok(record !== undefined, 'the rejected join token is listed');
      assert.equal(record.usedAt, undefined, 'the rejected join token is still unused');

      // The same token enrolls a proxy started in production mode.
      const retried = await startProxy(mesh, 'api', app.port, [], { joinToken: token, runMode: 'production' });
      proxies.push(retried);
      assert.ok(retried.spiffeId?.endsWith('/svc/api'), `enrolled as ${String(retried.spiffeId)}`);
      const after = await mesh.operator.get<{ tokens: Array<{ accessorId: string; usedAt?: string }> }>('/v1/acl/tokens');
      assert.notEqual(after.tokens.find((entry) => entry.accessorId === accessorId)?.usedAt, undefined, 'the production enrollment used the token');
      const settled = await Promise.race([retried.halted.then(() => 'halted'), new Promise((resolve) => setTimeout(resolve, 1_000, 'running'))]);
      assert.equal(settled, 'running');
    });

    test('enrollment without a mode counts as development', async () => {
      const client = mesh.anonymous.with({ token: await joinToken(mesh, 'api') });
      const csr = await generateCsr(`spiffe://${TRUST_DOMAIN}/ns/default/svc/api`, await generateKeyPair());
      await assert.rejects(client.post('/v1/svid/enroll', { csr, address: '127.0.0.1', port: 20000, upstreams: [] }), (error: unknown) => {
        assert.ok(isSealmeshError(error), String(error));
        assert.equal(error.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
        return true;
      });
      await assert.rejects(client.post('/v1/svid/enroll', { csr, address: '127.0.0.1', port: 20000, upstreams: [], mode: 'staging' }), (error: unknown) => {
        assert.ok(isSealmeshError(error), String(error));
        assert.equal(error.code, 'SEALMESH_ERR_BAD_REQUEST');
        return true;
      });
      const enrolled = await client.post<{ spiffeId: string }>('/v1/svid/enroll', { csr, address: '127.0.0.1', port: 20000, upstreams: [], mode: 'production' });
      assert.equal(enrolled.spiffeId, `spiffe://${TRUST_DOMAIN}/ns/default/svc/api`);
    });

    test('production proxy keeps running', async () => {
      const proxy = await startProxy(mesh, 'web', app.port, [], { runMode: 'production' });
      proxies.push(proxy);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const settled = await Promise.race([proxy.halted.then(() => 'halted'), Promise.resolve('running')]);
      assert.equal(settled, 'running');
      assert.equal(proxy.enforcedManifest?.posture.hardening.requireProductionMode, true);
    });

    test('development restart is rejected', async () => {
      const dataDir = mesh.dir;
      await mesh.stop();
      const restarted = new ControlPlane({ dataDir, host: '127.0.0.1', port: 0, leaseSeconds: 5, log: testLogger('server') });
      const rejections = restarted.metrics.rejections;
      await assert.rejects(restarted.start(), (error: unknown) => {
        assert.ok(isSealmeshError(error), String(error));
        assert.equal(error.code, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED');
        assert.match(error.message, /this server runs in development mode/);
        return true;
      });
      assert.equal(await counterValue(rejections, 'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED'), 1);
      await restarted.stop();
    });
  });
});

describe('proxy command under a production manifest', () => {
  const dir = tempDir('sealmesh-mode-cli-');

  after(() => dir.remove());

  test('development proxy is rejected at enrollment', async () => {
    const server = await startServerProcess(dir.path, ['--sandbox', '--mode', 'production']);
    try {
      const v1 = await signManifest(initManifest({ trustDomain: (await server.client.get<{ trustDomain: string }>('/v1/bundle')).trustDomain, operatorKeys: [{ publicKeyPem: operator.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 }), signer);
      await server.operator.post('/v1/manifest', v1);
      await server.operator.post('/v1/manifest', await signManifest(nextManifest(v1, { hardening: { requireProductionMode: true } }), signer));

      const proxy = spawnSealmesh(
        ['proxy', '--service', 'api', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9', '--admin', `127.0.0.1:${await freePort()}`, '--addr', server.addr, '--ca-file', server.bundlePath, '--drain', '1s'],
        { env: { SEALMESH_JOIN_TOKEN: await createJoinToken(server, 'api') } },
      );
      const { code } = await waitForExit(proxy.child, 60_000);
      assert.equal(code, 1, proxy.stderr());
      assert.match(proxy.stderr(), /SEALMESH_ERR_PRODUCTION_MODE_REQUIRED/);
      assert.match(proxy.stderr(), /restart it with --mode production; the join token was not used and is still valid/);
      assert.doesNotMatch(proxy.stdout() + proxy.stderr(), /proxy enrolled|sealmesh proxy started/);
    } finally {
      await stopProcesses([server.running]);
    }
  });
});
