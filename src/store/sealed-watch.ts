/**
 * Watchers of the sealed store: backend events for `d/` keys, authenticated against the chain entry
 * of their revision and translated back to plaintext keys and values.
 */
import { SealmeshError } from '../errors/index.ts';
import { isIntegrityError, mapBackendError, recordError } from './integrity-errors.ts';
import { hashPrefix, openDeletedKey, openRecord, sha256Hex } from './sealed-format.ts';
import { type SealedState, readChainEntry } from './sealed-state.ts';
import { MAX_KEY_BYTES } from './sqlite.ts';
import type { WatchEvent, Watcher } from './types.ts';

export interface WatchHandlers {
  /** Receives each event that fails authentication; the event is not delivered. */
  onIntegrityError: (error: SealmeshError) => void;
  /** Receives each exception of a watch callback, and a failed read that closes the watcher. */
  onWatchError: (error: unknown, event: WatchEvent | undefined) => void;
}

/**
 * One watcher. Backend events queue up and are translated one at a time, because a translation
 * may read a chain entry, so events reach `onEvent` in revision order on later microtasks.
 */
export class SealedWatch implements Watcher {
  private readonly state: SealedState;
  private readonly prefix: string;
  private readonly onEvent: (event: WatchEvent) => void;
  private readonly handlers: WatchHandlers;
  private readonly onClose: (watch: SealedWatch) => void;
  private readonly filter: boolean;
  private readonly queue: WatchEvent[] = [];
  private backendWatcher: Watcher | undefined;
  private draining = false;
  private closed = false;

  /**
   * Starts watching. Throws SEALMESH_ERR_STORE_COMPACTED when the backend no longer contains the
   * history after `afterRevision`, or when that history may contain records sealed under a data key
   * that was dropped after re-encryption.
   */
  constructor(
    state: SealedState,
    prefix: string,
    afterRevision: number,
    onEvent: (event: WatchEvent) => void,
    handlers: WatchHandlers,
    onClose: (watch: SealedWatch) => void,
  ) {
    this.state = state;
    this.prefix = prefix;
    this.onEvent = onEvent;
    this.handlers = handlers;
    this.onClose = onClose;
    const floor = state.keyring.historyFloor;
    if (afterRevision < floor) {
      throw new SealmeshError(
        'SEALMESH_ERR_STORE_COMPACTED',
        `watch after revision ${afterRevision} failed: history before revision ${floor} was sealed under a dropped data key. ` +
          'Read the current state with list() and watch from revision() instead',
      );
    }
    const { backendPrefix, filter } = hashPrefix(state.keyring.nameKey, prefix);
    this.filter = filter;
    // A prefix whose hashed form exceeds the key limit matches no key, so there is nothing to watch.
    if (Buffer.byteLength(backendPrefix, 'utf8') > MAX_KEY_BYTES) return;
    try {
      this.backendWatcher = state.backend.watch(backendPrefix, afterRevision, (event) => this.enqueue(event));
    } catch (error) {
      throw mapBackendError(error, 'watch');
    }
  }

  /** Stops delivery and drops queued events. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.backendWatcher?.close();
    this.onClose(this);
  }

  private enqueue(event: WatchEvent): void {
    if (this.closed) return;
    this.queue.push(event);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (let event = this.queue.shift(); event !== undefined && !this.closed; event = this.queue.shift()) {
        let translated: WatchEvent | undefined;
        try {
          translated = await this.translate(event);
        } catch (error) {
          if (this.closed) return;
          if (isIntegrityError(error)) {
            this.report(() => this.handlers.onIntegrityError(error));
            continue;
          }
          this.close();
          this.report(() => this.handlers.onWatchError(error, undefined));
          return;
        }
        if (translated === undefined || this.closed) continue;
        try {
          this.onEvent(translated);
        } catch (error) {
          this.report(() => this.handlers.onWatchError(error, translated));
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Calls a handler, which must not throw; if it does, the exception becomes a process warning. */
  private report(call: () => void): void {
    try {
      call();
    } catch (error) {
      process.emitWarning(`sealed store watch error handler threw: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /**
   * Checks one backend event against the chain entry of its revision and decrypts it. Returns
   * undefined for a key outside the plaintext prefix.
   */
  private async translate(event: WatchEvent): Promise<WatchEvent | undefined> {
    const state = this.state;
    const name = event.key;
    const revision = event.revision;
    if (revision < state.keyring.historyFloor) {
      throw new SealmeshError(
        'SEALMESH_ERR_STORE_COMPACTED',
        `watch history at revision ${revision} was sealed under a dropped data key; watch again from revision()`,
      );
    }
    const entry = await readChainEntry(state, revision);
    const op = entry.ops.find((candidate) => candidate.name === name);
    if (op === undefined || op.type !== event.type) {
      throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, `the watch event (${event.type}) is not in the chain entry for its revision`);
    }

    let key: string;
    let value: Uint8Array;
    if (op.type === 'put') {
      if (sha256Hex(event.value) !== op.digest) {
        throw recordError('SEALMESH_ERR_INTEGRITY_RECORD_ALTERED', name, revision, 'the watched value differs from the digest in the chain entry');
      }
      ({ key, value } = openRecord(state.storeId, state.keyring, name, revision, event.value));
      state.names.set(name, key);
    } else {
      key = state.names.get(name) ?? openDeletedKey(state.storeId, state.keyring, name, revision, op.sealedKey as string);
      value = new Uint8Array(0);
    }
    if (this.filter && !key.startsWith(this.prefix)) return undefined;
    return { type: event.type, key, value, revision };
  }
}
