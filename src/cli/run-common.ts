// Helpers that `runServer` (run.ts) and `runProxy` (run-proxy.ts) share.
import { SealmeshError } from '../errors/index.ts';

export const DEFAULT_LOG_LEVEL = 'info';

/**
 * Resolves once SIGINT or SIGTERM arrives. With SEALMESH_EXIT_WITH_PARENT=1, as `sealmesh dev` sets
 * for its children, the end of standard input counts too, so a child never outlives its parent.
 */
export async function untilSignal(): Promise<string> {
  const watchParent = process.env.SEALMESH_EXIT_WITH_PARENT === '1';
  const reason = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    if (watchParent) {
      process.stdin.once('end', () => resolve('parent exited'));
      process.stdin.once('close', () => resolve('parent exited'));
      process.stdin.resume();
    }
  });
  // A standard input that is still being read keeps the event loop alive, so the process would
  // not exit after a signal.
  if (watchParent) process.stdin.destroy();
  return reason;
}

/** Returns the error for a required setting that neither a flag nor the --config file gave. */
export function missingSetting(flag: string, key: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `required option '${flag}' not specified; pass it, or set ${key} in the --config file`);
}
