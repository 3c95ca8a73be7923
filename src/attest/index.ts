import { createHash } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';

/**
 * Evidence that a workload runs the code it claims, produced by an evidence provider in the proxy
 * and checked by a verifier in the server before an SVID is issued.
 */
export interface Evidence {
  /** Provider name, such as `sev-snp`, `tdx`, `sgx` or `dev`. */
  provider: string;
  /** Provider-specific evidence, base64-encoded. */
  data: string;
}

/** Produces evidence in the proxy. One implementation per TEE interface. */
export interface EvidenceProvider {
  readonly name: string;
  /** True for providers whose evidence proves nothing, such as software evidence for development. */
  readonly insecure: boolean;
  /** Produces evidence whose report data field equals `reportData` (64 bytes). */
  collect(reportData: Uint8Array): Promise<Evidence>;
}

/** The outcome of verifying a workload's evidence. */
export interface AttestationResult {
  provider: string;
  insecure: boolean;
  measurement?: string;
  tcbStatus?: string;
  verifiedAt: string;
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
