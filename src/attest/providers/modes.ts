/** Values of the proxy's `--attestation` flag, in a module of their own so that the CLI can check the flag without loading the providers. */
export const ATTESTATION_MODES = ['auto', 'sev-snp', 'tdx', 'sgx', 'dev', 'none'] as const;
export type AttestationMode = (typeof ATTESTATION_MODES)[number];
