import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Evidence, EvidenceProvider } from '../src/attest/index.ts';
import { DEFAULT_DEV_MEASUREMENT, DevEvidenceProvider } from '../src/attest/providers/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import type { Instance, ServiceSummary } from '../src/server/index.ts';
import { join } from 'node:path';
import { runCli } from './helpers/cli.ts';
import { TestManifestChain } from './helpers/manifests.ts';
import { startHttpApp, startProxy, startServer, type TestServer } from './helpers/mesh.ts';

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

async function instanceOf(mesh: TestServer, proxy: SidecarProxy): Promise<Instance | undefined> {
  const { services } = await mesh.operator.get<{ services: ServiceSummary[] }>('/v1/catalog/services');
  return services.flatMap((service) => service.instances).find((instance) => instance.id === proxy.instanceId);
}

/**
 * Evidence made for another CSR: a dev provider that signs the report data of a different key, as
 * a replayed or relayed report would carry.
 */
class ForeignBindingProvider implements EvidenceProvider {
  readonly name = 'dev';
  readonly insecure = true;
  readonly #inner = new DevEvidenceProvider();

  async collect(): Promise<Evidence> {
    return this.#inner.collect(createHash('sha512').update('another CSR and nonce').digest());
  }
}

describe('attested enrollment end to end', () => {
  let mesh: TestServer;
  let chain: TestManifestChain;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  const proxies: SidecarProxy[] = [];

  before(async () => {
    mesh = await startServer();
    chain = new TestManifestChain(mesh);
    await chain.apply({
      environment: 'development',
      attestation: { required: true, allowDevProvider: true, services: { web: { providers: ['dev'], dev: { measurement: [DEFAULT_DEV_MEASUREMENT] } } } },
    });
    app = await startHttpApp('web');
  });

  after(async () => {
    for (const proxy of proxies) await proxy.stop();
    await app.close();
    await mesh.stop();
  });

  test('dev proxy enrolls under a manifest that allows it', async () => {
    const proxy = await startProxy(mesh, 'web', app.port, [], { attestation: 'dev' });
    proxies.push(proxy);
    assert.deepEqual(proxy.attestation, { provider: 'dev', insecure: true, policy: 'enforced' });
    const instance = await instanceOf(mesh, proxy);
    assert.equal(instance?.attestation?.provider, 'dev');
    assert.equal(instance?.attestation?.insecure, true);
    assert.equal(instance?.attestation?.measurements.measurement, DEFAULT_DEV_MEASUREMENT);
    assert.match(await proxy.metrics.registry.metrics(), /sealmesh_proxy_attestation_provider\{provider="dev",insecure="true"\} 1/);
  });

  test('service list marks dev evidence insecure', async () => {
    const result = await runCli(['service', 'list', '--addr', mesh.url, '--ca-file', join(mesh.dir, 'trust-bundle.pem'), '--token', mesh.operatorToken], { timeoutMs: 30_000 });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /ATTESTATION/);
    assert.match(result.stdout, /dev \(INSECURE\)/);
  });

  test('unknown attestation mode rejected', async () => {
    const result = await runCli(['proxy', '--service', 'web', '--join-token', 'x', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:1', '--ca-file', join(mesh.dir, 'trust-bundle.pem'), '--attestation', 'tpm'], { timeoutMs: 30_000 });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
    assert.match(result.stderr, /--attestation "tpm" is invalid/);
  });

  test('renewal presents fresh evidence', async () => {
    const proxy = proxies[0]!;
    const before = await instanceOf(mesh, proxy);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await proxy.renewNow();
    const renewed = await instanceOf(mesh, proxy);
    assert.notEqual(renewed?.svidSerial, before?.svidSerial);
    assert.ok(Date.parse(renewed?.attestation?.verifiedAt ?? '') > Date.parse(before?.attestation?.verifiedAt ?? ''), 'the renewal was attested again');
    assert.match(await mesh.server.metrics.registry.metrics(), /sealmesh_server_attestations_total\{provider="dev",result="accepted",insecure="true",kind="renew"\} 1/);
  });

  test('proxy without evidence rejected', async () => {
    await rejectsWith(startProxy(mesh, 'web', app.port, [], { attestation: 'none' }), 'SEALMESH_ERR_ATTESTATION_REQUIRED');
  });

  test('evidence for another CSR rejected', async () => {
    await rejectsWith(startProxy(mesh, 'web', app.port, [], { evidenceProvider: new ForeignBindingProvider() }), 'SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH');
  });

  test('dev proxy rejected once sev-snp required', async () => {
    await chain.apply({
      environment: 'development',
      attestation: { required: true, allowDevProvider: true, services: { web: { providers: ['sev-snp'], 'sev-snp': { measurement: ['ab'.repeat(48)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 } } } } },
    });
    await rejectsWith(startProxy(mesh, 'web', app.port, [], { attestation: 'dev' }), 'SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED');
    // The running proxy cannot renew with dev evidence any more either.
    await rejectsWith(proxies[0]!.renewNow(), 'SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED');
  });
});
