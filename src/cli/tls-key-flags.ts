/**
 * The `--tls-key-pkcs11-*` options of `sealmesh proxy`, which keep the proxy's TLS private key in a
 * PKCS#11 token instead of in memory.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { SealmeshError } from '../errors/index.ts';
import type { TokenKeyOptions } from '../proxy/token-key.ts';

/** CKA_LABEL of the proxy's key pair when --tls-key-pkcs11-key-label is not given. */
export const DEFAULT_TOKEN_KEY_LABEL = 'sealmesh-proxy-tls';

/** Flags that place the proxy's TLS key in a token. */
export interface TlsKeyFlags {
  tlsKeyPkcs11Module?: string;
  tlsKeyPkcs11TokenLabel?: string;
  tlsKeyPkcs11KeyLabel?: string;
  tlsKeyPkcs11PinFile?: string;
  tlsKeyPkcs11PinEnv?: string;
}

/** Environment variable that contains the token's user PIN unless --tls-key-pkcs11-pin-env names another. */
export const DEFAULT_TLS_KEY_PIN_ENV = 'SEALMESH_TLS_KEY_PKCS11_PIN';

/** Adds the token key options to the proxy command. */
export function addTlsKeyOptions(command: Command): Command {
  return command
    .option('--tls-key-pkcs11-module <path>', 'PKCS#11 module of the token that holds the proxy\'s TLS key, such as /usr/lib/softhsm/libsofthsm2.so; without it the key is generated in memory')
    .option('--tls-key-pkcs11-token-label <label>', 'label of the token that holds the proxy\'s TLS key')
    .option('--tls-key-pkcs11-key-label <label>', `label of the key pair in the token, generated there when missing (default: ${DEFAULT_TOKEN_KEY_LABEL})`)
    .option('--tls-key-pkcs11-pin-file <path>', 'file that contains the token\'s user PIN (one final line break is ignored)')
    .option('--tls-key-pkcs11-pin-env <name>', `environment variable that contains the token's user PIN, used without --tls-key-pkcs11-pin-file (default: ${DEFAULT_TLS_KEY_PIN_ENV})`);
}

/** True when any token key flag is given. */
export function tlsKeyRequested(flags: TlsKeyFlags): boolean {
  return [flags.tlsKeyPkcs11Module, flags.tlsKeyPkcs11TokenLabel, flags.tlsKeyPkcs11KeyLabel, flags.tlsKeyPkcs11PinFile, flags.tlsKeyPkcs11PinEnv].some((value) => value !== undefined);
}

/**
 * Rejects the token key together with --sandbox, --sandbox-print or --mode production, because
 * Node.js 24 rejects OpenSSL engines under the permission model
 * (ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED) that all three need. Throws
 * SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED.
 */
export function assertTlsKeyWithoutSandbox(flags: TlsKeyFlags & { sandbox?: boolean; sandboxPrint?: boolean; mode?: string }): void {
  if (!tlsKeyRequested(flags)) return;
  // Production mode requires the permission model, so it is rejected here too, before its own check
  // would suggest --sandbox.
  let conflict: string | undefined;
  if (flags.sandbox === true) conflict = '--sandbox';
  else if (flags.sandboxPrint === true) conflict = '--sandbox-print';
  else if (flags.mode === 'production') conflict = '--mode production';
  if (conflict === undefined) return;
  throw new SealmeshError(
    'SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED',
    `--tls-key-pkcs11-module cannot be combined with ${conflict}: Node.js loads a token key only through an OpenSSL engine, and it rejects engines under the permission model (ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED) that --sandbox and --mode production need. ` +
      'Run the proxy in development mode without --sandbox, or keep the TLS key in memory',
  );
}

/**
 * Builds the token key options from the flags and the environment, or returns undefined when no
 * token key flag is given. Throws SEALMESH_ERR_CONFIG_INVALID when the module or token label is
 * missing, and SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING when the PIN file cannot be read or is empty,
 * or the PIN variable is unset or empty.
 */
export function tokenKeyFromFlags(flags: TlsKeyFlags, env: Readonly<Record<string, string | undefined>> = process.env): TokenKeyOptions | undefined {
  if (!tlsKeyRequested(flags)) return undefined;
  if (flags.tlsKeyPkcs11Module === undefined || flags.tlsKeyPkcs11TokenLabel === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'a TLS key in a PKCS#11 token needs both --tls-key-pkcs11-module and --tls-key-pkcs11-token-label');
  }
  const base = { module: flags.tlsKeyPkcs11Module, tokenLabel: flags.tlsKeyPkcs11TokenLabel, keyLabel: flags.tlsKeyPkcs11KeyLabel ?? DEFAULT_TOKEN_KEY_LABEL };
  if (flags.tlsKeyPkcs11PinFile !== undefined) {
    const pinFile = resolve(flags.tlsKeyPkcs11PinFile);
    return { ...base, pin: readPinFile(pinFile), pinFile };
  }
  const name = flags.tlsKeyPkcs11PinEnv ?? DEFAULT_TLS_KEY_PIN_ENV;
  const pin = env[name];
  if (pin === undefined || pin === '') {
    throw new SealmeshError(
      'SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING',
      `the user PIN of token ${JSON.stringify(base.tokenLabel)} is expected in the environment variable ${name}, which is unset or empty; set it or pass --tls-key-pkcs11-pin-file`,
    );
  }
  return { ...base, pin };
}

/** Reads a PIN file without its final line break. */
function readPinFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING', `cannot read the PIN file ${path} (${code}); create it readable by the proxy's user only`, { cause: error });
  }
  const pin = text.replace(/\r?\n$/, '');
  if (pin === '') throw new SealmeshError('SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING', `the PIN file ${path} is empty; write the token's user PIN into it`);
  return pin;
}
