import { Option, type Command } from 'commander';
import { SealmeshError } from '../errors/index.ts';
import type { CounterConfig, SealConfig } from '../server/seal-setup.ts';

/** Flags that choose the seal provider and the rollback counter, shared by every offline command. */
export interface SealFlags {
  seal: 'keyfile' | 'passphrase' | 'pkcs11' | 'shamir';
  sealKeyFile?: string;
  pkcs11Module?: string;
  pkcs11Token?: string;
  pkcs11KeyLabel: string;
  counter?: 'pkcs11';
  counterLabel: string;
  unsealSocket?: string;
}

/** Adds the seal options to a command. */
export function addSealOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--seal <provider>', 'seal provider of the data directory: keyfile, passphrase (SEALMESH_SEAL_PASSPHRASE or a prompt), pkcs11 or shamir')
        .choices(['keyfile', 'passphrase', 'pkcs11', 'shamir'])
        .default('keyfile'),
    )
    .option('--seal-key-file <path>', 'key file of the keyfile seal (default: SEALMESH_SEAL_KEY_FILE or <data-dir>.seal-key beside the data directory)')
    .option('--pkcs11-module <path>', 'PKCS#11 module of the HSM, such as /usr/lib/softhsm/libsofthsm2.so (PIN: SEALMESH_PKCS11_PIN)')
    .option('--pkcs11-token <label>', 'label of the HSM token')
    .option('--pkcs11-key-label <label>', 'label of the key-encryption key in the token', 'sealmesh-kek')
    .addOption(new Option('--counter <provider>', 'monotonic counter that detects a rollback of the whole data directory').choices(['pkcs11']))
    .option('--counter-label <label>', 'label of the counter object in the PKCS#11 token', 'sealmesh-counter')
    .option('--unseal-socket <path>', 'control socket of a Shamir-sealed server (default: <data-dir>.unseal.sock beside the data directory)');
}

function pkcs11Token(flags: SealFlags, what: string): { module: string; tokenLabel: string; pin: string } {
  const pin = process.env.SEALMESH_PKCS11_PIN;
  if (flags.pkcs11Module === undefined || flags.pkcs11Token === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} needs --pkcs11-module and --pkcs11-token`);
  }
  if (pin === undefined || pin === '') {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} needs the token's user PIN in SEALMESH_PKCS11_PIN`);
  }
  return { module: flags.pkcs11Module, tokenLabel: flags.pkcs11Token, pin };
}

/** Builds the seal provider configuration from flags and the environment. */
export function sealFromFlags(flags: SealFlags): SealConfig {
  switch (flags.seal) {
    case 'keyfile':
      return { provider: 'keyfile', ...(flags.sealKeyFile !== undefined ? { keyFile: flags.sealKeyFile } : {}) };
    case 'passphrase':
      return {
        provider: 'passphrase',
        passphrase: async () => {
          const { readPassphrase } = await import('../seal/index.ts');
          return readPassphrase();
        },
      };
    case 'pkcs11':
      return { provider: 'pkcs11', ...pkcs11Token(flags, '--seal pkcs11'), keyLabel: flags.pkcs11KeyLabel };
    case 'shamir':
      return { provider: 'shamir' };
  }
}

/** Builds the rollback counter configuration, or undefined when none is configured. */
export function counterFromFlags(flags: SealFlags): CounterConfig | undefined {
  if (flags.counter === undefined) return undefined;
  return { ...pkcs11Token(flags, '--counter pkcs11'), label: flags.counterLabel };
}
