/**
 * Transactions of the sealed store. The compares run on decrypted records, and the backend write
 * then requires every record read to be unchanged, so no other write can slip in between.
 */
import { callBackend } from './integrity-errors.ts';
import { type SealedState, openLiveRecord } from './sealed-state.ts';
import { recordName } from './sealed-validate.ts';
import type { PlannedOp, SealedWriter } from './sealed-writer.ts';
import type { Compare, Operation, StoreRecord, TxnRequest, TxnResult } from './types.ts';

/** A transaction whose values are copies, so the caller may reuse its buffers at once. */
export interface CopiedTxn {
  compare: Compare[];
  success: Operation[];
  failure: Operation[];
}

/** Copies every value of a checked transaction request. */
export function copyTxn(request: TxnRequest): CopiedTxn {
  const copy = (operations: Operation[]): Operation[] =>
    operations.map((op) => (op.type === 'put' ? { type: 'put', key: op.key, value: new Uint8Array(op.value) } : { type: 'delete', key: op.key }));
  return {
    compare: request.compare.map((compare): Compare => ('value' in compare ? { key: compare.key, value: new Uint8Array(compare.value) } : { ...compare })),
    success: copy(request.success),
    failure: copy(request.failure ?? []),
  };
}

/**
 * Evaluates the compares, then commits the chosen branch as one write. A branch whose only
 * operations delete missing keys writes nothing and keeps the revision, as the backend does.
 */
export async function runTxn(state: SealedState, writer: SealedWriter, request: CopiedTxn): Promise<TxnResult> {
  const reads = new Map<string, StoreRecord | undefined>();
  const read = async (key: string): Promise<StoreRecord | undefined> => {
    const name = recordName(state.keyring.nameKey, key);
    if (!reads.has(name)) {
      const record = await callBackend('get', () => state.backend.get(name));
      reads.set(name, openLiveRecord(state, name, record));
    }
    return reads.get(name);
  };

  let succeeded = true;
  for (const compare of request.compare) {
    const record = await read(compare.key);
    const matches = 'modRevision' in compare
      ? (record?.modRevision ?? 0) === compare.modRevision
      : record !== undefined && Buffer.compare(record.value, compare.value) === 0;
    if (!matches) {
      succeeded = false;
      break;
    }
  }

  const ops: PlannedOp[] = [];
  for (const op of succeeded ? request.success : request.failure) {
    const name = recordName(state.keyring.nameKey, op.key);
    if (op.type === 'put') ops.push({ type: 'put', name, key: op.key, value: op.value });
    else if ((await read(op.key)) !== undefined) ops.push({ type: 'delete', name, key: op.key });
  }
  if (ops.length === 0) return { succeeded, revision: state.head.revision };

  const guards = [...reads].map(([name, record]): Compare => ({ key: name, modRevision: record?.modRevision ?? 0 }));
  return { succeeded, revision: await writer.commit({ ops, compares: guards }) };
}
