import type { Store } from '../store/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { normaliseIntentionEnds, type Intention, type IntentionAction, type Permission } from '../policy/index.ts';
import { encodeJson, intentionKey, KEYS, listJson } from './records.ts';

/** Stores intentions, one record per source and destination pair. */
export class IntentionStore {
  readonly #store: Store;
  readonly #now: () => Date;

  constructor(store: Store, now: () => Date = () => new Date()) {
    this.#store = store;
    this.#now = now;
  }

  /**
   * Creates the intention for a source and destination pair, or replaces the action of an existing
   * one when `replace` is set. Without `replace`, an existing pair is a conflict.
   */
  async upsert(options: { source: string; destination: string; action: IntentionAction; permissions?: Permission[]; description?: string; replace?: boolean }): Promise<Intention> {
    const { source, destination } = normaliseIntentionEnds(options.source, options.destination);
    const intention: Intention = {
      source,
      destination,
      action: options.action,
      ...(options.permissions !== undefined ? { permissions: options.permissions } : {}),
      createdAt: this.#now().toISOString(),
      ...(options.description !== undefined ? { description: options.description } : {}),
    };
    const key = intentionKey(source, destination);
    if (options.replace === true) {
      await this.#store.put(key, encodeJson(intention));
      return intention;
    }
    const result = await this.#store.txn({
      compare: [{ key, modRevision: 0 }],
      success: [{ type: 'put', key, value: encodeJson(intention) }],
    });
    if (!result.succeeded) {
      throw new SealmeshError(
        'SEALMESH_ERR_CONFLICT',
        `an intention ${source} -> ${destination} already exists; delete it first or pass --replace`,
      );
    }
    return intention;
  }

  async delete(source: string, destination: string): Promise<boolean> {
    const ends = normaliseIntentionEnds(source, destination);
    return this.#store.delete(intentionKey(ends.source, ends.destination));
  }

  async list(): Promise<Intention[]> {
    return (await listJson<Intention>(this.#store, KEYS.intentionPrefix)).map((entry) => entry.value);
  }
}
