/**
 * The DCAP evidence verifier that the server registers for `tdx` or `sgx` evidence. It parses the
 * quote, requests the TCB info, QE identity and CRLs that match the PCK certificate from the
 * collateral source, and runs `verifyPreparedQuote`.
 */
import { channel } from 'node:diagnostics_channel';
import { SealmeshError, isSealmeshError } from '../../errors/index.ts';
import type { DcapCollateral, DcapCollateralSource } from '../collateral.ts';
import type { AttestationResult, Evidence, EvidenceVerifier } from '../index.ts';
import { prepareQuote, verifyPreparedQuote } from './verify.ts';

/** Largest quote accepted, in bytes; real quotes are about 5 KiB, mostly the PEM PCK chain. */
export const MAX_QUOTE_SIZE = 64 * 1024;

/**
 * Diagnostics channel on which every rejection is published as `{ provider, code, message }`. The
 * verifier does not log, so the program that embeds it subscribes here to log and count rejections.
 */
export const DCAP_REJECTION_CHANNEL = 'sealmesh:attest:dcap:rejection';
const rejections = channel(DCAP_REJECTION_CHANNEL);

export interface DcapRejectionEvent {
  provider: 'tdx' | 'sgx';
  code: string;
  message: string;
}

export interface DcapVerifierOptions {
  teeType: 'tdx' | 'sgx';
  collateral: DcapCollateralSource;
  /**
   * SHA-256 (hex) of the trusted root's SubjectPublicKeyInfo. Only tests set it, to trust a root
   * they generated; production uses the pinned Intel SGX Root CA key.
   */
  trustedRootSpkiSha256?: string;
}

function decodeEvidence(evidence: Evidence, provider: string): Buffer {
  if (evidence.provider !== provider) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED', `evidence from provider ${JSON.stringify(evidence.provider)} was given to the ${provider} verifier`);
  }
  if (typeof evidence.data !== 'string' || evidence.data.length > Math.ceil(MAX_QUOTE_SIZE / 3) * 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(evidence.data)) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QUOTE_MALFORMED', `${provider} evidence data must be a base64 quote of at most ${MAX_QUOTE_SIZE} bytes`);
  }
  return Buffer.from(evidence.data, 'base64');
}

export class DcapVerifier implements EvidenceVerifier {
  readonly provider: 'tdx' | 'sgx';
  readonly #collateral: DcapCollateralSource;
  readonly #trustedRootSpkiSha256: string | undefined;

  constructor(options: DcapVerifierOptions) {
    if (options.teeType !== 'tdx' && options.teeType !== 'sgx') {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `DCAP verifier TEE type must be "tdx" or "sgx", not ${JSON.stringify(options.teeType)}`);
    }
    if (options.trustedRootSpkiSha256 !== undefined && !/^[0-9a-f]{64}$/.test(options.trustedRootSpkiSha256)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'trustedRootSpkiSha256 must be 64 lowercase hex digits');
    }
    this.provider = options.teeType;
    this.#collateral = options.collateral;
    this.#trustedRootSpkiSha256 = options.trustedRootSpkiSha256;
  }

  async verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    try {
      return await this.#verify(evidence, expectedReportData, now);
    } catch (error) {
      const rejection = isSealmeshError(error)
        ? error
        : new SealmeshError('SEALMESH_ERR_INTERNAL', `${this.provider} quote verification failed unexpectedly`, { cause: error });
      if (rejections.hasSubscribers) {
        rejections.publish({ provider: this.provider, code: rejection.code, message: rejection.message } satisfies DcapRejectionEvent);
      }
      throw rejection;
    }
  }

  async #verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    const quote = decodeEvidence(evidence, this.provider);
    const options = { teeType: this.provider, expectedReportData, trustedRootSpkiSha256: this.#trustedRootSpkiSha256 };
    const prepared = prepareQuote(quote, now, options);

    let collateral: DcapCollateral;
    try {
      collateral = await this.#collateral.collateral({ teeType: this.provider, fmspc: prepared.pck.fmspc.toString('hex'), pckCa: prepared.pckCa }, now);
    } catch (error) {
      if (isSealmeshError(error)) throw error;
      throw new SealmeshError(
        'SEALMESH_ERR_DCAP_COLLATERAL_UNAVAILABLE',
        `DCAP collateral for FMSPC ${prepared.pck.fmspc.toString('hex')} (${prepared.pckCa} CA) could not be obtained: ${(error as Error).message}`,
        { cause: error },
      );
    }

    const verification = await verifyPreparedQuote(prepared, collateral, now, options);
    return verification.result;
  }
}
