import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { test } from 'node:test';
import type { DcapCollateral, DcapCollateralRequest } from '../src/attest/collateral.ts';
import type { TcbStatus } from '../src/attest/index.ts';
import {
  DCAP_REJECTION_CHANNEL,
  DcapVerifier,
  combineTcbStatus,
  INTEL_SGX_ROOT_CA_SPKI_SHA256,
  dcapCollateralFromJson,
  extractSignedDocument,
  parseQeIdentity,
  parseQuote,
  parseTcbInfo,
  prepareQuote,
  verifyQeIdentity,
  verifyQuote,
  verifyTcbInfo,
  type DcapRejectionEvent,
} from '../src/attest/dcap/index.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { x509 } from '../src/pki/x509.ts';
import { readVector } from './helpers/vectors.ts';

const TDX_MR_TD = '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';
const TDX_RT_MR0 = '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0';
const TDX_REPORT_DATA = '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20';
const SGX_MR_ENCLAVE = '33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb';
const SGX_MR_SIGNER = '815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6';
const SGX_REPORT_DATA = Buffer.concat([Buffer.from('Hello, world!'), Buffer.alloc(64 - 13)]);

interface Vector {
  teeType: 'tdx' | 'sgx';
  quote: Buffer;
  collateral: DcapCollateral;
  /** Latest issueDate/thisUpdate of the collateral: inside every validity window. */
  now: Date;
  /** Earliest nextUpdate of the collateral. */
  expiry: Date;
}

interface ValidityWindow {
  /** Code of the check that rejects a time outside this window. */
  code: ErrorCode;
  start: number;
  end: number;
}

/** Lists the validity windows of a collateral bundle in the order the verifier checks them. */
function collateralWindows(collateral: DcapCollateral): ValidityWindow[] {
  const tcbInfo = parseTcbInfo(collateral.tcbInfo);
  const qeIdentity = parseQeIdentity(collateral.qeIdentity);
  const crlWindow = (bytes: Uint8Array): ValidityWindow => {
    const crl = new x509.X509Crl(Buffer.from(bytes));
    return { code: 'SEALMESH_ERR_DCAP_CRL_NOT_VALID_AT_TIME', start: crl.thisUpdate.getTime(), end: crl.nextUpdate!.getTime() };
  };
  return [
    crlWindow(collateral.rootCaCrl),
    crlWindow(collateral.pckCrl),
    { code: 'SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME', start: Date.parse(tcbInfo.issueDate), end: Date.parse(tcbInfo.nextUpdate) },
    { code: 'SEALMESH_ERR_DCAP_QE_IDENTITY_NOT_VALID_AT_TIME', start: Date.parse(qeIdentity.issueDate), end: Date.parse(qeIdentity.nextUpdate) },
  ];
}

/** Returns the code of the first collateral check that rejects `time`. */
function expectedWindowCode(collateral: DcapCollateral, time: Date): ErrorCode {
  const failing = collateralWindows(collateral).find((window) => time.getTime() < window.start || time.getTime() > window.end);
  assert.ok(failing !== undefined, `${time.toISOString()} lies outside some collateral window`);
  return failing.code;
}

function loadVector(teeType: 'tdx' | 'sgx'): Vector {
  const quote = readVector(`${teeType}/dcapqvl-${teeType}-quote.bin`);
  const collateral = dcapCollateralFromJson(readVector(`${teeType}/dcapqvl-${teeType}-collateral.json`).toString('utf8'));
  const windows = collateralWindows(collateral);
  const now = new Date(Math.max(...windows.map((window) => window.start)));
  const expiry = new Date(Math.min(...windows.map((window) => window.end)));
  return { teeType, quote, collateral, now, expiry };
}

/** Creates a collateral source that returns one fixed bundle and records every request. */
function fixedSource(collateral: DcapCollateral, requests: DcapCollateralRequest[] = []) {
  return {
    requests,
    async collateral(request: DcapCollateralRequest): Promise<DcapCollateral> {
      requests.push(request);
      return collateral;
    },
  };
}

function evidence(provider: string, quote: Buffer) {
  return { provider, data: quote.toString('base64') };
}

async function assertRejects(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

function flip(bytes: Uint8Array, offset: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset]! ^= 0x01;
  return copy;
}

test('pinned root fingerprint matches the Intel SGX Root CA', () => {
  const root = new X509Certificate(readVector('sgx/intel-sgx-root-ca.der'));
  const spki = root.publicKey.export({ type: 'spki', format: 'der' });
  assert.equal(createHash('sha256').update(spki).digest('hex'), INTEL_SGX_ROOT_CA_SPKI_SHA256);
});

test('TDX vector verifies as UpToDate', async () => {
  const vector = loadVector('tdx');
  const source = fixedSource(vector.collateral);
  const verifier = new DcapVerifier({ teeType: 'tdx', collateral: source });
  assert.equal(verifier.provider, 'tdx');

  const result = await verifier.verify(evidence('tdx', vector.quote), Buffer.from(TDX_REPORT_DATA, 'hex'), vector.now);
  assert.equal(result.provider, 'tdx');
  assert.equal(result.insecure, false);
  assert.equal(result.tcbStatus, 'UpToDate');
  assert.deepEqual(result.advisoryIds, []);
  assert.equal(result.debug, false);
  assert.equal(result.measurements.mrTd, TDX_MR_TD);
  assert.equal(result.measurements.rtMr0, TDX_RT_MR0);
  assert.equal(result.reportData, TDX_REPORT_DATA);
  assert.equal(result.verifiedAt, vector.now.toISOString());
  assert.equal(result.dcap?.teeType, 'tdx');
  assert.equal(result.dcap?.quoteVersion, 4);
  assert.equal(result.dcap?.fmspc, 'b0c06f000000');
  assert.deepEqual(source.requests, [{ teeType: 'tdx', fmspc: 'b0c06f000000', pckCa: 'platform' }]);
});

test('SGX vector verifies with configuration and hardening advisories', async () => {
  const vector = loadVector('sgx');
  const source = fixedSource(vector.collateral);
  const verifier = new DcapVerifier({ teeType: 'sgx', collateral: source });

  const result = await verifier.verify(evidence('sgx', vector.quote), SGX_REPORT_DATA, vector.now);
  assert.equal(result.provider, 'sgx');
  assert.equal(result.tcbStatus, 'ConfigurationAndSWHardeningNeeded');
  assert.deepEqual(result.advisoryIds, ['INTEL-SA-00289', 'INTEL-SA-00615']);
  assert.equal(result.measurements.mrEnclave, SGX_MR_ENCLAVE);
  assert.equal(result.measurements.mrSigner, SGX_MR_SIGNER);
  assert.equal(result.isvProdId, 0);
  assert.equal(result.isvSvn, 0);
  assert.equal(result.reportData, SGX_REPORT_DATA.toString('hex'));
  assert.equal(result.debug, false);
  assert.equal(result.dcap?.quoteVersion, 3);
  assert.deepEqual(source.requests, [{ teeType: 'sgx', fmspc: '00a067110000', pckCa: 'processor' }]);
});

test('vector verification details', async () => {
  const vector = loadVector('tdx');
  const verification = await verifyQuote(vector.quote, vector.collateral, vector.now, { expectedReportData: null, teeType: 'tdx' });
  assert.equal(verification.pckCa, 'platform');
  assert.equal(verification.platformTcb.status, 'UpToDate');
  assert.equal(verification.tdxModuleTcb?.status, 'UpToDate');
  assert.equal(verification.qeTcb.status, 'UpToDate');
  assert.equal(verification.pck.fmspc.toString('hex'), 'b0c06f000000');
  assert.equal(verification.pck.tcb.componentSvns.length, 16);
  assert.equal(verification.pck.ppid.length, 16);
  assert.equal(verification.tcbInfo.id, 'TDX');
  assert.equal(verification.qeIdentity.id, 'TD_QE');
});

test('vector verifies at the earliest nextUpdate', async () => {
  const vector = loadVector('sgx');
  const verification = await verifyQuote(vector.quote, vector.collateral, vector.expiry, { expectedReportData: SGX_REPORT_DATA });
  assert.equal(verification.result.tcbStatus, 'ConfigurationAndSWHardeningNeeded');
});

test('verify-at past nextUpdate is rejected', async () => {
  for (const teeType of ['tdx', 'sgx'] as const) {
    const vector = loadVector(teeType);
    const late = new Date(vector.expiry.getTime() + 1000);
    await assertRejects(verifyQuote(vector.quote, vector.collateral, late, { expectedReportData: null }), expectedWindowCode(vector.collateral, late));
    const early = new Date(vector.now.getTime() - 1000);
    await assertRejects(verifyQuote(vector.quote, vector.collateral, early, { expectedReportData: null }), expectedWindowCode(vector.collateral, early));
  }
});

test('wrong expected report data is rejected', async () => {
  const vector = loadVector('tdx');
  const verifier = new DcapVerifier({ teeType: 'tdx', collateral: fixedSource(vector.collateral) });
  const wrong = flip(Buffer.from(TDX_REPORT_DATA, 'hex'), 63);
  await assertRejects(verifier.verify(evidence('tdx', vector.quote), wrong, vector.now), 'SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH');
  await assertRejects(verifier.verify(evidence('tdx', vector.quote), Buffer.alloc(32), vector.now), 'SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH');
});

test('byte flips in the quote name the failed check', async () => {
  const vector = loadVector('tdx');
  const parsed = parseQuote(vector.quote);
  const signedLength = parsed.signedRegion.length;
  const signatureOffset = signedLength + 4;
  const qeReportOffset = signatureOffset + 64 + 64 + 6;
  const pemOffset = vector.quote.indexOf('-----BEGIN CERTIFICATE-----') + 27 + 200;
  const cases: Array<{ name: string; offset: number; code: ErrorCode }> = [
    { name: 'report data in the body', offset: 48 + 520, code: 'SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID' },
    { name: 'MRTD in the body', offset: 48 + 136, code: 'SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID' },
    { name: 'header user data', offset: 40, code: 'SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID' },
    { name: 'quote signature', offset: signatureOffset + 10, code: 'SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID' },
    { name: 'attestation key', offset: signatureOffset + 64 + 5, code: 'SEALMESH_ERR_DCAP_QE_REPORT_DATA_MISMATCH' },
    { name: 'QE report', offset: qeReportOffset + 100, code: 'SEALMESH_ERR_DCAP_QE_REPORT_SIGNATURE_INVALID' },
    { name: 'QE report signature', offset: qeReportOffset + 384 + 3, code: 'SEALMESH_ERR_DCAP_QE_REPORT_SIGNATURE_INVALID' },
    { name: 'PCK certificate', offset: pemOffset, code: 'SEALMESH_ERR_DCAP_PCK_CHAIN_INVALID' },
  ];
  for (const testCase of cases) {
    await assertRejects(
      verifyQuote(flip(vector.quote, testCase.offset), vector.collateral, vector.now, { expectedReportData: null }),
      testCase.code,
    ).catch((error: unknown) => {
      throw new Error(`flip in ${testCase.name}: ${(error as Error).message}`);
    });
  }
});

test('tampered collateral names the failed check', async () => {
  const vector = loadVector('sgx');
  const replaceOnce = (text: string, from: string, to: string): string => {
    assert.ok(text.includes(from), `collateral text contains ${from}`);
    return text.replace(from, to);
  };
  const cases: Array<{ name: string; collateral: DcapCollateral; code: ErrorCode }> = [
    {
      name: 'TCB info text',
      collateral: { ...vector.collateral, tcbInfo: replaceOnce(vector.collateral.tcbInfo, '"tcbStatus":"SWHardeningNeeded"', '"tcbStatus":"UpToDate"') },
      code: 'SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID',
    },
    {
      name: 'TCB info signature',
      collateral: { ...vector.collateral, tcbInfoSignature: flip(Buffer.from(vector.collateral.tcbInfoSignature, 'hex'), 5).toString('hex') },
      code: 'SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID',
    },
    {
      name: 'QE identity text',
      collateral: { ...vector.collateral, qeIdentity: replaceOnce(vector.collateral.qeIdentity, '"isvprodid":1', '"isvprodid":2') },
      code: 'SEALMESH_ERR_DCAP_QE_IDENTITY_SIGNATURE_INVALID',
    },
    {
      name: 'QE identity signature',
      collateral: { ...vector.collateral, qeIdentitySignature: flip(Buffer.from(vector.collateral.qeIdentitySignature, 'hex'), 40).toString('hex') },
      code: 'SEALMESH_ERR_DCAP_QE_IDENTITY_SIGNATURE_INVALID',
    },
    {
      name: 'root CA CRL',
      collateral: { ...vector.collateral, rootCaCrl: flip(vector.collateral.rootCaCrl, vector.collateral.rootCaCrl.length - 10) },
      code: 'SEALMESH_ERR_DCAP_CRL_INVALID',
    },
    {
      name: 'PCK CRL',
      collateral: { ...vector.collateral, pckCrl: flip(vector.collateral.pckCrl, vector.collateral.pckCrl.length - 10) },
      code: 'SEALMESH_ERR_DCAP_CRL_INVALID',
    },
    {
      name: 'TCB info issuer chain',
      collateral: { ...vector.collateral, tcbInfoIssuerChain: replaceOnce(vector.collateral.tcbInfoIssuerChain, 'MIIC', 'MIID') },
      code: 'SEALMESH_ERR_DCAP_COLLATERAL_CHAIN_INVALID',
    },
    {
      name: 'TCB info for the other TEE',
      collateral: { ...vector.collateral, tcbInfo: loadVector('tdx').collateral.tcbInfo, tcbInfoSignature: loadVector('tdx').collateral.tcbInfoSignature },
      code: 'SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH',
    },
    {
      name: 'QE identity for the other TEE',
      collateral: { ...vector.collateral, qeIdentity: loadVector('tdx').collateral.qeIdentity, qeIdentitySignature: loadVector('tdx').collateral.qeIdentitySignature },
      code: 'SEALMESH_ERR_DCAP_QE_IDENTITY_MISMATCH',
    },
  ];
  for (const testCase of cases) {
    await assertRejects(verifyQuote(vector.quote, testCase.collateral, vector.now, { expectedReportData: null }), testCase.code).catch((error: unknown) => {
      throw new Error(`${testCase.name}: ${(error as Error).message}`);
    });
  }
});

test('collateral JSON with a flipped character is rejected', async () => {
  const vector = loadVector('tdx');
  const json = readVector('tdx/dcapqvl-tdx-collateral.json').toString('utf8');
  const original = String.raw`\"fmspc\":\"B0C06F000000\"`;
  const index = json.indexOf(original);
  assert.ok(index > 0, 'collateral JSON contains the FMSPC of its TCB info');
  const tampered = `${json.slice(0, index)}${original.replace('B0C06F000000', 'B0C06F000001')}${json.slice(index + original.length)}`;
  await assertRejects(verifyQuote(vector.quote, dcapCollateralFromJson(tampered), vector.now, { expectedReportData: null }), 'SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID');
  assert.throws(() => dcapCollateralFromJson('{"tcb_info":1}'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.throws(() => dcapCollateralFromJson('not json'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'));
});

test('verifier rejects evidence of the other TEE', async () => {
  const sgx = loadVector('sgx');
  const tdxVerifier = new DcapVerifier({ teeType: 'tdx', collateral: fixedSource(sgx.collateral) });
  await assertRejects(tdxVerifier.verify(evidence('tdx', sgx.quote), SGX_REPORT_DATA, sgx.now), 'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED');
  await assertRejects(tdxVerifier.verify(evidence('sgx', sgx.quote), SGX_REPORT_DATA, sgx.now), 'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED');
  await assertRejects(tdxVerifier.verify({ provider: 'tdx', data: '%%%' }, SGX_REPORT_DATA, sgx.now), 'SEALMESH_ERR_DCAP_QUOTE_MALFORMED');
});

test('collateral source failure is reported', async () => {
  const vector = loadVector('tdx');
  const verifier = new DcapVerifier({
    teeType: 'tdx',
    collateral: {
      async collateral(): Promise<DcapCollateral> {
        throw new Error('connection refused');
      },
    },
  });
  await assertRejects(verifier.verify(evidence('tdx', vector.quote), Buffer.from(TDX_REPORT_DATA, 'hex'), vector.now), 'SEALMESH_ERR_DCAP_COLLATERAL_UNAVAILABLE');
});

test('rejections are published on the diagnostics channel', async () => {
  const vector = loadVector('tdx');
  const events: DcapRejectionEvent[] = [];
  const listener = (message: unknown) => events.push(message as DcapRejectionEvent);
  subscribe(DCAP_REJECTION_CHANNEL, listener);
  try {
    const verifier = new DcapVerifier({ teeType: 'tdx', collateral: fixedSource(vector.collateral) });
    await assertRejects(verifier.verify(evidence('tdx', vector.quote), Buffer.alloc(64), vector.now), 'SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH');
  } finally {
    unsubscribe(DCAP_REJECTION_CHANNEL, listener);
  }
  assert.equal(events.length, 1);
  assert.equal(events[0]!.provider, 'tdx');
  assert.equal(events[0]!.code, 'SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH');
});

test('root override that does not match the chain is rejected', async () => {
  const vector = loadVector('sgx');
  await assertRejects(
    verifyQuote(vector.quote, vector.collateral, vector.now, { expectedReportData: null, trustedRootSpkiSha256: '00'.repeat(32) }),
    'SEALMESH_ERR_DCAP_ROOT_UNTRUSTED',
  );
  assert.throws(
    () => new DcapVerifier({ teeType: 'sgx', collateral: fixedSource(vector.collateral), trustedRootSpkiSha256: 'xyz' }),
    (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'),
  );
});

test('go-tdx-guest quote v4 parses', () => {
  const quote = parseQuote(readVector('tdx/gotdxguest-quote-v4.dat'));
  assert.equal(quote.header.version, 4);
  assert.equal(quote.header.teeType, 'tdx');
  assert.equal(quote.header.attestationKeyType, 2);
  assert.equal(quote.header.qeVendorId.toString('hex'), '939a7233f79c4ca9940a0db3957f0607');
  assert.equal(quote.body.type, 'td-report-1.0');
  assert.equal(quote.body.report.mrTd.length, 48);
  assert.equal(quote.body.report.rtMr.length, 4);
  assert.equal(quote.body.report.reportData.length, 64);
  assert.equal(quote.body.report.teeTcbSvn.length, 16);
  assert.equal(quote.signedRegion.length, 48 + 584);
  assert.equal(quote.signatureData.qeReport.isvProdId, 2);
  assert.equal(quote.signatureData.attestationKey.length, 64);
  assert.equal(quote.signatureData.pckChainPem.match(/BEGIN CERTIFICATE/g)?.length, 3);
  assert.ok(quote.trailingBytes > 0, 'this vector carries unsigned bytes after the signature data');
});

test('go-tdx-guest quote v4 PCK chain verifies', () => {
  const prepared = prepareQuote(readVector('tdx/gotdxguest-quote-v4.dat'), new Date('2023-06-20T00:00:00Z'), { teeType: 'tdx' });
  assert.equal(prepared.pckCa, 'platform');
  assert.equal(prepared.pck.fmspc.toString('hex'), '50806f000000');
});

test('go-tdx-guest quote v5 parses with body type 3', () => {
  const quote = parseQuote(readVector('tdx/gotdxguest-quote-v5.dat'));
  assert.equal(quote.header.version, 5);
  assert.equal(quote.header.teeType, 'tdx');
  assert.equal(quote.body.type, 'td-report-1.5');
  assert.equal(quote.body.report.teeTcbSvn2?.length, 16);
  assert.equal(quote.body.report.mrServiceTd?.length, 48);
  assert.equal(quote.signedRegion.length, 48 + 6 + 648);
  assert.equal(quote.signedRegion.readUInt16LE(48), 3);
  assert.equal(quote.signatureData.qeReport.isvProdId, 2);
});

test('go-tdx-guest TCB info and QE identity parse and verify', () => {
  const signer = new X509Certificate(loadVector('tdx').collateral.tcbInfoIssuerChain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)![0]);
  const tcb = extractSignedDocument(readVector('tdx/gotdxguest-tcbinfo.json').toString('utf8'), 'tcbInfo');
  const tcbInfo = verifyTcbInfo(tcb.text, tcb.signature, signer, new Date('2023-06-20T00:00:00Z'));
  assert.equal(tcbInfo.id, 'TDX');
  assert.equal(tcbInfo.version, 3);
  assert.equal(tcbInfo.fmspc.toLowerCase(), '50806f000000');
  assert.ok(tcbInfo.tcbLevels.every((level) => level.tcb.tdxtcbcomponents?.length === 16));

  const tcbV5 = extractSignedDocument(readVector('tdx/gotdxguest-tcbinfo-v5.json').toString('utf8'), 'tcbInfo');
  const tcbInfoV5 = verifyTcbInfo(tcbV5.text, tcbV5.signature, signer, new Date('2026-02-10T00:00:00Z'));
  assert.equal(tcbInfoV5.fmspc.toLowerCase(), '90c06f000000');
  assert.ok((tcbInfoV5.tdxModuleIdentities?.length ?? 0) > 0);

  const qe = extractSignedDocument(readVector('tdx/gotdxguest-qeidentity.json').toString('utf8'), 'enclaveIdentity');
  const qeIdentity = verifyQeIdentity(qe.text, qe.signature, signer, new Date('2023-06-20T00:00:00Z'));
  assert.equal(qeIdentity.id, 'TD_QE');
  assert.equal(qeIdentity.isvprodid, 2);

  assert.throws(() => verifyTcbInfo(tcb.text, tcb.signature, signer, new Date('2023-08-01T00:00:00Z')), (error: unknown) =>
    isSealmeshError(error, 'SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME'));
  assert.throws(() => verifyTcbInfo(tcb.text.replace('"version":3', '"version":3 '), tcb.signature, signer, new Date('2023-06-20T00:00:00Z')), (error: unknown) =>
    isSealmeshError(error, 'SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID'));
});

test('truncated and unknown quotes are rejected with stable codes', () => {
  const quote = readVector('tdx/dcapqvl-tdx-quote.bin');
  const sgxQuote = readVector('sgx/dcapqvl-sgx-quote.bin');
  const withU16 = (bytes: Buffer, offset: number, value: number): Buffer => {
    const copy = Buffer.from(bytes);
    copy.writeUInt16LE(value, offset);
    return copy;
  };
  const signatureData = 48 + 584 + 4;
  const cases: Array<{ name: string; bytes: Buffer; code: ErrorCode }> = [
    { name: 'empty', bytes: Buffer.alloc(0), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
    { name: 'header only', bytes: quote.subarray(0, 48), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
    { name: 'body cut', bytes: quote.subarray(0, 300), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
    { name: 'signature data cut', bytes: quote.subarray(0, 2000), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
    { name: 'SGX quote cut', bytes: sgxQuote.subarray(0, sgxQuote.length - 100), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
    { name: 'version 2', bytes: withU16(quote, 0, 2), code: 'SEALMESH_ERR_DCAP_QUOTE_VERSION_UNSUPPORTED' },
    { name: 'version 6', bytes: withU16(quote, 0, 6), code: 'SEALMESH_ERR_DCAP_QUOTE_VERSION_UNSUPPORTED' },
    { name: 'key type 3', bytes: withU16(quote, 2, 3), code: 'SEALMESH_ERR_DCAP_QUOTE_KEY_TYPE_UNSUPPORTED' },
    { name: 'TEE type 0x82', bytes: withU16(quote, 4, 0x82), code: 'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED' },
    { name: 'TDX in quote v3', bytes: withU16(quote, 0, 3), code: 'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED' },
    { name: 'foreign QE vendor id', bytes: withU16(quote, 12, 0x1234), code: 'SEALMESH_ERR_DCAP_QE_VENDOR_UNSUPPORTED' },
    { name: 'certification data type 4', bytes: withU16(quote, signatureData + 128, 4), code: 'SEALMESH_ERR_DCAP_QUOTE_CERTIFICATION_DATA_UNSUPPORTED' },
    { name: 'nested certification data type 3', bytes: withU16(quote, signatureData + 128 + 6 + 384 + 64 + 2 + 32, 3), code: 'SEALMESH_ERR_DCAP_QUOTE_CERTIFICATION_DATA_UNSUPPORTED' },
    { name: 'QE auth data overruns', bytes: withU16(quote, signatureData + 128 + 6 + 384 + 64, 0xffff), code: 'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED' },
  ];
  const v5 = readVector('tdx/gotdxguest-quote-v5.dat');
  cases.push(
    { name: 'v5 body type 9', bytes: withU16(v5, 48, 9), code: 'SEALMESH_ERR_DCAP_QUOTE_BODY_TYPE_UNSUPPORTED' },
    { name: 'v5 SGX body in a TDX quote', bytes: withU16(v5, 48, 1), code: 'SEALMESH_ERR_DCAP_QUOTE_BODY_TYPE_UNSUPPORTED' },
    { name: 'v5 body type 2 with a 1.5 size', bytes: withU16(v5, 48, 2), code: 'SEALMESH_ERR_DCAP_QUOTE_MALFORMED' },
  );
  for (const testCase of cases) {
    assert.throws(() => parseQuote(testCase.bytes), (error: unknown) => {
      assert.ok(isSealmeshError(error), `${testCase.name}: expected a SealmeshError`);
      assert.equal(error.code, testCase.code, `${testCase.name}: ${error.message}`);
      return true;
    });
  }
});

test('TCB status combination follows the QVL rule', () => {
  const table: Array<[TcbStatus, TcbStatus | undefined, TcbStatus]> = [
    ['UpToDate', undefined, 'UpToDate'],
    ['UpToDate', 'UpToDate', 'UpToDate'],
    ['UpToDate', 'OutOfDate', 'OutOfDate'],
    ['SWHardeningNeeded', 'OutOfDate', 'OutOfDate'],
    ['ConfigurationNeeded', 'OutOfDate', 'OutOfDateConfigurationNeeded'],
    ['ConfigurationAndSWHardeningNeeded', 'OutOfDate', 'OutOfDateConfigurationNeeded'],
    ['OutOfDate', 'OutOfDate', 'OutOfDate'],
    ['OutOfDateConfigurationNeeded', 'OutOfDate', 'OutOfDateConfigurationNeeded'],
    ['UpToDate', 'Revoked', 'Revoked'],
    ['ConfigurationNeeded', 'Revoked', 'Revoked'],
    ['Revoked', 'UpToDate', 'Revoked'],
    ['SWHardeningNeeded', 'UpToDate', 'SWHardeningNeeded'],
  ];
  for (const [platform, component, expected] of table) {
    assert.equal(combineTcbStatus(platform, component), expected, `${platform} with ${String(component)}`);
  }
});

test('signed document text is extracted exactly', () => {
  const signed = '{"id":"QE","nested":{"a":"}\\"","b":[1,{"c":2}]},"version":2}';
  const body = `{ "signature" : "ab12",\n  "enclaveIdentity" :${signed} , "extra": [ "x" ] }`;
  const extracted = extractSignedDocument(body, 'enclaveIdentity');
  assert.equal(extracted.text, signed);
  assert.equal(extracted.signature, 'ab12');
  assert.throws(() => extractSignedDocument('{"signature":"ab"}', 'tcbInfo'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'));
  assert.throws(() => extractSignedDocument('{"tcbInfo":{}', 'tcbInfo'), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'));
});
