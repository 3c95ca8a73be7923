/** The public API of the sealed store and its integrity checks. */
export { SealedStore } from './sealed.ts';
export type { SealedInitializeOptions, SealedOpenOptions, SealedStoreMeta, SealedStoreOptions } from './sealed-options.ts';
export {
  initializeSealedFile,
  openSealedFile,
  openSqliteBackend,
  readSealedFileMeta,
  verifySealedFile,
  type SealedFileOptions,
} from './sealed-file.ts';
export { verifySealedStore, type VerifyOptions, type VerifyReport } from './integrity-verify.ts';
export { isIntegrityError, snapshotIntegrityError } from './integrity-errors.ts';
