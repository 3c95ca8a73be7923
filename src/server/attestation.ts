import { SealmeshError, isSealmeshError, type ErrorCode } from '../errors/index.ts';
import { enrollmentReportData, type AttestationResult, type Evidence, type VerifierRegistry } from '../attest/index.ts';
import { AttestationPolicyError, evaluateAttestationPolicy, measurementDigest } from '../attest/policy.ts';
import type { EffectivePosture, ServiceAttestationPolicy } from '../manifest/index.ts';
import { formatServiceRef, formatSpiffeId, parseServiceRef, type SpiffeId } from '../spiffe/index.ts';
import type { AuditActor, AuditLog } from '../audit/index.ts';
import type { Logger } from '../log/index.ts';
import type { ServerMetrics } from './metrics.ts';
import type { NonceStore } from './nonces.ts';

/** The catalog record of the evidence an instance last enrolled or renewed with. */
export interface InstanceAttestation {
  provider: string;
  /** True for evidence that proves nothing, such as the dev provider's. */
  insecure: boolean;
  /** SHA-256 over the reported measurements (see `measurementDigest`), lowercase hex. */
  measurementDigest: string;
  measurements: Record<string, string>;
  tcbStatus?: string;
  debug: boolean;
  verifiedAt: string;
  /** `enforced` when the manifest's policy for the service was evaluated; `unpinned` when the manifest has none. */
  policy: 'enforced' | 'unpinned';
}

export interface AttestationRequest {
  kind: 'enroll' | 'renew';
  identity: SpiffeId;
  /** DER SubjectPublicKeyInfo of the validated CSR. */
  spkiDer: Uint8Array;
  evidence?: Evidence;
  nonce?: string;
  /** The caller the nonce must have been issued to. */
  holder: string;
  actor: AuditActor;
  now: Date;
}

interface AttestationSettings {
  required: boolean;
  /** True only under a development manifest that sets `attestation.allowDevProvider`. */
  allowDevProvider: boolean;
  policy: ServiceAttestationPolicy | undefined;
}

const KNOWN_PROVIDERS = new Set(['sev-snp', 'tdx', 'sgx', 'dev']);

/** Returns the provider as a metric label; a name the request made up becomes `other`, so labels stay few. */
function providerLabel(provider: string | undefined): string {
  if (provider === undefined) return 'none';
  return KNOWN_PROVIDERS.has(provider) ? provider : 'other';
}

/** Returns the manifest's attestation settings for `identity`, with the built-in defaults when no manifest is applied. */
function settingsFor(posture: EffectivePosture | undefined, identity: SpiffeId): AttestationSettings {
  if (posture === undefined) return { required: false, allowDevProvider: false, policy: undefined };
  const wanted = formatServiceRef(identity);
  const entry = Object.entries(posture.attestation.services).find(([name]) => formatServiceRef(parseServiceRef(name)) === wanted);
  // The schema already rejects allowDevProvider outside development; the gate does not rely on it.
  const allowDevProvider = posture.attestation.allowDevProvider && posture.environment === 'development';
  return { required: posture.attestation.required, allowDevProvider, policy: entry?.[1] };
}

/**
 * The attestation gate of enrollment and renewal: the one place that decides whether evidence is
 * acceptable. It runs after the CSR is validated and before anything is issued.
 */
export class AttestationGate {
  readonly #verifiers: VerifierRegistry;
  readonly #nonces: NonceStore;
  readonly #posture: () => Promise<EffectivePosture | undefined>;
  readonly #metrics: ServerMetrics;
  readonly #audit: AuditLog;
  readonly #log: Logger;

  constructor(options: {
    verifiers: VerifierRegistry;
    nonces: NonceStore;
    posture: () => Promise<EffectivePosture | undefined>;
    metrics: ServerMetrics;
    audit: AuditLog;
    log: Logger;
  }) {
    this.#verifiers = options.verifiers;
    this.#nonces = options.nonces;
    this.#posture = options.posture;
    this.#metrics = options.metrics;
    this.#audit = options.audit;
    this.#log = options.log;
  }

  /** The nonces that bind evidence to requests; `POST /v1/svid/nonce` issues them. */
  get nonces(): NonceStore {
    return this.#nonces;
  }

  /**
   * Checks the request's evidence and returns what the catalog records, or undefined for a request
   * without evidence that the manifest lets in on its join token or SVID alone. In order:
   * evidence is required when the manifest sets `attestation.required` or has a policy for the
   * service; dev evidence needs `allowDevProvider`; the server must have a verifier for the
   * provider; a nonce issued to this caller must accompany the evidence; the verifier checks
   * it at `now` against SHA-512(SPKI || nonce); the result's report data must equal that binding;
   * the nonce is consumed; then the service's policy is evaluated. Every rejection is logged,
   * counted, audited as `attestation.reject`, and raised with its own code.
   */
  async check(request: AttestationRequest): Promise<InstanceAttestation | undefined> {
    const provider = providerLabel(request.evidence?.provider);
    const state = { nonceHeld: false };
    try {
      const attestation = await this.#check(request, state);
      this.#metrics.attestations.inc({ provider, result: 'accepted', insecure: String(attestation?.insecure ?? false), kind: request.kind });
      if (attestation !== undefined) {
        const fields = { spiffeId: formatSpiffeId(request.identity), kind: request.kind, provider, measurementDigest: attestation.measurementDigest, policy: attestation.policy };
        if (attestation.insecure) this.#log.warn({ ...fields, insecure: true }, 'INSECURE attestation accepted: the dev provider\'s evidence proves nothing');
        else this.#log.info({ ...fields, tcbStatus: attestation.tcbStatus }, 'attestation accepted');
      }
      return attestation;
    } catch (error) {
      // A failed attempt burns the caller's nonce, so that one nonce buys one try. A nonce of
      // another caller is left alone.
      if (state.nonceHeld && request.nonce !== undefined) this.#nonces.discard(request.nonce);
      await this.#reject(request, provider, error);
      throw error;
    }
  }

  async #check(request: AttestationRequest, state: { nonceHeld: boolean }): Promise<InstanceAttestation | undefined> {
    const settings = settingsFor(await this.#posture(), request.identity);
    const service = formatServiceRef(request.identity);
    const evidence = request.evidence;
    if (evidence === undefined) {
      if (settings.required || settings.policy !== undefined) {
        throw new SealmeshError(
          'SEALMESH_ERR_ATTESTATION_REQUIRED',
          `the manifest requires attestation evidence for service ${service}, so a ${request.kind === 'enroll' ? 'join token' : 'SVID'} alone is not enough; run the proxy inside its TEE with --attestation auto`,
        );
      }
      return undefined;
    }
    if (evidence.provider === 'dev' && !settings.allowDevProvider) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED',
        'the evidence comes from the dev provider, which proves nothing; only a development manifest with attestation.allowDevProvider: true accepts it',
      );
    }
    const verifier = this.#verifiers.get(evidence.provider);
    if (request.nonce === undefined) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_NONCE_MISSING', 'the request carries evidence but no nonce; request one from POST /v1/svid/nonce and bind the evidence to it');
    }
    const nonce = this.#nonces.check(request.nonce, request.holder);
    state.nonceHeld = true;

    const expected = enrollmentReportData(request.spkiDer, nonce);
    const result: AttestationResult = await verifier.verify(evidence, expected, request.now);
    // A verifier returns results only for its own provider, and only the dev verifier returns insecure
    // results. These checks keep a faulty or misregistered verifier from widening either.
    if (result.provider !== evidence.provider) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT',
        `the ${evidence.provider} verifier returned a result for provider ${JSON.stringify(result.provider)}; the server's verifier registry is misconfigured`,
      );
    }
    if (result.insecure && !settings.allowDevProvider) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT',
        `the ${evidence.provider} verifier marked the evidence insecure, and only a development manifest with attestation.allowDevProvider: true accepts insecure evidence`,
      );
    }
    // The verifier compares the report data too; this check keeps a faulty verifier from binding
    // evidence to another key or nonce.
    if (result.reportData.toLowerCase() !== expected.toString('hex')) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH',
        'the evidence\'s report data is not SHA-512 of this CSR\'s public key and the nonce, so it was made for another key or nonce',
      );
    }
    this.#nonces.consume(request.nonce, request.holder);

    let policy: InstanceAttestation['policy'] = 'unpinned';
    if (settings.policy !== undefined) {
      evaluateAttestationPolicy(result, settings.policy, service);
      policy = 'enforced';
    } else if (settings.required && !(result.provider === 'dev' && settings.allowDevProvider)) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_POLICY_MISSING',
        `the manifest requires attestation but lists no acceptable measurements for service ${service}; add attestation.services.${JSON.stringify(service)}`,
      );
    }
    return {
      provider: result.provider,
      insecure: result.insecure,
      measurementDigest: measurementDigest(result.measurements),
      measurements: { ...result.measurements },
      ...(result.tcbStatus !== undefined ? { tcbStatus: result.tcbStatus } : {}),
      debug: result.debug,
      verifiedAt: result.verifiedAt,
      policy,
    };
  }

  async #reject(request: AttestationRequest, provider: string, error: unknown): Promise<void> {
    const code: ErrorCode = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_INTERNAL';
    const field = error instanceof AttestationPolicyError ? error.field : undefined;
    const spiffeId = formatSpiffeId(request.identity);
    this.#metrics.attestations.inc({ provider, result: 'rejected', insecure: String(provider === 'dev'), kind: request.kind });
    this.#metrics.attestationRejections.inc({ reason: code });
    this.#log.warn({ code, spiffeId, kind: request.kind, provider, field, reason: (error as Error).message }, 'attestation rejected');
    try {
      await this.#audit.append({
        action: 'attestation.reject',
        actor: request.actor,
        subject: spiffeId,
        details: { code, kind: request.kind, provider, ...(field !== undefined ? { field } : {}) },
      });
    } catch (auditError) {
      this.#log.error({ err: auditError, spiffeId }, 'failed to write the attestation.reject audit entry');
    }
  }
}
