/**
 * The write path of the sealed store: one backend transaction per write that stores the sealed
 * records and the next chain entry, which becomes the head, and the rollback epoch policy.
 */
import { SealmeshError } from '../errors/index.ts';
import type { MonotonicCounter } from '../seal/types.ts';
import {
  type ChainHead,
  type ChainOp,
  type StoredChainEntry,
  chainKey,
  encodeEntry,
  entryHash,
  entryMac,
} from './integrity-chain.ts';
import { callBackend } from './integrity-errors.ts';
import { META_KEY, sealDeletedKey, sealRecord, sha256Hex } from './sealed-format.ts';
import type { SealedState } from './sealed-state.ts';
import { StagingBackend } from './sealed-staging.ts';
import type { Compare, Operation, TxnResult } from './types.ts';

/** One user operation of a write, with the backend key (`name`) of its plaintext key. */
export type PlannedOp =
  | { type: 'put'; name: string; key: string; value: Uint8Array }
  | { type: 'delete'; name: string; key: string };

export interface PlannedWrite {
  ops: PlannedOp[];
  /** Internal records (`m/meta`, `m/keyring`) to store in the same transaction, built once the revision is known. */
  internal?: (revision: number) => Promise<{ name: string; value: Uint8Array }[]>;
  /** Conditions on backend keys that must hold besides the head's, typically the modRevision of each record read. */
  compares?: Compare[];
  /** Epoch to commit; by default the epoch policy decides. */
  epoch?: number;
  /** True for the first write of a store, which requires that neither `m/meta` nor a chain entry exists. */
  initial?: boolean;
}

/** When the store raises the rollback epoch, and the counter it advances. */
export interface EpochPolicy {
  counter: MonotonicCounter | undefined;
  /** The epoch rises on the write that reaches this many writes since the last rise. */
  epochWrites: number;
  /** The epoch rises on the first write this many milliseconds or more after the last rise. */
  epochMs: number;
  onCounterError: (error: unknown) => void;
  /**
   * Resolves once every write committed so far is durable in the backend. The counter must not pass
   * an epoch whose head could still be lost, or the next open would reject the store as rolled back.
   */
  durable: () => Promise<void>;
}

export class SealedWriter {
  private readonly state: SealedState;
  private readonly policy: EpochPolicy;
  private writesSinceRaise = 0;
  // No rise yet in this process, so the first write raises the epoch: the writes before the last
  // restart count towards no limit here.
  private lastRaiseAt = Number.NEGATIVE_INFINITY;
  /** Highest epoch the counter was asked to reach, and the highest it is known to have reached. */
  private counterTarget: number;
  private counterDone: number;
  private counterRun: Promise<void> | undefined;
  /** The advance requested by the last epoch rise, which starts once that write is durable. */
  private pendingRise: Promise<void> = Promise.resolve();
  private lastReported: unknown;

  constructor(state: SealedState, policy: EpochPolicy) {
    this.state = state;
    this.policy = policy;
    this.counterTarget = state.head.epoch;
    this.counterDone = state.head.epoch;
  }

  /**
   * Commits `plan` as one backend transaction at the next revision and returns that revision. The
   * transaction requires that no other writer changed the backend since this store's last write
   * (see `write`), so the revision that the AAD and the chain entry name is the one the backend
   * assigns. Throws SEALMESH_ERR_CONFLICT when another writer changed the backend, and records it
   * in the state so that every later operation fails with it too.
   */
  async commit(plan: PlannedWrite): Promise<number> {
    const state = this.state;
    if (state.failure !== undefined) throw state.failure;
    const head = state.head;
    const revision = head.revision + 1;
    const epoch = plan.epoch ?? (this.epochDue() ? head.epoch + 1 : head.epoch);

    const operations: Operation[] = [];
    const chainOps: ChainOp[] = [];
    for (const op of plan.ops) {
      if (op.type === 'put') {
        const envelope = sealRecord(state.storeId, state.keyring, op.name, revision, op.key, op.value);
        operations.push({ type: 'put', key: op.name, value: envelope });
        chainOps.push({ type: 'put', name: op.name, digest: sha256Hex(envelope) });
      } else {
        operations.push({ type: 'delete', key: op.name });
        const sealedKey = sealDeletedKey(state.storeId, state.keyring, op.name, revision, op.key);
        chainOps.push({ type: 'delete', name: op.name, digest: null, sealedKey });
      }
    }
    const internal = plan.internal === undefined ? [] : await plan.internal(revision);
    for (const record of internal) {
      operations.push({ type: 'put', key: record.name, value: record.value });
      chainOps.push({ type: 'put', name: record.name, digest: sha256Hex(record.value) });
    }

    const hash = entryHash({ revision, prev: head.hash, epoch, ops: chainOps });
    const entry: StoredChainEntry = { revision, prev: head.hash, epoch, ops: chainOps, mac: entryMac(state.keyring.macKey, state.storeId, hash) };
    const nextHead: ChainHead = { revision, hash, epoch, mac: entry.mac };
    const entryKey = chainKey(revision);
    operations.push({ type: 'put', key: entryKey, value: encodeEntry(entry) });

    const result = await callBackend('write', () => this.write(plan, head.revision, entryKey, operations));
    if (!result.succeeded || result.revision !== revision) {
      const found = result.succeeded ? `the backend assigned revision ${result.revision} instead of ${revision}` : "the backend changed since this store's last write, or a record read by this write changed";
      state.failure = new SealmeshError(
        'SEALMESH_ERR_CONFLICT',
        `sealed store write at revision ${revision} failed: ${found}, so a concurrent writer uses the same backend. ` +
          'Only one sealed store may write to a backend: stop the other writer and reopen the store, which verifies it',
      );
      throw state.failure;
    }

    this.apply(plan.ops, chainOps, entry, nextHead);
    if (epoch > head.epoch) {
      this.writesSinceRaise = 0;
      this.lastRaiseAt = Date.now();
      // A caller that sets the epoch itself waits for the counter and receives its failure.
      if (plan.epoch === undefined) {
        this.pendingRise = this.policy
          .durable()
          .then(() => this.requestAdvance(epoch))
          .catch((error: unknown) => this.reportCounterError(error));
      }
    } else {
      this.writesSinceRaise += 1;
    }
    return revision;
  }

  /**
   * Runs the backend transaction of a write at `headRevision + 1`. Over a `SqliteStore` it requires
   * that the backend is still at `headRevision`. The revision rises with every write, so a write by
   * any other writer since this store's last one makes the transaction fail before it applies
   * anything. Over another backend it requires that the head entry is unchanged and that no entry
   * exists for the next revision. The first write requires that neither `m/meta` nor the first
   * entry exists.
   */
  private write(plan: PlannedWrite, headRevision: number, entryKey: string, success: Operation[]): Promise<TxnResult> {
    const backend = this.state.backend;
    const compares = plan.compares ?? [];
    if (plan.initial === true) {
      const compare: Compare[] = [{ key: META_KEY, modRevision: 0 }, { key: entryKey, modRevision: 0 }, ...compares];
      return backend.txn({ compare, success });
    }
    if (backend instanceof StagingBackend) return backend.txnAtRevision({ compare: compares, success }, headRevision);
    const compare: Compare[] = [{ key: chainKey(headRevision), modRevision: headRevision }, { key: entryKey, modRevision: 0 }, ...compares];
    return backend.txn({ compare, success });
  }

  /** Updates the in-memory state after a committed write. */
  private apply(ops: PlannedOp[], chainOps: ChainOp[], entry: StoredChainEntry, head: ChainHead): void {
    const state = this.state;
    for (const op of chainOps) {
      if (op.type === 'delete') {
        state.live.delete(op.name);
        continue;
      }
      const previous = state.live.get(op.name);
      state.live.set(op.name, {
        digest: op.digest as string,
        modRevision: head.revision,
        createRevision: previous?.createRevision ?? head.revision,
        version: (previous?.version ?? 0) + 1,
      });
    }
    for (const op of ops) state.names.set(op.name, op.key);
    state.entries.set(head.revision, entry);
    state.head = head;
  }

  /** Returns true when the next write should raise the epoch. Without a counter the epoch never rises on its own. */
  private epochDue(): boolean {
    if (this.policy.counter === undefined) return false;
    return this.writesSinceRaise + 1 >= this.policy.epochWrites || Date.now() - this.lastRaiseAt >= this.policy.epochMs;
  }

  /**
   * Asks the counter to reach `epoch` and returns when it has. Requests that arrive while the
   * counter is busy are merged, so the counter has at most one call in flight.
   */
  requestAdvance(epoch: number): Promise<void> {
    if (this.policy.counter === undefined) return Promise.resolve();
    this.counterTarget = Math.max(this.counterTarget, epoch);
    if (this.counterRun === undefined && this.counterDone < this.counterTarget) this.counterRun = this.runAdvance();
    return this.counterRun ?? Promise.resolve();
  }

  private async runAdvance(): Promise<void> {
    const counter = this.policy.counter as MonotonicCounter;
    try {
      // Yield first, so `finally` cannot clear `counterRun` before the caller has assigned it. After
      // that, the last loop check and `finally` run without a break, so no request is missed.
      await null;
      while (this.counterDone < this.counterTarget) {
        const target = this.counterTarget;
        await counter.advanceTo(BigInt(target));
        this.counterDone = target;
      }
    } finally {
      this.counterRun = undefined;
    }
  }

  /** Waits until no counter call is in flight; failures were already reported. */
  async flushCounter(): Promise<void> {
    await this.pendingRise;
    while (this.counterRun !== undefined) await this.counterRun.catch(() => undefined);
  }

  private reportCounterError(error: unknown): void {
    // Merged requests share one failure, which is reported once.
    if (error === this.lastReported) return;
    this.lastReported = error;
    this.policy.onCounterError(error);
  }
}
