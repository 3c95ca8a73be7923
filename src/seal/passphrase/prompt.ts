/**
 * Reading the seal passphrase from the environment or from a terminal without echo.
 */
import { SealmeshError } from '../../errors/index.ts';

/** The environment variable that supplies the passphrase to non-interactive runs. */
export const PASSPHRASE_ENV = 'SEALMESH_SEAL_PASSPHRASE';

/** The part of a TTY read stream that the prompt uses, so tests can pass a fake terminal. */
export interface PassphraseInput extends NodeJS.ReadableStream {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
}

export interface ReadPassphraseOptions {
  /** Environment to read `SEALMESH_SEAL_PASSPHRASE` from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Terminal to prompt on. Default: `process.stdin`. */
  input?: PassphraseInput;
  /** Stream for the prompt text. Default: `process.stderr`, which keeps stdout free for command output. */
  output?: NodeJS.WritableStream;
  /** Prompt text. Default: `Seal passphrase: `. */
  prompt?: string;
  /** Asks twice and rejects a mismatch, for setting a new passphrase. Applies only to the prompt. */
  confirm?: boolean;
}

const CTRL_C = '\u0003';
const CTRL_D = '\u0004';
const CTRL_U = '\u0015';
const BACKSPACE = '\b';
const DELETE = '\u007f';
const ESCAPE = '\u001b';

/**
 * Returns the passphrase from `SEALMESH_SEAL_PASSPHRASE` when it is set and not empty, or else
 * prompts for it on the terminal without echo.
 *
 * Throws SEALMESH_ERR_SEAL_KEY_MISSING when the variable is unset or empty and the input is not a
 * TTY (a service or CI run where no user can type), or when the user cancels the prompt. Throws
 * SEALMESH_ERR_INVALID_ARGUMENT when `confirm` is set and the two entries differ.
 */
export async function readPassphrase(options: ReadPassphraseOptions = {}): Promise<string> {
  const env = options.env ?? process.env;
  const fromEnv = env[PASSPHRASE_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    return fromEnv;
  }

  const input: PassphraseInput = options.input ?? process.stdin;
  const output = options.output ?? process.stderr;
  if (input.isTTY !== true || typeof input.setRawMode !== 'function') {
    throw new SealmeshError(
      'SEALMESH_ERR_SEAL_KEY_MISSING',
      `passphrase seal: no passphrase given; set ${PASSPHRASE_ENV} or run the command on a terminal to type it`,
    );
  }

  const prompt = options.prompt ?? 'Seal passphrase: ';
  const first = await promptWithoutEcho(input, output, prompt);
  if (options.confirm === true) {
    const second = await promptWithoutEcho(input, output, 'Repeat the passphrase: ');
    if (second !== first) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'passphrase seal: the two passphrases differ; run the command again');
    }
  }
  return first;
}

/**
 * Reads one line from a TTY in raw mode, so the typed characters are not echoed. Handles Enter,
 * Backspace, Ctrl-U (clear), Ctrl-C and Ctrl-D on an empty line (cancel). It skips terminal
 * escape sequences (ESC [ ... final byte, ESC O x, ESC x), so arrow, function and Alt keys add
 * nothing to the passphrase.
 */
function promptWithoutEcho(input: PassphraseInput, output: NodeJS.WritableStream, prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let value = '';
    // 'escape' right after ESC, 'sequence' inside ESC [ or ESC O until the final byte.
    let escapeState: 'none' | 'escape' | 'sequence' = 'none';

    const finish = (error?: Error): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.setRawMode?.(false);
      input.pause();
      output.write('\n');
      if (error === undefined) {
        resolve(value);
      } else {
        reject(error);
      }
    };
    const cancelled = (): SealmeshError =>
      new SealmeshError('SEALMESH_ERR_SEAL_KEY_MISSING', 'passphrase seal: passphrase entry was cancelled');

    const onData = (chunk: Buffer | string): void => {
      for (const char of chunk.toString()) {
        if (escapeState === 'escape') {
          escapeState = char === '[' || char === 'O' ? 'sequence' : 'none';
          continue;
        }
        if (escapeState === 'sequence') {
          if (char >= '@' && char <= '~') {
            escapeState = 'none';
          }
          continue;
        }
        if (char === '\r' || char === '\n') {
          finish();
          return;
        }
        if (char === CTRL_C || (char === CTRL_D && value === '')) {
          finish(cancelled());
          return;
        }
        if (char === CTRL_D) {
          finish();
          return;
        }
        if (char === ESCAPE) {
          escapeState = 'escape';
          continue;
        }
        if (char === BACKSPACE || char === DELETE) {
          value = Array.from(value).slice(0, -1).join('');
        } else if (char === CTRL_U) {
          value = '';
        } else if (char >= ' ') {
          value += char;
        }
      }
    };
    const onEnd = (): void => finish(value === '' ? cancelled() : undefined);

    output.write(prompt);
    input.setRawMode?.(true);
    input.on('data', onData);
    input.once('end', onEnd);
    input.resume();
  });
}
