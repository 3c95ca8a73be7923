import type { DcapCollateralSource, SnpCollateralSource } from './collateral.ts';
import { DevEvidenceVerifier } from './dev.ts';
import { VerifierRegistry } from './index.ts';

/** Collateral the hardware verifiers read, as the server's configuration provides it. */
export interface VerifierRegistryOptions {
  /** AMD VCEK and certificate chains for SEV-SNP reports without a certificate table. */
  snpCollateral?: SnpCollateralSource;
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
  // Hardware verifiers are registered here, one line each:
  //   registry.register(new SevSnpVerifier({ collateral: options.snpCollateral }));
  //   if (options.dcapCollateral !== undefined) {
  //     registry.register(new DcapVerifier({ teeType: 'tdx', collateral: options.dcapCollateral }));
  //     registry.register(new DcapVerifier({ teeType: 'sgx', collateral: options.dcapCollateral }));
  //   }
  // TODO: register SevSnpVerifier (src/attest/sev-snp/) and DcapVerifier (src/attest/dcap/) here once they exist.
  void options;
  return registry;
}
