/**
 * Group commit of the sealed store: puts that queue up while an earlier operation runs are sealed
 * into as few backend transactions as possible, each with one chain entry, so concurrent writers
 * share one commit and its fsync. A lone put is committed as before.
 */
import type { SealedState } from './sealed-state.ts';
import { recordName } from './sealed-validate.ts';
import type { PlannedOp, SealedWriter } from './sealed-writer.ts';

/** Maximum number of puts in one batch; a later put starts the next batch. */
export const MAX_BATCH_PUTS = 64;
/** Maximum total value bytes of one batch, unless its first value alone is larger. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;

interface QueuedPut {
  key: string;
  value: Uint8Array;
  resolve: (revision: number) => void;
  reject: (error: unknown) => void;
}

/** Puts waiting for the store's queue, in call order. */
export class PutBatch {
  /** The store operation that commits this batch; it ends once the batch's writes are durable. */
  run: Promise<void> | undefined;
  private readonly puts: QueuedPut[] = [];
  private bytes = 0;

  /** Returns true when `value` still fits this batch. */
  accepts(value: Uint8Array): boolean {
    return this.puts.length === 0 || (this.puts.length < MAX_BATCH_PUTS && this.bytes + value.byteLength <= MAX_BATCH_BYTES);
  }

  /** Adds a put whose value the caller no longer changes, and returns the revision it commits at. */
  add(key: string, value: Uint8Array): Promise<number> {
    this.bytes += value.byteLength;
    return new Promise((resolve, reject) => this.puts.push({ key, value, resolve, reject }));
  }

  /** Rejects every put of the batch that has not settled yet. */
  reject(error: unknown): void {
    for (const put of this.puts) put.reject(error);
  }

  /**
   * Commits the puts in call order. A write ends before a key that it already contains, so a key
   * put twice gets two revisions and keeps the later value. Each put resolves with the revision of
   * its write, or rejects with that write's error; a key that cannot be named rejects alone.
   */
  async commit(state: SealedState, writer: SealedWriter): Promise<void> {
    let ops: PlannedOp[] = [];
    let waiting: QueuedPut[] = [];
    const names = new Set<string>();
    const flush = async (): Promise<void> => {
      if (ops.length === 0) return;
      const [planned, settled] = [ops, waiting];
      ops = [];
      waiting = [];
      names.clear();
      try {
        const revision = await writer.commit({ ops: planned });
        for (const put of settled) put.resolve(revision);
      } catch (error) {
        for (const put of settled) put.reject(error);
      }
    };

    for (const put of this.puts) {
      let name: string;
      try {
        name = recordName(state.keyring.nameKey, put.key);
      } catch (error) {
        put.reject(error);
        continue;
      }
      if (names.has(name)) await flush();
      names.add(name);
      ops.push({ type: 'put', name, key: put.key, value: put.value });
      waiting.push(put);
    }
    await flush();
  }
}
