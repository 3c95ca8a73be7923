import { SealmeshError } from '../errors/index.ts';
import type { DcapCollateral, DcapCollateralSource, SnpCollateralSource } from './collateral.ts';
import { DcapVerifier } from './dcap/index.ts';
import { DevEvidenceVerifier } from './dev.ts';
import { VerifierRegistry } from './index.ts';
import { SevSnpVerifier } from './sev-snp/index.ts';
import type { SnpCrlSource } from './sev-snp/crl.ts';

/** Collateral the hardware verifiers read, as the server's configuration provides it. */
export interface VerifierRegistryOptions {
  /** AMD VCEK and certificate chains for SEV-SNP reports without a certificate table. */
  snpCollateral?: SnpCollateralSource;
  /** AMD CRLs; without it every SEV-SNP report fails closed with SEALMESH_ERR_SNP_CRL_SOURCE_MISSING. */
  snpCrl?: SnpCrlSource;
  /** Intel TCB info, QE identity and CRLs for TDX and SGX quotes. */
  dcapCollateral?: DcapCollateralSource;
}

/**
 * Creates the registry of every verifier this server ships, one per provider. A provider without
 * a registered verifier fails closed at enrollment with SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED.
 *
 * The dev verifier is always registered, because accepting its evidence is decided per manifest
 * (`attestation.allowDevProvider`, only in a development manifest), not here.
 */
export function createVerifierRegistry(options: VerifierRegistryOptions = {}): VerifierRegistry {
  const registry = new VerifierRegistry();
  registry.register(new DevEvidenceVerifier());
  // SEV-SNP evidence from configfs-tsm carries its certificates, so it needs no certificate
  // source. The AMD CRL always comes from a source, and without one the verifier fails closed.
  registry.register(
    new SevSnpVerifier({
      ...(options.snpCollateral !== undefined ? { collateral: options.snpCollateral } : {}),
      ...(options.snpCrl !== undefined ? { crl: options.snpCrl } : {}),
    }),
  );
  const dcapCollateral = options.dcapCollateral ?? missingDcapCollateral;
  registry.register(new DcapVerifier({ teeType: 'tdx', collateral: dcapCollateral }));
  registry.register(new DcapVerifier({ teeType: 'sgx', collateral: dcapCollateral }));
  return registry;
}

/** The DCAP source of a server started without one: every quote fails closed with the flag to set. */
const missingDcapCollateral: DcapCollateralSource = {
  collateral(): Promise<DcapCollateral> {
    return Promise.reject(
      new SealmeshError(
        'SEALMESH_ERR_DCAP_COLLATERAL_UNAVAILABLE',
        'TDX and SGX quotes need Intel collateral, and this server has no source for it: start it with --collateral-dir or --pccs-url',
      ),
    );
  },
};
