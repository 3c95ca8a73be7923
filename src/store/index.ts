export type { Store, StoreRecord, Compare, Operation, TxnRequest, TxnResult, WatchEvent, Watcher } from './types.ts';
export { SqliteStore } from './sqlite.ts';
export * from './sealed-api.ts';
