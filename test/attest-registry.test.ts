import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSealmeshError } from '../src/errors/index.ts';
import { createVerifierRegistry } from '../src/attest/registry.ts';
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
