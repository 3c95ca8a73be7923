import { createHash } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';

/**
 * Evidence that a workload runs the code it claims, produced by an evidence provider in the proxy
 * and checked by a verifier in the server before an SVID is issued.
 */
export interface Evidence {
  /** Provider name, such as `sev-snp`, `tdx`, `sgx` or `dev`. */
  provider: string;
  /** The report (SEV-SNP) or quote (TDX, SGX), base64-encoded. */
  data: string;
  /**
   * Auxiliary data, base64-encoded: for SEV-SNP the certificate table that configfs-tsm returns in
   * `auxblob` (VCEK or VLEK, ASK, ARK); absent for other providers.
   */
  aux?: string;
}

/** Produces evidence in the proxy. One implementation per TEE interface. */
export interface EvidenceProvider {
  readonly name: string;
  /** True for providers whose evidence proves nothing, such as software evidence for development. */
  readonly insecure: boolean;
  /** Produces evidence whose report data field equals `reportData` (64 bytes). */
  collect(reportData: Uint8Array): Promise<Evidence>;
}

/** Intel's TCB status values, as TCB info and QE identity evaluation yields them. */
export type TcbStatus =
  | 'UpToDate'
  | 'SWHardeningNeeded'
  | 'ConfigurationNeeded'
  | 'ConfigurationAndSWHardeningNeeded'
  | 'OutOfDate'
  | 'OutOfDateConfigurationNeeded'
  | 'Revoked';

/**
 * The outcome of verifying a workload's evidence: what the hardware vouches for. A verifier
 * returns it only after every signature, chain, revocation and binding check passed; the
 * manifest's per-service policy is then evaluated against these claims.
 */
export interface AttestationResult {
  provider: string;
  insecure: boolean;
  /** The moment the verifier was given as "now", ISO 8601. */
  verifiedAt: string;
  /** True when the TEE runs with debugging enabled (SEV-SNP policy bit 19, TDX TD attribute DEBUG, SGX attribute DEBUG). */
  debug: boolean;
  /** Report data found in the evidence, lowercase hex (64 bytes). */
  reportData: string;
  /**
   * Measurements in lowercase hex, by name: SEV-SNP `measurement`, `hostData`; TDX `mrTd`,
   * `rtMr0` to `rtMr3`, `mrConfigId`, `mrOwner`; SGX `mrEnclave`, `mrSigner`.
   */
  measurements: Record<string, string>;
  /** TCB status (Intel DCAP), or for SEV-SNP `UpToDate` once the reported TCB matches the VCEK. */
  tcbStatus?: TcbStatus;
  /** Intel security advisory ids that apply to the platform's TCB level. */
  advisoryIds?: string[];
  /** SGX product id and security version of the enclave. */
  isvProdId?: number;
  isvSvn?: number;
  /** SEV-SNP details the manifest policy can constrain. */
  snp?: {
    vmpl: number;
    policy: { debug: boolean; smt: boolean; migrationAgent: boolean; singleSocket: boolean; abiMajor: number; abiMinor: number };
    /** Reported TCB components (bootloader, TEE, SNP, microcode, and FMC on Turin). */
    reportedTcb: { bootloader: number; tee: number; snp: number; microcode: number; fmc?: number };
    productLine: string;
    chipId: string;
    /** `vcek` or `vlek`. */
    signingKey: 'vcek' | 'vlek';
  };
  /** Intel DCAP details. */
  dcap?: { teeType: 'sgx' | 'tdx'; quoteVersion: number; fmspc: string; pceSvn: number; cpuSvn: string };
}

/** Checks evidence in the server. One implementation per provider. */
export interface EvidenceVerifier {
  readonly provider: string;
  /** Verifies `evidence` at time `now` and that its report data equals `expectedReportData`. */
  verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult>;
}

/**
 * Returns the 64-byte report data that binds evidence to one enrollment: SHA-512 over the CSR's
 * public key (SubjectPublicKeyInfo DER) followed by the server's nonce.
 */
export function enrollmentReportData(spkiDer: Uint8Array, nonce: Uint8Array): Buffer {
  return createHash('sha512').update(spkiDer).update(nonce).digest();
}

/** The set of verifiers a server accepts evidence from, by provider name. */
export class VerifierRegistry {
  readonly #verifiers = new Map<string, EvidenceVerifier>();

  register(verifier: EvidenceVerifier): void {
    this.#verifiers.set(verifier.provider, verifier);
  }

  /** Returns the verifier for `provider`; fails closed when the server has none for it. */
  get(provider: string): EvidenceVerifier {
    const verifier = this.#verifiers.get(provider);
    if (verifier === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED',
        `evidence from provider ${JSON.stringify(provider)} cannot be verified: this server has no verifier for it`,
      );
    }
    return verifier;
  }
}
