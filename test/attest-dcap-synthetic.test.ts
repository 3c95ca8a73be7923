import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DcapCollateral, DcapCollateralRequest } from '../src/attest/collateral.ts';
import { DcapVerifier, verifyQuote, type DcapVerification } from '../src/attest/dcap/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { DEFAULT_SGX_SVNS, DEFAULT_TDX_SVNS, FIXTURE_FMSPC, buildDcapFixture, type DcapFixture, type DcapFixtureOptions } from './helpers/dcap-pki.ts';

const HOUR_MS = 3600 * 1000;

async function verifyFixture(fixture: DcapFixture, now = fixture.now): Promise<DcapVerification> {
  return verifyQuote(fixture.quote, fixture.collateral, now, { expectedReportData: fixture.reportData, trustedRootSpkiSha256: fixture.rootSpkiSha256 });
}

async function verifyWith(options: DcapFixtureOptions): Promise<DcapVerification> {
  return verifyFixture(await buildDcapFixture(options));
}

async function assertRejects(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

test('synthetic SGX quote verifies through the verifier', async () => {
  const fixture = await buildDcapFixture({ teeType: 'sgx' });
  const requests: DcapCollateralRequest[] = [];
  const verifier = new DcapVerifier({
    teeType: 'sgx',
    trustedRootSpkiSha256: fixture.rootSpkiSha256,
    collateral: {
      async collateral(request: DcapCollateralRequest): Promise<DcapCollateral> {
        requests.push(request);
        return fixture.collateral;
      },
    },
  });
  const result = await verifier.verify({ provider: 'sgx', data: fixture.quote.toString('base64') }, fixture.reportData, fixture.now);
  assert.equal(result.tcbStatus, 'UpToDate');
  assert.deepEqual(result.advisoryIds, []);
  assert.equal(result.debug, false);
  assert.equal(result.measurements.mrEnclave, 'e1'.repeat(32));
  assert.equal(result.measurements.mrSigner, '51'.repeat(32));
  assert.equal(result.isvProdId, 7);
  assert.equal(result.isvSvn, 3);
  assert.equal(result.reportData, fixture.reportData.toString('hex'));
  assert.equal(result.dcap?.pceSvn, 13);
  assert.deepEqual(requests, [{ teeType: 'sgx', fmspc: FIXTURE_FMSPC, pckCa: 'platform' }]);
});

test('synthetic TDX quotes v4 and v5 verify', async () => {
  for (const quoteVersion of [4, 5] as const) {
    const verification = await verifyWith({ teeType: 'tdx', quoteVersion });
    assert.equal(verification.quote.header.version, quoteVersion);
    assert.equal(verification.quote.body.type, 'td-report-1.0');
    assert.equal(verification.result.tcbStatus, 'UpToDate');
    assert.equal(verification.result.measurements.mrTd, 'd1'.repeat(48));
    assert.equal(verification.result.measurements.rtMr3, 'a3'.repeat(48));
    assert.equal(verification.result.debug, false);
  }
});

test('synthetic chain is untrusted without the test root', async () => {
  const fixture = await buildDcapFixture({ teeType: 'sgx' });
  await assertRejects(verifyQuote(fixture.quote, fixture.collateral, fixture.now, { expectedReportData: fixture.reportData }), 'SEALMESH_ERR_DCAP_ROOT_UNTRUSTED');
});

test('expired and not yet valid PCK certificates are rejected', async () => {
  const expired = await buildDcapFixture({ teeType: 'sgx', pckNotAfter: new Date(Date.parse('2025-12-31T00:00:00Z')) });
  await assertRejects(verifyFixture(expired), 'SEALMESH_ERR_DCAP_CERT_NOT_VALID_AT_TIME');
  const future = await buildDcapFixture({ teeType: 'tdx', pckNotBefore: new Date(Date.parse('2026-01-02T00:00:00Z')) });
  await assertRejects(verifyFixture(future), 'SEALMESH_ERR_DCAP_CERT_NOT_VALID_AT_TIME');
});

test('revoked PCK, PCK CA and TCB signer are rejected', async () => {
  await assertRejects(verifyWith({ teeType: 'sgx', revokePck: true }), 'SEALMESH_ERR_DCAP_PCK_REVOKED');
  await assertRejects(verifyWith({ teeType: 'tdx', revokePck: true }), 'SEALMESH_ERR_DCAP_PCK_REVOKED');
  await assertRejects(verifyWith({ teeType: 'sgx', revokePckCa: true }), 'SEALMESH_ERR_DCAP_CA_REVOKED');
  await assertRejects(verifyWith({ teeType: 'tdx', revokeTcbSigning: true }), 'SEALMESH_ERR_DCAP_CA_REVOKED');
});

test('TCB info for another platform is rejected', async () => {
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { fmspc: '00906ED50001' } }), 'SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH');
  await assertRejects(verifyWith({ teeType: 'tdx', tcbInfoFields: { fmspc: 'B0C06F000000' } }), 'SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH');
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { pceId: '0001' } }), 'SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH');
});

test('malformed TCB info and QE identity are rejected', async () => {
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { version: 2 } }), 'SEALMESH_ERR_DCAP_TCB_INFO_INVALID');
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { tcbLevels: [] } }), 'SEALMESH_ERR_DCAP_TCB_INFO_INVALID');
  await assertRejects(
    verifyWith({ teeType: 'sgx', tcbLevels: [{ sgx: DEFAULT_SGX_SVNS, pcesvn: 13, status: 'Unknown' as never }] }),
    'SEALMESH_ERR_DCAP_TCB_INFO_INVALID',
  );
  await assertRejects(verifyWith({ teeType: 'tdx', tcbLevels: [{ sgx: DEFAULT_SGX_SVNS, pcesvn: 13, status: 'UpToDate' }] }), 'SEALMESH_ERR_DCAP_TCB_INFO_INVALID');
  await assertRejects(verifyWith({ teeType: 'sgx', qeIdentityFields: { version: 1 } }), 'SEALMESH_ERR_DCAP_QE_IDENTITY_INVALID');
});

test('stale collateral is rejected', async () => {
  const past = (hours: number) => new Date(Date.parse('2026-01-01T00:00:00Z') - hours * HOUR_MS).toISOString().replace('.000Z', 'Z');
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { nextUpdate: past(1) } }), 'SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME');
  await assertRejects(verifyWith({ teeType: 'tdx', qeIdentityFields: { nextUpdate: past(1) } }), 'SEALMESH_ERR_DCAP_QE_IDENTITY_NOT_VALID_AT_TIME');
  await assertRejects(verifyWith({ teeType: 'sgx', tcbInfoFields: { issueDate: past(-1) } }), 'SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME');
  await assertRejects(verifyWith({ teeType: 'sgx', rootCrlNextUpdate: new Date(Date.parse('2025-12-31T12:00:00Z')) }), 'SEALMESH_ERR_DCAP_CRL_NOT_VALID_AT_TIME');

  const fixture = await buildDcapFixture({ teeType: 'sgx' });
  await assertRejects(verifyFixture(fixture, new Date(fixture.now.getTime() + 31 * 24 * HOUR_MS)), 'SEALMESH_ERR_DCAP_CRL_NOT_VALID_AT_TIME');
});

test('debug enclaves and TDs are reported', async () => {
  const sgx = await verifyWith({ teeType: 'sgx', debug: true });
  assert.equal(sgx.result.debug, true);
  assert.equal(sgx.quote.body.report.debug, true);
  const tdx = await verifyWith({ teeType: 'tdx', debug: true });
  assert.equal(tdx.result.debug, true);
});

test('platform TCB levels select status and advisories', async () => {
  const outOfDate = await verifyWith({ teeType: 'sgx', pckComponentSvns: [3, 3, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0] });
  assert.equal(outOfDate.result.tcbStatus, 'OutOfDate');
  assert.deepEqual(outOfDate.result.advisoryIds, ['INTEL-SA-00001']);

  const lowPceSvn = await verifyWith({ teeType: 'sgx', pckPceSvn: 11 });
  assert.equal(lowPceSvn.result.tcbStatus, 'OutOfDate');

  await assertRejects(verifyWith({ teeType: 'sgx', pckComponentSvns: Array<number>(16).fill(1), pckPceSvn: 5 }), 'SEALMESH_ERR_DCAP_TCB_REVOKED');
  await assertRejects(
    verifyWith({ teeType: 'sgx', pckPceSvn: 5, tcbLevels: [{ sgx: DEFAULT_SGX_SVNS, pcesvn: 13, status: 'UpToDate' }] }),
    'SEALMESH_ERR_DCAP_TCB_LEVEL_NOT_FOUND',
  );
});

test('TDX components and module select status', async () => {
  const lowTdx = await verifyWith({ teeType: 'tdx', teeTcbSvn: [4, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] });
  assert.equal(lowTdx.result.tcbStatus, 'OutOfDate');
  assert.deepEqual(lowTdx.result.advisoryIds, ['INTEL-SA-00001']);

  const oldModule = await verifyWith({ teeType: 'tdx', teeTcbSvn: [3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] });
  assert.equal(oldModule.platformTcb.status, 'UpToDate');
  assert.equal(oldModule.tdxModuleTcb?.status, 'OutOfDate');
  assert.equal(oldModule.result.tcbStatus, 'OutOfDate');
  assert.deepEqual(oldModule.result.advisoryIds, ['INTEL-SA-00003']);

  const moduleVersionZero = await verifyWith({ teeType: 'tdx', teeTcbSvn: DEFAULT_TDX_SVNS });
  assert.equal(moduleVersionZero.tdxModuleTcb, undefined);
  assert.equal(moduleVersionZero.result.tcbStatus, 'UpToDate');

  await assertRejects(verifyWith({ teeType: 'tdx', teeTcbSvn: [4, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] }), 'SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH');
  await assertRejects(
    verifyWith({ teeType: 'tdx', moduleLevels: [{ isvsvn: 4, status: 'UpToDate' }, { isvsvn: 0, status: 'Revoked' }], teeTcbSvn: [1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] }),
    'SEALMESH_ERR_DCAP_TCB_REVOKED',
  );
  await assertRejects(
    verifyWith({ teeType: 'tdx', tcbInfoFields: { tdxModule: { mrsigner: '01'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' } }, teeTcbSvn: DEFAULT_TDX_SVNS }),
    'SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH',
  );
});

test('QE TCB level combines with the platform status', async () => {
  const oldQe = await verifyWith({ teeType: 'sgx', qeIsvSvn: 6 });
  assert.equal(oldQe.qeTcb.status, 'OutOfDate');
  assert.equal(oldQe.result.tcbStatus, 'OutOfDate');
  assert.deepEqual(oldQe.result.advisoryIds, ['INTEL-SA-00004']);

  const configuration = await verifyWith({
    teeType: 'sgx',
    qeIsvSvn: 6,
    tcbLevels: [{ sgx: DEFAULT_SGX_SVNS, pcesvn: 13, status: 'ConfigurationNeeded', advisoryIds: ['INTEL-SA-00005'] }],
  });
  assert.equal(configuration.result.tcbStatus, 'OutOfDateConfigurationNeeded');
  assert.deepEqual(configuration.result.advisoryIds, ['INTEL-SA-00005', 'INTEL-SA-00004']);

  const hardening = await verifyWith({ teeType: 'tdx', tcbLevels: [{ sgx: DEFAULT_SGX_SVNS, pcesvn: 13, tdx: DEFAULT_TDX_SVNS, status: 'SWHardeningNeeded' }] });
  assert.equal(hardening.result.tcbStatus, 'SWHardeningNeeded');

  await assertRejects(
    verifyWith({ teeType: 'sgx', qeIsvSvn: 2, qeLevels: [{ isvsvn: 8, status: 'UpToDate' }, { isvsvn: 1, status: 'Revoked' }] }),
    'SEALMESH_ERR_DCAP_TCB_REVOKED',
  );
  await assertRejects(verifyWith({ teeType: 'sgx', qeIsvSvn: 2 }), 'SEALMESH_ERR_DCAP_QE_TCB_NOT_FOUND');
});

test('QE identity mismatches are rejected', async () => {
  const cases: Array<{ name: string; fields: Record<string, unknown> }> = [
    { name: 'MRSIGNER', fields: { mrsigner: '00'.repeat(32) } },
    { name: 'ISVPRODID', fields: { isvprodid: 9 } },
    { name: 'ATTRIBUTES', fields: { attributes: '13000000000000000000000000000000' } },
    { name: 'MISCSELECT', fields: { miscselect: '01000000' } },
    { name: 'identity id', fields: { id: 'QVE' } },
  ];
  for (const testCase of cases) {
    await assertRejects(verifyWith({ teeType: 'sgx', qeIdentityFields: testCase.fields }), 'SEALMESH_ERR_DCAP_QE_IDENTITY_MISMATCH').catch((error: unknown) => {
      throw new Error(`${testCase.name}: ${(error as Error).message}`);
    });
  }
  const masked = await verifyWith({ teeType: 'sgx', qeIdentityFields: { miscselect: '00000000', miscselectMask: '00000000', attributesMask: '00000000000000000000000000000000', attributes: '00000000000000000000000000000000' } });
  assert.equal(masked.result.tcbStatus, 'UpToDate');
});

test('PCK certificate without FMSPC is rejected', async () => {
  await assertRejects(verifyWith({ teeType: 'sgx', omitFmspcExtension: true }), 'SEALMESH_ERR_DCAP_PCK_EXTENSION_INVALID');
});

test('synthetic report data mismatch is rejected', async () => {
  const fixture = await buildDcapFixture({ teeType: 'tdx' });
  const expected = Buffer.from(fixture.reportData);
  expected[0]! ^= 0x80;
  await assertRejects(
    verifyQuote(fixture.quote, fixture.collateral, fixture.now, { expectedReportData: expected, trustedRootSpkiSha256: fixture.rootSpkiSha256 }),
    'SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH',
  );
});
