/**
 * The run mode that a signed manifest can require: with `hardening.requireProductionMode`, the
 * server and every proxy run only when started with `--mode production`.
 */
import { SealmeshError } from '../errors/index.ts';
import type { EffectivePosture } from '../manifest/index.ts';
import type { RunMode } from './production.ts';

/**
 * Returns SEALMESH_ERR_PRODUCTION_MODE_REQUIRED when `posture` requires production mode and
 * `runMode` is not production, otherwise undefined. `subject` names the process in the message,
 * such as `this proxy`.
 */
export function requiredModeViolation(posture: Pick<EffectivePosture, 'version' | 'hardening'> | undefined, runMode: RunMode, subject: string): SealmeshError | undefined {
  if (posture === undefined || !posture.hardening.requireProductionMode || runMode === 'production') return undefined;
  return new SealmeshError(
    'SEALMESH_ERR_PRODUCTION_MODE_REQUIRED',
    `manifest version ${posture.version} sets hardening.requireProductionMode, but ${subject} runs in ${runMode} mode; restart it with --mode production`,
  );
}
