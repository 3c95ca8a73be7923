/**
 * Intel's signed collateral documents: TCB info v3 and enclave (QE) identity v2, in the JSON form
 * of Intel's PCS API v4. The signature covers the exact UTF-8 bytes of the `tcbInfo` or
 * `enclaveIdentity` value as served, so the text is kept as received and parsed only after its
 * signature verified.
 */
import { verify as verifySignature, type X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { SealmeshError, type ErrorCode } from '../../errors/index.ts';
import type { TcbStatus } from '../index.ts';

const TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
] as const satisfies readonly TcbStatus[];

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`), `expected ${bytes} bytes of hex`);
const isoDate = z.string().refine((value) => /^\d{4}-\d{2}-\d{2}T/.test(value) && !Number.isNaN(Date.parse(value)), 'expected an ISO 8601 date');
const svn = z.number().int().min(0).max(255);
const advisoryIds = z.array(z.string().max(64)).max(256).optional();

const tcbComponent = z.object({ svn, category: z.string().optional(), type: z.string().optional() });

const tcbLevelSchema = z.object({
  tcb: z.object({
    sgxtcbcomponents: z.array(tcbComponent).length(16),
    pcesvn: z.number().int().min(0).max(0xffff),
    tdxtcbcomponents: z.array(tcbComponent).length(16).optional(),
  }),
  tcbDate: isoDate,
  tcbStatus: z.enum(TCB_STATUSES),
  advisoryIDs: advisoryIds,
});

const isvSvnLevelSchema = z.object({
  tcb: z.object({ isvsvn: z.number().int().min(0).max(0xffff) }),
  tcbDate: isoDate,
  tcbStatus: z.enum(TCB_STATUSES),
  advisoryIDs: advisoryIds,
});

const tdxModuleSchema = z.object({ mrsigner: hex(48), attributes: hex(8), attributesMask: hex(8) });

const tcbInfoSchema = z.object({
  id: z.enum(['SGX', 'TDX']),
  version: z.literal(3),
  issueDate: isoDate,
  nextUpdate: isoDate,
  fmspc: hex(6),
  pceId: hex(2),
  tcbType: z.literal(0),
  tcbEvaluationDataNumber: z.number().int().min(0),
  tdxModule: tdxModuleSchema.optional(),
  tdxModuleIdentities: z.array(tdxModuleSchema.extend({ id: z.string().max(16), tcbLevels: z.array(isvSvnLevelSchema).min(1) })).optional(),
  tcbLevels: z.array(tcbLevelSchema).min(1),
});

const qeIdentitySchema = z.object({
  id: z.enum(['QE', 'QVE', 'TD_QE']),
  version: z.literal(2),
  issueDate: isoDate,
  nextUpdate: isoDate,
  tcbEvaluationDataNumber: z.number().int().min(0),
  miscselect: hex(4),
  miscselectMask: hex(4),
  attributes: hex(16),
  attributesMask: hex(16),
  mrsigner: hex(32),
  isvprodid: z.number().int().min(0).max(0xffff),
  tcbLevels: z.array(isvSvnLevelSchema).min(1),
});

export type TcbInfo = z.infer<typeof tcbInfoSchema>;
export type TcbLevel = z.infer<typeof tcbLevelSchema>;
export type IsvSvnTcbLevel = z.infer<typeof isvSvnLevelSchema>;
export type QeIdentity = z.infer<typeof qeIdentitySchema>;

interface DocumentKind {
  name: string;
  invalid: ErrorCode;
  signatureInvalid: ErrorCode;
  notValidAtTime: ErrorCode;
}

const TCB_INFO: DocumentKind = {
  name: 'TCB info',
  invalid: 'SEALMESH_ERR_DCAP_TCB_INFO_INVALID',
  signatureInvalid: 'SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID',
  notValidAtTime: 'SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME',
};

const QE_IDENTITY: DocumentKind = {
  name: 'QE identity',
  invalid: 'SEALMESH_ERR_DCAP_QE_IDENTITY_INVALID',
  signatureInvalid: 'SEALMESH_ERR_DCAP_QE_IDENTITY_SIGNATURE_INVALID',
  notValidAtTime: 'SEALMESH_ERR_DCAP_QE_IDENTITY_NOT_VALID_AT_TIME',
};

/** Checks the raw r‖s ECDSA P-256 signature of a document with the TCB signing certificate's key. */
function verifyDocumentSignature(kind: DocumentKind, text: string, signatureHex: string, signer: X509Certificate): void {
  if (!/^[0-9a-fA-F]{128}$/.test(signatureHex)) {
    throw new SealmeshError(kind.signatureInvalid, `${kind.name} signature is not 64 bytes of hex (r then s)`);
  }
  const valid = verifySignature(
    'sha256',
    Buffer.from(text, 'utf8'),
    { key: signer.publicKey, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signatureHex, 'hex'),
  );
  if (!valid) {
    throw new SealmeshError(kind.signatureInvalid, `${kind.name} signature does not verify with the TCB signing certificate's key`);
  }
}

function parseDocument<T>(kind: DocumentKind, text: string, schema: z.ZodType<T>): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SealmeshError(kind.invalid, `${kind.name} is not valid JSON`, { cause: error });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SealmeshError(kind.invalid, `${kind.name} is invalid at ${issue?.path.join('.') || 'top level'}: ${issue?.message ?? 'schema mismatch'}`);
  }
  return parsed.data;
}

function checkValidity(kind: DocumentKind, issueDate: string, nextUpdate: string, now: Date): void {
  const issued = new Date(issueDate);
  const next = new Date(nextUpdate);
  if (now < issued || now > next) {
    throw new SealmeshError(
      kind.notValidAtTime,
      `${kind.name} was issued ${issued.toISOString()} with nextUpdate ${next.toISOString()}, which does not include the verification time ${now.toISOString()}`,
    );
  }
}

/** Verifies the signature of TCB info, then parses it (version 3) and checks issueDate ≤ now ≤ nextUpdate. */
export function verifyTcbInfo(text: string, signatureHex: string, signer: X509Certificate, now: Date): TcbInfo {
  verifyDocumentSignature(TCB_INFO, text, signatureHex, signer);
  const tcbInfo = parseDocument(TCB_INFO, text, tcbInfoSchema);
  checkValidity(TCB_INFO, tcbInfo.issueDate, tcbInfo.nextUpdate, now);
  return tcbInfo;
}

/** Verifies the signature of a QE identity, then parses it (version 2) and checks issueDate ≤ now ≤ nextUpdate. */
export function verifyQeIdentity(text: string, signatureHex: string, signer: X509Certificate, now: Date): QeIdentity {
  verifyDocumentSignature(QE_IDENTITY, text, signatureHex, signer);
  const identity = parseDocument(QE_IDENTITY, text, qeIdentitySchema);
  checkValidity(QE_IDENTITY, identity.issueDate, identity.nextUpdate, now);
  return identity;
}

/** Parses TCB info without checking its signature or dates, for inspection and tests. */
export function parseTcbInfo(text: string): TcbInfo {
  return parseDocument(TCB_INFO, text, tcbInfoSchema);
}

/** Parses a QE identity without checking its signature or dates, for inspection and tests. */
export function parseQeIdentity(text: string): QeIdentity {
  return parseDocument(QE_IDENTITY, text, qeIdentitySchema);
}
