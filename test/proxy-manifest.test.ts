import { after, before, describe, test } from 'node:test';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import {
  FileManifestSigner,
  generateOperatorKey,
  initManifest,
  manifestDigest,
  nextManifest,
  signManifest,
  type SignedManifest,
} from '../src/manifest/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { loadManifestVerifier, ManifestGuard } from '../src/proxy/manifest-guard.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import type { ProxySnapshot } from '../src/server/index.ts';
import { eventually, startHttpApp, startProxy, startServer, type TestServer } from './helpers/mesh.ts';

const TRUST_DOMAIN = 'guard-test.sealmesh';
const operator = generateOperatorKey('ed25519');
const outsider = generateOperatorKey('ed25519');
const signer = FileManifestSigner.fromPem(operator.privateKeyPem);
const outsiderSigner = FileManifestSigner.fromPem(outsider.privateKeyPem);

async function genesis(trustDomain = TRUST_DOMAIN): Promise<SignedManifest> {
  return signManifest(initManifest({ trustDomain, operatorKeys: [{ publicKeyPem: operator.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 }), signer);
}

function snapshot(chain: SignedManifest[] | undefined, fields: Partial<ProxySnapshot> = {}): ProxySnapshot {
  return {
    version: 'v',
    trustDomain: TRUST_DOMAIN,
    bundle: [],
    defaultPolicy: 'deny',
    intentions: [],
    upstreams: {},
    ...(chain !== undefined ? { manifestChain: chain } : {}),
    ...fields,
  };
}

function throwsCode(action: () => unknown, code: ErrorCode): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

// Runs first, while the verifier is not loaded yet in this process.
test('manifest guard loads its verifier for a chain only', async () => {
  const api = { namespace: 'default', service: 'api' };
  const guard = new ManifestGuard(api);
  const chain = [await genesis()];
  assert.equal(guard.prepare(snapshot(undefined)), undefined);
  throwsCode(() => guard.check(snapshot(chain)), 'SEALMESH_ERR_INTERNAL');
  const load = guard.prepare(snapshot(chain));
  assert.ok(load instanceof Promise);
  await load;
  assert.equal(guard.prepare(snapshot(chain)), undefined);
  assert.equal(guard.check(snapshot(chain)).defaultPolicy, 'deny');
});

describe('manifest guard', () => {
  const api = { namespace: 'default', service: 'api' };
  let v1: SignedManifest;
  let v2: SignedManifest;

  before(async () => {
    v1 = await genesis();
    v2 = await signManifest(nextManifest(v1, { defaultPolicy: 'allow' }), signer);
    await loadManifestVerifier();
  });

  test('signed change takes effect', () => {
    const applied = new ManifestGuard(api).check(snapshot([v1, v2], { defaultPolicy: 'deny' }));
    assert.equal(applied.defaultPolicy, 'allow');
  });

  test('server default ignored without manifest', () => {
    const applied = new ManifestGuard(api).check(snapshot(undefined, { defaultPolicy: 'allow' }));
    assert.equal(applied.defaultPolicy, 'deny');
  });

  test('server default replaced by manifest', () => {
    const applied = new ManifestGuard(api).check(snapshot([v1], { defaultPolicy: 'allow' }));
    assert.equal(applied.defaultPolicy, 'deny');
  });

  test('field changed after signing is rejected', () => {
    const edited: SignedManifest = { ...v1, manifest: { ...v1.manifest, defaultPolicy: 'allow' } };
    throwsCode(() => new ManifestGuard(api, manifestDigest(v1.manifest)).check(snapshot([edited])), 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
  });

  test('link signed by outsider is rejected', async () => {
    const byOutsider = await signManifest(nextManifest(v1, { defaultPolicy: 'allow' }), outsiderSigner);
    throwsCode(() => new ManifestGuard(api).check(snapshot([v1, byOutsider])), 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
  });

  test('other genesis than pinned is rejected', async () => {
    const pinnedElsewhere = manifestDigest(
      (await signManifest(initManifest({ trustDomain: TRUST_DOMAIN, operatorKeys: [{ publicKeyPem: outsider.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 }), outsiderSigner)).manifest,
    );
    throwsCode(() => new ManifestGuard(api, pinnedElsewhere).check(snapshot([v1])), 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
  });

  test('first chain seen is pinned', async () => {
    const guard = new ManifestGuard(api);
    guard.check(snapshot([v1]));
    const stranger = await signManifest(
      initManifest({ trustDomain: TRUST_DOMAIN, operatorKeys: [{ publicKeyPem: outsider.publicKeyPem, algorithm: 'ed25519' }], threshold: 1 }),
      outsiderSigner,
    );
    throwsCode(() => guard.check(snapshot([stranger])), 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
  });

  test('older chain after newer is rejected', () => {
    const guard = new ManifestGuard(api);
    guard.check(snapshot([v1, v2]));
    throwsCode(() => guard.check(snapshot([v1])), 'SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER');
    assert.equal(guard.enforced?.version, 2);
  });

  test('chain dropped after enforcing is rejected', () => {
    const guard = new ManifestGuard(api);
    guard.check(snapshot([v1]));
    throwsCode(() => guard.check(snapshot(undefined)), 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
  });

  test('manifest intentions replace server intentions', async () => {
    const managed = await signManifest(
      nextManifest(v1, { intentions: { management: 'manifest', rules: [{ source: 'web', destination: 'api', action: 'allow' }, { source: 'web', destination: 'db', action: 'allow' }] } }),
      signer,
    );
    const applied = new ManifestGuard(api).check(snapshot([v1, managed], { intentions: [{ source: 'batch', destination: 'api', action: 'allow', createdAt: '' }] }));
    assert.deepEqual(applied.intentions.map((intention) => `${intention.source}->${intention.destination}`), ['web->api']);
  });
});

describe('proxy enforcing applied manifests', () => {
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

  test('proxy enforces a signed default policy', async () => {
    const first = await genesis(mesh.server.trustDomain);
    await mesh.operator.post('/v1/manifest', first);
    await eventually(() => proxy.enforcedManifest?.version === 1, 5_000, 'manifest version 1 at the proxy');
    const stranger = { trustDomain: mesh.server.trustDomain, namespace: 'default', service: 'stranger' };
    assert.equal(proxy.authorize(stranger).allowed, false);

    const second = await signManifest(nextManifest(first, { defaultPolicy: 'allow' }), signer);
    await mesh.operator.post('/v1/manifest', second);
    await eventually(() => proxy.enforcedManifest?.version === 2, 5_000, 'manifest version 2 at the proxy');
    assert.equal(proxy.authorize(stranger).allowed, true);
    assert.equal(proxy.enforcedManifest?.genesisDigest, manifestDigest(first.manifest));
    await eventually(
      async () => {
        const { proxies } = await mesh.operator.get<{ proxies: Array<{ service: string; manifest: { version: number } | null }> }>('/v1/manifest');
        return proxies.some((entry) => entry.service === 'api' && entry.manifest?.version === 2);
      },
      5_000,
      'the server lists the version the api proxy enforces',
    );
    const status = await mesh.anonymous.get<{ proxiesByManifestVersion: Record<string, number> }>('/v1/status');
    assert.equal(status.proxiesByManifestVersion['2'], 1);

    // An app on the wildcard address is reported under `warn` and refused once a signed manifest sets `strict`.
    const exposedApp = createServer((_request, response) => response.end('exposed'));
    await new Promise<void>((resolve) => exposedApp.listen(0, '0.0.0.0', () => resolve()));
    const port = (exposedApp.address() as AddressInfo).port;
    const exposed = await startProxy(mesh, 'exposed', port);
    try {
      await eventually(() => exposed.enforcedManifest?.version === 2, 5_000, 'manifest version 2 at the exposed proxy');
      assert.equal(exposed.appExposure?.exposed, true);
      assert.equal(exposed.appHealth.status, 'passing');
      const third = await signManifest(nextManifest(second, { perimeter: { appBinding: 'strict' } }), signer);
      await mesh.operator.post('/v1/manifest', third);
      await eventually(() => exposed.appHealth.status === 'critical', 5_000, 'exposed app refused under the strict setting');
      assert.match(exposed.appHealth.output ?? '', /inbound traffic stopped/);
    } finally {
      await exposed.stop();
      exposedApp.close();
    }
  });
});
