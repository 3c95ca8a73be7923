/**
 * The `Store` interface under all control-plane state.
 *
 * The store is a revisioned key-value map in the style of etcd: every successful write increments
 * one store-wide revision, each record remembers the revision that created and last modified it,
 * and watchers receive every change after a given revision in order. The SQLite backend implements
 * it today; a sealing layer and an etcd backend implement the same interface.
 *
 * Keys are strings of at most 1024 bytes; values are opaque bytes of at most 4 MiB.
 */
export interface StoreRecord {
  key: string;
  value: Uint8Array;
  /** Revision of the write that created this key (after its last delete). */
  createRevision: number;
  /** Revision of the write that last changed this key. */
  modRevision: number;
  /** Number of writes since the key was created, starting at 1. */
  version: number;
}

/** A condition of a transaction, evaluated against the current state of one key. */
export type Compare =
  /** Holds when the key's modRevision equals `modRevision`; 0 means the key must not exist. */
  | { key: string; modRevision: number }
  /** Holds when the key exists and its value equals `value` byte for byte. */
  | { key: string; value: Uint8Array };

export type Operation =
  | { type: 'put'; key: string; value: Uint8Array }
  | { type: 'delete'; key: string };

export interface TxnRequest {
  /** All must hold for `success` to run; otherwise `failure` runs. */
  compare: Compare[];
  success: Operation[];
  failure?: Operation[];
}

export interface TxnResult {
  succeeded: boolean;
  /** The store revision after the transaction; unchanged when it wrote nothing. */
  revision: number;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** The new value for a put; empty for a delete. */
  value: Uint8Array;
  /** Revision of the write that produced the event. */
  revision: number;
}

export interface Watcher {
  /** Stops delivery. Idempotent. */
  close(): void;
}

export interface Store {
  /** The revision of the last committed write; 0 for an empty store. */
  revision(): Promise<number>;

  get(key: string): Promise<StoreRecord | undefined>;

  /** Lists records whose key starts with `prefix`, ordered by key. */
  list(prefix: string): Promise<StoreRecord[]>;

  /** Writes one key and returns the new store revision. Durable before it resolves. */
  put(key: string, value: Uint8Array): Promise<number>;

  /** Deletes one key; returns true when it existed. Durable before it resolves. */
  delete(key: string): Promise<boolean>;

  /** Applies a compare-and-swap transaction atomically. Durable before it resolves. */
  txn(request: TxnRequest): Promise<TxnResult>;

  /**
   * Calls `onEvent` for every change to a key starting with `prefix` whose revision is greater
   * than `afterRevision`, first the recorded history and then live changes, in revision order.
   * Throws when the history back to `afterRevision` has been compacted away.
   */
  watch(prefix: string, afterRevision: number, onEvent: (event: WatchEvent) => void): Watcher;

  close(): Promise<void>;
}
