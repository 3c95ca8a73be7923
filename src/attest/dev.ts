import { createPublicKey, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { SealmeshError } from '../errors/index.ts';
import type { AttestationResult, Evidence, EvidenceVerifier } from './index.ts';

/**
 * Software evidence for development: a per-process Ed25519 key signs the report data and a
 * measurement that the process merely claims. Nothing vouches for the key, so this evidence proves
 * nothing about the workload. The server accepts it only under a development manifest that sets
 * `attestation.allowDevProvider: true`, and marks every result insecure.
 *
 * `Evidence.data` is the base64 of a JSON object (the dev evidence document):
 * `{ format, publicKey, measurement, reportData, signature }`, where `publicKey` is the base64 DER
 * SubjectPublicKeyInfo of the Ed25519 key, `measurement` 48 bytes and `reportData` 64 bytes in
 * lowercase hex, and `signature` the base64 Ed25519 signature over `devEvidenceSigningInput`.
 */
export const DEV_EVIDENCE_FORMAT = 'sealmesh-dev-evidence-v1';

/** Provider name of the dev provider and its verifier. */
export const DEV_PROVIDER = 'dev';

const MAX_DEV_EVIDENCE_BYTES = 4096;

const devEvidenceSchema = z.strictObject({
  format: z.literal(DEV_EVIDENCE_FORMAT),
  publicKey: z.base64().max(256),
  measurement: z.string().regex(/^[0-9a-f]{96}$/, 'use 96 lowercase hex digits (48 bytes)'),
  reportData: z.string().regex(/^[0-9a-f]{128}$/, 'use 128 lowercase hex digits (64 bytes)'),
  signature: z.base64().max(128),
});

export type DevEvidenceDocument = z.infer<typeof devEvidenceSchema>;

/** Returns the bytes that the dev key signs: the format line, then the key, measurement and report data. */
export function devEvidenceSigningInput(document: Pick<DevEvidenceDocument, 'publicKey' | 'measurement' | 'reportData'>): Buffer {
  return Buffer.from(`${DEV_EVIDENCE_FORMAT}\n${document.publicKey}\n${document.measurement}\n${document.reportData}`, 'utf8');
}

function invalid(message: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID', `dev evidence is invalid: ${message}`);
}

/** Parses and checks the dev evidence document in `evidence.data`. */
function parseDevEvidence(evidence: Evidence): DevEvidenceDocument {
  if (evidence.data.length > MAX_DEV_EVIDENCE_BYTES) throw invalid(`it exceeds ${MAX_DEV_EVIDENCE_BYTES} characters`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(evidence.data, 'base64').toString('utf8'));
  } catch {
    throw invalid('data is not base64 of a JSON document');
  }
  const parsed = devEvidenceSchema.safeParse(json);
  if (!parsed.success) {
    throw invalid(parsed.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; '));
  }
  return parsed.data;
}

/**
 * Verifies dev evidence: the document's Ed25519 signature under its own key and its report data.
 * The result is always `insecure: true`, carries the claimed measurement as `measurement`, and has
 * no TCB status because no platform reported one.
 */
export class DevEvidenceVerifier implements EvidenceVerifier {
  readonly provider = DEV_PROVIDER;

  async verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    if (evidence.provider !== DEV_PROVIDER) throw invalid(`provider is ${JSON.stringify(evidence.provider)}, not ${DEV_PROVIDER}`);
    const document = parseDevEvidence(evidence);
    let key: KeyObject;
    try {
      key = createPublicKey({ key: Buffer.from(document.publicKey, 'base64'), format: 'der', type: 'spki' });
    } catch {
      throw invalid('publicKey is not a DER SubjectPublicKeyInfo');
    }
    if (key.asymmetricKeyType !== 'ed25519') throw invalid(`publicKey is an ${String(key.asymmetricKeyType)} key, not Ed25519`);
    const signature = Buffer.from(document.signature, 'base64');
    if (signature.length !== 64 || !verify(null, devEvidenceSigningInput(document), key, signature)) {
      throw invalid('the signature does not verify under the document\'s key');
    }
    const reportData = Buffer.from(document.reportData, 'hex');
    if (reportData.length !== expectedReportData.length || !timingSafeEqual(reportData, expectedReportData)) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH',
        'the report data of the dev evidence is not SHA-512 of this CSR\'s public key and the nonce, so the evidence was made for another key or nonce',
      );
    }
    return {
      provider: DEV_PROVIDER,
      insecure: true,
      verifiedAt: now.toISOString(),
      debug: false,
      reportData: document.reportData,
      measurements: { measurement: document.measurement },
    };
  }
}
