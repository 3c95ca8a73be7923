/**
 * Options of the sealed store and their checks and defaults.
 */
import { SealmeshError } from '../errors/index.ts';
import type { MonotonicCounter } from '../seal/types.ts';
import type { SealedMeta } from './sealed-meta.ts';
import { checkInteger } from './sealed-validate.ts';
import type { WatchEvent } from './types.ts';

/** Settings shared by `SealedStore.initialize` and `SealedStore.open`. */
export interface SealedStoreOptions {
  /**
   * Counter outside the data directory that detects a rollback to an older copy. Without it, a
   * restored older copy of the whole directory opens without error.
   */
  counter?: MonotonicCounter;
  /** The epoch rises at the latest on this many writes since the last rise. Default 100. */
  epochWrites?: number;
  /** The epoch rises on the first write at least this many milliseconds after the last rise. Default 1000. */
  epochMs?: number;
  /** Receives each watch event that fails authentication and is dropped. Default: `process.emitWarning`. It must not throw. */
  onIntegrityError?: (error: SealmeshError) => void;
  /** Receives each exception of a watch callback and each failed watch read. Default: `process.emitWarning`. It must not throw. */
  onWatchError?: (error: unknown, event: WatchEvent | undefined) => void;
  /** Receives each failure to advance the counter after a write. Default: `process.emitWarning`. It must not throw. */
  onCounterError?: (error: unknown) => void;
}

export interface SealedInitializeOptions extends SealedStoreOptions {
  /** Provider name stored in the clear in `m/meta`. Default: `provider.name`. */
  providerName?: string;
  /** Public provider parameters stored in the clear in `m/meta`, for example a KDF salt. Default `{}`. */
  providerParams?: Record<string, unknown>;
}

export interface SealedOpenOptions extends SealedStoreOptions {
  /**
   * Opens a copy whose epoch is below the counter (an operator restoring a backup on purpose) and
   * then calls `SealedStore.rebaseEpoch`. Needs `counter`.
   */
  acceptRollback?: boolean;
}

/** The clear contents of `m/meta`, readable without the KEK. */
export type SealedStoreMeta = Pick<SealedMeta, 'storeId' | 'providerName' | 'providerParams'>;

export const DEFAULT_EPOCH_WRITES = 100;
export const DEFAULT_EPOCH_MS = 1000;

export function checkOptions(options: SealedStoreOptions): void {
  if (options.epochWrites !== undefined) checkInteger('epochWrites', options.epochWrites, 1);
  if (options.epochMs !== undefined) checkInteger('epochMs', options.epochMs, 0);
}

/** Converts a counter value to an epoch. Throws SEALMESH_ERR_INVALID_ARGUMENT outside the safe integer range. */
export function toEpoch(value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `monotonic counter value ${value} is outside the supported range 0 to 2^53 - 1`);
  }
  return Number(value);
}

/** Default `onWatchError`. It names the revision but not the key, because keys such as token ids may be secret. */
export function reportWatchError(error: unknown, event: WatchEvent | undefined): void {
  const where = event === undefined ? 'watch read' : `watch callback at revision ${event.revision}`;
  process.emitWarning(`sealed store ${where} failed: ${messageOf(error)}`);
}

export function reportIntegrityError(error: SealmeshError): void {
  process.emitWarning(`sealed store watch dropped an event: ${error.message}`);
}

export function reportCounterError(error: unknown): void {
  process.emitWarning(`sealed store counter advance failed, so a rollback to a copy from the current epoch stays undetected: ${messageOf(error)}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
