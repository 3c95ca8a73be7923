import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { createVerifierRegistry } from '../src/attest/registry.ts';
import { SNP_CERT_TABLE_GUIDS } from '../src/attest/sev-snp/index.ts';
import { readVector } from './helpers/vectors.ts';

test('registry has every shipped verifier', () => {
  const registry = createVerifierRegistry();
  for (const provider of ['dev', 'sev-snp', 'tdx', 'sgx']) {
    assert.equal(registry.get(provider).provider, provider);
  }
  assert.throws(() => registry.get('tpm'), (error: unknown) => isSealmeshError(error) && error.code === 'SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED');
});

test('SEV-SNP without certificates fails closed', async () => {
  const report = readVector('sev-snp/gosevguest-milan-report.bin');
  const result = await createVerifierRegistry()
    .get('sev-snp')
    .verify({ provider: 'sev-snp', data: report.toString('base64') }, report.subarray(0x50, 0x90), new Date('2025-01-01T00:00:00Z'))
    .catch((error: unknown) => error);
  // The report carries no certificate table and the server has no collateral source, so the
  // verifier names the missing certificates rather than accepting.
  assert.ok(isSealmeshError(result), `expected a rejection, got ${JSON.stringify(result)}`);
  assert.equal(result.code, 'SEALMESH_ERR_SNP_CERTIFICATES_MISSING');
});

test('DCAP without collateral source fails closed', async () => {
  const quote = readVector('tdx/dcapqvl-tdx-quote.bin');
  const error = await createVerifierRegistry()
    .get('tdx')
    .verify({ provider: 'tdx', data: quote.toString('base64') }, new Uint8Array(64), new Date('2025-06-01T00:00:00Z'))
    .then(() => undefined, (rejection: unknown) => rejection);
  assert.ok(isSealmeshError(error));
  assert.equal(error.code, 'SEALMESH_ERR_DCAP_COLLATERAL_UNAVAILABLE');
  assert.match(error.message, /--collateral-dir or --pccs-url/);
});

test('SEV-SNP without a CRL source fails closed', async () => {
  const report = readVector('sev-snp/gosevguest-milan-report.bin');
  const vcek = readVector('sev-snp/gosevguest-milan-vcek.der');
  const pem = readVector('sev-snp/amd-ask_ark_milan.pem').toString('utf8');
  const [ask, ark] = (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((block) => new Uint8Array(new X509Certificate(block).raw));
  const table = certTable([
    { guid: SNP_CERT_TABLE_GUIDS.vcek, data: vcek },
    { guid: SNP_CERT_TABLE_GUIDS.ask, data: ask! },
    { guid: SNP_CERT_TABLE_GUIDS.ark, data: ark! },
  ]);
  const reportData = Buffer.concat([Buffer.from('0102030405', 'hex'), Buffer.alloc(59)]);
  // The evidence carries a complete, valid chain, so only the missing CRL source rejects it.
  const error = await createVerifierRegistry()
    .get('sev-snp')
    .verify({ provider: 'sev-snp', data: report.toString('base64'), aux: Buffer.from(table).toString('base64') }, reportData, new Date('2025-01-01T00:00:00Z'))
    .then(() => undefined, (rejection: unknown) => rejection);
  assert.ok(isSealmeshError(error), `expected a rejection, got ${JSON.stringify(error)}`);
  assert.equal(error.code, 'SEALMESH_ERR_SNP_CRL_SOURCE_MISSING');
  assert.match(error.message, /--collateral-dir/);
  assert.match(error.message, /--kds-url/);
});

/** The GHCB certificate table: 24-byte entries (GUID, offset, length), a zero entry, then the data. */
function certTable(entries: { guid: string; data: Uint8Array }[]): Buffer {
  const header = Buffer.alloc((entries.length + 1) * 24);
  let offset = header.length;
  entries.forEach((entry, index) => {
    Buffer.from(entry.guid.replaceAll('-', ''), 'hex').copy(header, index * 24);
    header.writeUInt32LE(offset, index * 24 + 16);
    header.writeUInt32LE(entry.data.length, index * 24 + 20);
    offset += entry.data.length;
  });
  return Buffer.concat([header, ...entries.map((entry) => Buffer.from(entry.data))]);
}
