#!/usr/bin/env node
import { CommanderError } from 'commander';
import { buildProgram } from './program.ts';
import { EXIT_USAGE, reportError } from './output.ts';

/** Runs the CLI with `argv` and returns the exit code: 0 success, 1 failure, 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram(argv.includes('--json'));
  program.exitOverride();
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    // A command that ran a child process, such as `server --sandbox`, leaves the child's exit code.
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has printed the message or the help text already.
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
      return EXIT_USAGE;
    }
    return reportError(error, argv.includes('--json'));
  }
}

process.exitCode = await main(process.argv.slice(2));
