import { SealmeshError } from '../../errors/index.ts';
import { silentLogger, type Logger } from '../../log/index.ts';
import type { EvidenceProvider } from '../index.ts';
import type { AttestationMode } from './modes.ts';
import { ConfigfsTsmProvider, DEFAULT_TSM_ROOT, detectTsmProvider } from './configfs-tsm.ts';
import { hostFilesystem, type TeeFilesystem } from './filesystem.ts';
import { DEFAULT_GRAMINE_ROOT, GramineSgxProvider, readGramineAttestationType } from './gramine-sgx.ts';

export interface ProviderSelection {
  /** `auto` detects the TEE; `none` presents no evidence. Default `auto`. */
  mode?: AttestationMode;
  /** Mount point of configfs-tsm. Default `/sys/kernel/config/tsm`. */
  tsmRoot?: string;
  /** Gramine's attestation directory. Default `/dev/attestation`. */
  gramineRoot?: string;
  /** Measurement the dev provider claims, 96 hex digits. */
  devMeasurement?: string;
  fs?: TeeFilesystem;
  log?: Logger;
}

/**
 * Returns the TEE this process runs in, judged by its interfaces: configfs-tsm whose `provider` is
 * `sev_guest` or `tdx_guest`, else Gramine's `/dev/attestation` with attestation type `dcap`,
 * else none. The dev provider is never detected; it must be asked for.
 */
export async function detectEvidenceProvider(selection: Omit<ProviderSelection, 'mode'> = {}): Promise<'sev-snp' | 'tdx' | 'sgx' | 'none'> {
  const fs = selection.fs ?? hostFilesystem;
  const tsm = await detectTsmProvider(selection.tsmRoot ?? DEFAULT_TSM_ROOT, fs);
  if (tsm !== undefined) return tsm;
  if ((await readGramineAttestationType(selection.gramineRoot ?? DEFAULT_GRAMINE_ROOT, fs)) === 'dcap') return 'sgx';
  return 'none';
}

/**
 * Creates the evidence provider that `mode` selects, or undefined for `none` and for `auto` on a
 * host without a TEE. An explicit TEE mode fails with SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE
 * when detection does not find that TEE, so a misconfigured host fails at start, not at enrollment.
 */
export async function createEvidenceProvider(selection: ProviderSelection = {}): Promise<EvidenceProvider | undefined> {
  const mode = selection.mode ?? 'auto';
  const log = selection.log ?? silentLogger();
  if (mode === 'none') return undefined;
  if (mode === 'dev') {
    // Loaded only here, because the dev evidence format brings the zod schema of its verifier.
    const { DevEvidenceProvider } = await import('./dev.ts');
    const provider = new DevEvidenceProvider({ measurement: selection.devMeasurement });
    log.warn({ provider: 'dev', insecure: true, measurement: provider.measurement }, 'INSECURE: the dev attestation provider signs with a key that nothing vouches for; its evidence proves nothing');
    return provider;
  }
  if (selection.devMeasurement !== undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', '--dev-measurement applies only with --attestation dev');
  }
  const detected = await detectEvidenceProvider(selection);
  if (mode === 'auto') {
    if (detected === 'none') {
      log.info('no TEE interface found (configfs-tsm or Gramine /dev/attestation); enrolling without attestation evidence');
      return undefined;
    }
    log.info({ provider: detected }, 'TEE detected; enrolling with attestation evidence');
    return providerFor(detected, selection);
  }
  if (detected !== mode) {
    throw new SealmeshError(
      'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE',
      `--attestation ${mode} was requested, but this host offers ${detected === 'none' ? 'no TEE interface' : detected}; check that the proxy runs inside the TEE, or use --attestation auto`,
    );
  }
  return providerFor(mode, selection);
}

function providerFor(provider: 'sev-snp' | 'tdx' | 'sgx', selection: ProviderSelection): EvidenceProvider {
  if (provider === 'sgx') return new GramineSgxProvider({ root: selection.gramineRoot, fs: selection.fs });
  return new ConfigfsTsmProvider({ provider, root: selection.tsmRoot, fs: selection.fs, log: selection.log });
}
