/**
 * The `--mode`, `--sandbox` and `--sandbox-*` options of `sealmesh server` and `sealmesh proxy`.
 * This module stays small because every CLI command loads it to build the command tree.
 */
import { Option, type Command } from 'commander';
import { RUN_MODES, type RunMode } from '../hardening/production.ts';

export interface HardeningFlags {
  mode: RunMode;
  sandbox?: boolean;
  sandboxPrint?: boolean;
  sandboxAllowRead: string[];
  sandboxAllowWrite: string[];
}

/** Options that only launch the sandbox and are dropped from the arguments of the sandboxed child. */
export const LAUNCHER_OPTIONS = new Set(['--sandbox', '--sandbox-print']);

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Adds the run-mode and sandbox options to a command. */
export function addHardeningOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--mode <mode>', 'production rejects the inspector, diagnostic flags, core dumps, a missing sandbox and secrets on the command line')
        .choices([...RUN_MODES])
        .default('development'),
    )
    .option('--sandbox', 'run under the Node.js permission model, with file access limited to the paths this command needs')
    .option('--sandbox-print', 'print the sandboxed command line that --sandbox would run, and exit')
    .option('--sandbox-allow-read <path>', 'another path the sandboxed process may read; repeatable', collect, [])
    .option('--sandbox-allow-write <path>', 'another path the sandboxed process may read and write, such as the directory of a new key file; repeatable', collect, []);
}
