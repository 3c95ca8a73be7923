import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import {
  ConfigfsTsmProvider,
  DevEvidenceProvider,
  GramineSgxProvider,
  createEvidenceProvider,
  detectEvidenceProvider,
} from '../src/attest/providers/index.ts';
import { DevEvidenceVerifier } from '../src/attest/dev.ts';
import {
  GramineEmulator,
  SGX_QUOTE_REPORT_DATA_OFFSET,
  SNP_REPORT,
  SoftwareSnpSigner,
  TDX_QUOTE_REPORT_DATA_OFFSET,
  TsmEmulator,
  defaultSnpGuest,
  fakeCertificateTable,
} from './helpers/tee-emulators.ts';
import { tempDir } from './helpers/mesh.ts';

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

async function snpTree(options: { contendedAttempts?: number } = {}): Promise<{ emulator: TsmEmulator; signer: SoftwareSnpSigner }> {
  const root = join(tempDir('sealmesh-tsm-').path, 'tsm');
  const signer = new SoftwareSnpSigner();
  const emulator = new TsmEmulator(root, { kernelProvider: 'sev_guest', snp: { signer, guest: defaultSnpGuest() }, ...options });
  await emulator.install();
  return { emulator, signer };
}

describe('configfs-tsm provider', () => {
  test('sev-snp report carries the report data', async () => {
    const { emulator } = await snpTree();
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator });
    const reportData = randomBytes(64);
    const evidence = await provider.collect(reportData);
    const report = Buffer.from(evidence.data, 'base64');
    assert.equal(evidence.provider, 'sev-snp');
    assert.equal(report.length, SNP_REPORT.size);
    assert.deepEqual(report.subarray(SNP_REPORT.reportData, SNP_REPORT.reportData + 64), reportData);
    assert.deepEqual(Buffer.from(evidence.aux ?? '', 'base64'), fakeCertificateTable());
    assert.equal(provider.insecure, false);
  });

  test('report entry removed after collection', async () => {
    const { emulator } = await snpTree();
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator });
    await provider.collect(randomBytes(64));
    assert.equal(emulator.entries.size, 0);
    assert.deepEqual(readdirSync(join(emulator.root, 'report')), []);
  });

  test('privlevel written before inblob', async () => {
    const { emulator } = await snpTree();
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator, privlevel: 2 });
    const report = Buffer.from((await provider.collect(randomBytes(64))).data, 'base64');
    assert.equal(report.readUInt32LE(SNP_REPORT.vmpl), 2);
  });

  test('tdx quote carries the report data', async () => {
    const root = join(tempDir('sealmesh-tsm-').path, 'tsm');
    const emulator = new TsmEmulator(root, { kernelProvider: 'tdx_guest' });
    await emulator.install();
    const provider = new ConfigfsTsmProvider({ provider: 'tdx', root, fs: emulator });
    const reportData = randomBytes(64);
    const evidence = await provider.collect(reportData);
    const quote = Buffer.from(evidence.data, 'base64');
    assert.equal(evidence.provider, 'tdx');
    assert.equal(evidence.aux, undefined);
    assert.deepEqual(quote.subarray(TDX_QUOTE_REPORT_DATA_OFFSET, TDX_QUOTE_REPORT_DATA_OFFSET + 64), reportData);
  });

  test('concurrent writer causes a retry that succeeds', async () => {
    const { emulator } = await snpTree({ contendedAttempts: 2 });
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator, maxAttempts: 3 });
    const reportData = randomBytes(64);
    const report = Buffer.from((await provider.collect(reportData)).data, 'base64');
    assert.equal(emulator.foreignWrites, 2);
    assert.deepEqual(report.subarray(SNP_REPORT.reportData, SNP_REPORT.reportData + 64), reportData);
    assert.equal(emulator.entries.size, 0);
  });

  test('concurrent writer beyond the bound fails', async () => {
    const { emulator } = await snpTree({ contendedAttempts: 5 });
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator, maxAttempts: 3 });
    await rejectsWith(provider.collect(randomBytes(64)), 'SEALMESH_ERR_ATTESTATION_REPORT_CONTENDED');
    assert.equal(emulator.foreignWrites, 3);
    assert.equal(emulator.entries.size, 0);
  });

  test('provider of another TEE rejected', async () => {
    const { emulator } = await snpTree();
    const provider = new ConfigfsTsmProvider({ provider: 'tdx', root: emulator.root, fs: emulator });
    await rejectsWith(provider.collect(randomBytes(64)), 'SEALMESH_ERR_ATTESTATION_PROVIDER_MISMATCH');
    assert.equal(emulator.entries.size, 0);
  });

  test('missing mount reported as unavailable', async () => {
    const root = join(tempDir('sealmesh-tsm-').path, 'absent');
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root });
    await rejectsWith(provider.collect(randomBytes(64)), 'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE');
  });

  test('report data of the wrong size rejected', async () => {
    const { emulator } = await snpTree();
    const provider = new ConfigfsTsmProvider({ provider: 'sev-snp', root: emulator.root, fs: emulator });
    await rejectsWith(provider.collect(randomBytes(32)), 'SEALMESH_ERR_INVALID_ARGUMENT');
  });
});

describe('Gramine SGX provider', () => {
  test('quote carries the report data', async () => {
    const emulator = new GramineEmulator(join(tempDir('sealmesh-gramine-').path, 'attestation'));
    await emulator.install();
    const provider = new GramineSgxProvider({ root: emulator.root, fs: emulator });
    const reportData = randomBytes(64);
    const evidence = await provider.collect(reportData);
    const quote = Buffer.from(evidence.data, 'base64');
    assert.equal(evidence.provider, 'sgx');
    assert.deepEqual(quote.subarray(SGX_QUOTE_REPORT_DATA_OFFSET, SGX_QUOTE_REPORT_DATA_OFFSET + 64), reportData);
  });

  test('attestation type other than dcap rejected', async () => {
    const emulator = new GramineEmulator(join(tempDir('sealmesh-gramine-').path, 'attestation'), 'epid');
    await emulator.install();
    const provider = new GramineSgxProvider({ root: emulator.root, fs: emulator });
    await rejectsWith(provider.collect(randomBytes(64)), 'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE');
  });
});

describe('provider detection', () => {
  test('configfs-tsm with sev_guest detected as sev-snp', async () => {
    const { emulator } = await snpTree();
    assert.equal(await detectEvidenceProvider({ tsmRoot: emulator.root, gramineRoot: join(emulator.root, 'none'), fs: emulator }), 'sev-snp');
    assert.equal(emulator.entries.size, 0);
  });

  test('configfs-tsm with tdx_guest detected as tdx', async () => {
    const root = join(tempDir('sealmesh-tsm-').path, 'tsm');
    const emulator = new TsmEmulator(root, { kernelProvider: 'tdx_guest' });
    await emulator.install();
    assert.equal(await detectEvidenceProvider({ tsmRoot: root, gramineRoot: join(root, 'none'), fs: emulator }), 'tdx');
  });

  test('Gramine with dcap detected as sgx', async () => {
    const dir = tempDir('sealmesh-gramine-').path;
    const emulator = new GramineEmulator(join(dir, 'attestation'));
    await emulator.install();
    assert.equal(await detectEvidenceProvider({ tsmRoot: join(dir, 'no-tsm'), gramineRoot: emulator.root, fs: emulator }), 'sgx');
  });

  test('no interface detected as none', async () => {
    const dir = tempDir('sealmesh-none-').path;
    assert.equal(await detectEvidenceProvider({ tsmRoot: join(dir, 'tsm'), gramineRoot: join(dir, 'attestation') }), 'none');
    assert.equal(await createEvidenceProvider({ mode: 'auto', tsmRoot: join(dir, 'tsm'), gramineRoot: join(dir, 'attestation') }), undefined);
  });

  test('explicit mode without its TEE fails', async () => {
    const dir = tempDir('sealmesh-none-').path;
    await rejectsWith(createEvidenceProvider({ mode: 'tdx', tsmRoot: join(dir, 'tsm'), gramineRoot: join(dir, 'attestation') }), 'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE');
  });

  test('auto selects the detected provider', async () => {
    const { emulator } = await snpTree();
    const provider = await createEvidenceProvider({ mode: 'auto', tsmRoot: emulator.root, gramineRoot: join(emulator.root, 'none'), fs: emulator });
    assert.ok(provider instanceof ConfigfsTsmProvider);
    assert.equal(provider.name, 'sev-snp');
  });

  test('none mode presents no evidence', async () => {
    assert.equal(await createEvidenceProvider({ mode: 'none' }), undefined);
  });
});

describe('dev provider', () => {
  test('evidence verifies with the dev verifier', async () => {
    const provider = await createEvidenceProvider({ mode: 'dev' });
    assert.ok(provider instanceof DevEvidenceProvider);
    assert.equal(provider.insecure, true);
    const reportData = createHash('sha512').update('binding').digest();
    const evidence = await provider.collect(reportData);
    const now = new Date('2026-12-04T12:00:00Z');
    const result = await new DevEvidenceVerifier().verify(evidence, reportData, now);
    assert.equal(result.insecure, true);
    assert.equal(result.provider, 'dev');
    assert.equal(result.verifiedAt, now.toISOString());
    assert.equal(result.measurements.measurement, provider.measurement);
    assert.equal(result.reportData, reportData.toString('hex'));
  });

  test('other report data rejected as binding mismatch', async () => {
    const provider = new DevEvidenceProvider();
    const evidence = await provider.collect(randomBytes(64));
    await rejectsWith(new DevEvidenceVerifier().verify(evidence, randomBytes(64), new Date()), 'SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH');
  });

  test('altered measurement fails the signature', async () => {
    const provider = new DevEvidenceProvider();
    const reportData = randomBytes(64);
    const evidence = await provider.collect(reportData);
    const document = JSON.parse(Buffer.from(evidence.data, 'base64').toString('utf8')) as { measurement: string };
    document.measurement = 'ab'.repeat(48);
    const altered = { ...evidence, data: Buffer.from(JSON.stringify(document)).toString('base64') };
    await rejectsWith(new DevEvidenceVerifier().verify(altered, reportData, new Date()), 'SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID');
  });

  test('malformed dev evidence rejected', async () => {
    const verifier = new DevEvidenceVerifier();
    for (const data of ['not base64 json', Buffer.from('{"format":"other"}').toString('base64'), Buffer.from('[]').toString('base64')]) {
      await rejectsWith(verifier.verify({ provider: 'dev', data }, randomBytes(64), new Date()), 'SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID');
    }
  });

  test('configured measurement claimed', async () => {
    const measurement = 'cd'.repeat(48);
    const provider = new DevEvidenceProvider({ measurement });
    const reportData = randomBytes(64);
    const result = await new DevEvidenceVerifier().verify(await provider.collect(reportData), reportData, new Date());
    assert.equal(result.measurements.measurement, measurement);
  });

  test('dev measurement of the wrong length rejected', () => {
    assert.throws(() => new DevEvidenceProvider({ measurement: 'abcd' }), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'));
  });
});
