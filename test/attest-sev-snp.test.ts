import assert from 'node:assert/strict';
import { constants, createHash, generateKeyPairSync, KeyObject, sign, X509Certificate, type webcrypto } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { before, describe, test } from 'node:test';
import type { SnpCertificates, SnpCollateralRequest, SnpCollateralSource } from '../src/attest/collateral.ts';
import type { Evidence } from '../src/attest/index.ts';
import {
  AMD_ARK_SPKI_SHA256,
  checkSnpRevocation,
  encodeSnpCertTable,
  parseSnpCertTable,
  parseSnpReport,
  SevSnpVerifier,
  SNP_CERT_TABLE_GUIDS,
  type SevSnpVerifierOptions,
  type SnpCrlSource,
} from '../src/attest/sev-snp/index.ts';
import { type ErrorCode, isSealmeshError, SealmeshError } from '../src/errors/index.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';
import { readVector } from './helpers/vectors.ts';

const VERIFY_AT = new Date('2025-01-01T00:00:00Z');

// ---------------------------------------------------------------------------------------------
// Helpers shared by the real and the synthetic cases.

function pemCertificates(text: string): Buffer[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((match) =>
    Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64'),
  );
}

/** Builds a certificate table byte by byte, independently of the encoder under test. */
function certTable(entries: { guid: string; data: Uint8Array }[], padding = 0): Buffer {
  const headerSize = (entries.length + 1) * 24;
  const parts: Buffer[] = [];
  const header = Buffer.alloc(headerSize);
  let offset = headerSize;
  entries.forEach((entry, index) => {
    Buffer.from(entry.guid.replaceAll('-', ''), 'hex').copy(header, index * 24);
    header.writeUInt32LE(offset, index * 24 + 16);
    header.writeUInt32LE(entry.data.length, index * 24 + 20);
    parts.push(Buffer.from(entry.data));
    offset += entry.data.length;
  });
  return Buffer.concat([header, ...parts, Buffer.alloc(padding)]);
}

/** SHA-256 of a certificate's DER SubjectPublicKeyInfo, lowercase hex. */
function spkiSha256(der: Uint8Array): string {
  return createHash('sha256').update(new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' })).digest('hex');
}

function evidenceOf(report: Uint8Array, table?: Uint8Array): Evidence {
  const evidence: Evidence = { provider: 'sev-snp', data: Buffer.from(report).toString('base64') };
  if (table !== undefined) {
    evidence.aux = Buffer.from(table).toString('base64');
  }
  return evidence;
}

async function assertRejects(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.ok(error.message.length > 0);
    return true;
  });
}

function assertThrowsCode(run: () => unknown, code: ErrorCode): void {
  assert.throws(run, (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** Returns a copy of `bytes` with the byte at `offset` XORed with `mask`. */
function flipped(bytes: Uint8Array, offset: number, mask = 0x01): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = copy[offset]! ^ mask;
  return copy;
}

/** A collateral source that serves fixed certificates and records the requests it gets. */
class FixedCollateral implements SnpCollateralSource {
  readonly requests: SnpCollateralRequest[] = [];
  readonly #certificates: SnpCertificates | Error;

  constructor(certificates: SnpCertificates | Error) {
    this.#certificates = certificates;
  }

  async certificates(request: SnpCollateralRequest): Promise<SnpCertificates> {
    this.requests.push(request);
    if (this.#certificates instanceof Error) {
      throw this.#certificates;
    }
    return this.#certificates;
  }
}

// ---------------------------------------------------------------------------------------------
// Real reports and AMD certificates.

describe('real Milan reports', () => {
  // AMD's CRL of the Milan ARK is not among the recorded inputs, so these runs skip revocation.
  const OFFLINE = { crl: 'unchecked' } as const;
  const gosevReport = readVector('sev-snp/gosevguest-milan-report.bin');
  const gosevVcek = readVector('sev-snp/gosevguest-milan-vcek.der');
  const virteeReport = Buffer.from(readVector('sev-snp/virtee-milan-report.hex').toString('utf8').trim(), 'hex');
  const virteeVcek = readVector('sev-snp/virtee-milan-vcek.der');
  const [amdAsk, amdArk] = pemCertificates(readVector('sev-snp/amd-ask_ark_milan.pem').toString('utf8')) as [Buffer, Buffer];
  const [virteeAsk, virteeArk] = pemCertificates(readVector('sev-snp/virtee-milan-cert-chain.pem').toString('utf8')) as [Buffer, Buffer];
  const gosevReportData = Buffer.concat([Buffer.from('0102030405', 'hex'), Buffer.alloc(59)]);
  const virteeReportData = Buffer.from(
    'd447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd',
    'hex',
  );

  const gosevTable = (overrides: Partial<Record<'vcek' | 'ask' | 'ark', Uint8Array>> = {}): Buffer =>
    certTable([
      { guid: SNP_CERT_TABLE_GUIDS.vcek, data: overrides.vcek ?? gosevVcek },
      { guid: SNP_CERT_TABLE_GUIDS.ask, data: overrides.ask ?? amdAsk },
      { guid: SNP_CERT_TABLE_GUIDS.ark, data: overrides.ark ?? amdArk },
    ]);

  test('go-sev-guest report parses with its known fields', () => {
    const report = parseSnpReport(gosevReport);
    assert.equal(report.version, 2);
    assert.equal(report.policy.value, 0xb0000n);
    assert.equal(report.policy.debug, true);
    assert.equal(report.policy.smt, true);
    assert.equal(report.vmpl, 0);
    assert.equal(report.signatureAlgorithm, 1);
    assert.equal(report.signingKey, 'vcek');
    assert.equal(report.productLine, undefined);
    assert.equal(
      Buffer.from(report.measurement).toString('hex'),
      'b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01',
    );
    assert.deepEqual(Buffer.from(report.reportData), gosevReportData);
    assert.deepEqual(report.reportedTcb, { bootloader: 2, tee: 0, snp: 5, microcode: 68 });
  });

  test('virtee report parses with its known fields', () => {
    const report = parseSnpReport(virteeReport);
    assert.equal(report.version, 2);
    assert.equal(report.policy.value, 0x30000n);
    assert.equal(report.policy.debug, false);
    assert.equal(report.vmpl, 0);
    assert.equal(
      Buffer.from(report.measurement).toString('hex'),
      '7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f',
    );
    assert.deepEqual(Buffer.from(report.reportData), virteeReportData);
    assert.deepEqual(report.reportedTcb, { bootloader: 3, tee: 0, snp: 8, microcode: 115 });
  });

  test('go-sev-guest report verifies through the certificate table', async () => {
    const result = await new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable()), gosevReportData, VERIFY_AT);
    assert.equal(result.provider, 'sev-snp');
    assert.equal(result.insecure, false);
    assert.equal(result.verifiedAt, VERIFY_AT.toISOString());
    assert.equal(result.debug, true);
    assert.equal(result.reportData, gosevReportData.toString('hex'));
    assert.equal(result.measurements.measurement, 'b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01');
    assert.equal(result.measurements.hostData, '00'.repeat(32));
    assert.equal(result.tcbStatus, 'UpToDate');
    assert.equal(result.snp?.productLine, 'Milan');
    assert.equal(result.snp?.signingKey, 'vcek');
    assert.equal(result.snp?.vmpl, 0);
    assert.deepEqual(result.snp?.policy, { debug: true, smt: true, migrationAgent: false, singleSocket: false, abiMajor: 0, abiMinor: 0 });
    assert.deepEqual(result.snp?.reportedTcb, { bootloader: 2, tee: 0, snp: 5, microcode: 68 });
    assert.equal(result.snp?.chipId.slice(0, 16), '3ac3fe21e13fb099');
  });

  test('repeated verification reruns every check', async () => {
    const verifier = new SevSnpVerifier(OFFLINE);
    const evidence = evidenceOf(gosevReport, gosevTable());
    const first = await verifier.verify(evidence, gosevReportData, VERIFY_AT);
    assert.equal(first.tcbStatus, 'UpToDate');
    await assertRejects(verifier.verify(evidence, gosevReportData, new Date('2029-09-25T00:00:00Z')), 'SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED');
    await assertRejects(verifier.verify(evidence, flipped(gosevReportData, 0), VERIFY_AT), 'SEALMESH_ERR_SNP_REPORT_DATA_MISMATCH');
    await assertRejects(verifier.verify(evidenceOf(gosevReport, gosevTable({ vcek: virteeVcek })), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID');
    const again = await verifier.verify(evidence, gosevReportData, VERIFY_AT);
    assert.deepEqual(again, first);
  });

  test('virtee report verifies through the collateral source', async () => {
    const collateral = new FixedCollateral({ vcek: virteeVcek, ask: virteeAsk, ark: virteeArk });
    const verifier = new SevSnpVerifier({ ...OFFLINE, collateral, productLine: 'Milan' });
    const result = await verifier.verify(evidenceOf(virteeReport), virteeReportData, VERIFY_AT);
    assert.equal(result.debug, false);
    assert.equal(result.measurements.measurement, '7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f');
    assert.equal(result.tcbStatus, 'UpToDate');
    assert.equal(collateral.requests.length, 1);
    assert.equal(collateral.requests[0]?.productLine, 'Milan');
    assert.equal(collateral.requests[0]?.signingKey, 'vcek');
    assert.equal(collateral.requests[0]?.chipId, result.snp?.chipId);
    assert.deepEqual(collateral.requests[0]?.reportedTcb, { bootloader: 3, tee: 0, snp: 8, microcode: 115 });
  });

  test('flipped byte in the signed region is rejected', async () => {
    for (const offset of [0x04, 0x50, 0x90, 0x1a0, 0x29f]) {
      await assertRejects(
        new SevSnpVerifier(OFFLINE).verify(evidenceOf(flipped(gosevReport, offset), gosevTable()), gosevReportData, VERIFY_AT),
        'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
      );
    }
  });

  test('flipped byte in the signature is rejected', async () => {
    for (const offset of [0x2a0, 0x2a0 + 47, 0x2e8, 0x2e8 + 20]) {
      await assertRejects(
        new SevSnpVerifier(OFFLINE).verify(evidenceOf(flipped(gosevReport, offset), gosevTable()), gosevReportData, VERIFY_AT),
        'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
      );
    }
  });

  test('flipped byte in a certificate is rejected', async () => {
    const vcekName = gosevVcek.indexOf('SEV-VCEK');
    const arkModulus = amdArk.indexOf(Buffer.from('d0b779d9124e75e8', 'hex'));
    assert.ok(vcekName > 0, 'SEV-VCEK name found in the VCEK');
    assert.ok(arkModulus > 0, 'modulus found in the ARK');
    const cases: { name: string; table: Buffer; code: ErrorCode }[] = [
      { name: 'VCEK subject', table: gosevTable({ vcek: flipped(gosevVcek, vcekName + 4) }), code: 'SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID' },
      { name: 'VCEK signature', table: gosevTable({ vcek: flipped(gosevVcek, gosevVcek.length - 1) }), code: 'SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID' },
      { name: 'ASK signature', table: gosevTable({ ask: flipped(amdAsk, amdAsk.length - 1) }), code: 'SEALMESH_ERR_SNP_ASK_SIGNATURE_INVALID' },
      { name: 'ARK signature', table: gosevTable({ ark: flipped(amdArk, amdArk.length - 1) }), code: 'SEALMESH_ERR_SNP_ARK_SIGNATURE_INVALID' },
      { name: 'ARK modulus', table: gosevTable({ ark: flipped(amdArk, arkModulus + 8) }), code: 'SEALMESH_ERR_SNP_ARK_UNTRUSTED' },
    ];
    for (const { name, table, code } of cases) {
      await assertRejects(new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, table), gosevReportData, VERIFY_AT), code).catch((error: unknown) => {
        throw new Error(`case ${name}: ${String(error)}`, { cause: error });
      });
    }
  });

  test('VCEK of the other report is rejected', async () => {
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable({ vcek: virteeVcek })), gosevReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
    );
    const virteeTable = certTable([
      { guid: SNP_CERT_TABLE_GUIDS.vcek, data: gosevVcek },
      { guid: SNP_CERT_TABLE_GUIDS.ask, data: virteeAsk },
      { guid: SNP_CERT_TABLE_GUIDS.ark, data: virteeArk },
    ]);
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(virteeReport, virteeTable), virteeReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
    );
  });

  test('verification after the VCEK expiry is rejected', async () => {
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable()), gosevReportData, new Date('2029-09-25T00:00:00Z')),
      'SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED',
    );
  });

  test('verification before the VCEK validity is rejected', async () => {
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable()), gosevReportData, new Date('2022-01-01T00:00:00Z')),
      'SEALMESH_ERR_SNP_CERTIFICATE_NOT_YET_VALID',
    );
  });

  test('wrong expected report data is rejected', async () => {
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable()), flipped(gosevReportData, 63), VERIFY_AT),
      'SEALMESH_ERR_SNP_REPORT_DATA_MISMATCH',
    );
  });

  test('Genoa chain for a Milan VCEK is rejected', async () => {
    const [genoaAsk, genoaArk] = pemCertificates(readVector('sev-snp/amd-ask_ark_genoa.pem').toString('utf8')) as [Buffer, Buffer];
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable({ ask: genoaAsk, ark: genoaArk })), gosevReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID',
    );
    const verifier = new SevSnpVerifier({ ...OFFLINE, productLine: 'Milan' });
    await assertRejects(
      verifier.verify(evidenceOf(gosevReport, gosevTable({ ask: genoaAsk, ark: genoaArk })), gosevReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_PRODUCT_MISMATCH',
    );
  });

  test('ASK in place of the ARK is rejected', async () => {
    await assertRejects(
      new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, gosevTable({ ark: amdAsk })), gosevReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_ARK_UNTRUSTED',
    );
  });

  test('pinned ARK digests match the AMD certificates', () => {
    for (const [productLine, file] of [['Milan', 'amd-ask_ark_milan.pem'], ['Genoa', 'amd-ask_ark_genoa_vlek.pem'], ['Turin', 'amd-ask_ark_turin_vcek.pem']] as const) {
      const ark = pemCertificates(readVector(`sev-snp/${file}`).toString('utf8'))[1]!;
      assert.equal(spkiSha256(ark), AMD_ARK_SPKI_SHA256[productLine], productLine);
    }
  });

  test('verifier without a CRL source rejects', async () => {
    const error = await new SevSnpVerifier().verify(evidenceOf(gosevReport, gosevTable()), gosevReportData, VERIFY_AT).catch((rejection: unknown) => rejection);
    assert.ok(isSealmeshError(error), `expected a rejection, got ${JSON.stringify(error)}`);
    assert.equal(error.code, 'SEALMESH_ERR_SNP_CRL_SOURCE_MISSING');
    assert.match(error.message, /--collateral-dir/);
    assert.match(error.message, /--kds-url/);
  });

  test('missing certificates are rejected', async () => {
    await assertRejects(new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_CERTIFICATES_MISSING');
    const onlyVcek = certTable([{ guid: SNP_CERT_TABLE_GUIDS.vcek, data: gosevVcek }]);
    await assertRejects(new SevSnpVerifier(OFFLINE).verify(evidenceOf(gosevReport, onlyVcek), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_CERTIFICATES_MISSING');
  });

  test('table VCEK completed by the collateral chain verifies', async () => {
    const onlyVcek = certTable([{ guid: SNP_CERT_TABLE_GUIDS.vcek, data: gosevVcek }]);
    const collateral = new FixedCollateral({ vcek: virteeVcek, ask: amdAsk, ark: amdArk });
    const result = await new SevSnpVerifier({ ...OFFLINE, collateral, productLine: 'Milan' }).verify(evidenceOf(gosevReport, onlyVcek), gosevReportData, VERIFY_AT);
    assert.equal(result.measurements.measurement?.slice(0, 16), 'b07af9620f3b839b');
    assert.equal(collateral.requests.length, 1);
  });

  test('collateral source failure is rejected', async () => {
    const verifier = new SevSnpVerifier({ ...OFFLINE, collateral: new FixedCollateral(new Error('KDS timed out')), productLine: 'Milan' });
    await assertRejects(verifier.verify(evidenceOf(gosevReport), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_COLLATERAL_UNAVAILABLE');
  });

  test('collateral source error code kept', async () => {
    const unavailable = new SealmeshError('SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID', 'VCEK file expired');
    const verifier = new SevSnpVerifier({ ...OFFLINE, collateral: new FixedCollateral(unavailable), productLine: 'Milan' });
    await assertRejects(verifier.verify(evidenceOf(gosevReport), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
  });

  test('version 2 report without a product line cannot use collateral', async () => {
    const collateral = new FixedCollateral({ vcek: gosevVcek, ask: amdAsk, ark: amdArk });
    await assertRejects(new SevSnpVerifier({ ...OFFLINE, collateral }).verify(evidenceOf(gosevReport), gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_PRODUCT_UNKNOWN');
    assert.equal(collateral.requests.length, 0);
  });

  test('malformed evidence encodings are rejected', async () => {
    const verifier = new SevSnpVerifier(OFFLINE);
    const good = evidenceOf(gosevReport, gosevTable());
    await assertRejects(verifier.verify({ ...good, data: `${good.data}!` }, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_REPORT_MALFORMED');
    await assertRejects(verifier.verify({ ...good, data: good.data.slice(0, -8) }, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_REPORT_MALFORMED');
    await assertRejects(verifier.verify({ ...good, aux: 'not base64' }, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED');
    await assertRejects(verifier.verify({ ...good, aux: Buffer.from(gosevVcek).toString('base64') }, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED');
    await assertRejects(
      verifier.verify(evidenceOf(gosevReport, gosevTable({ vcek: gosevVcek.subarray(0, 200) })), gosevReportData, VERIFY_AT),
      'SEALMESH_ERR_SNP_CERTIFICATE_MALFORMED',
    );
  });

  test('invalid verify arguments are rejected', async () => {
    const verifier = new SevSnpVerifier(OFFLINE);
    const good = evidenceOf(gosevReport, gosevTable());
    await assertRejects(verifier.verify({ ...good, provider: 'tdx' }, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_INVALID_ARGUMENT');
    await assertRejects(verifier.verify(null as unknown as Evidence, gosevReportData, VERIFY_AT), 'SEALMESH_ERR_INVALID_ARGUMENT');
    await assertRejects(verifier.verify(good, gosevReportData.subarray(0, 32), VERIFY_AT), 'SEALMESH_ERR_INVALID_ARGUMENT');
    await assertRejects(verifier.verify(good, gosevReportData, new Date(Number.NaN)), 'SEALMESH_ERR_INVALID_ARGUMENT');
    assertThrowsCode(() => new SevSnpVerifier({ trustedArkSpkiSha256: { Milan: 'ABC' } }), 'SEALMESH_ERR_INVALID_ARGUMENT');
  });

  describe('report structure checks', () => {
    const edited = (edit: (bytes: Buffer) => void): Buffer => {
      const copy = Buffer.from(gosevReport);
      edit(copy);
      return copy;
    };
    const cases: { name: string; bytes: Buffer; code: ErrorCode }[] = [
      { name: 'short report', bytes: gosevReport.subarray(0, 0x49f), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'long report', bytes: Buffer.concat([gosevReport, Buffer.alloc(1)]), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'version 1', bytes: edited((b) => b.writeUInt32LE(1, 0)), code: 'SEALMESH_ERR_SNP_REPORT_VERSION_UNSUPPORTED' },
      { name: 'version 6', bytes: edited((b) => b.writeUInt32LE(6, 0)), code: 'SEALMESH_ERR_SNP_REPORT_VERSION_UNSUPPORTED' },
      { name: 'policy bit 17 clear', bytes: edited((b) => b.writeBigUInt64LE(0x90000n, 8)), code: 'SEALMESH_ERR_SNP_POLICY_INVALID' },
      { name: 'policy bit 40 set', bytes: edited((b) => b.writeBigUInt64LE(0xb0000n | (1n << 40n), 8)), code: 'SEALMESH_ERR_SNP_POLICY_INVALID' },
      { name: 'VMPL 4', bytes: edited((b) => b.writeUInt32LE(4, 0x30)), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'signature algorithm 2', bytes: edited((b) => b.writeUInt32LE(2, 0x34)), code: 'SEALMESH_ERR_SNP_SIGNATURE_ALGORITHM_UNSUPPORTED' },
      { name: 'signing key 2', bytes: edited((b) => b.writeUInt32LE(2 << 2, 0x48)), code: 'SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED' },
      { name: 'signing key none', bytes: edited((b) => b.writeUInt32LE(7 << 2, 0x48)), code: 'SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED' },
      { name: 'MASK_CHIP_KEY set', bytes: edited((b) => b.writeUInt32LE(0x2, 0x48)), code: 'SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED' },
      { name: 'reserved flag bit', bytes: edited((b) => b.writeUInt32LE(1 << 5, 0x48)), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'reserved word at 0x4C', bytes: edited((b) => b.writeUInt32LE(1, 0x4c)), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'byte after the signature', bytes: edited((b) => (b[0x49f] = 1)), code: 'SEALMESH_ERR_SNP_REPORT_MALFORMED' },
      { name: 'R above 48 bytes', bytes: edited((b) => (b[0x2a0 + 50] = 1)), code: 'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID' },
      { name: 'S above 48 bytes', bytes: edited((b) => (b[0x2e8 + 71] = 1)), code: 'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID' },
      {
        name: 'version 3 with unknown CPU',
        bytes: edited((b) => {
          b.writeUInt32LE(3, 0);
          b[0x188] = 0x17;
          b[0x189] = 0x31;
        }),
        code: 'SEALMESH_ERR_SNP_PRODUCT_UNKNOWN',
      },
    ];
    for (const { name, bytes, code } of cases) {
      test(`${name} is rejected`, () => {
        assertThrowsCode(() => parseSnpReport(bytes), code);
      });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Certificate table.

describe('certificate table', () => {
  const a = Buffer.from('certificate-a');
  const b = Buffer.from('certificate-b');

  test('entries, unknown GUIDs and padding parse', () => {
    const crlGuid = '92f81bc3-5811-4d3d-97ff-d19f88dc67ea';
    const table = parseSnpCertTable(certTable([{ guid: SNP_CERT_TABLE_GUIDS.vlek, data: a }, { guid: crlGuid, data: b }], 4096));
    assert.deepEqual(Buffer.from(table.vlek!), a);
    assert.equal(table.vcek, undefined);
    assert.equal(table.other.length, 1);
    assert.equal(table.other[0]?.guid, crlGuid);
    assert.deepEqual(Buffer.from(table.other[0]!.data), b);
  });

  test('encoder output parses back', () => {
    const table = parseSnpCertTable(encodeSnpCertTable({ vcek: a, ask: b, ark: a }));
    assert.deepEqual(Buffer.from(table.vcek!), a);
    assert.deepEqual(Buffer.from(table.ask!), b);
    assert.deepEqual(Buffer.from(table.ark!), a);
    assert.deepEqual(encodeSnpCertTable({ vcek: a }).subarray(0, 16), Buffer.from('63da758de6644564adc5f4b93be8accd', 'hex'));
  });

  const good = certTable([{ guid: SNP_CERT_TABLE_GUIDS.vcek, data: a }, { guid: SNP_CERT_TABLE_GUIDS.ask, data: b }]);
  const cases: { name: string; bytes: Buffer }[] = [
    { name: 'empty buffer', bytes: Buffer.alloc(0) },
    { name: 'no terminator', bytes: good.subarray(0, 48) },
    { name: 'terminator with a length', bytes: Buffer.from(good).fill(1, 48 + 20, 48 + 21) },
    { name: 'offset past the end', bytes: Buffer.from(good).fill(0xff, 16, 20) },
    { name: 'offset into the entries', bytes: (() => { const copy = Buffer.from(good); copy.writeUInt32LE(8, 16); return copy; })() },
    { name: 'zero length', bytes: (() => { const copy = Buffer.from(good); copy.writeUInt32LE(0, 20); return copy; })() },
    { name: 'repeated GUID', bytes: certTable([{ guid: SNP_CERT_TABLE_GUIDS.ask, data: a }, { guid: SNP_CERT_TABLE_GUIDS.ask, data: b }]) },
    { name: 'oversized table', bytes: certTable([{ guid: SNP_CERT_TABLE_GUIDS.ask, data: a }], 70 * 1024) },
  ];
  for (const { name, bytes } of cases) {
    test(`${name} is rejected`, () => {
      assertThrowsCode(() => parseSnpCertTable(bytes), 'SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED');
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Synthetic chains: our own ARK, ASK and VCEK, and reports signed by that VCEK.

type KeyPair = webcrypto.CryptoKeyPair;

const RSA_PSS_SHA384 = { name: 'RSA-PSS', hash: 'SHA-384', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const PSS_SALT_48 = { name: 'RSA-PSS', saltLength: 48 } as webcrypto.Algorithm;
const EC_P384 = { name: 'ECDSA', namedCurve: 'P-384' };

async function keyPair(algorithm: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams): Promise<KeyPair> {
  return (await nodeCrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as KeyPair;
}

function caExtensions(): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
}

function derInteger(value: number): Uint8Array {
  return value >= 0x80 ? new Uint8Array([0x02, 0x02, 0x00, value]) : new Uint8Array([0x02, 0x01, value]);
}

interface TcbFields {
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  fmc?: number;
}

interface VekOptions {
  commonName?: string;
  productName?: string | null;
  tcb?: TcbFields;
  hwId?: Uint8Array | null;
  notBefore?: Date;
  notAfter?: Date;
  keys?: KeyPair;
  signingKey?: webcrypto.CryptoKey;
  signingAlgorithm?: webcrypto.Algorithm;
  issuer?: string;
}

const CHIP_ID = Buffer.alloc(64, 0xc5);
const MILAN_TCB: TcbFields = { bootloader: 3, tee: 0, snp: 8, microcode: 115 };
const TURIN_TCB: TcbFields = { fmc: 1, bootloader: 4, tee: 1, snp: 3, microcode: 74 };

interface Chain {
  arkKeys: KeyPair;
  askKeys: KeyPair;
  vekKeys: KeyPair;
  ark: Uint8Array;
  ask: Uint8Array;
  arkDigest: string;
}

async function certificate(options: {
  serialNumber?: string;
  subject: string;
  issuer: string;
  publicKey: webcrypto.CryptoKey;
  signingKey: webcrypto.CryptoKey;
  extensions: x509.Extension[];
  notBefore?: Date;
  notAfter?: Date;
  signingAlgorithm?: webcrypto.Algorithm;
}): Promise<Uint8Array> {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: options.serialNumber ?? '0a',
    subject: options.subject,
    issuer: options.issuer,
    notBefore: options.notBefore ?? new Date('2023-01-01T00:00:00Z'),
    notAfter: options.notAfter ?? new Date('2030-01-01T00:00:00Z'),
    publicKey: options.publicKey,
    signingKey: options.signingKey,
    signingAlgorithm: options.signingAlgorithm ?? PSS_SALT_48,
    extensions: options.extensions,
  });
  return new Uint8Array(cert.rawData);
}

async function buildChain(productLine: string, askName = `SEV-${productLine}`): Promise<Chain> {
  const arkKeys = await keyPair(RSA_PSS_SHA384);
  const askKeys = await keyPair(RSA_PSS_SHA384);
  const vekKeys = await keyPair(EC_P384);
  const arkName = `CN=ARK-${productLine}, O=Test Root`;
  const ark = await certificate({ serialNumber: '01', subject: arkName, issuer: arkName, publicKey: arkKeys.publicKey, signingKey: arkKeys.privateKey, extensions: caExtensions() });
  const ask = await certificate({ serialNumber: '02', subject: `CN=${askName}`, issuer: arkName, publicKey: askKeys.publicKey, signingKey: arkKeys.privateKey, extensions: caExtensions() });
  const arkDigest = spkiSha256(ark);
  return { arkKeys, askKeys, vekKeys, ark, ask, arkDigest };
}

async function buildVek(chain: Chain, options: VekOptions = {}): Promise<Uint8Array> {
  const tcb = options.tcb ?? MILAN_TCB;
  const extension = (oid: string, value: Uint8Array): x509.Extension => new x509.Extension(oid, false, value);

  const extensions = [
    extension('1.3.6.1.4.1.3704.1.3.1', derInteger(tcb.bootloader)),
    extension('1.3.6.1.4.1.3704.1.3.2', derInteger(tcb.tee)),
    extension('1.3.6.1.4.1.3704.1.3.3', derInteger(tcb.snp)),
    extension('1.3.6.1.4.1.3704.1.3.8', derInteger(tcb.microcode)),
  ];
  if (tcb.fmc !== undefined) {
    extensions.push(extension('1.3.6.1.4.1.3704.1.3.9', derInteger(tcb.fmc)));
  }

  const productName = options.productName === undefined ? 'Milan-B0' : options.productName;
  if (productName !== null) {
    extensions.push(extension('1.3.6.1.4.1.3704.1.2', Buffer.concat([Buffer.from([0x16, productName.length]), Buffer.from(productName, 'ascii')])));
  }
  const hwId = options.hwId === undefined ? CHIP_ID : options.hwId;
  if (hwId !== null) {
    extensions.push(extension('1.3.6.1.4.1.3704.1.4', hwId));
  }

  const certificateOptions: Parameters<typeof certificate>[0] = {
    subject: `CN=${options.commonName ?? 'SEV-VCEK'}`,
    issuer: options.issuer ?? new x509.X509Certificate(chain.ask).subject,
    publicKey: (options.keys ?? chain.vekKeys).publicKey,
    signingKey: options.signingKey ?? chain.askKeys.privateKey,
    extensions,
  };
  if (options.notBefore !== undefined) certificateOptions.notBefore = options.notBefore;
  if (options.notAfter !== undefined) certificateOptions.notAfter = options.notAfter;
  if (options.signingAlgorithm !== undefined) certificateOptions.signingAlgorithm = options.signingAlgorithm;
  return certificate(certificateOptions);
}

interface ReportOptions {
  version?: number;
  cpuid?: [number, number, number];
  tcb?: TcbFields;
  turinLayout?: boolean;
  signingKey?: 0 | 1;
  reportData?: Uint8Array;
  chipId?: Uint8Array;
}

function encodeTcb(tcb: TcbFields, turinLayout: boolean): Buffer {
  const raw = Buffer.alloc(8);
  if (turinLayout) {
    raw.set([tcb.fmc ?? 0, tcb.bootloader, tcb.tee, tcb.snp], 0);
  } else {
    raw.set([tcb.bootloader, tcb.tee], 0);
    raw[6] = tcb.snp;
  }
  raw[7] = tcb.microcode;
  return raw;
}

/** Builds and signs a report the way the firmware lays it out. */
function buildReport(signer: KeyPair, options: ReportOptions = {}): Buffer {
  const report = Buffer.alloc(0x4a0);
  const version = options.version ?? 3;
  const tcb = encodeTcb(options.tcb ?? MILAN_TCB, options.turinLayout ?? false);
  report.writeUInt32LE(version, 0x00);
  report.writeUInt32LE(7, 0x04);
  report.writeBigUInt64LE(0x30000n, 0x08);
  report.writeUInt32LE(1, 0x34);
  tcb.copy(report, 0x38);
  report.writeUInt32LE((options.signingKey ?? 0) << 2, 0x48);
  Buffer.from(options.reportData ?? Buffer.alloc(64, 0xab)).copy(report, 0x50);
  report.fill(0x4d, 0x90, 0xc0);
  report.fill(0x48, 0xc0, 0xe0);
  tcb.copy(report, 0x180);
  if (version >= 3) {
    const [family, model, stepping] = options.cpuid ?? [0x19, 0x01, 0x01];
    report.set([family, model, stepping], 0x188);
  }
  Buffer.from(options.chipId ?? CHIP_ID).copy(report, 0x1a0);
  tcb.copy(report, 0x1e0);
  tcb.copy(report, 0x1f0);

  const signature = sign('sha384', report.subarray(0, 0x2a0), { key: KeyObject.from(signer.privateKey), dsaEncoding: 'ieee-p1363' });
  Buffer.from(signature.subarray(0, 48)).reverse().copy(report, 0x2a0);
  Buffer.from(signature.subarray(48, 96)).reverse().copy(report, 0x2e8);
  return report;
}

function tableOf(chain: Chain, vek: Uint8Array, role: 'vcek' | 'vlek' = 'vcek'): Buffer {
  return certTable([
    { guid: SNP_CERT_TABLE_GUIDS[role], data: vek },
    { guid: SNP_CERT_TABLE_GUIDS.ask, data: chain.ask },
    { guid: SNP_CERT_TABLE_GUIDS.ark, data: chain.ark },
  ]);
}

describe('synthetic chains', () => {
  let milan: Chain;
  let turin: Chain;
  let vcek: Uint8Array;
  let verifierOptions: SevSnpVerifierOptions;
  const reportData = Buffer.alloc(64, 0xab);

  before(async () => {
    milan = await buildChain('Milan');
    turin = await buildChain('Turin');
    vcek = await buildVek(milan);
    const emptyCrls = { Milan: await buildCrl({ chain: milan }), Turin: await buildCrl({ chain: turin }) };
    verifierOptions = {
      trustedArkSpkiSha256: { Milan: milan.arkDigest, Turin: turin.arkDigest },
      crl: { crl: (productLine) => Promise.resolve(emptyCrls[productLine as 'Milan' | 'Turin']) },
    };
  });

  const verify = (evidence: Evidence, options: SevSnpVerifierOptions = verifierOptions, data: Uint8Array = reportData) =>
    new SevSnpVerifier(options).verify(evidence, data, VERIFY_AT);

  test('version 3 Milan report verifies through the table', async () => {
    const result = await verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)));
    assert.equal(result.snp?.productLine, 'Milan');
    assert.equal(result.snp?.signingKey, 'vcek');
    assert.equal(result.debug, false);
    assert.equal(result.measurements.measurement, '4d'.repeat(48));
    assert.equal(result.measurements.hostData, '48'.repeat(32));
    assert.deepEqual(result.snp?.reportedTcb, MILAN_TCB);
    assert.equal(result.tcbStatus, 'UpToDate');
  });

  test('report through the collateral source verifies', async () => {
    const collateral = new FixedCollateral({ vcek, ask: milan.ask, ark: milan.ark });
    const result = await verify(evidenceOf(buildReport(milan.vekKeys)), { ...verifierOptions, collateral });
    assert.equal(result.snp?.productLine, 'Milan');
    assert.deepEqual(collateral.requests, [{ productLine: 'Milan', chipId: CHIP_ID.toString('hex'), reportedTcb: MILAN_TCB, signingKey: 'vcek' }]);
  });

  test('default AMD pins reject an unpinned root', async () => {
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), {}), 'SEALMESH_ERR_SNP_ARK_UNTRUSTED');
  });

  test('root pinned for another product line is rejected', async () => {
    const options = { trustedArkSpkiSha256: { Genoa: milan.arkDigest } };
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), options), 'SEALMESH_ERR_SNP_PRODUCT_MISMATCH');
  });

  test('chain named for another line is rejected', async () => {
    const genoaNamed = await buildChain('Genoa');
    const genoaVcek = await buildVek(genoaNamed);
    const options = { trustedArkSpkiSha256: { Milan: genoaNamed.arkDigest } };
    await assertRejects(verify(evidenceOf(buildReport(genoaNamed.vekKeys), tableOf(genoaNamed, genoaVcek)), options), 'SEALMESH_ERR_SNP_PRODUCT_MISMATCH');
  });

  test('ASK not signed by the ARK is rejected', async () => {
    const otherArk = await keyPair(RSA_PSS_SHA384);
    const forgedAsk = await certificate({
      subject: 'CN=SEV-Milan',
      issuer: new x509.X509Certificate(milan.ark).subject,
      publicKey: milan.askKeys.publicKey,
      signingKey: otherArk.privateKey,
      extensions: caExtensions(),
    });
    const table = certTable([
      { guid: SNP_CERT_TABLE_GUIDS.vcek, data: vcek },
      { guid: SNP_CERT_TABLE_GUIDS.ask, data: forgedAsk },
      { guid: SNP_CERT_TABLE_GUIDS.ark, data: milan.ark },
    ]);
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), table)), 'SEALMESH_ERR_SNP_ASK_SIGNATURE_INVALID');
  });

  test('VCEK signed by the ARK directly is rejected', async () => {
    const direct = await buildVek(milan, { signingKey: milan.arkKeys.privateKey });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, direct))), 'SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID');
  });

  test('expired VCEK is rejected', async () => {
    const expired = await buildVek(milan, { notBefore: new Date('2023-01-01T00:00:00Z'), notAfter: new Date('2024-12-31T23:59:59Z') });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, expired))), 'SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED');
  });

  test('not yet valid VCEK is rejected', async () => {
    const future = await buildVek(milan, { notBefore: new Date('2025-01-02T00:00:00Z') });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, future))), 'SEALMESH_ERR_SNP_CERTIFICATE_NOT_YET_VALID');
  });

  test('TCB mismatch between report and VCEK is rejected', async () => {
    for (const component of ['bootloader', 'tee', 'snp', 'microcode'] as const) {
      const tcb = { ...MILAN_TCB, [component]: MILAN_TCB[component] + 1 };
      const report = buildReport(milan.vekKeys, { tcb });
      await assertRejects(verify(evidenceOf(report, tableOf(milan, vcek))), 'SEALMESH_ERR_SNP_TCB_MISMATCH');
    }
  });

  test('chip id differing from the hwID is rejected', async () => {
    const report = buildReport(milan.vekKeys, { chipId: Buffer.alloc(64, 0x11) });
    await assertRejects(verify(evidenceOf(report, tableOf(milan, vcek))), 'SEALMESH_ERR_SNP_CHIP_ID_MISMATCH');
  });

  test('VCEK without hwID or product name is rejected', async () => {
    const noHwId = await buildVek(milan, { hwId: null });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, noHwId))), 'SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID');
    const noName = await buildVek(milan, { productName: null });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, noName))), 'SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID');
  });

  test('VCEK product name of another line is rejected', async () => {
    const genoaNamed = await buildVek(milan, { productName: 'Genoa-B1' });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, genoaNamed))), 'SEALMESH_ERR_SNP_PRODUCT_MISMATCH');
  });

  test('report CPUID of another line is rejected', async () => {
    const report = buildReport(milan.vekKeys, { cpuid: [0x19, 0x11, 0x01] });
    await assertRejects(verify(evidenceOf(report, tableOf(milan, vcek))), 'SEALMESH_ERR_SNP_PRODUCT_MISMATCH');
  });

  test('VLEK report verifies through the table', async () => {
    const vlekChain: Chain = { ...milan, ask: await certificate({
      subject: 'CN=SEV-VLEK-Milan',
      issuer: new x509.X509Certificate(milan.ark).subject,
      publicKey: milan.askKeys.publicKey,
      signingKey: milan.arkKeys.privateKey,
      extensions: caExtensions(),
    }) };
    const vlek = await buildVek(vlekChain, { commonName: 'SEV-VLEK', hwId: null });
    const report = buildReport(milan.vekKeys, { signingKey: 1, chipId: Buffer.alloc(64) });
    const result = await verify(evidenceOf(report, tableOf(vlekChain, vlek, 'vlek')));
    assert.equal(result.snp?.signingKey, 'vlek');
    assert.equal(result.tcbStatus, 'UpToDate');

    // The same key presented as a VCEK does not stand in for the VLEK the report names.
    const asVcek = await buildVek(vlekChain, { commonName: 'SEV-VCEK', hwId: null });
    await assertRejects(verify(evidenceOf(report, tableOf(vlekChain, asVcek, 'vlek'))), 'SEALMESH_ERR_SNP_SIGNING_KEY_MISMATCH');
    // A VCEK under the ASVK does not stand in for a VCEK under the ASK.
    const vcekUnderAsvk = await buildVek(vlekChain);
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(vlekChain, vcekUnderAsvk))), 'SEALMESH_ERR_SNP_SIGNING_KEY_MISMATCH');
    // A VCEK-only table does not serve a VLEK-signed report.
    await assertRejects(verify(evidenceOf(report, tableOf(vlekChain, vlek, 'vcek'))), 'SEALMESH_ERR_SNP_CERTIFICATES_MISSING');
  });

  test('Turin report with FMC verifies', async () => {
    const turinVcek = await buildVek(turin, { tcb: TURIN_TCB, productName: 'Turin-C0' });
    const report = buildReport(turin.vekKeys, { version: 5, cpuid: [0x1a, 0x02, 0x01], tcb: TURIN_TCB, turinLayout: true });
    const parsed = parseSnpReport(report);
    assert.equal(parsed.productLine, 'Turin');
    assert.deepEqual(parsed.reportedTcb, TURIN_TCB);
    assert.equal(parsed.launchMitigationVector, 0n);
    const result = await verify(evidenceOf(report, tableOf(turin, turinVcek)));
    assert.equal(result.snp?.productLine, 'Turin');
    assert.deepEqual(result.snp?.reportedTcb, TURIN_TCB);
  });

  test('Turin VCEK without fmcSPL is rejected', async () => {
    const { fmc: _fmc, ...withoutFmc } = TURIN_TCB;
    const turinVcek = await buildVek(turin, { tcb: withoutFmc, productName: 'Turin-C0' });
    const report = buildReport(turin.vekKeys, { version: 3, cpuid: [0x1a, 0x02, 0x01], tcb: TURIN_TCB, turinLayout: true });
    await assertRejects(verify(evidenceOf(report, tableOf(turin, turinVcek))), 'SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID');
  });

  test('Turin FMC mismatch is rejected', async () => {
    const turinVcek = await buildVek(turin, { tcb: { ...TURIN_TCB, fmc: 2 }, productName: 'Turin-C0' });
    const report = buildReport(turin.vekKeys, { version: 3, cpuid: [0x1a, 0x02, 0x01], tcb: TURIN_TCB, turinLayout: true });
    await assertRejects(verify(evidenceOf(report, tableOf(turin, turinVcek))), 'SEALMESH_ERR_SNP_TCB_MISMATCH');
  });

  test('PSS salt other than 48 is rejected', async () => {
    const salt32 = await buildVek(milan, { signingAlgorithm: { name: 'RSA-PSS', saltLength: 32 } as webcrypto.Algorithm });
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, salt32))), 'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED');
  });

  test('PKCS#1 v1.5 signature is rejected', async () => {
    const pkcs1Keys = await keyPair({ name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-384', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 });
    const arkName = 'CN=ARK-Milan, O=Test Root';
    const ark = await certificate({
      subject: arkName,
      issuer: arkName,
      publicKey: pkcs1Keys.publicKey,
      signingKey: pkcs1Keys.privateKey,
      extensions: caExtensions(),
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
    });
    const digest = spkiSha256(ark);
    const table = certTable([
      { guid: SNP_CERT_TABLE_GUIDS.vcek, data: vcek },
      { guid: SNP_CERT_TABLE_GUIDS.ask, data: milan.ask },
      { guid: SNP_CERT_TABLE_GUIDS.ark, data: ark },
    ]);
    await assertRejects(
      verify(evidenceOf(buildReport(milan.vekKeys), table), { trustedArkSpkiSha256: { Milan: digest } }),
      'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED',
    );
  });

  test('ASK without basicConstraints is rejected', async () => {
    const plainAsk = await certificate({
      subject: 'CN=SEV-Milan',
      issuer: new x509.X509Certificate(milan.ark).subject,
      publicKey: milan.askKeys.publicKey,
      signingKey: milan.arkKeys.privateKey,
      extensions: [],
    });
    const table = certTable([
      { guid: SNP_CERT_TABLE_GUIDS.vcek, data: vcek },
      { guid: SNP_CERT_TABLE_GUIDS.ask, data: plainAsk },
      { guid: SNP_CERT_TABLE_GUIDS.ark, data: milan.ark },
    ]);
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), table)), 'SEALMESH_ERR_SNP_CERTIFICATE_NOT_CA');
  });

  test('VCEK with a P-256 key is rejected', async () => {
    const p256 = await keyPair({ name: 'ECDSA', namedCurve: 'P-256' });
    const p256Vcek = await buildVek(milan, { keys: p256 });
    await assertRejects(verify(evidenceOf(buildReport(p256), tableOf(milan, p256Vcek))), 'SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED');
  });

  const buildCrl = async (options: { serials?: string[]; nextUpdate?: Date; signingKey?: webcrypto.CryptoKey; issuer?: string; chain?: Chain } = {}): Promise<Uint8Array> => {
    const chain = options.chain ?? milan;
    const crl = await x509.X509CrlGenerator.create({
      issuer: options.issuer ?? new x509.X509Certificate(chain.ark).subject,
      thisUpdate: new Date('2024-12-01T00:00:00Z'),
      nextUpdate: options.nextUpdate ?? new Date('2025-06-01T00:00:00Z'),
      entries: (options.serials ?? []).map((serialNumber) => ({ serialNumber, revocationDate: new Date('2024-11-01T00:00:00Z') })),
      signingKey: options.signingKey ?? chain.arkKeys.privateKey,
      signingAlgorithm: PSS_SALT_48,
    });
    return new Uint8Array(crl.rawData);
  };
  const crlSource = (crl: Uint8Array | Error, requests: string[] = []): SnpCrlSource => ({
    async crl(productLine, signingKey) {
      requests.push(`${productLine}/${signingKey}`);
      if (crl instanceof Error) {
        throw crl;
      }
      return crl;
    },
  });

  test('current CRL without entries verifies', async () => {
    const requests: string[] = [];
    const options = { ...verifierOptions, crl: crlSource(await buildCrl({ serials: ['7f'] }), requests) };
    const result = await verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), options);
    assert.equal(result.snp?.productLine, 'Milan');
    assert.deepEqual(requests, ['Milan/vcek']);
  });

  test('CRL revoking the ASK or VCEK is rejected', async () => {
    for (const serial of ['02', '0a']) {
      const options = { ...verifierOptions, crl: crlSource(await buildCrl({ serials: [serial] })) };
      await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), options), 'SEALMESH_ERR_SNP_CERTIFICATE_REVOKED');
    }
  });

  test('stale or foreign CRL is rejected', async () => {
    const other = await keyPair(RSA_PSS_SHA384);
    const crls = [
      await buildCrl({ nextUpdate: new Date('2024-12-31T00:00:00Z') }),
      await buildCrl({ signingKey: other.privateKey }),
      await buildCrl({ issuer: 'CN=ARK-Genoa' }),
      Buffer.from('not a CRL'),
    ];
    for (const crl of crls) {
      const options = { ...verifierOptions, crl: crlSource(crl) };
      await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), options), 'SEALMESH_ERR_SNP_CRL_INVALID');
    }
  });

  test('CRL source failure is rejected', async () => {
    const options = { ...verifierOptions, crl: crlSource(new Error('KDS unreachable')) };
    await assertRejects(verify(evidenceOf(buildReport(milan.vekKeys), tableOf(milan, vcek)), options), 'SEALMESH_ERR_SNP_COLLATERAL_UNAVAILABLE');
  });

  test('revocation check works on DER certificates', async () => {
    const unrelated = await buildCrl({ serials: ['7f'] });
    assert.doesNotThrow(() => checkSnpRevocation(unrelated, { ark: milan.ark, ask: milan.ask, vcek }, VERIFY_AT));
    const crl = await buildCrl({ serials: ['02'] });
    assertThrowsCode(() => checkSnpRevocation(crl, { ark: milan.ark, ask: milan.ask }, VERIFY_AT), 'SEALMESH_ERR_SNP_CERTIFICATE_REVOKED');
    assertThrowsCode(() => checkSnpRevocation(crl, { ark: milan.ark, ask: milan.ask }, new Date('2024-11-30T00:00:00Z')), 'SEALMESH_ERR_SNP_CRL_INVALID');
  });

  test('ASK with an RSASSA-PSS public key verifies', async () => {
    const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048, hashAlgorithm: 'sha384', mgf1HashAlgorithm: 'sha384' });
    const askSpki = pss.publicKey.export({ format: 'der', type: 'spki' });
    const ask = await x509.X509CertificateGenerator.create({
      serialNumber: '0b',
      subject: 'CN=SEV-Milan',
      issuer: new x509.X509Certificate(milan.ark).subject,
      notBefore: new Date('2023-01-01T00:00:00Z'),
      notAfter: new Date('2030-01-01T00:00:00Z'),
      publicKey: new x509.PublicKey(askSpki),
      signingKey: milan.arkKeys.privateKey,
      signingAlgorithm: PSS_SALT_48,
      extensions: caExtensions(),
    });
    const chain: Chain = { ...milan, ask: new Uint8Array(ask.rawData) };
    assert.equal(new X509Certificate(chain.ask).publicKey.asymmetricKeyType, 'rsa-pss');
    const vekDer = resignWithPssKey(await buildVek(chain), pss.privateKey);
    const result = await verify(evidenceOf(buildReport(milan.vekKeys), tableOf(chain, vekDer)));
    assert.equal(result.snp?.productLine, 'Milan');
  });
});

/**
 * Re-signs a certificate with a node:crypto RSASSA-PSS key object, which WebCrypto cannot import:
 * the TBSCertificate stays as it is and only the signature value changes.
 */
function resignWithPssKey(der: Uint8Array, privateKey: KeyObject): Uint8Array {
  const parsed = AsnConvert.parse(der, Certificate);
  const tbs = AsnConvert.serialize(parsed.tbsCertificate);
  parsed.signatureValue = new Uint8Array(
    sign('sha384', new Uint8Array(tbs), { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }),
  ).buffer;
  return new Uint8Array(AsnConvert.serialize(parsed));
}
