export { assertProductionProcess, coreFileSoftLimit, productionViolations, readProcessFacts, RUN_MODES, type ProcessFacts, type RunMode } from './production.ts';
export { CODE_ROOT, coveringPaths, permissionFlags, runSandboxed, sandboxActive, sandboxCommand, sandboxDeniedError, shellQuote, type SandboxGrant } from './sandbox.ts';
export { requiredModeViolation } from './required-mode.ts';
