import { createHash } from 'node:crypto';
import type { Store } from '../../store/index.ts';

/** Store prefix of cached collateral documents. */
export const COLLATERAL_CACHE_PREFIX = 'attest/collateral/';

/** One fetched document as it is cached: the body, the response headers the source needs, and its expiry. */
export interface CachedDocument {
  url: string;
  body: Buffer;
  headers: Record<string, string>;
  fetchedAt: Date;
  expiresAt: Date;
}

interface StoredDocument {
  url: string;
  body: string;
  headers: Record<string, string>;
  fetchedAt: string;
  expiresAt: string;
}

/**
 * Collateral documents kept in the server's Store, which is the sealed store when sealing is on,
 * under `attest/collateral/<SHA-256 of the URL>`. Each document carries its expiry (the earliest
 * of its nextUpdate and the notAfter of the certificates in it), and `get` ignores an expired one.
 */
export class CollateralCache {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  static key(url: string): string {
    return `${COLLATERAL_CACHE_PREFIX}${createHash('sha256').update(url).digest('hex')}`;
  }

  /** Returns the cached document for `url` when it is still valid at `now`. */
  async get(url: string, now: Date): Promise<CachedDocument | undefined> {
    const record = await this.#store.get(CollateralCache.key(url));
    if (record === undefined) return undefined;
    let stored: StoredDocument;
    try {
      stored = JSON.parse(Buffer.from(record.value).toString('utf8')) as StoredDocument;
    } catch {
      return undefined;
    }
    const expiresAt = new Date(stored.expiresAt);
    if (stored.url !== url || Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= now.getTime()) return undefined;
    return { url, body: Buffer.from(stored.body, 'base64'), headers: stored.headers, fetchedAt: new Date(stored.fetchedAt), expiresAt };
  }

  async put(document: CachedDocument): Promise<void> {
    const stored: StoredDocument = {
      url: document.url,
      body: document.body.toString('base64'),
      headers: document.headers,
      fetchedAt: document.fetchedAt.toISOString(),
      expiresAt: document.expiresAt.toISOString(),
    };
    await this.#store.put(CollateralCache.key(document.url), Buffer.from(JSON.stringify(stored), 'utf8'));
  }
}
