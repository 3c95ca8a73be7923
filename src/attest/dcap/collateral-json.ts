/**
 * Conversions from the serialized forms in which DCAP collateral travels: Intel PCS response bodies
 * (`{"tcbInfo":{…},"signature":"…"}`) and collateral bundles in JSON, as PCCS clients such as
 * dcap-qvl write them, with CRLs in hex.
 */
import { z } from 'zod';
import { SealmeshError } from '../../errors/index.ts';
import type { DcapCollateral } from '../collateral.ts';

export interface SignedDocumentText {
  /** The exact text of the signed value, as the signature covers it. */
  text: string;
  /** Signature in hex, r then s. */
  signature: string;
}

function malformed(message: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', message);
}

/** Returns the index just past the JSON string that starts at `start` (a double quote). */
function skipString(text: string, start: number): number {
  let index = start + 1;
  while (index < text.length) {
    const char = text[index];
    if (char === '\\') {
      index += 2;
    } else if (char === '"') {
      return index + 1;
    } else {
      index += 1;
    }
  }
  throw malformed('unterminated JSON string');
}

/** Returns the index just past the JSON value that starts at `start`. */
function skipValue(text: string, start: number): number {
  const first = text[start];
  if (first === '"') return skipString(text, start);
  if (first === '{' || first === '[') {
    let depth = 0;
    let index = start;
    while (index < text.length) {
      const char = text[index];
      if (char === '"') {
        index = skipString(text, index);
        continue;
      }
      if (char === '{' || char === '[') depth += 1;
      if (char === '}' || char === ']') depth -= 1;
      index += 1;
      if (depth === 0) return index;
    }
    throw malformed('unterminated JSON object or array');
  }
  let index = start;
  while (index < text.length && !/[,}\]\s]/.test(text[index]!)) index += 1;
  return index;
}

function skipWhitespace(text: string, start: number): number {
  let index = start;
  while (index < text.length && /\s/.test(text[index]!)) index += 1;
  return index;
}

/**
 * Extracts the signed value and its signature from an Intel PCS response body, such as the body
 * of `GET /tdx/certification/v4/tcb` (field `tcbInfo`) or `/qe/identity` (field `enclaveIdentity`).
 * The body is first parsed as JSON, so a malformed body is rejected before any text is sliced.
 */
export function extractSignedDocument(body: string, field: 'tcbInfo' | 'enclaveIdentity'): SignedDocumentText {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw malformed(`PCS response body for ${field} is not valid JSON`);
  }
  const shape = z.object({ signature: z.string(), [field]: z.record(z.string(), z.unknown()) }).safeParse(parsed);
  if (!shape.success) {
    throw malformed(`PCS response body must contain an object "${field}" and a string "signature"`);
  }
  let index = skipWhitespace(body, 0) + 1;
  while (index < body.length) {
    index = skipWhitespace(body, index);
    if (body[index] === '}') break;
    const keyEnd = skipString(body, index);
    const key = JSON.parse(body.slice(index, keyEnd)) as string;
    index = skipWhitespace(body, keyEnd) + 1;
    const valueStart = skipWhitespace(body, index);
    const valueEnd = skipValue(body, valueStart);
    if (key === field) {
      return { text: body.slice(valueStart, valueEnd), signature: shape.data.signature as string };
    }
    index = skipWhitespace(body, valueEnd);
    if (body[index] === ',') index += 1;
  }
  throw malformed(`PCS response body has no top-level "${field}"`);
}

const hexString = z.string().regex(/^([0-9a-fA-F]{2})+$/, 'expected hex');
const collateralJsonSchema = z.object({
  pckCrlIssuerChain: z.string(),
  rootCaCrl: hexString,
  pckCrl: hexString,
  tcbInfoIssuerChain: z.string(),
  tcbInfo: z.string(),
  tcbInfoSignature: hexString,
  qeIdentityIssuerChain: z.string(),
  qeIdentity: z.string(),
  qeIdentitySignature: hexString,
});

/**
 * Converts a JSON collateral bundle into `DcapCollateral`. Keys may be camelCase
 * (`tcbInfoIssuerChain`) or snake_case (`tcb_info_issuer_chain`); CRLs and signatures are hex,
 * TCB info and QE identity are the signed JSON texts.
 */
export function dcapCollateralFromJson(json: string | Record<string, unknown>): DcapCollateral {
  let value: unknown = json;
  if (typeof json === 'string') {
    try {
      value = JSON.parse(json);
    } catch {
      throw malformed('DCAP collateral is not valid JSON');
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw malformed('DCAP collateral must be a JSON object');
  }
  const camel: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(value)) {
    camel[key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase())] = entry;
  }
  const parsed = collateralJsonSchema.safeParse(camel);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw malformed(`DCAP collateral is invalid at ${issue?.path.join('.') || 'top level'}: ${issue?.message ?? 'schema mismatch'}`);
  }
  const data = parsed.data;
  return {
    tcbInfo: data.tcbInfo,
    tcbInfoSignature: data.tcbInfoSignature,
    tcbInfoIssuerChain: data.tcbInfoIssuerChain,
    qeIdentity: data.qeIdentity,
    qeIdentitySignature: data.qeIdentitySignature,
    qeIdentityIssuerChain: data.qeIdentityIssuerChain,
    pckCrl: Buffer.from(data.pckCrl, 'hex'),
    pckCrlIssuerChain: data.pckCrlIssuerChain,
    rootCaCrl: Buffer.from(data.rootCaCrl, 'hex'),
  };
}
