import type { Store } from '../store/index.ts';
import { SealmeshError } from '../errors/index.ts';

/**
 * The key layout of control-plane state in the `Store`. Every record is a JSON document.
 */
export const KEYS = {
  clusterMeta: 'cluster/meta',
  aclBootstrap: 'acl/bootstrap',
  aclTokenPrefix: 'acl/tokens/',
  instancePrefix: 'catalog/instances/',
  intentionPrefix: 'intentions/',
} as const;

export function aclTokenKey(tokenHash: string): string {
  return `${KEYS.aclTokenPrefix}${tokenHash}`;
}

export function instanceKey(namespace: string, service: string, instanceId: string): string {
  return `${KEYS.instancePrefix}${namespace}/${service}/${instanceId}`;
}

export function intentionKey(source: string, destination: string): string {
  return `${KEYS.intentionPrefix}${encodeURIComponent(source)}/${encodeURIComponent(destination)}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function decodeJson<T>(key: string, bytes: Uint8Array): T {
  try {
    return JSON.parse(decoder.decode(bytes)) as T;
  } catch (cause) {
    throw new SealmeshError('SEALMESH_ERR_INTERNAL', `stored record ${JSON.stringify(key)} is not valid JSON`, { cause });
  }
}

export async function getJson<T>(store: Store, key: string): Promise<{ value: T; modRevision: number } | undefined> {
  const record = await store.get(key);
  if (record === undefined) return undefined;
  return { value: decodeJson<T>(key, record.value), modRevision: record.modRevision };
}

export async function listJson<T>(store: Store, prefix: string): Promise<Array<{ key: string; value: T; modRevision: number }>> {
  const records = await store.list(prefix);
  return records.map((record) => ({ key: record.key, value: decodeJson<T>(record.key, record.value), modRevision: record.modRevision }));
}
