import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttestationResult } from '../src/attest/index.ts';
import { AttestationPolicyError, evaluateAttestationPolicy, measurementDigest } from '../src/attest/policy.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import {
  FileManifestSigner,
  acceptManifest,
  effectivePosture,
  generateOperatorKey,
  initManifest,
  manifestSigningInput,
  parseManifest,
  resolveServicePolicy,
  signManifest,
  type AttestationServicePolicy,
  type Manifest,
} from '../src/manifest/index.ts';
import { MAX_NONCES_PER_HOLDER, NonceStore } from '../src/server/nonces.ts';

const hex = (byte: number, bytes: number): string => byte.toString(16).padStart(2, '0').repeat(bytes);

function snpResult(changes: Partial<AttestationResult> = {}, snp: Partial<NonNullable<AttestationResult['snp']>> = {}): AttestationResult {
  return {
    provider: 'sev-snp',
    insecure: false,
    verifiedAt: '2026-12-04T12:00:00.000Z',
    debug: false,
    reportData: hex(0, 64),
    measurements: { measurement: hex(0xaa, 48), hostData: hex(0x11, 32) },
    tcbStatus: 'UpToDate',
    snp: {
      vmpl: 0,
      policy: { debug: false, smt: false, migrationAgent: false, singleSocket: false, abiMajor: 1, abiMinor: 55 },
      reportedTcb: { bootloader: 4, tee: 0, snp: 22, microcode: 213 },
      productLine: 'Genoa',
      chipId: hex(0xc5, 64),
      signingKey: 'vcek',
      ...snp,
    },
    ...changes,
  };
}

const tdxResult = (measurements: Record<string, string>, changes: Partial<AttestationResult> = {}): AttestationResult => ({
  provider: 'tdx',
  insecure: false,
  verifiedAt: '2026-12-04T12:00:00.000Z',
  debug: false,
  reportData: hex(0, 64),
  measurements,
  tcbStatus: 'UpToDate',
  ...changes,
});

const sgxResult = (changes: Partial<AttestationResult> = {}): AttestationResult => ({
  provider: 'sgx',
  insecure: false,
  verifiedAt: '2026-12-04T12:00:00.000Z',
  debug: false,
  reportData: hex(0, 64),
  measurements: { mrEnclave: hex(0xe1, 32), mrSigner: hex(0x51, 32) },
  tcbStatus: 'UpToDate',
  isvProdId: 3,
  isvSvn: 5,
  ...changes,
});

function policy(service: AttestationServicePolicy) {
  return resolveServicePolicy(parseManifest(manifestWith({ required: true, services: { api: service } })).attestation.services.api!);
}

const operator = generateOperatorKey('ed25519');

/** Returns a genesis manifest with the given attestation section, not yet validated. */
function manifestWith(attestation: Manifest['attestation'], environment?: Manifest['environment']): Manifest {
  const base = initManifest({ trustDomain: 'example.sealmesh', operatorKeys: [{ publicKeyPem: operator.publicKeyPem }], threshold: 1 }).manifest;
  return { ...base, attestation, ...(environment !== undefined ? { environment } : {}) };
}

function assertCode(run: () => void, code: ErrorCode, field?: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) {
      assert.ok(error instanceof AttestationPolicyError);
      assert.equal(error.field, field);
    }
    return true;
  });
}

const snpPolicy = policy({ providers: ['sev-snp'], 'sev-snp': { measurement: [hex(0xaa, 48)], hostData: [hex(0x11, 32)], minTcb: { bootloader: 4, tee: 0, snp: 20, microcode: 200 }, vmpl: 1 } });

describe('attestation policy evaluation', () => {
  test('matching SEV-SNP result accepted', () => {
    assert.doesNotThrow(() => evaluateAttestationPolicy(snpResult(), snpPolicy, 'default/api'));
  });

  const snpCases: Array<[string, AttestationResult, ErrorCode, string]> = [
    ['provider not listed', tdxResult({ mrTd: hex(1, 48) }), 'SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED', 'providers'],
    ['debug enabled', snpResult({ debug: true }), 'SEALMESH_ERR_ATTESTATION_DEBUG_REJECTED', 'allowDebug'],
    ['TCB out of date', snpResult({ tcbStatus: 'OutOfDate' }), 'SEALMESH_ERR_ATTESTATION_TCB_STATUS_REJECTED', 'tcbStatuses'],
    ['TCB status missing', snpResult({ tcbStatus: undefined }), 'SEALMESH_ERR_ATTESTATION_TCB_STATUS_REJECTED', 'tcbStatuses'],
    ['measurement differs', snpResult({ measurements: { measurement: hex(0xbb, 48), hostData: hex(0x11, 32) } }), 'SEALMESH_ERR_ATTESTATION_SNP_MEASUREMENT_MISMATCH', 'sev-snp.measurement'],
    ['host data differs', snpResult({ measurements: { measurement: hex(0xaa, 48), hostData: hex(0x22, 32) } }), 'SEALMESH_ERR_ATTESTATION_SNP_HOST_DATA_MISMATCH', 'sev-snp.hostData'],
    ['bootloader too old', snpResult({}, { reportedTcb: { bootloader: 3, tee: 0, snp: 22, microcode: 213 } }), 'SEALMESH_ERR_ATTESTATION_SNP_TCB_BOOTLOADER_TOO_OLD', 'sev-snp.minTcb.bootloader'],
    ['snp firmware too old', snpResult({}, { reportedTcb: { bootloader: 4, tee: 0, snp: 19, microcode: 213 } }), 'SEALMESH_ERR_ATTESTATION_SNP_TCB_SNP_TOO_OLD', 'sev-snp.minTcb.snp'],
    ['microcode too old', snpResult({}, { reportedTcb: { bootloader: 4, tee: 0, snp: 22, microcode: 199 } }), 'SEALMESH_ERR_ATTESTATION_SNP_TCB_MICROCODE_TOO_OLD', 'sev-snp.minTcb.microcode'],
    ['VMPL above maximum', snpResult({}, { vmpl: 2 }), 'SEALMESH_ERR_ATTESTATION_VMPL_REJECTED', 'sev-snp.vmpl'],
    ['SMT allowed', snpResult({}, { policy: { debug: false, smt: true, migrationAgent: false, singleSocket: false, abiMajor: 1, abiMinor: 55 } }), 'SEALMESH_ERR_ATTESTATION_SMT_REJECTED', 'sev-snp.allowSmt'],
    ['migration agent allowed', snpResult({}, { policy: { debug: false, smt: false, migrationAgent: true, singleSocket: false, abiMajor: 1, abiMinor: 55 } }), 'SEALMESH_ERR_ATTESTATION_MIGRATION_AGENT_REJECTED', 'sev-snp.allowMigrationAgent'],
  ];
  for (const [name, result, code, field] of snpCases) {
    test(`SEV-SNP ${name} rejected`, () => {
      assertCode(() => evaluateAttestationPolicy(result, snpPolicy, 'default/api'), code, field);
    });
  }

  test('SEV-SNP fmc floor checked', () => {
    const turinPolicy = policy({ providers: ['sev-snp'], 'sev-snp': { measurement: [hex(0xaa, 48)], minTcb: { bootloader: 4, tee: 0, snp: 20, microcode: 200, fmc: 2 } } });
    const turinTcb = { bootloader: 4, tee: 0, snp: 22, microcode: 213 };
    assert.doesNotThrow(() => evaluateAttestationPolicy(snpResult({}, { reportedTcb: { ...turinTcb, fmc: 2 } }), turinPolicy, 'default/api'));
    assertCode(() => evaluateAttestationPolicy(snpResult({}, { reportedTcb: { ...turinTcb, fmc: 1 } }), turinPolicy, 'default/api'), 'SEALMESH_ERR_ATTESTATION_SNP_TCB_FMC_TOO_OLD', 'sev-snp.minTcb.fmc');
    assertCode(() => evaluateAttestationPolicy(snpResult({}, { reportedTcb: turinTcb }), turinPolicy, 'default/api'), 'SEALMESH_ERR_ATTESTATION_SNP_TCB_FMC_TOO_OLD', 'sev-snp.minTcb.fmc');
  });

  test('SEV-SNP policy without minTcb rejected', () => {
    const unbounded = { ...snpPolicy, 'sev-snp': { ...snpPolicy['sev-snp']!, minTcb: null } };
    assertCode(() => evaluateAttestationPolicy(snpResult(), unbounded, 'default/api'), 'SEALMESH_ERR_ATTESTATION_POLICY_MISSING', 'sev-snp.minTcb');
  });

  test('SMT and debug accepted when allowed', () => {
    const lenient = policy({ providers: ['sev-snp'], allowDebug: true, tcbStatuses: ['UpToDate', 'OutOfDate'], 'sev-snp': { measurement: [hex(0xaa, 48)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 }, allowSmt: true } });
    const result = snpResult({ debug: true, tcbStatus: 'OutOfDate' }, { policy: { debug: true, smt: true, migrationAgent: false, singleSocket: false, abiMajor: 1, abiMinor: 55 } });
    assert.doesNotThrow(() => evaluateAttestationPolicy(result, lenient, 'default/api'));
  });

  const tdxPolicy = policy({ providers: ['tdx'], tdx: { mrTd: [hex(1, 48)], rtMr1: [hex(2, 48)], rtMr3: [hex(3, 48), hex(4, 48)] } });
  const tdxCases: Array<[string, Record<string, string>, ErrorCode | undefined, string | undefined]> = [
    ['all registers match', { mrTd: hex(1, 48), rtMr0: hex(9, 48), rtMr1: hex(2, 48), rtMr3: hex(4, 48) }, undefined, undefined],
    ['MRTD differs', { mrTd: hex(9, 48), rtMr1: hex(2, 48), rtMr3: hex(3, 48) }, 'SEALMESH_ERR_ATTESTATION_TDX_MRTD_MISMATCH', 'tdx.mrTd'],
    ['RTMR1 differs', { mrTd: hex(1, 48), rtMr1: hex(9, 48), rtMr3: hex(3, 48) }, 'SEALMESH_ERR_ATTESTATION_TDX_RTMR1_MISMATCH', 'tdx.rtMr1'],
    ['RTMR3 missing', { mrTd: hex(1, 48), rtMr1: hex(2, 48) }, 'SEALMESH_ERR_ATTESTATION_TDX_RTMR3_MISMATCH', 'tdx.rtMr3'],
  ];
  for (const [name, measurements, code, field] of tdxCases) {
    test(`TDX ${name}`, () => {
      if (code === undefined) assert.doesNotThrow(() => evaluateAttestationPolicy(tdxResult(measurements), tdxPolicy, 'default/api'));
      else assertCode(() => evaluateAttestationPolicy(tdxResult(measurements), tdxPolicy, 'default/api'), code, field);
    });
  }

  const signerPolicy = policy({ providers: ['sgx'], sgx: { mrSigner: [hex(0x51, 32)], isvProdId: 3, minIsvSvn: 5 } });
  const enclavePolicy = policy({ providers: ['sgx'], sgx: { mrEnclave: [hex(0xe1, 32)] } });
  const sgxCases: Array<[string, ReturnType<typeof policy>, AttestationResult, ErrorCode | undefined, string | undefined]> = [
    ['signer policy matches', signerPolicy, sgxResult(), undefined, undefined],
    ['enclave policy matches', enclavePolicy, sgxResult(), undefined, undefined],
    ['MRENCLAVE differs', enclavePolicy, sgxResult({ measurements: { mrEnclave: hex(0xe2, 32), mrSigner: hex(0x51, 32) } }), 'SEALMESH_ERR_ATTESTATION_SGX_MRENCLAVE_MISMATCH', 'sgx.mrEnclave'],
    ['MRSIGNER differs', signerPolicy, sgxResult({ measurements: { mrEnclave: hex(0xe1, 32), mrSigner: hex(0x52, 32) } }), 'SEALMESH_ERR_ATTESTATION_SGX_MRSIGNER_MISMATCH', 'sgx.mrSigner'],
    ['product id differs', signerPolicy, sgxResult({ isvProdId: 4 }), 'SEALMESH_ERR_ATTESTATION_ISV_PROD_ID_MISMATCH', 'sgx.isvProdId'],
    ['SVN too low', signerPolicy, sgxResult({ isvSvn: 4 }), 'SEALMESH_ERR_ATTESTATION_ISV_SVN_TOO_LOW', 'sgx.minIsvSvn'],
  ];
  for (const [name, servicePolicy, result, code, field] of sgxCases) {
    test(`SGX ${name}`, () => {
      if (code === undefined) assert.doesNotThrow(() => evaluateAttestationPolicy(result, servicePolicy, 'default/api'));
      else assertCode(() => evaluateAttestationPolicy(result, servicePolicy, 'default/api'), code, field);
    });
  }

  test('dev measurement pinned', () => {
    const manifest = parseManifest(manifestWith({ allowDevProvider: true, services: { api: { providers: ['dev'], dev: { measurement: [hex(7, 48)] } } } }, 'development'));
    const devPolicy = resolveServicePolicy(manifest.attestation.services.api!);
    const result: AttestationResult = { provider: 'dev', insecure: true, verifiedAt: '2026-12-04T12:00:00.000Z', debug: false, reportData: hex(0, 64), measurements: { measurement: hex(8, 48) } };
    assertCode(() => evaluateAttestationPolicy(result, devPolicy, 'default/api'), 'SEALMESH_ERR_ATTESTATION_DEV_MEASUREMENT_MISMATCH', 'dev.measurement');
    assert.doesNotThrow(() => evaluateAttestationPolicy({ ...result, measurements: { measurement: hex(7, 48) } }, devPolicy, 'default/api'));
  });

  test('measurement digest independent of order', () => {
    assert.equal(measurementDigest({ a: '01', b: '02' }), measurementDigest({ b: '02', a: '01' }));
    assert.notEqual(measurementDigest({ a: '01', b: '02' }), measurementDigest({ a: '01', b: '03' }));
  });
});

describe('manifest attestation schema', () => {
  const invalid: Array<[string, Manifest['attestation'], RegExp]> = [
    ['unknown provider', { services: { api: { providers: ['tpm' as 'tdx'] } } }, /providers/],
    ['provider without measurements', { services: { api: { providers: ['sev-snp'] } } }, /acceptable measurements must be given in "sev-snp"/],
    ['settings for an unlisted provider', { services: { api: { providers: ['tdx'], tdx: { mrTd: [hex(1, 48)] }, sgx: { mrEnclave: [hex(1, 32)] } } } }, /providers does not list it/],
    ['measurement of the wrong length', { services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [hex(1, 32)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 } } } } }, /96 lowercase hex digits/],
    ['uppercase measurement', { services: { api: { providers: ['tdx'], tdx: { mrTd: ['AB'.repeat(48)] } } } }, /lowercase hex/],
    ['empty measurement list', { services: { api: { providers: ['tdx'], tdx: { mrTd: [] } } } }, /at least one/],
    ['repeated measurement', { services: { api: { providers: ['tdx'], tdx: { mrTd: [hex(1, 48), hex(1, 48)] } } } }, /listed twice/],
    ['mrSigner without isvProdId', { services: { api: { providers: ['sgx'], sgx: { mrSigner: [hex(1, 32)], minIsvSvn: 1 } } } }, /isvProdId is required/],
    ['sgx without measurements', { services: { api: { providers: ['sgx'], sgx: {} } } }, /mrEnclave values, or mrSigner/],
    ['unknown TCB status', { services: { api: { providers: ['tdx'], tdx: { mrTd: [hex(1, 48)] }, tcbStatuses: ['Fine' as 'UpToDate'] } } }, /tcbStatuses/],
    ['VMPL above 3', { services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [hex(1, 48)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 }, vmpl: 4 } } } }, /vmpl/],
    ['sev-snp without minTcb', { services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [hex(1, 48)] } } } }, /sev-snp\.minTcb is required/],
    ['fmc above 255', { services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [hex(1, 48)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0, fmc: 256 } } } } }, /fmc/],
    ['unknown member', { services: { api: { providers: ['tdx'], tdx: { mrTd: [hex(1, 48)], mrtd: [] } as never } } }, /mrtd/],
    ['dev listed without allowDevProvider', { services: { api: { providers: ['dev'] } } }, /needs allowDevProvider: true/],
    ['same service twice', { services: { api: { providers: ['tdx'], tdx: { mrTd: [hex(1, 48)] } }, 'default/api': { providers: ['tdx'], tdx: { mrTd: [hex(1, 48)] } } } }, /same service/],
  ];
  for (const [name, attestation, message] of invalid) {
    test(`${name} rejected`, () => {
      assert.throws(() => parseManifest(manifestWith(attestation)), (error: unknown) => {
        assert.ok(isSealmeshError(error, 'SEALMESH_ERR_MANIFEST_INVALID'), String(error));
        assert.match(error.message, message);
        return true;
      });
    });
  }

  test('production manifest rejects the dev provider at acceptance', async () => {
    const signer = FileManifestSigner.fromPem(operator.privateKeyPem);
    for (const environment of [undefined, 'production'] as const) {
      // signManifest rejects such a manifest, so the signature is made by hand.
      const manifest = manifestWith({ allowDevProvider: true, services: {} }, environment);
      const signature = Buffer.from(await signer.sign(manifestSigningInput(manifest))).toString('base64');
      const document = { manifest, signatures: [{ keyId: signer.keyId, algorithm: signer.algorithm, signature }] };
      assert.throws(() => acceptManifest(document, undefined), (error: unknown) => {
        assert.ok(isSealmeshError(error, 'SEALMESH_ERR_MANIFEST_INVALID'), String(error));
        assert.match(error.message, /production manifest cannot accept the dev attestation provider/);
        return true;
      });
    }
    const development = await signManifest({ manifest: manifestWith({ allowDevProvider: true, services: {} }, 'development'), signatures: [] }, signer);
    assert.equal(acceptManifest(development, undefined).manifest.environment, 'development');
  });

  test('posture fills SEV-SNP defaults', () => {
    const posture = effectivePosture(parseManifest(manifestWith({ services: { api: { providers: ['sev-snp'], 'sev-snp': { measurement: [hex(1, 48)], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 } } } } })));
    assert.deepEqual(posture.attestation.services.api, {
      providers: ['sev-snp'],
      tcbStatuses: ['UpToDate'],
      allowDebug: false,
      'sev-snp': { measurement: [hex(1, 48)], hostData: null, minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0 }, vmpl: 0, allowSmt: false, allowMigrationAgent: false },
    });
  });
});

describe('nonce store', () => {
  test('nonce expires after its lifetime', () => {
    let now = 1_000_000;
    const store = new NonceStore({ ttlMs: 1000, now: () => now });
    const { nonce } = store.issue('token:a');
    assert.equal(store.check(nonce, 'token:a').length, 32);
    now += 1000;
    assert.throws(() => store.check(nonce, 'token:a'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID'));
    assert.equal(store.size, 0);
  });

  test('outstanding nonces bounded', () => {
    let now = 0;
    const store = new NonceStore({ ttlMs: 1000, maxOutstanding: 2, now: () => now });
    store.issue('token:a');
    store.issue('token:b');
    assert.throws(() => store.issue('token:c'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_NONCE_LIMIT'));
    now += 1000;
    assert.doesNotThrow(() => store.issue('token:c'));
  });

  test('one caller holds a bounded share', () => {
    const store = new NonceStore();
    const first = store.issue('token:a').nonce;
    for (let index = 1; index < MAX_NONCES_PER_HOLDER; index += 1) store.issue('token:a');
    assert.equal(store.size, MAX_NONCES_PER_HOLDER);
    store.issue('token:a');
    assert.equal(store.size, MAX_NONCES_PER_HOLDER);
    assert.throws(() => store.check(first, 'token:a'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID'));
    store.issue('token:b');
    assert.equal(store.size, MAX_NONCES_PER_HOLDER + 1);
  });

  test('nonce consumed once', () => {
    const store = new NonceStore();
    const { nonce } = store.issue('spiffe:x');
    assert.throws(() => store.consume(nonce, 'spiffe:y'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID'));
    store.consume(nonce, 'spiffe:x');
    assert.throws(() => store.consume(nonce, 'spiffe:x'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_NONCE_INVALID'));
  });
});
