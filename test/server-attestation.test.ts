import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { join } from 'node:path';
import { enrollmentReportData, type AttestationResult, type Evidence, type EvidenceProvider, type EvidenceVerifier } from '../src/attest/index.ts';
import { ConfigfsTsmProvider, DevEvidenceProvider } from '../src/attest/providers/index.ts';
import { createVerifierRegistry } from '../src/attest/registry.ts';
import type { AuditEntry } from '../src/audit/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import type { ServiceSummary } from '../src/server/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import type { ApiClient } from '../src/client/index.ts';
import { TestManifestChain } from './helpers/manifests.ts';
import { joinToken, startServer, tempDir, type TestServer } from './helpers/mesh.ts';
import { SNP_POLICY, SoftwareSnpSigner, SoftwareSnpVerifier, TsmEmulator, defaultSnpGuest, type SnpGuest } from './helpers/tee-emulators.ts';

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

interface EnrollAttempt {
  token: string;
  service: string;
  provider?: EvidenceProvider;
  /** Replaces the nonce the server issued. */
  nonce?: string | null;
  /** Binds the evidence to another key than the CSR's. */
  foreignKey?: boolean;
}

/** Enrolls like a proxy does: key pair, CSR, nonce, evidence over SHA-512(SPKI || nonce). */
async function enrollWith(mesh: TestServer, attempt: EnrollAttempt): Promise<{ instanceId: string; attestation?: { provider: string; insecure: boolean } }> {
  const keys = await generateKeyPair();
  const csr = await generateCsr(`spiffe://${mesh.server.trustDomain}/ns/default/svc/${attempt.service}`, keys);
  const client = mesh.anonymous.with({ token: attempt.token });
  const body: Record<string, unknown> = { csr, address: '127.0.0.1', port: 20000, upstreams: [] };
  if (attempt.provider !== undefined) {
    const { nonce } = await client.post<{ nonce: string }>('/v1/svid/nonce', {});
    const bound = attempt.foreignKey === true ? await generateKeyPair() : keys;
    const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', bound.publicKey));
    body.evidence = await attempt.provider.collect(enrollmentReportData(spki, Buffer.from(nonce, 'base64url')));
    if (attempt.nonce !== null) body.nonce = attempt.nonce ?? nonce;
  }
  return client.post('/v1/svid/enroll', body);
}

async function auditEntries(mesh: TestServer, action: string): Promise<AuditEntry[]> {
  const { entries } = await mesh.operator.get<{ entries: AuditEntry[] }>('/v1/audit');
  return entries.filter((entry) => entry.action === action);
}

async function metricsText(mesh: TestServer): Promise<string> {
  return mesh.server.metrics.registry.metrics();
}

describe('enrollment without a manifest', () => {
  let mesh: TestServer;
  before(async () => {
    mesh = await startServer();
  });
  after(async () => {
    await mesh.stop();
  });

  test('join token alone enrolls', async () => {
    const enrolled = await enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web' });
    assert.equal(enrolled.attestation, undefined);
  });

  test('dev evidence rejected without allowDevProvider', async () => {
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider() }), 'SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED');
    const entries = await auditEntries(mesh, 'attestation.reject');
    assert.equal(entries.at(-1)?.details?.code, 'SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED');
    assert.equal(entries.at(-1)?.subject, `spiffe://${mesh.server.trustDomain}/ns/default/svc/web`);
    assert.match(await metricsText(mesh), /sealmesh_server_attestation_rejections_total\{reason="SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED"\} 1/);
  });

  test('nonce requires a credential', async () => {
    await rejectsWith(mesh.anonymous.post('/v1/svid/nonce', {}), 'SEALMESH_ERR_ACL_TOKEN_MISSING');
    const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read' });
    await rejectsWith(mesh.anonymous.with({ token }).post('/v1/svid/nonce', {}), 'SEALMESH_ERR_ACL_PERMISSION_DENIED');
  });

  test('nonce is fresh and short-lived', async () => {
    const client = mesh.anonymous.with({ token: await joinToken(mesh, 'web') });
    const first = await client.post<{ nonce: string; expiresAt: string }>('/v1/svid/nonce', {});
    const second = await client.post<{ nonce: string; expiresAt: string }>('/v1/svid/nonce', {});
    assert.notEqual(first.nonce, second.nonce);
    assert.equal(Buffer.from(first.nonce, 'base64url').length, 32);
    const lifetime = Date.parse(first.expiresAt) - Date.now();
    assert.ok(lifetime > 0 && lifetime <= 60_000, `nonce lifetime ${lifetime} ms`);
  });
});

describe('enrollment under a development manifest', () => {
  let mesh: TestServer;
  let chain: TestManifestChain;
  before(async () => {
    mesh = await startServer();
    chain = new TestManifestChain(mesh);
    await chain.apply({
      environment: 'development',
      attestation: { required: false, allowDevProvider: true, services: { web: { providers: ['dev'] } } },
    });
  });
  after(async () => {
    await mesh.stop();
  });

  test('dev evidence enrolls and is recorded as insecure', async () => {
    const enrolled = await enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider() });
    assert.deepEqual(enrolled.attestation, { provider: 'dev', insecure: true, policy: 'enforced' });
    const { services } = await mesh.operator.get<{ services: ServiceSummary[] }>('/v1/catalog/services');
    const instance = services.find((service) => service.name === 'web')?.instances.find((candidate) => candidate.id === enrolled.instanceId);
    assert.equal(instance?.attestation?.provider, 'dev');
    assert.equal(instance?.attestation?.insecure, true);
    assert.match(instance?.attestation?.measurementDigest ?? '', /^[0-9a-f]{64}$/);
    const status = await mesh.anonymous.get<{ attestation: { byProvider: Record<string, number>; insecure: number } }>('/v1/status');
    assert.equal(status.attestation.byProvider.dev, 1);
    assert.equal(status.attestation.insecure, 1);
    assert.match(await metricsText(mesh), /sealmesh_server_attestations_total\{provider="dev",result="accepted",insecure="true",kind="enroll"\} 1/);
  });

  test('join token alone refused when the service has a policy', async () => {
    const token = await joinToken(mesh, 'web');
    await rejectsWith(enrollWith(mesh, { token, service: 'web' }), 'SEALMESH_ERR_ATTESTATION_REQUIRED');
    // The refusal does not spend the token.
    const enrolled = await enrollWith(mesh, { token, service: 'web', provider: new DevEvidenceProvider() });
    assert.equal(enrolled.attestation?.provider, 'dev');
  });

  test('service without a policy enrolls on its token', async () => {
    const enrolled = await enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api' });
    assert.equal(enrolled.attestation, undefined);
  });

  test('evidence for another key rejected', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider(), foreignKey: true }),
      'SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH',
    );
  });

  test('evidence without nonce rejected', async () => {
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider(), nonce: null }), 'SEALMESH_ERR_ATTESTATION_NONCE_MISSING');
  });

  test('unknown nonce rejected', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider(), nonce: Buffer.alloc(32, 7).toString('base64url') }),
      'SEALMESH_ERR_ATTESTATION_NONCE_INVALID',
    );
  });

  test('nonce of another token rejected', async () => {
    const other = mesh.anonymous.with({ token: await joinToken(mesh, 'web') });
    const { nonce } = await other.post<{ nonce: string }>('/v1/svid/nonce', {});
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: new DevEvidenceProvider(), nonce }), 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID');
  });

  test('nonce used once only', async () => {
    const token = await joinToken(mesh, 'web');
    const client = mesh.anonymous.with({ token });
    const { nonce } = await client.post<{ nonce: string }>('/v1/svid/nonce', {});
    const provider = new DevEvidenceProvider();
    const keys = await generateKeyPair();
    const csr = await generateCsr(`spiffe://${mesh.server.trustDomain}/ns/default/svc/web`, keys);
    const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey));
    const evidence = await provider.collect(enrollmentReportData(spki, Buffer.from(nonce, 'base64url')));
    const body = { csr, address: '127.0.0.1', port: 20000, upstreams: [], evidence, nonce };
    await client.post('/v1/svid/enroll', body);
    // A second join token replays the same nonce and evidence.
    await rejectsWith(mesh.anonymous.with({ token: await joinToken(mesh, 'web') }).post('/v1/svid/enroll', body), 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID');
  });

  test('production manifest with the dev provider rejected', async () => {
    await rejectsWith(
      chain.apply({ environment: 'production', attestation: { required: false, allowDevProvider: true, services: {} } }),
      'SEALMESH_ERR_MANIFEST_INVALID',
    );
  });
});

describe('enrollment with SEV-SNP evidence', () => {
  const signer = new SoftwareSnpSigner();
  let mesh: TestServer;
  let chain: TestManifestChain;
  const guest = defaultSnpGuest();
  const measurement = guest.measurement.toString('hex');

  async function snpProvider(changes: Partial<SnpGuest> = {}): Promise<ConfigfsTsmProvider> {
    const root = join(tempDir('sealmesh-tsm-').path, 'tsm');
    const emulator = new TsmEmulator(root, { kernelProvider: 'sev_guest', snp: { signer, guest: { ...guest, ...changes } } });
    await emulator.install();
    return new ConfigfsTsmProvider({ provider: 'sev-snp', root, fs: emulator });
  }

  before(async () => {
    const verifiers = createVerifierRegistry();
    verifiers.register(new SoftwareSnpVerifier(signer.publicKey));
    mesh = await startServer({ verifiers });
    chain = new TestManifestChain(mesh);
    await chain.apply({
      attestation: {
        required: true,
        services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [measurement], minTcb: { bootloader: 3, tee: 0, snp: 20, microcode: 200 } } } },
      },
    });
  });
  after(async () => {
    await mesh.stop();
  });

  test('measured guest enrolls', async () => {
    const enrolled = await enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider() });
    assert.deepEqual(enrolled.attestation, { provider: 'sev-snp', insecure: false, policy: 'enforced' });
  });

  test('other measurement rejected', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider({ measurement: Buffer.alloc(48, 1) }) }),
      'SEALMESH_ERR_ATTESTATION_SNP_MEASUREMENT_MISMATCH',
    );
    const entry = (await auditEntries(mesh, 'attestation.reject')).at(-1);
    assert.equal(entry?.details?.field, 'sev-snp.measurement');
    assert.equal(entry?.details?.provider, 'sev-snp');
  });

  test('debug guest rejected', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider({ policy: SNP_POLICY.reserved | SNP_POLICY.debug }) }),
      'SEALMESH_ERR_ATTESTATION_DEBUG_REJECTED',
    );
  });

  test('SMT guest rejected by default', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider({ policy: SNP_POLICY.reserved | SNP_POLICY.smt }) }),
      'SEALMESH_ERR_ATTESTATION_SMT_REJECTED',
    );
  });

  test('old microcode rejected', async () => {
    await rejectsWith(
      enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider({ reportedTcb: { ...guest.reportedTcb, microcode: 100 } }) }),
      'SEALMESH_ERR_ATTESTATION_SNP_TCB_MICROCODE_TOO_OLD',
    );
  });

  test('dev evidence rejected under a production manifest', async () => {
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: new DevEvidenceProvider() }), 'SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED');
  });

  test('required attestation without a service policy rejected', async () => {
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web' }), 'SEALMESH_ERR_ATTESTATION_REQUIRED');
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'web'), service: 'web', provider: await snpProvider() }), 'SEALMESH_ERR_ATTESTATION_POLICY_MISSING');
  });

  test('provider without a verifier rejected', async () => {
    const tpm: EvidenceProvider = { name: 'tpm', insecure: false, collect: async () => ({ provider: 'tpm', data: Buffer.alloc(64).toString('base64') }) };
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: tpm }), 'SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED');
  });

  test('malformed TDX quote rejected', async () => {
    const tdx: EvidenceProvider = { name: 'tdx', insecure: false, collect: async () => ({ provider: 'tdx', data: Buffer.alloc(64).toString('base64') }) };
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: tdx }), 'SEALMESH_ERR_DCAP_QUOTE_VERSION_UNSUPPORTED');
  });
});

interface Replica {
  instanceId: string;
  serial: string;
  /** Client that presents the replica's SVID over mTLS. */
  client: ApiClient;
}

/** Enrolls one replica of `service` with dev evidence and returns a client holding its SVID. */
async function enrollReplica(mesh: TestServer, service: string): Promise<Replica> {
  const keys = await generateKeyPair();
  const csr = await generateCsr(`spiffe://${mesh.server.trustDomain}/ns/default/svc/${service}`, keys);
  const enrolling = mesh.anonymous.with({ token: await joinToken(mesh, service) });
  const { nonce } = await enrolling.post<{ nonce: string }>('/v1/svid/nonce', {});
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  const evidence = await new DevEvidenceProvider().collect(enrollmentReportData(spki, Buffer.from(nonce, 'base64url')));
  const enrolled = await enrolling.post<{ instanceId: string; chainPem: string; bundle: string[] }>('/v1/svid/enroll', { csr, nonce, evidence, address: '127.0.0.1', port: 20000, upstreams: [] });
  const secureContext = createSecureContext({ key: await privateKeyToPem(keys.privateKey), cert: enrolled.chainPem, ca: mesh.ca });
  const instance = await instanceRecord(mesh, service, enrolled.instanceId);
  return { instanceId: enrolled.instanceId, serial: instance?.svidSerial ?? '', client: mesh.anonymous.with({ secureContext }) };
}

/** Renews over `replica`'s mTLS connection with fresh dev evidence, naming `instanceId`; `nonce` replaces a fresh one. */
async function renewAs(mesh: TestServer, replica: Replica, service: string, instanceId: string, nonce?: string): Promise<{ instanceId: string }> {
  const keys = await generateKeyPair();
  const csr = await generateCsr(`spiffe://${mesh.server.trustDomain}/ns/default/svc/${service}`, keys);
  const used = nonce ?? (await replica.client.post<{ nonce: string }>('/v1/svid/nonce', {})).nonce;
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  const evidence = await new DevEvidenceProvider().collect(enrollmentReportData(spki, Buffer.from(used, 'base64url')));
  return replica.client.post('/v1/svid/renew', { csr, instanceId, nonce: used, evidence });
}

async function instanceRecord(mesh: TestServer, service: string, instanceId: string): Promise<ServiceSummary['instances'][number] | undefined> {
  const { services } = await mesh.operator.get<{ services: ServiceSummary[] }>('/v1/catalog/services');
  return services.find((candidate) => candidate.name === service)?.instances.find((candidate) => candidate.id === instanceId);
}

describe('renewal by one of two replicas', () => {
  let mesh: TestServer;
  let replicaA: Replica;
  let replicaB: Replica;
  before(async () => {
    mesh = await startServer();
    await new TestManifestChain(mesh).apply({
      environment: 'development',
      attestation: { required: false, allowDevProvider: true, services: { web: { providers: ['dev'] } } },
    });
    replicaA = await enrollReplica(mesh, 'web');
    replicaB = await enrollReplica(mesh, 'web');
  });
  after(async () => {
    await mesh.stop();
  });

  test('instance of another replica rejected', async () => {
    const before = await instanceRecord(mesh, 'web', replicaA.instanceId);
    await rejectsWith(renewAs(mesh, replicaB, 'web', replicaA.instanceId), 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH');
    const after = await instanceRecord(mesh, 'web', replicaA.instanceId);
    assert.equal(after?.svidSerial, before?.svidSerial);
    assert.equal(after?.attestation?.verifiedAt, before?.attestation?.verifiedAt);
    assert.match(await metricsText(mesh), /sealmesh_server_rejections_total\{code="SEALMESH_ERR_SVID_INSTANCE_MISMATCH"\} 1/);
  });

  test('unknown instance id rejected', async () => {
    await rejectsWith(renewAs(mesh, replicaB, 'web', '00000000-0000-4000-8000-000000000000'), 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH');
  });

  test('health of another replica rejected', async () => {
    await rejectsWith(replicaB.client.put('/v1/agent/health', { instanceId: replicaA.instanceId, status: 'critical' }), 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH');
    assert.equal((await instanceRecord(mesh, 'web', replicaA.instanceId))?.health, 'passing');
    await rejectsWith(replicaB.client.post('/v1/agent/deregister', { instanceId: replicaA.instanceId }), 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH');
    assert.notEqual(await instanceRecord(mesh, 'web', replicaA.instanceId), undefined);
  });

  test('nonces of one replica survive another', async () => {
    const { nonce } = await replicaB.client.post<{ nonce: string }>('/v1/svid/nonce', {});
    // Eight more nonces for replica A would evict B's nonce if both shared one holder.
    for (let index = 0; index < 8; index += 1) await replicaA.client.post('/v1/svid/nonce', {});
    const { nonce: ofA } = await replicaA.client.post<{ nonce: string }>('/v1/svid/nonce', {});
    await rejectsWith(renewAs(mesh, replicaB, 'web', replicaB.instanceId, ofA), 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID');
    const rejected = (await auditEntries(mesh, 'attestation.reject')).at(-1);
    assert.deepEqual(rejected?.actor, { kind: 'svid', accessorId: `spiffe://${mesh.server.trustDomain}/ns/default/svc/web` });
    const renewed = await renewAs(mesh, replicaB, 'web', replicaB.instanceId, nonce);
    assert.equal(renewed.instanceId, replicaB.instanceId);
  });

  test('own instance renews', async () => {
    const before = await instanceRecord(mesh, 'web', replicaA.instanceId);
    const renewed = await renewAs(mesh, replicaA, 'web', replicaA.instanceId);
    assert.equal(renewed.instanceId, replicaA.instanceId);
    assert.notEqual((await instanceRecord(mesh, 'web', replicaA.instanceId))?.svidSerial, before?.svidSerial);
  });
});

/** Passes results of a real verifier through `alter`, as a faulty or misregistered verifier would return them. */
class AlteredVerifier implements EvidenceVerifier {
  readonly provider: string;
  alter: (result: AttestationResult) => AttestationResult = (result) => result;
  readonly #inner: EvidenceVerifier;

  constructor(inner: EvidenceVerifier) {
    this.#inner = inner;
    this.provider = inner.provider;
  }

  async verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    return this.alter(await this.#inner.verify(evidence, expectedReportData, now));
  }
}

describe('verifier result cross-checks', () => {
  const signer = new SoftwareSnpSigner();
  const guest = defaultSnpGuest();
  let mesh: TestServer;
  let verifier: AlteredVerifier;

  async function snpProvider(): Promise<ConfigfsTsmProvider> {
    const root = join(tempDir('sealmesh-tsm-').path, 'tsm');
    const emulator = new TsmEmulator(root, { kernelProvider: 'sev_guest', snp: { signer, guest } });
    await emulator.install();
    return new ConfigfsTsmProvider({ provider: 'sev-snp', root, fs: emulator });
  }

  before(async () => {
    const verifiers = createVerifierRegistry();
    verifier = new AlteredVerifier(new SoftwareSnpVerifier(signer.publicKey));
    verifiers.register(verifier);
    mesh = await startServer({ verifiers });
    await new TestManifestChain(mesh).apply({ attestation: { required: false, services: {} } });
  });
  after(async () => {
    await mesh.stop();
  });

  test('result of another provider rejected', async () => {
    verifier.alter = (result) => ({ ...result, provider: 'tdx' });
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider() }), 'SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT');
    assert.match(await metricsText(mesh), /sealmesh_server_attestation_rejections_total\{reason="SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT"\} 1/);
  });

  test('insecure result under production rejected', async () => {
    verifier.alter = (result) => ({ ...result, insecure: true });
    await rejectsWith(enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider() }), 'SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT');
    const entries = await auditEntries(mesh, 'attestation.reject');
    assert.equal(entries.at(-1)?.details?.code, 'SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT');
  });

  test('unaltered result accepted', async () => {
    verifier.alter = (result) => result;
    const enrolled = await enrollWith(mesh, { token: await joinToken(mesh, 'api'), service: 'api', provider: await snpProvider() });
    assert.deepEqual(enrolled.attestation, { provider: 'sev-snp', insecure: false, policy: 'unpinned' });
  });
});
