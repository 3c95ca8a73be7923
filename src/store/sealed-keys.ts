/**
 * Key management of the sealed store: data key rotation, re-encryption under the active data key,
 * retirement of older data keys, and rewrapping the keyring under another KEK.
 *
 * Each operation is a chained write of `m/keyring` (and `m/meta` for a rewrap), so the chain covers
 * the keyring and an older keyring put back in its place fails verification.
 */
import { randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import type { SealProvider } from '../seal/types.ts';
import { callBackend } from './integrity-errors.ts';
import { DATA_PREFIX, KEYRING_KEY, type Keyring, META_KEY, SECRET_KEY_BYTES, STORE_ID_BYTES, readEnvelopeHeader } from './sealed-format.ts';
import { type SealedMeta, encodeMeta, wrapKeyring } from './sealed-meta.ts';
import { type SealedState, openLiveRecord } from './sealed-state.ts';
import type { SealedWriter } from './sealed-writer.ts';

/** Largest data key id; ids are 4-byte unsigned integers in the envelope. */
const MAX_DATA_KEY_ID = 0xffff_ffff;

/** Runs one step after every earlier store operation. */
export type Exclusive = <T>(action: string, body: () => Promise<T>) => Promise<T>;

/** Adds a fresh data key and makes it active in one write. Returns its id. */
export async function rotateDataKey(state: SealedState, writer: SealedWriter, provider: SealProvider): Promise<number> {
  const current = state.keyring;
  const id = Math.max(...current.dataKeys.keys()) + 1;
  if (id > MAX_DATA_KEY_ID) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `data key rotation failed: key id ${id} exceeds the 4-byte id range`);
  }
  const key = randomBytes(SECRET_KEY_BYTES);
  let next: Keyring | undefined;
  try {
    await writer.commit({
      ops: [],
      internal: async (revision) => {
        next = { ...current, activeKeyId: id, activeSince: revision, dataKeys: new Map([...current.dataKeys, [id, key]]) };
        return [{ name: KEYRING_KEY, value: await wrapKeyring(provider, state.storeId, next) }];
      },
    });
  } catch (error) {
    key.fill(0);
    throw error;
  }
  state.keyring = next as Keyring;
  return id;
}

/** Returns the backend keys of user records sealed under a data key other than the active one. */
async function staleRecords(state: SealedState): Promise<string[]> {
  const records = await callBackend('record list', () => state.backend.list(DATA_PREFIX));
  return records
    .filter((record) => readEnvelopeHeader(record.value)?.dataKeyId !== state.keyring.activeKeyId)
    .map((record) => record.key);
}

/**
 * Re-encrypts up to `max` records sealed under an older data key, each as its own write with its
 * plaintext unchanged, and returns how many such records remain. Each record is checked against the
 * chain state before it is rewritten.
 */
export async function reencryptRecords(state: SealedState, writer: SealedWriter, max: number, exclusive: Exclusive): Promise<number> {
  const stale = await exclusive('re-encryption scan', () => staleRecords(state));
  let remaining = stale.length;
  for (const name of stale.slice(0, max)) {
    await exclusive('re-encryption', async () => {
      const record = await callBackend('get', () => state.backend.get(name));
      const opened = openLiveRecord(state, name, record);
      // The record may have been deleted or rewritten under the active key since the scan.
      if (opened === undefined || readEnvelopeHeader(record?.value ?? new Uint8Array())?.dataKeyId === state.keyring.activeKeyId) return;
      await writer.commit({
        ops: [{ type: 'put', name, key: opened.key, value: opened.value }],
        compares: [{ key: name, modRevision: opened.modRevision }],
      });
    });
    remaining -= 1;
  }
  return remaining;
}

/**
 * Drops every data key but the active one when no record uses them, in one write, and zeroes them.
 * Watch history from before the active key's rotation may hold envelopes under the dropped keys, so
 * the keyring records that revision as the history floor. Returns the number of records still under
 * older keys, which is 0 unless a write added one since the last scan.
 */
export async function retireDataKeys(state: SealedState, writer: SealedWriter, provider: SealProvider): Promise<number> {
  const current = state.keyring;
  if (current.dataKeys.size === 1) return 0;
  const stale = await staleRecords(state);
  if (stale.length > 0) return stale.length;

  const activeKey = current.dataKeys.get(current.activeKeyId) as Buffer;
  const next: Keyring = { ...current, historyFloor: current.activeSince, dataKeys: new Map([[current.activeKeyId, activeKey]]) };
  await writer.commit({
    ops: [],
    internal: async () => [{ name: KEYRING_KEY, value: await wrapKeyring(provider, state.storeId, next) }],
  });
  state.keyring = next;
  for (const [id, key] of current.dataKeys) {
    if (id !== current.activeKeyId) key.fill(0);
  }
  return 0;
}

/**
 * Wraps the keyring under `provider` and stores it with `meta` in one write. The new wrapping is
 * unwrapped once before the write, so a provider that cannot unwrap its own output fails here and
 * the store keeps its old KEK.
 */
export async function rewrapKeys(state: SealedState, writer: SealedWriter, provider: SealProvider, meta: SealedMeta): Promise<void> {
  const value = await wrapKeyring(provider, state.storeId, state.keyring);
  const unwrapped = await provider.unwrap(value.subarray(STORE_ID_BYTES), state.storeId);
  unwrapped.fill(0);
  await writer.commit({
    ops: [],
    internal: async () => [
      { name: META_KEY, value: encodeMeta(meta) },
      { name: KEYRING_KEY, value },
    ],
  });
}
