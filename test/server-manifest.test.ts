import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import type { AuditEntry } from '../src/audit/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import {
  FileManifestSigner,
  generateOperatorKey,
  manifestDigest,
  nextManifest,
  readSignedManifestFile,
  signManifest,
  writeSignedManifestFile,
  type EffectivePosture,
  type Manifest,
  type SignedManifest,
} from '../src/manifest/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import type { ProxySnapshot } from '../src/server/index.ts';
import { runCli, type CliResult } from './helpers/cli.ts';
import { startHttpApp, startProxy, startServer, tempDir, waitForDecision, type TestServer } from './helpers/mesh.ts';

const CLI_TIMEOUT_MS = 30_000;

function describeResult(result: CliResult): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** Signs a document with each of the given private key files in turn. */
async function signWith(document: SignedManifest, keyFiles: string[]): Promise<SignedManifest> {
  let signed = document;
  for (const file of keyFiles) signed = await signManifest(signed, await FileManifestSigner.fromFile(file));
  return signed;
}

/** Builds a manifest with the given fields replaced, without the checks of `nextManifest`. */
function withFields(document: SignedManifest, fields: Partial<Manifest>): SignedManifest {
  return { manifest: { ...document.manifest, ...fields }, signatures: [] };
}

/** Enrolls an instance of `service` and reads the first snapshot of its watch stream over mTLS. */
async function firstSnapshot(mesh: TestServer, service: string): Promise<ProxySnapshot> {
  const { token } = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service });
  const keys = await generateKeyPair();
  const csr = await generateCsr(`spiffe://${mesh.server.trustDomain}/ns/default/svc/${service}`, keys);
  const enrolled = await mesh.anonymous
    .with({ token })
    .post<{ instanceId: string; chainPem: string }>('/v1/svid/enroll', { csr, address: '127.0.0.1', port: 20000, upstreams: [] });
  const key = await privateKeyToPem(keys.privateKey);
  return new Promise((resolve, reject) => {
    const url = new URL(`/v1/watch?instance=${enrolled.instanceId}`, mesh.url);
    const req = request(url, { ca: mesh.ca, key, cert: enrolled.chainPem, agent: false }, (res) => {
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        const newline = buffered.indexOf('\n');
        if (newline < 0) return;
        const message = JSON.parse(buffered.slice(0, newline)) as { type: string; snapshot: ProxySnapshot };
        req.destroy();
        resolve(message.snapshot);
      });
    });
    req.on('error', (error) => {
      if (!req.destroyed) reject(error);
    });
    req.end();
  });
}

describe('signed manifest on a running server', () => {
  const dir = tempDir('sealmesh-manifest-test-');
  const keys = [join(dir.path, 'alice.key'), join(dir.path, 'bob.key'), join(dir.path, 'carol.key')];
  const genesisFile = join(dir.path, 'manifest.yaml');
  let mesh: TestServer;
  let connection: string[] = [];
  let keygen: CliResult;
  let genesis: SignedManifest;
  let version2: SignedManifest;
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    mesh = await startServer();
    connection = ['--addr', mesh.url, '--ca-file', join(mesh.dir, 'trust-bundle.pem'), '--token', mesh.operatorToken];

    keygen = await runCli(['manifest', 'keygen', '--out', keys[0]!, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(keygen.code, 0, describeResult(keygen));
    for (const [file, algorithm] of [[keys[1]!, 'ed25519'], [keys[2]!, 'ecdsa-p256']]) {
      const result = await runCli(['manifest', 'keygen', '--out', file!, '--algorithm', algorithm!], { timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(result.code, 0, describeResult(result));
    }

    const init = await runCli(
      ['manifest', 'init', '--operator-key', ...keys.map((key) => `${key}.pub`), '--threshold', '2', '--trust-domain', mesh.server.trustDomain, '--out', genesisFile],
      { timeoutMs: CLI_TIMEOUT_MS },
    );
    assert.equal(init.code, 0, describeResult(init));
    for (const key of keys.slice(0, 2)) {
      const sign = await runCli(['manifest', 'sign', genesisFile, '--key', key], { timeoutMs: CLI_TIMEOUT_MS });
      assert.equal(sign.code, 0, describeResult(sign));
    }
    genesis = await readSignedManifestFile(genesisFile);
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    await mesh?.stop();
    dir.remove();
  });

  test('keygen writes a private key with mode 0600', () => {
    const printed = JSON.parse(keygen.stdout) as { keyId: string; publicKeyPem: string };
    assert.equal(statSync(keys[0]!).mode & 0o777, 0o600);
    assert.match(readFileSync(keys[0]!, 'utf8'), /BEGIN PRIVATE KEY/);
    assert.equal(readFileSync(`${keys[0]!}.pub`, 'utf8'), printed.publicKeyPem);
    assert.doesNotMatch(keygen.stdout, /PRIVATE KEY/);
    assert.match(printed.keyId, /^ed25519:[0-9a-f]{16}$/);
  });

  test('keygen does not overwrite a key', async () => {
    const result = await runCli(['manifest', 'keygen', '--out', keys[0]!], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFLICT/);
  });

  test('verify accepts the signed genesis offline', async () => {
    const result = await runCli(['manifest', 'verify', genesisFile, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeResult(result));
    const verified = JSON.parse(result.stdout) as { version: number; digest: string; approvedBy: string[] };
    assert.equal(verified.version, 1);
    assert.equal(verified.digest, manifestDigest(genesis.manifest));
    assert.equal(verified.approvedBy.length, 2);
  });

  test('next builds on the given version', async () => {
    const file = join(dir.path, 'next.yaml');
    const result = await runCli(['manifest', 'next', genesisFile, '--out', file], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeResult(result));
    const next = await readSignedManifestFile(file);
    assert.equal(next.manifest.version, 2);
    assert.equal(next.manifest.previous, manifestDigest(genesis.manifest));
    assert.deepEqual(next.signatures, []);
  });

  test('status reports no manifest before apply', async () => {
    const status = await mesh.anonymous.get<{ manifest: unknown; posture: unknown }>('/v1/status');
    assert.equal(status.manifest, null);
    assert.equal(status.posture, null);
  });

  test('genesis with too few signatures is rejected', async () => {
    const once = await signWith({ manifest: genesis.manifest, signatures: [] }, [keys[2]!]);
    await rejectsWith(mesh.operator.post('/v1/manifest', once), 'SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET');
  });

  test('genesis applies and is pinned', async () => {
    const result = await runCli(['manifest', 'apply', genesisFile, ...connection, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 0, describeResult(result));
    const applied = JSON.parse(result.stdout) as { version: number; digest: string };
    assert.equal(applied.version, 1);
    const shown = await mesh.operator.get<{ manifest: { version: number; digest: string }; genesisDigest: string }>('/v1/manifest');
    assert.deepEqual(shown.manifest, { version: 1, digest: manifestDigest(genesis.manifest) });
    assert.equal(shown.genesisDigest, manifestDigest(genesis.manifest));
  });

  test('second genesis is rejected', async () => {
    const other = await signWith(withFields(genesis, { defaultPolicy: 'allow' }), keys.slice(0, 2));
    await rejectsWith(mesh.operator.post('/v1/manifest', other), 'SEALMESH_ERR_MANIFEST_FORK');
    await rejectsWith(mesh.operator.post('/v1/manifest', genesis), 'SEALMESH_ERR_MANIFEST_REPLAY');
  });

  test('apply needs an operator token', async () => {
    const read = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read' });
    const draft = await signWith(nextManifest(genesis, {}), keys.slice(0, 2));
    await rejectsWith(mesh.anonymous.with({ token: read.token }).post('/v1/manifest', draft), 'SEALMESH_ERR_ACL_PERMISSION_DENIED');
  });

  test('proxy gets the default policy and the chain', async () => {
    const snapshot = await firstSnapshot(mesh, 'inspect');
    assert.equal(snapshot.defaultPolicy, 'deny');
    assert.deepEqual(snapshot.manifestChain, [genesis]);
  });

  test('version 2 signed by 2 of 3 is enforced', async () => {
    const app = await startHttpApp('api');
    closers.push(app.close);
    const proxy = await startProxy(mesh, 'api', app.port);
    closers.push(() => proxy.stop());
    await waitForDecision(proxy, 'other', false);

    version2 = await signWith(
      nextManifest(genesis, {
        defaultPolicy: 'allow',
        svidTtl: { default: 3600, min: 1800, max: 7200 },
        intentions: { management: 'manifest', rules: [{ source: 'web', destination: 'api', action: 'deny' }] },
      }),
      [keys[1]!, keys[2]!],
    );
    const applied = await mesh.operator.post<{ version: number; approvedBy: string[] }>('/v1/manifest', version2);
    assert.equal(applied.version, 2);
    assert.equal(applied.approvedBy.length, 2);

    // The hub pushes the manifest's default policy and intentions.
    await waitForDecision(proxy, 'other', true);
    await waitForDecision(proxy, 'web', false);
  });

  test('manifest-managed intentions reject API writes', async () => {
    await rejectsWith(
      mesh.operator.post('/v1/intentions', { source: 'web', destination: 'db', action: 'allow' }),
      'SEALMESH_ERR_INTENTIONS_MANAGED_BY_MANIFEST',
    );
    await rejectsWith(mesh.operator.delete('/v1/intentions?source=web&destination=api'), 'SEALMESH_ERR_INTENTIONS_MANAGED_BY_MANIFEST');
    const { intentions } = await mesh.operator.get<{ intentions: Array<{ source: string; destination: string; action: string }> }>('/v1/intentions');
    assert.deepEqual(
      intentions.map(({ source, destination, action }) => ({ source, destination, action })),
      [{ source: 'web', destination: 'api', action: 'deny' }],
    );
  });

  test('SVID TTL bounds apply at enrollment', async () => {
    const id = `spiffe://${mesh.server.trustDomain}/ns/default/svc/ttl`;
    const body = async (ttlSeconds?: number): Promise<Record<string, unknown>> => ({
      csr: await generateCsr(id, await generateKeyPair()),
      address: '127.0.0.1',
      port: 20000,
      upstreams: [],
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    });
    const join = async (): Promise<string> => (await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: 'ttl' })).token;

    await rejectsWith(mesh.anonymous.with({ token: await join() }).post('/v1/svid/enroll', await body(86400)), 'SEALMESH_ERR_TTL_OUT_OF_BOUNDS');
    await rejectsWith(mesh.anonymous.with({ token: await join() }).post('/v1/svid/enroll', await body(600)), 'SEALMESH_ERR_TTL_OUT_OF_BOUNDS');
    const issued = await mesh.anonymous.with({ token: await join() }).post<{ notAfter: string }>('/v1/svid/enroll', await body());
    const lifetimeSeconds = (Date.parse(issued.notAfter) - Date.now()) / 1000;
    assert.ok(lifetimeSeconds > 3000, `lifetime ${lifetimeSeconds}s is shorter than the manifest default of 3600s`);
    assert.ok(lifetimeSeconds <= 3600, `lifetime ${lifetimeSeconds}s is longer than the manifest default of 3600s`);
  });

  test('older version replayed is rejected', async () => {
    await rejectsWith(mesh.operator.post('/v1/manifest', genesis), 'SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER');
    await rejectsWith(mesh.operator.post('/v1/manifest', version2), 'SEALMESH_ERR_MANIFEST_REPLAY');
  });

  test('fork with the same version is rejected', async () => {
    const fork = await signWith(nextManifest(genesis, { defaultPolicy: 'deny' }), keys.slice(0, 2));
    await rejectsWith(mesh.operator.post('/v1/manifest', fork), 'SEALMESH_ERR_MANIFEST_FORK');
  });

  test('different predecessor is rejected', async () => {
    const skipped = await signWith(withFields(version2, { version: 3, previous: manifestDigest(genesis.manifest) }), keys.slice(0, 2));
    await rejectsWith(mesh.operator.post('/v1/manifest', skipped), 'SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH');
  });

  test('fewer than M signatures is rejected', async () => {
    const single = await signWith(nextManifest(version2, {}), [keys[0]!]);
    await rejectsWith(mesh.operator.post('/v1/manifest', single), 'SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET');
  });

  test('unknown signer is rejected', async () => {
    const outsider = join(dir.path, 'outsider.key');
    writeFileSync(outsider, generateOperatorKey('ed25519').privateKeyPem, { mode: 0o600 });
    const signed = await signWith(nextManifest(version2, {}), [keys[0]!, keys[1]!, outsider]);
    await rejectsWith(mesh.operator.post('/v1/manifest', signed), 'SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY');
  });

  test('flipped byte in the file is rejected', async () => {
    const file = join(dir.path, 'version3.yaml');
    await writeSignedManifestFile(file, await signWith(nextManifest(version2, {}), keys.slice(0, 2)));
    const text = readFileSync(file, 'utf8');
    const flipped = text.replace('default: 3600', 'default: 3601');
    assert.notEqual(flipped, text);
    writeFileSync(file, flipped);
    const result = await runCli(['manifest', 'apply', file, ...connection], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID/);
    const shown = await mesh.operator.get<{ manifest: { version: number } }>('/v1/manifest');
    assert.equal(shown.manifest.version, 2);
  });

  test('show, history and status report version and digest', async () => {
    const digest = manifestDigest(version2.manifest);
    const show = await runCli(['manifest', 'show', ...connection, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(show.code, 0, describeResult(show));
    const shown = JSON.parse(show.stdout) as { manifest: { version: number; digest: string }; posture: EffectivePosture };
    assert.deepEqual(shown.manifest, { version: 2, digest });
    assert.equal(shown.posture.defaultPolicy, 'allow');
    assert.deepEqual(shown.posture.svidTtl, { defaultSeconds: 3600, minSeconds: 1800, maxSeconds: 7200 });

    const text = await runCli(['manifest', 'show', ...connection], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(text.code, 0, describeResult(text));
    assert.match(text.stdout, new RegExp(`digest:\\s+${digest}`));

    const history = await runCli(['manifest', 'history', ...connection, '--json'], { timeoutMs: CLI_TIMEOUT_MS });
    assert.equal(history.code, 0, describeResult(history));
    assert.deepEqual((JSON.parse(history.stdout) as { chain: SignedManifest[] }).chain, [genesis, version2]);

    const status = await mesh.anonymous.get<{ manifest: { version: number; digest: string }; posture: EffectivePosture }>('/v1/status');
    assert.deepEqual(status.manifest, { version: 2, digest });
    assert.equal(status.posture.version, 2);
  });

  test('proxy chain grows with each version', async () => {
    const snapshot = await firstSnapshot(mesh, 'inspect');
    assert.equal(snapshot.defaultPolicy, 'allow');
    assert.deepEqual(snapshot.manifestChain, [genesis, version2]);
  });

  test('audit log records each apply', async () => {
    const { entries } = await mesh.operator.get<{ entries: AuditEntry[] }>('/v1/audit');
    const applies = entries.filter((entry) => entry.action === 'manifest.apply');
    assert.equal(applies.length, 2);
    assert.deepEqual(
      applies.map((entry) => entry.details?.version),
      [1, 2],
    );
    assert.equal(applies[1]?.details?.digest, manifestDigest(version2.manifest));
    assert.equal((applies[1]?.details?.approvedBy as string[]).length, 2);
    assert.equal(applies[1]?.actor.kind, 'token');
  });
});
