/**
 * Collateral that verifiers need beyond the evidence itself: AMD's VCEK and certificate chains,
 * Intel's TCB info, QE identity and CRLs. A source fetches them from files or a caching service
 * and may keep them in the sealed store with their expiry; verifiers only see these interfaces.
 */

/** AMD certificates for one SEV-SNP report, DER-encoded. */
export interface SnpCertificates {
  /** VCEK or VLEK that signed the report. */
  vcek: Uint8Array;
  /** ASK (or ASVK for VLEK) and ARK of the product line. */
  ask: Uint8Array;
  ark: Uint8Array;
}

/** Request of an SEV-SNP verifier for certificates that the evidence does not carry. */
export interface SnpCollateralRequest {
  productLine: string;
  /** Chip id from the report, lowercase hex (64 bytes). */
  chipId: string;
  reportedTcb: { bootloader: number; tee: number; snp: number; microcode: number; fmc?: number };
  signingKey: 'vcek' | 'vlek';
}

export interface SnpCollateralSource {
  certificates(request: SnpCollateralRequest, now: Date): Promise<SnpCertificates>;
}

/**
 * Intel DCAP collateral for one FMSPC, in the form Intel's PCS and PCCS serve it: TCB info and QE
 * identity as the exact JSON text that was signed with the signature in hex, issuer chains in PEM,
 * CRLs in DER.
 */
export interface DcapCollateral {
  tcbInfo: string;
  tcbInfoSignature: string;
  tcbInfoIssuerChain: string;
  qeIdentity: string;
  qeIdentitySignature: string;
  qeIdentityIssuerChain: string;
  pckCrl: Uint8Array;
  pckCrlIssuerChain: string;
  rootCaCrl: Uint8Array;
}

export interface DcapCollateralRequest {
  teeType: 'sgx' | 'tdx';
  /** FMSPC from the PCK certificate, lowercase hex (6 bytes). */
  fmspc: string;
  /** `processor` or `platform`, from the PCK certificate's issuer. */
  pckCa: 'processor' | 'platform';
}

export interface DcapCollateralSource {
  collateral(request: DcapCollateralRequest, now: Date): Promise<DcapCollateral>;
}
