import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Store } from '../store/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { aclTokenKey, encodeJson, getJson, KEYS, listJson } from './records.ts';

/**
 * ACL tokens. A token's secret is returned once, when it is created, and the store keeps only its
 * SHA-256 hash, so reading the store yields no usable token.
 *
 * - `operator`: full control of the cluster, including creating tokens.
 * - `read`: read-only access to the catalog, intentions, tokens' metadata and metrics.
 * - `join`: enrolls one proxy of one service, once, before it expires.
 */
export type TokenKind = 'operator' | 'read' | 'join';

export interface TokenRecord {
  accessorId: string;
  kind: TokenKind;
  namespace?: string;
  service?: string;
  description?: string;
  createdAt: string;
  expiresAt?: string;
  usedAt?: string;
}

export interface ResolvedToken extends TokenRecord {
  tokenHash: string;
  modRevision: number;
}

export const TOKEN_PREFIX = 'smt_';
/** Namespace of the control plane's own SPIFFE IDs, such as `spiffe://<td>/ns/sealmesh/svc/server`. */
export const RESERVED_NAMESPACE = 'sealmesh';
/** Token kinds accepted for each purpose: an operator token also reads, and only join tokens enroll. */
const PURPOSE_KINDS: Record<'operator' | 'read' | 'join', readonly TokenKind[]> = { operator: ['operator'], read: ['operator', 'read'], join: ['join'] };
const ARTICLE_KIND: Record<TokenKind, string> = { operator: 'an operator', read: 'a read', join: 'a join' };
export const JOIN_TOKEN_DEFAULT_TTL_SECONDS = 3600;
export const JOIN_TOKEN_MAX_TTL_SECONDS = 7 * 24 * 3600;

/** Returns the hex SHA-256 hash under which a token is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function newTokenSecret(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export class AclService {
  readonly #store: Store;
  readonly #now: () => Date;

  constructor(store: Store, now: () => Date = () => new Date()) {
    this.#store = store;
    this.#now = now;
  }

  /**
   * Creates the first operator token. Succeeds exactly once per cluster: the bootstrap marker and
   * the token are written in one compare-and-swap transaction.
   */
  async bootstrap(): Promise<{ token: string; accessorId: string }> {
    const token = newTokenSecret();
    const record: TokenRecord = {
      accessorId: randomUUID(),
      kind: 'operator',
      description: 'first operator token',
      createdAt: this.#now().toISOString(),
    };
    const result = await this.#store.txn({
      compare: [{ key: KEYS.aclBootstrap, modRevision: 0 }],
      success: [
        { type: 'put', key: KEYS.aclBootstrap, value: encodeJson({ at: record.createdAt, accessorId: record.accessorId }) },
        { type: 'put', key: aclTokenKey(hashToken(token)), value: encodeJson(record) },
      ],
    });
    if (!result.succeeded) {
      throw new SealmeshError(
        'SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED',
        'the cluster is already initialised and its first operator token was issued; ask an operator to create a token with `sealmesh token create`',
      );
    }
    return { token, accessorId: record.accessorId };
  }

  async isBootstrapped(): Promise<boolean> {
    return (await this.#store.get(KEYS.aclBootstrap)) !== undefined;
  }

  /** Creates a token and returns its secret; the secret is not recoverable afterwards. */
  async create(options: {
    kind: TokenKind;
    namespace?: string;
    service?: string;
    ttlSeconds?: number;
    description?: string;
  }): Promise<{ token: string; record: TokenRecord }> {
    if (options.kind === 'join' && options.service === undefined) {
      throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', 'a join token must be bound to a service: pass a service name');
    }
    if (options.kind !== 'join' && options.service !== undefined) {
      throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `${ARTICLE_KIND[options.kind]} token cannot be bound to a service; only join tokens are`);
    }
    let ttlSeconds = options.ttlSeconds;
    if (options.kind === 'join') {
      ttlSeconds ??= JOIN_TOKEN_DEFAULT_TTL_SECONDS;
      if (ttlSeconds > JOIN_TOKEN_MAX_TTL_SECONDS) {
        throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `join token TTL ${ttlSeconds}s exceeds the maximum of ${JOIN_TOKEN_MAX_TTL_SECONDS}s (7d)`);
      }
      if (options.namespace === RESERVED_NAMESPACE) {
        throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `namespace ${RESERVED_NAMESPACE} is reserved for the control plane's own identities; no join token can enroll a service in it`);
      }
    }
    const now = this.#now();
    const record: TokenRecord = {
      accessorId: randomUUID(),
      kind: options.kind,
      createdAt: now.toISOString(),
      ...(options.kind === 'join' ? { namespace: options.namespace, service: options.service } : {}),
      ...(options.description !== undefined ? { description: options.description } : {}),
      ...(ttlSeconds !== undefined ? { expiresAt: new Date(now.getTime() + ttlSeconds * 1000).toISOString() } : {}),
    };
    const token = newTokenSecret();
    await this.#store.put(aclTokenKey(hashToken(token)), encodeJson(record));
    return { token, record };
  }

  /**
   * Resolves a presented token and checks that it may be used for `purpose`. Fails closed: an absent,
   * unknown, expired or used token, or one of the wrong kind, is rejected with its own code.
   */
  async authorize(token: string | undefined, purpose: 'operator' | 'read' | 'join'): Promise<ResolvedToken> {
    if (token === undefined || token === '') {
      throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_MISSING', 'no ACL token was presented: send it as `Authorization: Bearer <token>` or set SEALMESH_TOKEN');
    }
    const tokenHash = hashToken(token);
    const found = await getJson<TokenRecord>(this.#store, aclTokenKey(tokenHash));
    if (found === undefined) {
      throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_INVALID', 'the ACL token is not known to this cluster');
    }
    const record = found.value;
    if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.#now().getTime()) {
      throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_EXPIRED', `the ACL token ${record.accessorId} expired at ${record.expiresAt}`);
    }
    if (record.kind === 'join' && record.usedAt !== undefined) {
      throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_USED', `the join token ${record.accessorId} was already used at ${record.usedAt}; create a new one`);
    }
    if (!PURPOSE_KINDS[purpose].includes(record.kind)) {
      throw new SealmeshError('SEALMESH_ERR_ACL_PERMISSION_DENIED', `this request needs ${ARTICLE_KIND[purpose]} token, and the token presented is ${ARTICLE_KIND[record.kind]} token`);
    }
    return { ...record, tokenHash, modRevision: found.modRevision };
  }

  /**
   * Marks a join token used. The compare on its revision makes the use single: of two concurrent
   * enrollments with the same token, exactly one succeeds.
   */
  async consumeJoinToken(resolved: ResolvedToken): Promise<void> {
    const used: TokenRecord = { ...stripResolved(resolved), usedAt: this.#now().toISOString() };
    const key = aclTokenKey(resolved.tokenHash);
    const result = await this.#store.txn({
      compare: [{ key, modRevision: resolved.modRevision }],
      success: [{ type: 'put', key, value: encodeJson(used) }],
    });
    if (!result.succeeded) {
      throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_USED', `the join token ${resolved.accessorId} was used by a concurrent request; create a new one`);
    }
  }

  /** Lists token metadata. Secrets are never stored, so none can be listed. */
  async list(): Promise<TokenRecord[]> {
    const records = await listJson<TokenRecord>(this.#store, KEYS.aclTokenPrefix);
    return records.map((entry) => entry.value).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Deletes the token with the given accessor id; returns false when there is none. */
  async revoke(accessorId: string): Promise<boolean> {
    const records = await listJson<TokenRecord>(this.#store, KEYS.aclTokenPrefix);
    const entry = records.find((candidate) => candidate.value.accessorId === accessorId);
    if (entry === undefined) return false;
    return this.#store.delete(entry.key);
  }
}

function stripResolved(resolved: ResolvedToken): TokenRecord {
  const { tokenHash: _hash, modRevision: _revision, ...record } = resolved;
  return record;
}
