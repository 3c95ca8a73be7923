export { ConfigfsTsmProvider, DEFAULT_TSM_ROOT, TSM_PROVIDERS, detectTsmProvider, type ConfigfsTsmOptions, type TsmProviderName } from './configfs-tsm.ts';
export { DEFAULT_DEV_MEASUREMENT, DevEvidenceProvider } from './dev.ts';
export { hostFilesystem, type TeeFilesystem } from './filesystem.ts';
export { DEFAULT_GRAMINE_ROOT, GramineSgxProvider, readGramineAttestationType, type GramineSgxOptions } from './gramine-sgx.ts';
export { REPORT_DATA_BYTES } from './report-data.ts';

export { ATTESTATION_MODES, type AttestationMode } from './modes.ts';
// Provider selection lives in select.ts, which a proxy imports without the dev provider.
export { createEvidenceProvider, detectEvidenceProvider, type ProviderSelection } from './select.ts';
