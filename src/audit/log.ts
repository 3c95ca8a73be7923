import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { z } from 'zod';
import { SealmeshError } from '../errors/index.ts';
import type { Store, StoreRecord } from '../store/types.ts';

/**
 * A tamper-evident audit log kept in the `Store`.
 *
 * Entry n is stored at `audit/<n as 12 digits>` and names the hash of entry n - 1 in `prev`; the
 * first entry names 64 zeros. Its hash is
 *
 *     hash = SHA-256( bytes(prev) || UTF-8( JCS(entry without `hash`) ) )
 *
 * where bytes(prev) is the 32 bytes of the hex `prev` and JCS is the RFC 8785 canonical JSON of
 * the other members. `audit/head` stores the seq and hash of the last entry. Each append writes the
 * entry and the head in one transaction that requires the head to be unchanged since it was read
 * and the entry key to be free, so two appends cannot both extend the same entry.
 *
 * NOTE: the chain detects an edit, removal or reordering of some entries. Someone who can write
 * the store can still rewrite every entry and the head together. Detecting that needs a copy of
 * the head hash kept elsewhere, such as in the sealed store's integrity chain or off the host.
 *
 * NOTE: callers append an entry after the change it records, in a write of its own, so an append
 * that fails (for example after the store detected tampering) leaves that change without an entry.
 */

/** The events that are audited. */
export const AUDIT_ACTIONS = [
  'manifest.apply',
  'manifest.reject',
  'token.create',
  'token.revoke',
  'intention.create',
  'intention.delete',
  'operator.init',
  'seal.unseal',
  'seal.rotate-kek',
  'seal.rotate-data-key',
  'snapshot.restore',
  'ca.rotate',
  'ca.prune',
  'ca.intermediate-renewed',
  'attestation.reject',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * The cause of an event: an ACL token by its accessor id, an operator key by its id, a proxy by
 * the SPIFFE ID of the SVID it presented, or the server itself. Never a token secret or key material.
 */
export interface AuditActor {
  kind: 'token' | 'operator' | 'svid' | 'system';
  accessorId: string;
}

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The input of `AuditLog.append`. */
export interface AuditEvent {
  action: AuditAction;
  actor: AuditActor;
  /** The object acted on, such as a token accessor id or `web -> api`. */
  subject?: string;
  /** Further facts about the event. Must not contain secrets: see `append`. */
  details?: Record<string, JsonValue>;
}

/** One stored audit entry. */
export interface AuditEntry {
  seq: number;
  /** ISO 8601 time of the append. */
  at: string;
  action: AuditAction;
  actor: AuditActor;
  subject: string | null;
  details: Record<string, JsonValue> | null;
  /** Hash of the previous entry, or 64 zeros for the first. */
  prev: string;
  hash: string;
}

/** The codes `AuditLog.verify` reports. */
export type AuditFailureCode =
  | 'SEALMESH_ERR_AUDIT_ENTRY_ALTERED'
  | 'SEALMESH_ERR_AUDIT_ENTRY_MISSING'
  | 'SEALMESH_ERR_AUDIT_ENTRY_REORDERED'
  | 'SEALMESH_ERR_AUDIT_HEAD_MISMATCH';

/** The outcome of `AuditLog.verify`. */
export type AuditVerification =
  | { ok: true; count: number; headHash: string | null }
  | { ok: false; code: AuditFailureCode; seq: number; message: string };

export const AUDIT_PREFIX = 'audit/';
export const AUDIT_HEAD_KEY = 'audit/head';
const ENTRY_KEY_PATTERN = /^audit\/(\d{12})$/;
const MAX_SEQ = 999_999_999_999;
const ZERO_HASH = '0'.repeat(64);
// `/` appears in the SPIFFE IDs of `svid` actors.
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,255}$/;
// Detail names that usually hold a secret, compared without case or separators.
const SECRET_DETAIL_NAMES = new Set(['secret', 'secretid', 'password', 'passphrase', 'pin', 'privatekey', 'token', 'jointoken', 'bearertoken', 'apikey', 'share', 'shares']);
// Appends that lose the race to another writer are retried this many times before failing.
const MAX_APPEND_ATTEMPTS = 10;

const hashPattern = z.string().regex(/^[0-9a-f]{64}$/);
const entrySchema = z.strictObject({
  seq: z.number().int().min(1).max(MAX_SEQ),
  at: z.iso.datetime(),
  action: z.enum(AUDIT_ACTIONS),
  actor: z.strictObject({ kind: z.enum(['token', 'operator', 'svid', 'system']), accessorId: z.string().regex(ID_PATTERN) }),
  subject: z.string().max(1024).nullable(),
  details: z.record(z.string(), z.json()).nullable(),
  prev: hashPattern,
  hash: hashPattern,
});
const headSchema = z.strictObject({ seq: z.number().int().min(1).max(MAX_SEQ), hash: hashPattern });

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Returns the store key of entry `seq`. */
export function auditEntryKey(seq: number): string {
  return `${AUDIT_PREFIX}${String(seq).padStart(12, '0')}`;
}

/** Computes the hash of an entry from all its members except `hash`. */
export function auditEntryHash(entry: Omit<AuditEntry, 'hash'>): string {
  const body = { seq: entry.seq, at: entry.at, action: entry.action, actor: entry.actor, subject: entry.subject, details: entry.details, prev: entry.prev };
  const canonical = canonicalize(body);
  if (canonical === undefined) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'audit entry has no canonical JSON form');
  }
  return createHash('sha256').update(Buffer.from(entry.prev, 'hex')).update(encoder.encode(canonical)).digest('hex');
}

/** Parses a stored entry; returns undefined when it is not valid JSON of the entry shape. */
function decodeEntry(value: Uint8Array): AuditEntry | undefined {
  try {
    const parsed = entrySchema.safeParse(JSON.parse(decoder.decode(value)));
    return parsed.success ? (parsed.data as AuditEntry) : undefined;
  } catch {
    return undefined;
  }
}

function decodeHead(value: Uint8Array): { seq: number; hash: string } | undefined {
  try {
    const parsed = headSchema.safeParse(JSON.parse(decoder.decode(value)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function invalidEvent(reason: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `audit event is invalid: ${reason}`);
}

/** Throws when the name of a detail at any depth suggests a secret. */
function rejectSecretDetails(value: JsonValue, path: string): void {
  if (value === null || typeof value !== 'object') return;
  const entries: Array<[string, JsonValue]> = Array.isArray(value) ? value.map((item, index) => [String(index), item]) : Object.entries(value);
  for (const [name, member] of entries) {
    if (!Array.isArray(value) && SECRET_DETAIL_NAMES.has(name.toLowerCase().replace(/[^a-z0-9]/g, ''))) {
      throw invalidEvent(`detail ${JSON.stringify(`${path}${name}`)} looks like a secret; record an accessor id or a fingerprint instead`);
    }
    rejectSecretDetails(member, `${path}${name}.`);
  }
}

function validateEvent(event: AuditEvent): void {
  if (!(AUDIT_ACTIONS as readonly string[]).includes(event.action)) {
    throw invalidEvent(`action ${JSON.stringify(event.action)} is not one of ${AUDIT_ACTIONS.join(', ')}`);
  }
  if (!['token', 'operator', 'svid', 'system'].includes(event.actor.kind)) {
    throw invalidEvent(`actor kind ${JSON.stringify(event.actor.kind)} is not token, operator, svid or system`);
  }
  if (!ID_PATTERN.test(event.actor.accessorId)) {
    throw invalidEvent('actor accessorId must be 1 to 256 letters, digits and ._:@/-, starting with a letter or digit');
  }
  if (event.subject !== undefined && (typeof event.subject !== 'string' || event.subject.length > 1024)) {
    throw invalidEvent('subject must be a string of at most 1024 characters');
  }
  if (event.details !== undefined) {
    if (event.details === null || typeof event.details !== 'object' || Array.isArray(event.details)) {
      throw invalidEvent('details must be an object');
    }
    let canonical: string | undefined;
    try {
      canonical = canonicalize(event.details);
    } catch (error) {
      throw invalidEvent(`details have no JSON form: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (canonical === undefined || !z.json().safeParse(event.details).success) {
      throw invalidEvent('details must contain only JSON values');
    }
    rejectSecretDetails(event.details, '');
  }
}

/** Settings of an `AuditLog`. */
export interface AuditLogOptions {
  /** Source of entry timestamps. Default: the system clock. */
  clock?: () => Date;
}

/** The audit log; see the file comment for the format. */
export class AuditLog {
  readonly #store: Store;
  readonly #clock: () => Date;
  // Appends from this process run one after another, so they do not race each other.
  #tail: Promise<unknown> = Promise.resolve();

  constructor(store: Store, options: AuditLogOptions = {}) {
    this.#store = store;
    this.#clock = options.clock ?? (() => new Date());
  }

  /**
   * Appends an event and returns the stored entry. `details` must be JSON, and a detail at any
   * depth whose name suggests a secret, such as token, secret, password, passphrase, pin,
   * privateKey, apiKey or share in any case or separator style, is rejected. Rejects with:
   * - SEALMESH_ERR_INVALID_ARGUMENT for an invalid event;
   * - SEALMESH_ERR_AUDIT_HEAD_MISMATCH when the stored head is malformed or lags behind the stored
   *   entries, so an append never overwrites an entry;
   * - SEALMESH_ERR_CONFLICT when other writers keep appending first, after 10 attempts.
   */
  append(event: AuditEvent): Promise<AuditEntry> {
    try {
      validateEvent(event);
    } catch (error) {
      return Promise.reject(error);
    }
    const result = this.#tail.then(() => this.#appendWithRetry(event));
    this.#tail = result.catch(() => undefined);
    return result;
  }

  async #appendWithRetry(event: AuditEvent): Promise<AuditEntry> {
    for (let attempt = 0; attempt < MAX_APPEND_ATTEMPTS; attempt++) {
      const entry = await this.#tryAppend(event);
      if (entry !== undefined) return entry;
    }
    throw new SealmeshError('SEALMESH_ERR_CONFLICT', `audit append lost to concurrent writers ${MAX_APPEND_ATTEMPTS} times; retry the operation`);
  }

  /** Writes one entry after the current head; returns undefined when another writer moved the head. */
  async #tryAppend(event: AuditEvent): Promise<AuditEntry | undefined> {
    const headRecord = await this.#store.get(AUDIT_HEAD_KEY);
    const head = headRecord === undefined ? { seq: 0, hash: ZERO_HASH } : decodeHead(headRecord.value);
    if (head === undefined) {
      throw new SealmeshError('SEALMESH_ERR_AUDIT_HEAD_MISMATCH', `audit head ${AUDIT_HEAD_KEY} is malformed; run the audit verification and restore the log`);
    }
    if (head.seq >= MAX_SEQ) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `audit log is full at ${MAX_SEQ} entries`);
    }

    const body: Omit<AuditEntry, 'hash'> = {
      seq: head.seq + 1,
      at: this.#clock().toISOString(),
      action: event.action,
      actor: { kind: event.actor.kind, accessorId: event.actor.accessorId },
      subject: event.subject ?? null,
      details: event.details ?? null,
      prev: head.hash,
    };
    const entry: AuditEntry = { ...body, hash: auditEntryHash(body) };
    const key = auditEntryKey(entry.seq);
    const result = await this.#store.txn({
      compare: [
        { key: AUDIT_HEAD_KEY, modRevision: headRecord?.modRevision ?? 0 },
        { key, modRevision: 0 },
      ],
      success: [
        { type: 'put', key, value: encoder.encode(JSON.stringify(entry)) },
        { type: 'put', key: AUDIT_HEAD_KEY, value: encoder.encode(JSON.stringify({ seq: entry.seq, hash: entry.hash })) },
      ],
    });
    if (result.succeeded) {
      return entry;
    }
    // Either another writer moved the head, and the caller retries, or the head is unchanged and
    // the entry key is taken, which means the head lags behind the stored entries.
    const current = await this.#store.get(AUDIT_HEAD_KEY);
    if ((current?.modRevision ?? 0) === (headRecord?.modRevision ?? 0)) {
      throw new SealmeshError(
        'SEALMESH_ERR_AUDIT_HEAD_MISMATCH',
        `audit head names entry ${head.seq}, but ${key} already exists; run the audit verification and restore the log`,
      );
    }
    return undefined;
  }

  /** Returns the seq and hash of the last entry, or undefined for an empty log or a malformed head. */
  async head(): Promise<{ seq: number; hash: string } | undefined> {
    const record = await this.#store.get(AUDIT_HEAD_KEY);
    return record === undefined ? undefined : decodeHead(record.value);
  }

  /**
   * Returns entries in seq order, from the first at or after `since` when given, at most `limit`.
   * Throws SEALMESH_ERR_AUDIT_ENTRY_ALTERED for an entry that cannot be decoded. It does not check
   * the chain; `verify` does.
   * NOTE: it reads every entry from the store, because the Store interface has no range read.
   */
  async list(options: { since?: Date; limit?: number } = {}): Promise<AuditEntry[]> {
    if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 1)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `audit list limit ${options.limit} must be a positive integer`);
    }
    const since = options.since?.getTime();
    const entries: AuditEntry[] = [];
    for (const record of await this.#entryRecords()) {
      const entry = decodeEntry(record.value);
      if (entry === undefined) {
        throw new SealmeshError('SEALMESH_ERR_AUDIT_ENTRY_ALTERED', `audit entry ${record.key} is malformed`);
      }
      if (since !== undefined && Date.parse(entry.at) < since) continue;
      entries.push(entry);
      if (options.limit !== undefined && entries.length >= options.limit) break;
    }
    return entries;
  }

  async #entryRecords(): Promise<StoreRecord[]> {
    return (await this.#store.list(AUDIT_PREFIX)).filter((record) => ENTRY_KEY_PATTERN.test(record.key));
  }

  /**
   * Walks the whole chain and returns ok with the number of entries, or the first problem:
   * - SEALMESH_ERR_AUDIT_ENTRY_ALTERED: an entry is malformed, its hash does not match its
   *   content, or it was rewritten with a fresh hash so that its successor's `prev` no longer
   *   matches (reported at the rewritten entry);
   * - SEALMESH_ERR_AUDIT_ENTRY_MISSING: a seq has no entry, including entries removed from the
   *   end, which the head still counts;
   * - SEALMESH_ERR_AUDIT_ENTRY_REORDERED: an entry sits under the key of another seq;
   * - SEALMESH_ERR_AUDIT_HEAD_MISMATCH: the head is missing, malformed, or names another entry
   *   than the last.
   */
  async verify(): Promise<AuditVerification> {
    const records = await this.#entryRecords();
    const decoded = records.map((record) => ({ seq: Number(ENTRY_KEY_PATTERN.exec(record.key)![1]), entry: decodeEntry(record.value) }));
    const storedSeqs = new Set(decoded.map(({ entry }) => entry?.seq).filter((seq) => seq !== undefined));
    const failure = (code: AuditFailureCode, seq: number, message: string): AuditVerification => ({ ok: false, code, seq, message });

    let expectedSeq = 1;
    let prevHash = ZERO_HASH;
    for (const { seq, entry } of decoded) {
      if (seq > expectedSeq) {
        return failure('SEALMESH_ERR_AUDIT_ENTRY_MISSING', expectedSeq, `audit entry ${expectedSeq} is missing: the next stored entry is ${seq}`);
      }
      if (entry === undefined) {
        return failure('SEALMESH_ERR_AUDIT_ENTRY_ALTERED', seq, `audit entry ${seq} is malformed`);
      }
      if (auditEntryHash(entry) !== entry.hash) {
        return failure('SEALMESH_ERR_AUDIT_ENTRY_ALTERED', seq, `audit entry ${seq} does not match its hash: it was changed after it was written`);
      }
      if (entry.seq !== seq) {
        // The entry written as `entry.seq` sits here. If the one written as `seq` is stored under
        // another key, entries were swapped; otherwise it is gone and later ones were moved down.
        return storedSeqs.has(seq)
          ? failure('SEALMESH_ERR_AUDIT_ENTRY_REORDERED', seq, `audit entry ${seq} holds entry ${entry.seq}: entries were moved`)
          : failure('SEALMESH_ERR_AUDIT_ENTRY_MISSING', seq, `audit entry ${seq} is missing: entry ${entry.seq} was moved into its place`);
      }
      if (entry.prev !== prevHash) {
        const rewritten = Math.max(seq - 1, 1);
        return failure('SEALMESH_ERR_AUDIT_ENTRY_ALTERED', rewritten, `audit entry ${rewritten} was rewritten: entry ${seq} records another hash for its predecessor`);
      }
      prevHash = entry.hash;
      expectedSeq = seq + 1;
    }

    const lastSeq = expectedSeq - 1;
    const headRecord = await this.#store.get(AUDIT_HEAD_KEY);
    if (headRecord === undefined) {
      return lastSeq === 0
        ? { ok: true, count: 0, headHash: null }
        : failure('SEALMESH_ERR_AUDIT_HEAD_MISMATCH', lastSeq, `audit head ${AUDIT_HEAD_KEY} is missing but the log has ${lastSeq} entries`);
    }
    const head = decodeHead(headRecord.value);
    if (head === undefined) {
      return failure('SEALMESH_ERR_AUDIT_HEAD_MISMATCH', lastSeq, `audit head ${AUDIT_HEAD_KEY} is malformed`);
    }
    if (head.seq > lastSeq) {
      return failure('SEALMESH_ERR_AUDIT_ENTRY_MISSING', lastSeq + 1, `audit entries ${lastSeq + 1} to ${head.seq} are missing: the head counts ${head.seq} entries but the log ends at ${lastSeq}`);
    }
    if (head.seq !== lastSeq || head.hash !== prevHash) {
      return failure('SEALMESH_ERR_AUDIT_HEAD_MISMATCH', lastSeq, `audit head names entry ${head.seq} with hash ${head.hash}, but the last entry is ${lastSeq} with hash ${prevHash}`);
    }
    return { ok: true, count: lastSeq, headHash: head.hash };
  }
}
