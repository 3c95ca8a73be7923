/**
 * Parsers for Intel DCAP quotes: SGX quote v3 and v4, TDX quote v4 and v5, all with an ECDSA P-256
 * attestation key. Field offsets follow Intel's "SGX ECDSA Quote Library API" (quote v3) and
 * "TDX DCAP Quoting Library API" (quote v4 and v5) specifications. Every integer is little-endian.
 * The parsers only decode and check lengths and type fields: no signature is verified here.
 */
import { SealmeshError } from '../../errors/index.ts';

export const QUOTE_HEADER_SIZE = 48;
export const SGX_REPORT_BODY_SIZE = 384;
export const TD_REPORT_BODY_1_0_SIZE = 584;
export const TD_REPORT_BODY_1_5_SIZE = 648;

/** Attestation key type 2: ECDSA on P-256 with SHA-256, the only type DCAP quotes use. */
export const ATTESTATION_KEY_TYPE_ECDSA_P256 = 2;
export const TEE_TYPE_SGX = 0x00;
export const TEE_TYPE_TDX = 0x81;
/** QE vendor id of Intel's quoting enclaves, the only QE whose identity Intel's collateral describes. */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';

/** Body types of quote v5. */
export const BODY_TYPE_SGX_ENCLAVE_REPORT = 1;
export const BODY_TYPE_TD_REPORT_1_0 = 2;
export const BODY_TYPE_TD_REPORT_1_5 = 3;

/** Certification data types used by DCAP quotes. */
export const CERTIFICATION_DATA_PCK_CHAIN = 5;
export const CERTIFICATION_DATA_QE_REPORT = 6;

/** Bit 1 of the SGX ATTRIBUTES flags: the enclave runs in debug mode. */
const SGX_ATTRIBUTE_DEBUG = 0x02n;
/** Bit 0 of TDX TD_ATTRIBUTES (TUD.DEBUG): the TD runs in debug mode. */
const TD_ATTRIBUTE_DEBUG = 0x01n;

export interface QuoteHeader {
  version: number;
  attestationKeyType: number;
  teeType: 'sgx' | 'tdx';
  /** QE and PCE security versions (quote v3); reserved and zero in quote v4 and v5. */
  qeSvn: number;
  pceSvn: number;
  /** QE vendor id, 16 bytes: 939a7233f79c4ca9940a0db3957f0607 for Intel's QE. */
  qeVendorId: Buffer;
  /** Custom data of the QE, 20 bytes; Intel's QE puts the platform's QE id in the first 16. */
  userData: Buffer;
}

/** SGX REPORTBODY (384 bytes): the enclave report in SGX quotes, and the QE report in every quote. */
export interface SgxReportBody {
  cpuSvn: Buffer;
  miscSelect: number;
  /** The raw MISCSELECT bytes, for masked comparison in their order in the report. */
  miscSelectBytes: Buffer;
  /** ATTRIBUTES (16 bytes): flags (8 bytes) followed by XFRM (8 bytes). */
  attributes: Buffer;
  debug: boolean;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
}

/** TDX TD report body: TDREPORT 1.0 (584 bytes), and for TDX 1.5 `teeTcbSvn2` and `mrServiceTd` added (648 bytes). */
export interface TdReportBody {
  teeTcbSvn: Buffer;
  mrSeam: Buffer;
  mrSignerSeam: Buffer;
  seamAttributes: Buffer;
  tdAttributes: Buffer;
  debug: boolean;
  xfam: Buffer;
  mrTd: Buffer;
  mrConfigId: Buffer;
  mrOwner: Buffer;
  mrOwnerConfig: Buffer;
  rtMr: [Buffer, Buffer, Buffer, Buffer];
  reportData: Buffer;
  teeTcbSvn2?: Buffer;
  mrServiceTd?: Buffer;
}

export type QuoteBody =
  | { type: 'sgx-enclave-report'; report: SgxReportBody }
  | { type: 'td-report-1.0' | 'td-report-1.5'; report: TdReportBody };

/** ECDSA signature data of the quote, with the QE report that binds the attestation key to the PCK. */
export interface QuoteSignatureData {
  /** ECDSA P-256 signature over the signed region, r then s, 32 bytes each, big-endian. */
  signature: Buffer;
  /** Attestation public key, x then y, 32 bytes each, big-endian. */
  attestationKey: Buffer;
  qeReport: SgxReportBody;
  /** The 384 bytes of the QE report exactly as signed by the PCK key. */
  qeReportRaw: Buffer;
  /** ECDSA P-256 signature over the QE report by the PCK key, r then s. */
  qeReportSignature: Buffer;
  qeAuthData: Buffer;
  /** PEM chain: PCK certificate, PCK Platform or Processor CA, Intel SGX Root CA. */
  pckChainPem: string;
}

export interface DcapQuote {
  header: QuoteHeader;
  body: QuoteBody;
  /** Bytes covered by the quote signature: header and body, and for v5 the body type and size in between. */
  signedRegion: Buffer;
  signatureData: QuoteSignatureData;
  /**
   * Bytes after the signature data. TDX quotes read from a fixed-size buffer end in zero padding,
   * so these are accepted; they are neither signed nor used.
   */
  trailingBytes: number;
}

/** A bounds-checked cursor over a quote; every read past the end raises a truncation error. */
class QuoteReader {
  readonly #bytes: Buffer;
  #offset = 0;

  constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  take(length: number, field: string): Buffer {
    if (length > this.remaining) {
      throw new SealmeshError(
        'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED',
        `DCAP quote is truncated: ${field} needs ${length} bytes at offset ${this.#offset} but ${this.remaining} remain`,
      );
    }
    const slice = this.#bytes.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return slice;
  }

  u16(field: string): number {
    return this.take(2, field).readUInt16LE(0);
  }

  u32(field: string): number {
    return this.take(4, field).readUInt32LE(0);
  }
}

/** Parses the 48-byte quote header and checks version, attestation key type and TEE type. */
export function parseQuoteHeader(bytes: Buffer): QuoteHeader {
  const reader = new QuoteReader(bytes);
  const header = reader.take(QUOTE_HEADER_SIZE, 'header');
  const version = header.readUInt16LE(0);
  const attestationKeyType = header.readUInt16LE(2);
  const teeTypeRaw = header.readUInt32LE(4);

  if (version !== 3 && version !== 4 && version !== 5) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_VERSION_UNSUPPORTED', `DCAP quote version ${version} is not supported; expected 3 (SGX), 4 or 5`);
  }
  if (attestationKeyType !== ATTESTATION_KEY_TYPE_ECDSA_P256) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_KEY_TYPE_UNSUPPORTED',
      `DCAP quote attestation key type ${attestationKeyType} is not supported; expected ${ATTESTATION_KEY_TYPE_ECDSA_P256} (ECDSA P-256)`,
    );
  }

  let teeType: 'sgx' | 'tdx';
  if (teeTypeRaw === TEE_TYPE_SGX) {
    teeType = 'sgx';
  } else if (teeTypeRaw === TEE_TYPE_TDX && version >= 4) {
    teeType = 'tdx';
  } else {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED',
      `DCAP quote v${version} has TEE type 0x${teeTypeRaw.toString(16)}; expected 0x00 (SGX) or, from v4, 0x81 (TDX)`,
    );
  }

  const qeVendorId = header.subarray(12, 28);
  if (qeVendorId.toString('hex') !== INTEL_QE_VENDOR_ID) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QE_VENDOR_UNSUPPORTED',
      `DCAP quote QE vendor id ${qeVendorId.toString('hex')} is not Intel's (${INTEL_QE_VENDOR_ID}), so no Intel QE identity applies to it`,
    );
  }
  return {
    version,
    attestationKeyType,
    teeType,
    qeSvn: header.readUInt16LE(8),
    pceSvn: header.readUInt16LE(10),
    qeVendorId,
    userData: header.subarray(28, 48),
  };
}

/** Parses an SGX REPORTBODY of exactly 384 bytes. */
export function parseSgxReportBody(bytes: Buffer): SgxReportBody {
  if (bytes.length !== SGX_REPORT_BODY_SIZE) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_TRUNCATED', `SGX report body is ${bytes.length} bytes; expected ${SGX_REPORT_BODY_SIZE}`);
  }
  const attributes = bytes.subarray(48, 64);
  return {
    cpuSvn: bytes.subarray(0, 16),
    miscSelect: bytes.readUInt32LE(16),
    miscSelectBytes: bytes.subarray(16, 20),
    attributes,
    debug: (attributes.readBigUInt64LE(0) & SGX_ATTRIBUTE_DEBUG) !== 0n,
    mrEnclave: bytes.subarray(64, 96),
    mrSigner: bytes.subarray(128, 160),
    isvProdId: bytes.readUInt16LE(256),
    isvSvn: bytes.readUInt16LE(258),
    reportData: bytes.subarray(320, 384),
  };
}

/** Parses a TD report body of 584 bytes (TDX 1.0) or 648 bytes (TDX 1.5). */
export function parseTdReportBody(bytes: Buffer): TdReportBody {
  if (bytes.length !== TD_REPORT_BODY_1_0_SIZE && bytes.length !== TD_REPORT_BODY_1_5_SIZE) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_TRUNCATED',
      `TD report body is ${bytes.length} bytes; expected ${TD_REPORT_BODY_1_0_SIZE} (TDX 1.0) or ${TD_REPORT_BODY_1_5_SIZE} (TDX 1.5)`,
    );
  }
  const tdAttributes = bytes.subarray(120, 128);
  const body: TdReportBody = {
    teeTcbSvn: bytes.subarray(0, 16),
    mrSeam: bytes.subarray(16, 64),
    mrSignerSeam: bytes.subarray(64, 112),
    seamAttributes: bytes.subarray(112, 120),
    tdAttributes,
    debug: (tdAttributes.readBigUInt64LE(0) & TD_ATTRIBUTE_DEBUG) !== 0n,
    xfam: bytes.subarray(128, 136),
    mrTd: bytes.subarray(136, 184),
    mrConfigId: bytes.subarray(184, 232),
    mrOwner: bytes.subarray(232, 280),
    mrOwnerConfig: bytes.subarray(280, 328),
    rtMr: [bytes.subarray(328, 376), bytes.subarray(376, 424), bytes.subarray(424, 472), bytes.subarray(472, 520)],
    reportData: bytes.subarray(520, 584),
  };
  if (bytes.length === TD_REPORT_BODY_1_5_SIZE) {
    body.teeTcbSvn2 = bytes.subarray(584, 600);
    body.mrServiceTd = bytes.subarray(600, 648);
  }
  return body;
}

function parseBody(reader: QuoteReader, header: QuoteHeader): QuoteBody {
  if (header.version === 5) {
    const bodyType = reader.u16('body type');
    const bodySize = reader.u32('body size');
    const expected =
      bodyType === BODY_TYPE_SGX_ENCLAVE_REPORT ? SGX_REPORT_BODY_SIZE
      : bodyType === BODY_TYPE_TD_REPORT_1_0 ? TD_REPORT_BODY_1_0_SIZE
      : bodyType === BODY_TYPE_TD_REPORT_1_5 ? TD_REPORT_BODY_1_5_SIZE
      : undefined;
    if (expected === undefined) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_BODY_TYPE_UNSUPPORTED', `DCAP quote v5 body type ${bodyType} is not supported; expected 1 (SGX), 2 (TD 1.0) or 3 (TD 1.5)`);
    }
    if ((bodyType === BODY_TYPE_SGX_ENCLAVE_REPORT) !== (header.teeType === 'sgx')) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_BODY_TYPE_UNSUPPORTED', `DCAP quote v5 body type ${bodyType} does not fit TEE type ${header.teeType}`);
    }
    if (bodySize !== expected) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_MALFORMED', `DCAP quote v5 body type ${bodyType} announces ${bodySize} bytes; expected ${expected}`);
    }
    const bytes = reader.take(bodySize, 'report body');
    if (bodyType === BODY_TYPE_SGX_ENCLAVE_REPORT) {
      return { type: 'sgx-enclave-report', report: parseSgxReportBody(bytes) };
    }
    return { type: bodyType === BODY_TYPE_TD_REPORT_1_5 ? 'td-report-1.5' : 'td-report-1.0', report: parseTdReportBody(bytes) };
  }
  if (header.teeType === 'sgx') {
    return { type: 'sgx-enclave-report', report: parseSgxReportBody(reader.take(SGX_REPORT_BODY_SIZE, 'SGX report body')) };
  }
  return { type: 'td-report-1.0', report: parseTdReportBody(reader.take(TD_REPORT_BODY_1_0_SIZE, 'TD report body')) };
}

/** Decodes the PEM text of certification data type 5; Intel's QE ends it with a NUL byte. */
function decodePckChain(data: Buffer): string {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end -= 1;
  const text = data.subarray(0, end).toString('latin1');
  const printable = [...data.subarray(0, end)].every((byte) => byte === 0x09 || byte === 0x0a || byte === 0x0d || (byte >= 0x20 && byte <= 0x7e));
  if (!printable || !text.includes('-----BEGIN CERTIFICATE-----')) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_MALFORMED', 'DCAP quote certification data type 5 is not a PEM certificate chain');
  }
  return text;
}

/**
 * Reads the QE report, its signature, the QE authentication data and the nested PCK chain: the
 * contents of certification data type 6 in quote v4 and v5, and the tail of signature data in v3.
 */
function parseQeReportSection(reader: QuoteReader): Omit<QuoteSignatureData, 'signature' | 'attestationKey'> {
  const qeReportRaw = reader.take(SGX_REPORT_BODY_SIZE, 'QE report');
  const qeReportSignature = reader.take(64, 'QE report signature');
  const authDataSize = reader.u16('QE authentication data size');
  const qeAuthData = reader.take(authDataSize, 'QE authentication data');
  const certificationType = reader.u16('certification data type');
  const certificationSize = reader.u32('certification data size');
  if (certificationType !== CERTIFICATION_DATA_PCK_CHAIN) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_CERTIFICATION_DATA_UNSUPPORTED',
      `DCAP quote certification data type ${certificationType} is not supported; expected ${CERTIFICATION_DATA_PCK_CHAIN} (PCK certificate chain)`,
    );
  }
  const pckChainPem = decodePckChain(reader.take(certificationSize, 'PCK certificate chain'));
  return { qeReport: parseSgxReportBody(qeReportRaw), qeReportRaw, qeReportSignature, qeAuthData, pckChainPem };
}

function parseSignatureData(reader: QuoteReader, version: number): QuoteSignatureData {
  const signature = reader.take(64, 'quote signature');
  const attestationKey = reader.take(64, 'attestation key');
  if (version === 3) {
    const section = parseQeReportSection(reader);
    return { signature, attestationKey, ...section };
  }
  const outerType = reader.u16('certification data type');
  const outerSize = reader.u32('certification data size');
  if (outerType !== CERTIFICATION_DATA_QE_REPORT) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_QUOTE_CERTIFICATION_DATA_UNSUPPORTED',
      `DCAP quote certification data type ${outerType} is not supported; expected ${CERTIFICATION_DATA_QE_REPORT} (QE report certification data)`,
    );
  }
  const inner = new QuoteReader(reader.take(outerSize, 'QE report certification data'));
  const section = parseQeReportSection(inner);
  if (inner.remaining !== 0) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_MALFORMED', `DCAP quote QE report certification data has ${inner.remaining} bytes after its PCK certificate chain`);
  }
  return { signature, attestationKey, ...section };
}

/**
 * Parses a DCAP quote. Rejects truncation, unknown versions, key types, TEE types, body types and
 * certification data types, and unparsed bytes inside the signature data.
 */
export function parseQuote(quote: Uint8Array): DcapQuote {
  const bytes = Buffer.from(quote.buffer, quote.byteOffset, quote.byteLength);
  const reader = new QuoteReader(bytes);
  const header = parseQuoteHeader(bytes);
  reader.take(QUOTE_HEADER_SIZE, 'header');
  const body = parseBody(reader, header);
  const signedRegion = bytes.subarray(0, reader.offset);
  const signatureDataSize = reader.u32('signature data size');
  const signatureBytes = reader.take(signatureDataSize, 'signature data');
  const signatureReader = new QuoteReader(signatureBytes);
  const signatureData = parseSignatureData(signatureReader, header.version);
  if (signatureReader.remaining !== 0) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_MALFORMED', `DCAP quote signature data has ${signatureReader.remaining} unparsed bytes`);
  }
  return { header, body, signedRegion, signatureData, trailingBytes: reader.remaining };
}
