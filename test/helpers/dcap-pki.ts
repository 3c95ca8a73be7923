/**
 * A synthetic Intel DCAP PKI for tests. It contains a root CA, a PCK CA and a PCK certificate with
 * the SGX extension, a TCB signing certificate, both CRLs, and TCB info and QE identity signed by
 * the TCB signing key. Its SGX or TDX quotes carry a QE report, signed by the PCK key, that binds
 * the attestation key.
 * Every structure follows Intel's published formats, so the verifier checks it exactly as it
 * checks Intel's own. Only the root differs, and tests pass its key hash as the trust anchor.
 */
import { createHash, generateKeyPairSync, sign, webcrypto } from 'node:crypto';
import type { DcapCollateral } from '../../src/attest/collateral.ts';
import type { TcbStatus } from '../../src/attest/index.ts';
import { nodeCrypto, x509 } from '../../src/pki/x509.ts';

const ECDSA_KEY: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 24 * 3600 * 1000;

/** The verification time of every fixture unless a test moves it. */
export const FIXTURE_NOW = new Date('2026-01-01T00:00:00.000Z');
export const FIXTURE_FMSPC = '00906ed50000';
export const QE_MRSIGNER = '8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff';
export const QE_ATTRIBUTES = '11000000000000000000000000000000';
export const QE_ATTRIBUTES_MASK = 'fbffffffffffffff0000000000000000';

// DER encoding of the few types the SGX extension uses.
function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  let length: Buffer;
  if (body.length < 0x80) length = Buffer.from([body.length]);
  else if (body.length < 0x100) length = Buffer.from([0x81, body.length]);
  else length = Buffer.from([0x82, body.length >> 8, body.length & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

function derOid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const bytes = [arcs[0]! * 40 + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const groups = [arc & 0x7f];
    for (let rest = arc >> 7; rest > 0; rest >>= 7) groups.unshift((rest & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return tlv(0x06, Buffer.from(bytes));
}

function derUnsigned(tag: number, value: number): Buffer {
  const bytes = [value & 0xff];
  for (let rest = value >> 8; rest > 0; rest >>= 8) bytes.unshift(rest & 0xff);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(tag, Buffer.from(bytes));
}

const SGX = '1.2.840.113741.1.13.1';
const pair = (oid: string, value: Buffer): Buffer => tlv(0x30, derOid(oid), value);

/** Encodes the SGX extension value: PPID, TCB (16 SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type. */
export function sgxExtensionValue(options: { componentSvns: number[]; pceSvn: number; fmspc: string; pceId?: string; omitFmspc?: boolean }): Buffer {
  const tcb = tlv(
    0x30,
    ...options.componentSvns.map((svn, index) => pair(`${SGX}.2.${index + 1}`, derUnsigned(0x02, svn))),
    pair(`${SGX}.2.17`, derUnsigned(0x02, options.pceSvn)),
    pair(`${SGX}.2.18`, tlv(0x04, Buffer.from(options.componentSvns))),
  );
  const entries = [
    pair(`${SGX}.1`, tlv(0x04, Buffer.alloc(16, 0x5a))),
    pair(`${SGX}.2`, tcb),
    pair(`${SGX}.3`, tlv(0x04, Buffer.from(options.pceId ?? '0000', 'hex'))),
    options.omitFmspc === true ? undefined : pair(`${SGX}.4`, tlv(0x04, Buffer.from(options.fmspc, 'hex'))),
    pair(`${SGX}.5`, derUnsigned(0x0a, 0)),
  ].filter((entry): entry is Buffer => entry !== undefined);
  return tlv(0x30, ...entries);
}

interface Authority {
  certificate: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return nodeCrypto.subtle.generateKey(ECDSA_KEY, true, ['sign', 'verify']);
}

async function issue(options: {
  subject: string;
  serial: string;
  issuer?: Authority;
  ca: boolean;
  notBefore: Date;
  notAfter: Date;
  extensions?: x509.Extension[];
}): Promise<Authority> {
  const keys = await generateKeys();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(options.ca, undefined, true),
    new x509.KeyUsagesExtension(options.ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, nodeCrypto),
    ...(options.extensions ?? []),
  ];
  const issuer = options.issuer;
  if (issuer !== undefined) {
    const keyId = issuer.certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
    extensions.push(new x509.AuthorityKeyIdentifierExtension(keyId));
  }
  const certificate = await x509.X509CertificateGenerator.create(
    {
      serialNumber: options.serial,
      subject: options.subject,
      issuer: issuer === undefined ? options.subject : issuer.certificate.subjectName,
      notBefore: options.notBefore,
      notAfter: options.notAfter,
      signingAlgorithm: SIGNING_ALGORITHM,
      publicKey: keys.publicKey,
      signingKey: issuer === undefined ? keys.privateKey : issuer.keys.privateKey,
      extensions,
    },
    nodeCrypto,
  );
  return { certificate, keys };
}

async function signRaw(key: webcrypto.CryptoKey, data: Buffer): Promise<Buffer> {
  return Buffer.from(await nodeCrypto.subtle.sign(SIGNING_ALGORITHM, key, data));
}

async function createCrl(issuer: Authority, thisUpdate: Date, nextUpdate: Date, revokedSerials: string[]): Promise<Buffer> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.certificate.subjectName,
      thisUpdate,
      nextUpdate,
      entries: revokedSerials.map((serialNumber) => ({ serialNumber, revocationDate: thisUpdate })),
      signingAlgorithm: SIGNING_ALGORITHM,
      signingKey: issuer.keys.privateKey,
    },
    nodeCrypto,
  );
  return Buffer.from(crl.rawData);
}

export interface PlatformLevel {
  sgx: number[];
  pcesvn: number;
  /** TDX component SVNs; required for TDX TCB info. */
  tdx?: number[];
  status: TcbStatus;
  advisoryIds?: string[];
}

export interface IsvSvnLevel {
  isvsvn: number;
  status: TcbStatus;
  advisoryIds?: string[];
}

export interface DcapFixtureOptions {
  teeType: 'sgx' | 'tdx';
  /** 3 for SGX by default, 4 for TDX; 5 gives a TDX quote with body type 2. */
  quoteVersion?: 3 | 4 | 5;
  debug?: boolean;
  reportData?: Buffer;
  pckComponentSvns?: number[];
  pckPceSvn?: number;
  /** TDX TEE_TCB_SVN: [module ISVSVN, module major version, …]. */
  teeTcbSvn?: number[];
  tcbLevels?: PlatformLevel[];
  moduleLevels?: IsvSvnLevel[];
  qeIsvSvn?: number;
  qeLevels?: IsvSvnLevel[];
  /** Fields replaced in the TCB info JSON, such as `fmspc` or `nextUpdate`. */
  tcbInfoFields?: Record<string, unknown>;
  /** Fields replaced in the QE identity JSON, such as `mrsigner`. */
  qeIdentityFields?: Record<string, unknown>;
  pckNotBefore?: Date;
  pckNotAfter?: Date;
  revokePck?: boolean;
  revokePckCa?: boolean;
  revokeTcbSigning?: boolean;
  rootCrlNextUpdate?: Date;
  omitFmspcExtension?: boolean;
}

export interface DcapFixture {
  quote: Buffer;
  collateral: DcapCollateral;
  rootSpkiSha256: string;
  now: Date;
  reportData: Buffer;
  pckSerial: string;
}

export const DEFAULT_SGX_SVNS = [4, 4, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
export const DEFAULT_TDX_SVNS = [3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const DEFAULT_PCE_SVN = 13;

function defaultLevels(teeType: 'sgx' | 'tdx'): PlatformLevel[] {
  const tdx = teeType === 'tdx';
  return [
    { sgx: DEFAULT_SGX_SVNS, pcesvn: DEFAULT_PCE_SVN, tdx: tdx ? DEFAULT_TDX_SVNS : undefined, status: 'UpToDate' },
    {
      sgx: [2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
      pcesvn: 10,
      tdx: tdx ? [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] : undefined,
      status: 'OutOfDate',
      advisoryIds: ['INTEL-SA-00001'],
    },
    { sgx: Array<number>(16).fill(0), pcesvn: 0, tdx: tdx ? Array<number>(16).fill(0) : undefined, status: 'Revoked', advisoryIds: ['INTEL-SA-00002'] },
  ];
}

function isvLevelsJson(levels: IsvSvnLevel[]): unknown[] {
  return levels.map((level) => ({
    tcb: { isvsvn: level.isvsvn },
    tcbDate: '2025-06-01T00:00:00Z',
    tcbStatus: level.status,
    ...(level.advisoryIds === undefined ? {} : { advisoryIDs: level.advisoryIds }),
  }));
}

function tcbInfoJson(options: DcapFixtureOptions, issueDate: Date, nextUpdate: Date): string {
  const levels = options.tcbLevels ?? defaultLevels(options.teeType);
  const info: Record<string, unknown> = {
    id: options.teeType === 'tdx' ? 'TDX' : 'SGX',
    version: 3,
    issueDate: issueDate.toISOString().replace('.000Z', 'Z'),
    nextUpdate: nextUpdate.toISOString().replace('.000Z', 'Z'),
    fmspc: FIXTURE_FMSPC.toUpperCase(),
    pceId: '0000',
    tcbType: 0,
    tcbEvaluationDataNumber: 17,
  };
  if (options.teeType === 'tdx') {
    info.tdxModule = { mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' };
    info.tdxModuleIdentities = [
      {
        id: 'TDX_01',
        mrsigner: '00'.repeat(48),
        attributes: '0000000000000000',
        attributesMask: 'FFFFFFFFFFFFFFFF',
        tcbLevels: isvLevelsJson(options.moduleLevels ?? [{ isvsvn: 4, status: 'UpToDate' }, { isvsvn: 2, status: 'OutOfDate', advisoryIds: ['INTEL-SA-00003'] }]),
      },
    ];
  }
  info.tcbLevels = levels.map((level) => ({
    tcb: {
      sgxtcbcomponents: level.sgx.map((svn) => ({ svn })),
      pcesvn: level.pcesvn,
      ...(level.tdx === undefined ? {} : { tdxtcbcomponents: level.tdx.map((svn) => ({ svn })) }),
    },
    tcbDate: '2025-06-01T00:00:00Z',
    tcbStatus: level.status,
    ...(level.advisoryIds === undefined ? {} : { advisoryIDs: level.advisoryIds }),
  }));
  Object.assign(info, options.tcbInfoFields);
  return JSON.stringify(info);
}

function qeIdentityJson(options: DcapFixtureOptions, issueDate: Date, nextUpdate: Date): string {
  const identity: Record<string, unknown> = {
    id: options.teeType === 'tdx' ? 'TD_QE' : 'QE',
    version: 2,
    issueDate: issueDate.toISOString().replace('.000Z', 'Z'),
    nextUpdate: nextUpdate.toISOString().replace('.000Z', 'Z'),
    tcbEvaluationDataNumber: 17,
    miscselect: '00000000',
    miscselectMask: 'FFFFFFFF',
    attributes: QE_ATTRIBUTES.toUpperCase(),
    attributesMask: QE_ATTRIBUTES_MASK.toUpperCase(),
    mrsigner: QE_MRSIGNER.toUpperCase(),
    isvprodid: options.teeType === 'tdx' ? 2 : 1,
    tcbLevels: isvLevelsJson(options.qeLevels ?? [{ isvsvn: 8, status: 'UpToDate' }, { isvsvn: 5, status: 'OutOfDate', advisoryIds: ['INTEL-SA-00004'] }]),
  };
  Object.assign(identity, options.qeIdentityFields);
  return JSON.stringify(identity);
}

/** Builds an SGX REPORTBODY (384 bytes). */
function sgxReportBody(fields: { attributes: Buffer; mrEnclave: Buffer; mrSigner: Buffer; isvProdId: number; isvSvn: number; reportData: Buffer; cpuSvn?: Buffer }): Buffer {
  const body = Buffer.alloc(384);
  (fields.cpuSvn ?? Buffer.alloc(16)).copy(body, 0);
  fields.attributes.copy(body, 48);
  fields.mrEnclave.copy(body, 64);
  fields.mrSigner.copy(body, 128);
  body.writeUInt16LE(fields.isvProdId, 256);
  body.writeUInt16LE(fields.isvSvn, 258);
  fields.reportData.copy(body, 320);
  return body;
}

/** Builds a TD report body 1.0 (584 bytes) with distinct, recognizable measurements. */
function tdReportBody(teeTcbSvn: number[], debug: boolean, reportData: Buffer): Buffer {
  const body = Buffer.alloc(584);
  Buffer.from(teeTcbSvn).copy(body, 0);
  Buffer.alloc(48, 0x11).copy(body, 16); // MRSEAM
  body.writeBigUInt64LE(debug ? 1n : 0n, 120); // TD_ATTRIBUTES, bit 0 DEBUG
  Buffer.alloc(48, 0xd1).copy(body, 136); // MRTD
  for (let index = 0; index < 4; index += 1) Buffer.alloc(48, 0xa0 + index).copy(body, 328 + index * 48); // RTMR0..3
  reportData.copy(body, 520);
  return body;
}

function u16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeUInt16LE(value);
  return buffer;
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32LE(value);
  return buffer;
}

/** Builds a complete fixture: PKI, collateral and a quote verifying at `FIXTURE_NOW`. */
export async function buildDcapFixture(options: DcapFixtureOptions): Promise<DcapFixture> {
  const now = FIXTURE_NOW;
  const longAgo = new Date(now.getTime() - 365 * DAY_MS);
  const farAhead = new Date(now.getTime() + 5 * 365 * DAY_MS);
  const root = await issue({ subject: 'CN=Intel SGX Root CA, O=sealmesh test', serial: '01', ca: true, notBefore: longAgo, notAfter: farAhead });
  const pckCa = await issue({ subject: 'CN=Intel SGX PCK Platform CA, O=sealmesh test', serial: '02', issuer: root, ca: true, notBefore: longAgo, notAfter: farAhead });
  const tcbSigning = await issue({ subject: 'CN=Intel SGX TCB Signing, O=sealmesh test', serial: '03', issuer: root, ca: false, notBefore: longAgo, notAfter: farAhead });
  const pckSerial = '4a11';
  const pckComponentSvns = options.pckComponentSvns ?? DEFAULT_SGX_SVNS;
  const pck = await issue({
    subject: 'CN=Intel SGX PCK Certificate, O=sealmesh test',
    serial: pckSerial,
    issuer: pckCa,
    ca: false,
    notBefore: options.pckNotBefore ?? longAgo,
    notAfter: options.pckNotAfter ?? farAhead,
    extensions: [
      new x509.Extension(
        SGX,
        false,
        sgxExtensionValue({ componentSvns: pckComponentSvns, pceSvn: options.pckPceSvn ?? DEFAULT_PCE_SVN, fmspc: FIXTURE_FMSPC, omitFmspc: options.omitFmspcExtension }),
      ),
    ],
  });

  const issued = new Date(now.getTime() - DAY_MS);
  const nextUpdate = new Date(now.getTime() + 30 * DAY_MS);
  const rootRevoked = [...(options.revokePckCa === true ? ['02'] : []), ...(options.revokeTcbSigning === true ? ['03'] : [])];
  const rootCrl = await createCrl(root, issued, options.rootCrlNextUpdate ?? nextUpdate, rootRevoked);
  const pckCrl = await createCrl(pckCa, issued, nextUpdate, options.revokePck === true ? ['1234', pckSerial] : ['1234']);
  const tcbInfo = tcbInfoJson(options, issued, nextUpdate);
  const qeIdentity = qeIdentityJson(options, issued, nextUpdate);

  // The quote: attestation key, QE report binding it, body and signature.
  const attestation = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = attestation.publicKey.export({ format: 'jwk' });
  const attestationKey = Buffer.concat([Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  const qeAuthData = Buffer.alloc(32, 0x42);
  const qeReport = sgxReportBody({
    attributes: Buffer.from(QE_ATTRIBUTES, 'hex'),
    mrEnclave: Buffer.alloc(32, 0xee),
    mrSigner: Buffer.from(QE_MRSIGNER, 'hex'),
    isvProdId: options.teeType === 'tdx' ? 2 : 1,
    isvSvn: options.qeIsvSvn ?? 8,
    reportData: Buffer.concat([createHash('sha256').update(attestationKey).update(qeAuthData).digest(), Buffer.alloc(32)]),
  });
  const qeReportSignature = await signRaw(pck.keys.privateKey, qeReport);
  const pem = Buffer.from(`${pck.certificate.toString('pem')}\n${pckCa.certificate.toString('pem')}\n${root.certificate.toString('pem')}\n\0`, 'latin1');

  const reportData = options.reportData ?? createHash('sha512').update('sealmesh dcap fixture').digest();
  const version = options.quoteVersion ?? (options.teeType === 'tdx' ? 4 : 3);
  const header = Buffer.concat([
    u16(version),
    u16(2),
    u32(options.teeType === 'tdx' ? 0x81 : 0),
    u16(0),
    u16(0),
    Buffer.from('939a7233f79c4ca9940a0db3957f0607', 'hex'),
    Buffer.alloc(20),
  ]);
  let body: Buffer;
  if (options.teeType === 'sgx') {
    const flags = Buffer.alloc(16);
    flags.writeBigUInt64LE(options.debug === true ? 0x07n : 0x05n, 0);
    body = sgxReportBody({ attributes: flags, mrEnclave: Buffer.alloc(32, 0xe1), mrSigner: Buffer.alloc(32, 0x51), isvProdId: 7, isvSvn: 3, reportData });
  } else {
    body = tdReportBody(options.teeTcbSvn ?? [4, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], options.debug === true, reportData);
  }
  const signed = version === 5 ? Buffer.concat([header, u16(2), u32(body.length), body]) : Buffer.concat([header, body]);
  const signature = sign('sha256', signed, { key: attestation.privateKey, dsaEncoding: 'ieee-p1363' });

  const pckChainData = Buffer.concat([u16(5), u32(pem.length), pem]);
  const qeSection = Buffer.concat([qeReport, qeReportSignature, u16(qeAuthData.length), qeAuthData, pckChainData]);
  const signatureData =
    version === 3
      ? Buffer.concat([signature, attestationKey, qeSection])
      : Buffer.concat([signature, attestationKey, u16(6), u32(qeSection.length), qeSection]);
  const quote = Buffer.concat([signed, u32(signatureData.length), signatureData]);

  const rootSpki = Buffer.from(root.certificate.publicKey.rawData);
  const collateral: DcapCollateral = {
    tcbInfo,
    tcbInfoSignature: (await signRaw(tcbSigning.keys.privateKey, Buffer.from(tcbInfo))).toString('hex'),
    tcbInfoIssuerChain: `${tcbSigning.certificate.toString('pem')}\n${root.certificate.toString('pem')}\n`,
    qeIdentity,
    qeIdentitySignature: (await signRaw(tcbSigning.keys.privateKey, Buffer.from(qeIdentity))).toString('hex'),
    qeIdentityIssuerChain: `${tcbSigning.certificate.toString('pem')}\n${root.certificate.toString('pem')}\n`,
    pckCrl,
    pckCrlIssuerChain: `${pckCa.certificate.toString('pem')}\n${root.certificate.toString('pem')}\n`,
    rootCaCrl: rootCrl,
  };
  return { quote, collateral, rootSpkiSha256: createHash('sha256').update(rootSpki).digest('hex'), now, reportData, pckSerial };
}
