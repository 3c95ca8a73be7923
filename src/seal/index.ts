/**
 * Seal providers: the sources of the key-encryption key (KEK) that wraps sealmesh's data keys.
 */
export type { MonotonicCounter, SealProvider, SealProviderName } from './types.ts';

export {
  DEFAULT_SCRYPT_COST,
  MIN_PASSPHRASE_LENGTH,
  PASSPHRASE_ENV,
  PassphraseSealProvider,
  readPassphrase,
  type PassphraseInput,
  type PassphraseParams,
  type ReadPassphraseOptions,
} from './passphrase/index.ts';
export { KEY_FILE_ENV, KeyFileSealProvider, defaultKeyFilePath } from './keyfile/index.ts';
export {
  Pkcs11Counter,
  Pkcs11SealProvider,
  type Pkcs11CounterOptions,
  type Pkcs11SealOptions,
  type Pkcs11TokenOptions,
} from './pkcs11/index.ts';
export { ShamirSealProvider, ShamirUnsealer, combine, split, type UnsealProgress } from './shamir/index.ts';
