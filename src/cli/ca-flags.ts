import { Option, type Command } from 'commander';
import { SealmeshError } from '../errors/index.ts';
import type { CaCustodyConfig } from '../server/index.ts';

/** Flags that choose where the CA private keys live. */
export interface CaCustodyFlags {
  caCustody: 'sealed' | 'pkcs11';
  caPkcs11Module?: string;
  caPkcs11TokenLabel?: string;
  caPkcs11PinEnv: string;
}

/** Environment variable that contains the CA token's user PIN unless --ca-pkcs11-pin-env names another. */
export const DEFAULT_CA_PIN_ENV = 'SEALMESH_CA_PKCS11_PIN';

/** Adds the CA key custody options to the server command. */
export function addCaCustodyOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--ca-custody <custody>', 'where the CA private keys live: sealed (in the sealed store) or pkcs11 (generated in an HSM, never extractable); fixed when the cluster is created')
        .choices(['sealed', 'pkcs11'])
        .default('sealed'),
    )
    .option('--ca-pkcs11-module <path>', 'PKCS#11 module of the HSM that holds the CA keys, such as /usr/lib/softhsm/libsofthsm2.so')
    .option('--ca-pkcs11-token-label <label>', 'label of the token that holds the CA keys')
    .option('--ca-pkcs11-pin-env <name>', 'environment variable that holds the token\'s user PIN', DEFAULT_CA_PIN_ENV);
}

/**
 * Builds the CA custody configuration from the flags and the environment. Throws
 * SEALMESH_ERR_CONFIG_INVALID when pkcs11 lacks its module or token label, or when a pkcs11 flag
 * is given without `--ca-custody pkcs11`, and SEALMESH_ERR_CA_HSM_PIN_MISSING when the PIN
 * variable is unset or empty.
 */
export function caCustodyFromFlags(flags: CaCustodyFlags, env: Readonly<Record<string, string | undefined>> = process.env): CaCustodyConfig {
  if (flags.caCustody === 'sealed') {
    if (flags.caPkcs11Module !== undefined || flags.caPkcs11TokenLabel !== undefined) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', '--ca-pkcs11-module and --ca-pkcs11-token-label apply only with --ca-custody pkcs11: add it or drop them');
    }
    return { kind: 'sealed' };
  }
  if (flags.caPkcs11Module === undefined || flags.caPkcs11TokenLabel === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', '--ca-custody pkcs11 needs --ca-pkcs11-module and --ca-pkcs11-token-label');
  }
  const pin = env[flags.caPkcs11PinEnv];
  if (pin === undefined || pin === '') {
    throw new SealmeshError(
      'SEALMESH_ERR_CA_HSM_PIN_MISSING',
      `--ca-custody pkcs11 needs the user PIN of token ${JSON.stringify(flags.caPkcs11TokenLabel)} in the environment variable ${flags.caPkcs11PinEnv}, which is unset or empty`,
    );
  }
  return { kind: 'pkcs11', module: flags.caPkcs11Module, tokenLabel: flags.caPkcs11TokenLabel, pin };
}
