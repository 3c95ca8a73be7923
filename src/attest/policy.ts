import { createHash } from 'node:crypto';
import { SealmeshError, type ErrorCode } from '../errors/index.ts';
import type { ServiceAttestationPolicy } from '../manifest/index.ts';
import type { AttestationResult } from './index.ts';

/**
 * A rejection by the manifest's attestation policy. `field` names the manifest setting that the
 * evidence failed, such as `sev-snp.measurement` or `tcbStatuses`.
 */
export class AttestationPolicyError extends SealmeshError {
  readonly field: string;

  constructor(code: ErrorCode, field: string, message: string) {
    super(code, message);
    this.name = 'AttestationPolicyError';
    this.field = field;
  }
}

/** Providers whose evidence comes from TEE hardware, so that TCB status and debug mode mean something. */
const HARDWARE_PROVIDERS = new Set(['sev-snp', 'tdx', 'sgx']);

const TDX_REGISTERS = [
  ['rtMr0', 'SEALMESH_ERR_ATTESTATION_TDX_RTMR0_MISMATCH'],
  ['rtMr1', 'SEALMESH_ERR_ATTESTATION_TDX_RTMR1_MISMATCH'],
  ['rtMr2', 'SEALMESH_ERR_ATTESTATION_TDX_RTMR2_MISMATCH'],
  ['rtMr3', 'SEALMESH_ERR_ATTESTATION_TDX_RTMR3_MISMATCH'],
] as const;

const SNP_TCB_COMPONENTS = [
  ['bootloader', 'SEALMESH_ERR_ATTESTATION_SNP_TCB_BOOTLOADER_TOO_OLD'],
  ['tee', 'SEALMESH_ERR_ATTESTATION_SNP_TCB_TEE_TOO_OLD'],
  ['snp', 'SEALMESH_ERR_ATTESTATION_SNP_TCB_SNP_TOO_OLD'],
  ['microcode', 'SEALMESH_ERR_ATTESTATION_SNP_TCB_MICROCODE_TOO_OLD'],
] as const;

/**
 * Decides whether verified evidence is acceptable for `service` under its manifest policy, and
 * throws AttestationPolicyError at the first setting it fails. `result` must come from a verifier
 * that already checked signatures, certificate chains, revocation and the report data binding.
 *
 * The checks, in order: the provider is listed; for hardware providers debug mode and the TCB
 * status (a result without a TCB status fails); then the provider's measurements and, for
 * SEV-SNP, the TCB minimum, VMPL and guest policy bits, and for SGX the product id and SVN. A
 * measurement that the verifier did not report fails like a wrong one.
 */
export function evaluateAttestationPolicy(result: AttestationResult, policy: ServiceAttestationPolicy, service: string): void {
  const provider = result.provider;
  if (!(policy.providers as string[]).includes(provider)) {
    throw new AttestationPolicyError(
      'SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED',
      'providers',
      `evidence provider ${provider} is not in the providers [${policy.providers.join(', ')}] that the manifest allows for service ${service}`,
    );
  }

  if (HARDWARE_PROVIDERS.has(provider)) {
    if (result.debug && !policy.allowDebug) {
      throw new AttestationPolicyError(
        'SEALMESH_ERR_ATTESTATION_DEBUG_REJECTED',
        'allowDebug',
        `the ${provider} TEE of service ${service} runs with debugging enabled, so its memory is readable by the host; the manifest does not set allowDebug`,
      );
    }
    const status = result.tcbStatus;
    if (status === undefined || !(policy.tcbStatuses as string[]).includes(status)) {
      throw new AttestationPolicyError(
        'SEALMESH_ERR_ATTESTATION_TCB_STATUS_REJECTED',
        'tcbStatuses',
        `the platform's TCB status ${status ?? '(not reported)'} is not in the tcbStatuses [${policy.tcbStatuses.join(', ')}] of service ${service}` +
          (result.advisoryIds !== undefined && result.advisoryIds.length > 0 ? `; advisories ${result.advisoryIds.join(', ')}` : ''),
      );
    }
  }

  switch (provider) {
    case 'sev-snp':
      evaluateSevSnp(result, policy, service);
      return;
    case 'tdx':
      evaluateTdx(result, policy, service);
      return;
    case 'sgx':
      evaluateSgx(result, policy, service);
      return;
    case 'dev':
      if (policy.dev?.measurement != null) {
        checkListed(result, 'measurement', policy.dev.measurement, 'dev.measurement', 'SEALMESH_ERR_ATTESTATION_DEV_MEASUREMENT_MISMATCH', service);
      }
      return;
    default:
      throw new AttestationPolicyError('SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED', 'providers', `evidence provider ${provider} has no policy rules in this server`);
  }
}

function checkListed(result: AttestationResult, measurement: string, allowed: readonly string[], field: string, code: ErrorCode, service: string): void {
  const value = result.measurements[measurement];
  if (value === undefined || !allowed.includes(value.toLowerCase())) {
    throw new AttestationPolicyError(
      code,
      field,
      `${field} ${value ?? '(not reported)'} is not one of the ${allowed.length} value(s) the manifest lists for service ${service}`,
    );
  }
}

function evaluateSevSnp(result: AttestationResult, policy: ServiceAttestationPolicy, service: string): void {
  const snpPolicy = policy['sev-snp'];
  const details = result.snp;
  if (snpPolicy === undefined) {
    throw new AttestationPolicyError('SEALMESH_ERR_ATTESTATION_POLICY_MISSING', 'sev-snp', `the manifest lists sev-snp for service ${service} without measurements`);
  }
  if (details === undefined) {
    throw new SealmeshError('SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID', 'the sev-snp verifier returned no SEV-SNP details, so the policy cannot be evaluated');
  }
  checkListed(result, 'measurement', snpPolicy.measurement, 'sev-snp.measurement', 'SEALMESH_ERR_ATTESTATION_SNP_MEASUREMENT_MISMATCH', service);
  if (snpPolicy.hostData !== null) {
    checkListed(result, 'hostData', snpPolicy.hostData, 'sev-snp.hostData', 'SEALMESH_ERR_ATTESTATION_SNP_HOST_DATA_MISMATCH', service);
  }
  // The verifier reports every genuine SEV-SNP report as UpToDate, so minTcb is the only TCB floor.
  if (snpPolicy.minTcb === null) {
    throw new AttestationPolicyError('SEALMESH_ERR_ATTESTATION_POLICY_MISSING', 'sev-snp.minTcb', `the manifest lists sev-snp for service ${service} without sev-snp.minTcb`);
  }
  for (const [component, code] of SNP_TCB_COMPONENTS) {
    const reported = details.reportedTcb[component];
    const minimum = snpPolicy.minTcb[component];
    if (reported < minimum) {
      throw new AttestationPolicyError(
        code,
        `sev-snp.minTcb.${component}`,
        `the reported SEV-SNP TCB ${component} version ${reported} is below sev-snp.minTcb.${component} ${minimum} of service ${service}; update the host's firmware`,
      );
    }
  }
  const minimumFmc = snpPolicy.minTcb.fmc;
  if (minimumFmc !== undefined) {
    const reportedFmc = details.reportedTcb.fmc;
    if (reportedFmc === undefined || reportedFmc < minimumFmc) {
      throw new AttestationPolicyError(
        'SEALMESH_ERR_ATTESTATION_SNP_TCB_FMC_TOO_OLD',
        'sev-snp.minTcb.fmc',
        reportedFmc === undefined
          ? `the SEV-SNP report has no FMC TCB component (only Turin and later report one), but service ${service} sets sev-snp.minTcb.fmc ${minimumFmc}`
          : `the reported SEV-SNP TCB fmc version ${reportedFmc} is below sev-snp.minTcb.fmc ${minimumFmc} of service ${service}; update the host's firmware`,
      );
    }
  }
  if (details.vmpl > snpPolicy.vmpl) {
    throw new AttestationPolicyError(
      'SEALMESH_ERR_ATTESTATION_VMPL_REJECTED',
      'sev-snp.vmpl',
      `the SEV-SNP report was requested at VMPL ${details.vmpl}, above sev-snp.vmpl ${snpPolicy.vmpl} of service ${service}`,
    );
  }
  if (details.policy.smt && !snpPolicy.allowSmt) {
    throw new AttestationPolicyError(
      'SEALMESH_ERR_ATTESTATION_SMT_REJECTED',
      'sev-snp.allowSmt',
      `the SEV-SNP guest policy of service ${service} allows SMT on the host, and the manifest does not set sev-snp.allowSmt`,
    );
  }
  if (details.policy.migrationAgent && !snpPolicy.allowMigrationAgent) {
    throw new AttestationPolicyError(
      'SEALMESH_ERR_ATTESTATION_MIGRATION_AGENT_REJECTED',
      'sev-snp.allowMigrationAgent',
      `the SEV-SNP guest policy of service ${service} allows a migration agent, and the manifest does not set sev-snp.allowMigrationAgent`,
    );
  }
}

function evaluateTdx(result: AttestationResult, policy: ServiceAttestationPolicy, service: string): void {
  const tdxPolicy = policy.tdx;
  if (tdxPolicy === undefined) {
    throw new AttestationPolicyError('SEALMESH_ERR_ATTESTATION_POLICY_MISSING', 'tdx', `the manifest lists tdx for service ${service} without measurements`);
  }
  checkListed(result, 'mrTd', tdxPolicy.mrTd, 'tdx.mrTd', 'SEALMESH_ERR_ATTESTATION_TDX_MRTD_MISMATCH', service);
  for (const [register, code] of TDX_REGISTERS) {
    const allowed = tdxPolicy[register];
    if (allowed !== null) checkListed(result, register, allowed, `tdx.${register}`, code, service);
  }
}

function evaluateSgx(result: AttestationResult, policy: ServiceAttestationPolicy, service: string): void {
  const sgxPolicy = policy.sgx;
  if (sgxPolicy === undefined) {
    throw new AttestationPolicyError('SEALMESH_ERR_ATTESTATION_POLICY_MISSING', 'sgx', `the manifest lists sgx for service ${service} without measurements`);
  }
  if (sgxPolicy.mrEnclave !== null) {
    checkListed(result, 'mrEnclave', sgxPolicy.mrEnclave, 'sgx.mrEnclave', 'SEALMESH_ERR_ATTESTATION_SGX_MRENCLAVE_MISMATCH', service);
  }
  if (sgxPolicy.mrSigner !== null) {
    checkListed(result, 'mrSigner', sgxPolicy.mrSigner, 'sgx.mrSigner', 'SEALMESH_ERR_ATTESTATION_SGX_MRSIGNER_MISMATCH', service);
    if (result.isvProdId !== sgxPolicy.isvProdId) {
      throw new AttestationPolicyError(
        'SEALMESH_ERR_ATTESTATION_ISV_PROD_ID_MISMATCH',
        'sgx.isvProdId',
        `the enclave's ISV product id ${result.isvProdId ?? '(not reported)'} is not sgx.isvProdId ${String(sgxPolicy.isvProdId)} of service ${service}`,
      );
    }
    if (result.isvSvn === undefined || result.isvSvn < (sgxPolicy.minIsvSvn ?? 0)) {
      throw new AttestationPolicyError(
        'SEALMESH_ERR_ATTESTATION_ISV_SVN_TOO_LOW',
        'sgx.minIsvSvn',
        `the enclave's ISV SVN ${result.isvSvn ?? '(not reported)'} is below sgx.minIsvSvn ${String(sgxPolicy.minIsvSvn)} of service ${service}`,
      );
    }
  }
}

/**
 * Returns a digest that identifies the measured workload in status output: lowercase hex SHA-256
 * over the measurements as `name=value` lines, sorted by name.
 */
export function measurementDigest(measurements: Record<string, string>): string {
  const lines = Object.keys(measurements)
    .sort()
    .map((name) => `${name}=${measurements[name]}\n`)
    .join('');
  return createHash('sha256').update(lines).digest('hex');
}
