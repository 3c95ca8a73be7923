/**
 * Parser for the AMD SEV-SNP attestation report (SEV Secure Nested Paging Firmware ABI
 * Specification, publication 56860, table "ATTESTATION_REPORT Structure"). All multi-byte
 * integers are little-endian. The parser checks structure only; signatures and certificates are
 * checked by `SevSnpVerifier`.
 */
import { SealmeshError } from '../../errors/index.ts';

/** Size of every attestation report, version 2 and later. */
export const SNP_REPORT_SIZE = 0x4a0;

/** The signature covers bytes [0, SNP_SIGNED_REPORT_SIZE) of the report. */
export const SNP_SIGNED_REPORT_SIZE = 0x2a0;

/** Report versions this parser reads. Version 3 adds CPUID fields, version 5 the mitigation vectors. */
export const SUPPORTED_SNP_REPORT_VERSIONS: readonly number[] = [2, 3, 4, 5];

/** SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only algorithm the firmware defines. */
export const SNP_SIGNATURE_ALGORITHM_ECDSA_P384_SHA384 = 1;

/** AMD EPYC product lines whose SEV-SNP roots this verifier pins. */
export type SnpProductLine = 'Milan' | 'Genoa' | 'Turin';

export const SNP_PRODUCT_LINES: readonly SnpProductLine[] = ['Milan', 'Genoa', 'Turin'];

/**
 * Security version numbers of the firmware components in one TCB_VERSION. `fmc` exists on Turin
 * only, where the byte layout differs from Milan and Genoa.
 */
export interface SnpTcb {
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  fmc?: number;
}

/** Guest policy (the POLICY field), bit by bit. */
export interface SnpGuestPolicy {
  /** The raw 64-bit value. */
  value: bigint;
  abiMinor: number;
  abiMajor: number;
  /** Bit 16: the host may run the guest with SMT enabled. */
  smt: boolean;
  /** Bit 18: a migration agent may be associated with the guest. */
  migrationAgent: boolean;
  /** Bit 19: the host may debug the guest, so its memory is not confidential. */
  debug: boolean;
  /** Bit 20: the guest can be activated on one socket only. */
  singleSocket: boolean;
  /** Bit 21: CXL may be populated with devices or memory. */
  cxlAllowed: boolean;
  /** Bit 22: memory encryption must use AES-256-XTS. */
  memAes256Xts: boolean;
  /** Bit 23: running average power limit is disabled. */
  raplDisabled: boolean;
  /** Bit 24: ciphertext hiding must be enabled. */
  ciphertextHiding: boolean;
  /** Bit 25: guest page swapping is disabled. */
  pageSwapDisabled: boolean;
}

/** A firmware version as the report states it. */
export interface SnpFirmwareVersion {
  major: number;
  minor: number;
  build: number;
}

/** A parsed attestation report. Byte fields are copies, so the input buffer can be reused. */
export interface SnpReport {
  version: number;
  guestSvn: number;
  policy: SnpGuestPolicy;
  familyId: Uint8Array;
  imageId: Uint8Array;
  vmpl: number;
  signatureAlgorithm: number;
  /**
   * Product line named by the CPUID fields (versions 3 and later). It is undefined for version 2,
   * which carries no CPUID, so the certificate chain decides the product line.
   */
  productLine: SnpProductLine | undefined;
  /** CPUID family, model and stepping (versions 3 and later; zero in version 2). */
  cpuid: { family: number; model: number; stepping: number };
  currentTcb: SnpTcb;
  reportedTcb: SnpTcb;
  committedTcb: SnpTcb;
  launchTcb: SnpTcb;
  /** The raw 8-byte TCB_VERSION values, for callers that compare them byte for byte. */
  rawReportedTcb: Uint8Array;
  platformInfo: bigint;
  /** Bit 0 of the flags at 0x48: the author key digest is present. */
  authorKeyEnabled: boolean;
  /** Bit 1 of the flags at 0x48 (MASK_CHIP_KEY); the parser rejects reports with it set. */
  maskChipKey: boolean;
  /** Bits 4:2 of the flags at 0x48: 0 selects the VCEK, 1 the VLEK. */
  signingKey: 'vcek' | 'vlek';
  reportData: Uint8Array;
  measurement: Uint8Array;
  hostData: Uint8Array;
  idKeyDigest: Uint8Array;
  authorKeyDigest: Uint8Array;
  reportId: Uint8Array;
  reportIdMa: Uint8Array;
  chipId: Uint8Array;
  currentVersion: SnpFirmwareVersion;
  committedVersion: SnpFirmwareVersion;
  /** Mitigation vectors, present from version 5 on. */
  launchMitigationVector: bigint | undefined;
  currentMitigationVector: bigint | undefined;
  /** The signature as IEEE P1363 (big-endian R then S, 48 bytes each), ready for node:crypto. */
  signatureP1363: Uint8Array;
  /** The bytes the signature covers: [0, 0x2A0). */
  signedBytes: Uint8Array;
}

// Policy bit 17 is reserved and must be one. Bits 26 and above are reserved and must be zero: a
// policy with a bit this parser cannot interpret is rejected rather than half understood.
const POLICY_RESERVED_ONE_BIT = 1n << 17n;
const POLICY_KNOWN_BITS = (1n << 26n) - 1n;

// Flags at 0x48: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY, the rest reserved.
const FLAGS_KNOWN_BITS = 0x1f;

/** Size of R and S in the report's signature field; P-384 uses the low 48 bytes of each. */
const SIGNATURE_COMPONENT_SIZE = 72;
const P384_SCALAR_SIZE = 48;

/**
 * Parses an attestation report of version 2 or later.
 *
 * Throws SealmeshError with:
 * - SEALMESH_ERR_SNP_REPORT_MALFORMED: the length is not 0x4A0, VMPL is above 3, or a reserved
 *   field (0x4C, the flag bits above 4, the bytes after S) is not zero.
 * - SEALMESH_ERR_SNP_REPORT_VERSION_UNSUPPORTED: the version is not 2 to 5.
 * - SEALMESH_ERR_SNP_POLICY_INVALID: policy bit 17 is clear or a bit above 25 is set.
 * - SEALMESH_ERR_SNP_SIGNATURE_ALGORITHM_UNSUPPORTED: SIGNATURE_ALGO is not 1 (ECDSA P-384 SHA-384).
 * - SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED: MASK_CHIP_KEY is set, or SIGNING_KEY is neither 0
 *   (VCEK) nor 1 (VLEK).
 * - SEALMESH_ERR_SNP_PRODUCT_UNKNOWN: a version 3 or later report names a CPU family and model
 *   outside Milan, Genoa and Turin, so its TCB layout is unknown.
 * - SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID: R or S has nonzero bytes above the 48 that P-384 uses.
 */
export function parseSnpReport(bytes: Uint8Array): SnpReport {
  if (bytes.length !== SNP_REPORT_SIZE) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_REPORT_MALFORMED',
      `SEV-SNP report is ${bytes.length} bytes, expected ${SNP_REPORT_SIZE} (0x4A0): send the report exactly as the firmware returned it`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const copy = (offset: number, length: number): Uint8Array => bytes.slice(offset, offset + length);

  const version = view.getUint32(0x00, true);
  if (!SUPPORTED_SNP_REPORT_VERSIONS.includes(version)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_REPORT_VERSION_UNSUPPORTED',
      `SEV-SNP report version ${version} is not supported: this verifier reads versions ${SUPPORTED_SNP_REPORT_VERSIONS.join(', ')}`,
    );
  }

  const policy = parsePolicy(view.getBigUint64(0x08, true));

  const vmpl = view.getUint32(0x30, true);
  if (vmpl > 3) {
    throw new SealmeshError('SEALMESH_ERR_SNP_REPORT_MALFORMED', `SEV-SNP report VMPL is ${vmpl}, but VMPLs range from 0 to 3`);
  }

  const signatureAlgorithm = view.getUint32(0x34, true);
  if (signatureAlgorithm !== SNP_SIGNATURE_ALGORITHM_ECDSA_P384_SHA384) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_SIGNATURE_ALGORITHM_UNSUPPORTED',
      `SEV-SNP report signature algorithm is ${signatureAlgorithm}, but only 1 (ECDSA P-384 with SHA-384) is accepted`,
    );
  }

  const flags = view.getUint32(0x48, true);
  if ((flags & ~FLAGS_KNOWN_BITS) !== 0 || view.getUint32(0x4c, true) !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_REPORT_MALFORMED',
      `SEV-SNP report has reserved bits set in the flags at 0x48 (0x${flags.toString(16)}) or in the word at 0x4C`,
    );
  }
  if ((flags & 0x2) !== 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED',
      'SEV-SNP report has MASK_CHIP_KEY set, so the firmware did not sign it with the chip key: clear MASK_CHIP_KEY in the platform configuration',
    );
  }
  const signingKeyField = (flags >>> 2) & 0x7;
  if (signingKeyField !== 0 && signingKeyField !== 1) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED',
      `SEV-SNP report SIGNING_KEY is ${signingKeyField}, but only 0 (VCEK) and 1 (VLEK) sign reports that can be verified`,
    );
  }

  const cpuid = { family: bytes[0x188]!, model: bytes[0x189]!, stepping: bytes[0x18a]! };
  const productLine = version >= 3 ? productLineFromCpuid(cpuid.family, cpuid.model) : undefined;
  // Turin firmware produces version 3 or later reports, so version 2 uses the Milan and Genoa layout.
  const turinLayout = productLine === 'Turin';
  const tcbAt = (offset: number): SnpTcb => decodeTcb(bytes.subarray(offset, offset + 8), turinLayout);

  for (let offset = SNP_SIGNED_REPORT_SIZE + 2 * SIGNATURE_COMPONENT_SIZE; offset < SNP_REPORT_SIZE; offset += 1) {
    if (bytes[offset] !== 0) {
      throw new SealmeshError(
        'SEALMESH_ERR_SNP_REPORT_MALFORMED',
        `SEV-SNP report has a nonzero byte at 0x${offset.toString(16)} in the reserved area after the signature`,
      );
    }
  }

  return {
    version,
    guestSvn: view.getUint32(0x04, true),
    policy,
    familyId: copy(0x10, 16),
    imageId: copy(0x20, 16),
    vmpl,
    signatureAlgorithm,
    productLine,
    cpuid,
    currentTcb: tcbAt(0x38),
    reportedTcb: tcbAt(0x180),
    committedTcb: tcbAt(0x1e0),
    launchTcb: tcbAt(0x1f0),
    rawReportedTcb: copy(0x180, 8),
    platformInfo: view.getBigUint64(0x40, true),
    authorKeyEnabled: (flags & 0x1) !== 0,
    maskChipKey: (flags & 0x2) !== 0,
    signingKey: signingKeyField === 0 ? 'vcek' : 'vlek',
    reportData: copy(0x50, 64),
    measurement: copy(0x90, 48),
    hostData: copy(0xc0, 32),
    idKeyDigest: copy(0xe0, 48),
    authorKeyDigest: copy(0x110, 48),
    reportId: copy(0x140, 32),
    reportIdMa: copy(0x160, 32),
    chipId: copy(0x1a0, 64),
    currentVersion: { build: bytes[0x1e8]!, minor: bytes[0x1e9]!, major: bytes[0x1ea]! },
    committedVersion: { build: bytes[0x1ec]!, minor: bytes[0x1ed]!, major: bytes[0x1ee]! },
    launchMitigationVector: version >= 5 ? view.getBigUint64(0x1f8, true) : undefined,
    currentMitigationVector: version >= 5 ? view.getBigUint64(0x200, true) : undefined,
    signatureP1363: signatureToP1363(bytes),
    signedBytes: copy(0, SNP_SIGNED_REPORT_SIZE),
  };
}

function parsePolicy(value: bigint): SnpGuestPolicy {
  if ((value & POLICY_RESERVED_ONE_BIT) === 0n) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_POLICY_INVALID',
      `SEV-SNP guest policy 0x${value.toString(16)} has reserved bit 17 clear, but the firmware always sets it`,
    );
  }
  if ((value & ~POLICY_KNOWN_BITS) !== 0n) {
    throw new SealmeshError(
      'SEALMESH_ERR_SNP_POLICY_INVALID',
      `SEV-SNP guest policy 0x${value.toString(16)} sets bits above 25, which this verifier cannot interpret`,
    );
  }
  const bit = (index: bigint): boolean => (value & (1n << index)) !== 0n;
  return {
    value,
    abiMinor: Number(value & 0xffn),
    abiMajor: Number((value >> 8n) & 0xffn),
    smt: bit(16n),
    migrationAgent: bit(18n),
    debug: bit(19n),
    singleSocket: bit(20n),
    cxlAllowed: bit(21n),
    memAes256Xts: bit(22n),
    raplDisabled: bit(23n),
    ciphertextHiding: bit(24n),
    pageSwapDisabled: bit(25n),
  };
}

/**
 * Decodes one 8-byte TCB_VERSION. Milan and Genoa: bootloader, TEE, four reserved bytes, SNP,
 * microcode. Turin: FMC, bootloader, TEE, SNP, three reserved bytes, microcode.
 */
export function decodeTcb(raw: Uint8Array, turinLayout: boolean): SnpTcb {
  if (turinLayout) {
    return { fmc: raw[0]!, bootloader: raw[1]!, tee: raw[2]!, snp: raw[3]!, microcode: raw[7]! };
  }
  return { bootloader: raw[0]!, tee: raw[1]!, snp: raw[6]!, microcode: raw[7]! };
}

/**
 * Maps the report's CPUID family and model to a product line, with the ranges that virtee/sev's
 * `Generation::from_family_and_model` uses. Family 19h models 00h–0Fh are Milan, models 10h–1Fh
 * and A0h–AFh are Genoa (with Bergamo and Siena, which share Genoa's keys), and family 1Ah models
 * 00h–11h are Turin.
 */
export function productLineFromCpuid(family: number, model: number): SnpProductLine {
  if (family === 0x19 && model <= 0x0f) {
    return 'Milan';
  }
  if (family === 0x19 && ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf))) {
    return 'Genoa';
  }
  if (family === 0x1a && model <= 0x11) {
    return 'Turin';
  }
  throw new SealmeshError(
    'SEALMESH_ERR_SNP_PRODUCT_UNKNOWN',
    `SEV-SNP report names CPU family 0x${family.toString(16)} model 0x${model.toString(16)}, which is not Milan, Genoa or Turin`,
  );
}

// R then S, each 72 bytes little-endian, of which P-384 uses the low 48.
function signatureToP1363(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 * P384_SCALAR_SIZE);
  for (const [index, name] of [[0, 'R'], [1, 'S']] as const) {
    const start = SNP_SIGNED_REPORT_SIZE + index * SIGNATURE_COMPONENT_SIZE;
    for (let i = P384_SCALAR_SIZE; i < SIGNATURE_COMPONENT_SIZE; i += 1) {
      if (bytes[start + i] !== 0) {
        throw new SealmeshError(
          'SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID',
          `SEV-SNP report signature ${name} has nonzero bytes above the 48 that a P-384 value uses`,
        );
      }
    }
    const littleEndian = bytes.subarray(start, start + P384_SCALAR_SIZE);
    out.set(Uint8Array.from(littleEndian).reverse(), index * P384_SCALAR_SIZE);
  }
  return out;
}
