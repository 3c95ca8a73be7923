import { SealmeshError } from '../errors/index.ts';
import { requiredModeViolation, type RunMode } from '../hardening/index.ts';
import {
  acceptManifest,
  effectivePosture,
  parseSignedManifest,
  type AcceptedManifest,
  type EffectivePosture,
  type SignedManifest,
} from '../manifest/index.ts';
import { DEFAULT_POLICY, type DefaultPolicy, type Intention } from '../policy/index.ts';
import { MAX_SVID_TTL_SECONDS, MIN_SVID_TTL_SECONDS } from '../pki/index.ts';
import type { Store } from '../store/index.ts';
import { encodeJson, getJson, listJson } from './records.ts';

/**
 * The signed manifest of a running cluster, kept in the store:
 * - `manifest/chain/<version as 12 digits>`: each accepted signed document;
 * - `manifest/head`: version and digest of the current manifest, with the time it was applied;
 * - `manifest/pinned`: digest of the genesis (version 1), written once with the first apply.
 *
 * Without a manifest the server runs with its built-in posture: default policy deny, the SVID TTL
 * of `--svid-ttl` within the pki bounds, and intentions managed through the API.
 */
export const MANIFEST_KEYS = {
  chainPrefix: 'manifest/chain/',
  head: 'manifest/head',
  pinned: 'manifest/pinned',
} as const;

interface ManifestHead {
  version: number;
  digest: string;
  appliedAt: string;
}

/** The settings the server enforces, from the current manifest or the built-in posture. */
export interface EnforcedSettings {
  defaultPolicy: DefaultPolicy;
  svidTtl: { defaultSeconds: number; minSeconds: number; maxSeconds: number };
  intentionsManagement: 'api' | 'manifest';
  /** Intentions of a manifest that manages them, or undefined when the API manages them. */
  manifestIntentions: Intention[] | undefined;
}

export function manifestChainKey(version: number): string {
  return `${MANIFEST_KEYS.chainPrefix}${String(version).padStart(12, '0')}`;
}

/** Applies manifests and reads the chain and the settings in force; see the file comment for the keys. */
export class ManifestService {
  readonly #store: Store;
  readonly #trustDomain: string;
  readonly #fallbackTtlSeconds: number;
  readonly #runMode: RunMode;

  /**
   * `trustDomain` is the cluster's, which every applied manifest must name. `fallbackTtlSeconds` is
   * the default SVID TTL while no manifest is applied. `runMode` is the server's `--mode`, against
   * which a manifest's `hardening.requireProductionMode` is checked.
   */
  constructor(store: Store, trustDomain: string, fallbackTtlSeconds: number, runMode: RunMode = 'development') {
    this.#store = store;
    this.#trustDomain = trustDomain;
    this.#fallbackTtlSeconds = fallbackTtlSeconds;
    this.#runMode = runMode;
  }

  /** Returns every accepted document, oldest first; empty before the first apply. */
  async chain(): Promise<SignedManifest[]> {
    const records = await listJson<SignedManifest>(this.#store, MANIFEST_KEYS.chainPrefix);
    return records.sort((a, b) => a.key.localeCompare(b.key)).map((record) => record.value);
  }

  /** Returns the current signed document and when it was applied, or undefined. */
  async current(): Promise<{ document: SignedManifest; head: ManifestHead } | undefined> {
    const head = await getJson<ManifestHead>(this.#store, MANIFEST_KEYS.head);
    if (head === undefined) return undefined;
    const document = await getJson<SignedManifest>(this.#store, manifestChainKey(head.value.version));
    if (document === undefined) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', `manifest head names version ${head.value.version}, but ${manifestChainKey(head.value.version)} is missing`);
    }
    return { document: parseSignedManifest(document.value, 'stored manifest'), head: head.value };
  }

  /** Returns the effective posture of the current manifest, or undefined. */
  async posture(): Promise<EffectivePosture | undefined> {
    const current = await this.current();
    return current === undefined ? undefined : effectivePosture(current.document.manifest);
  }

  /** Returns the settings in force now. */
  async settings(): Promise<EnforcedSettings> {
    const current = await this.current();
    if (current === undefined) {
      return {
        defaultPolicy: DEFAULT_POLICY,
        svidTtl: { defaultSeconds: this.#fallbackTtlSeconds, minSeconds: MIN_SVID_TTL_SECONDS, maxSeconds: MAX_SVID_TTL_SECONDS },
        intentionsManagement: 'api',
        manifestIntentions: undefined,
      };
    }
    const manifest = current.document.manifest;
    const posture = effectivePosture(manifest);
    const managed = manifest.intentions.management === 'manifest';
    return {
      defaultPolicy: posture.defaultPolicy,
      svidTtl: posture.svidTtl,
      intentionsManagement: manifest.intentions.management,
      // The manifest's rules carry no creation time, so each gets the time its manifest was applied.
      manifestIntentions: managed
        ? (manifest.intentions.rules ?? []).map((rule) => ({
            source: rule.source,
            destination: rule.destination,
            action: rule.action,
            ...(rule.permissions !== undefined ? { permissions: rule.permissions } : {}),
            createdAt: current.head.appliedAt,
            ...(rule.description !== undefined ? { description: rule.description } : {}),
          }))
        : undefined,
    };
  }

  /**
   * Accepts `candidate` with `acceptManifest` against the current manifest and stores it as the new
   * current manifest. The first manifest must be version 1 and is pinned as the genesis. Throws the
   * codes of `acceptManifest`, SEALMESH_ERR_MANIFEST_INVALID when the manifest names another trust
   * domain than the cluster's, SEALMESH_ERR_PRODUCTION_MODE_REQUIRED when the manifest requires
   * production mode and this server does not run in it, and SEALMESH_ERR_CONFLICT when another
   * apply won the race.
   */
  async apply(candidate: unknown): Promise<AcceptedManifest> {
    const headRecord = await this.#store.get(MANIFEST_KEYS.head);
    const current = await this.current();
    const document = parseSignedManifest(candidate, 'candidate manifest');
    const accepted = acceptManifest(document, current?.document);
    // acceptManifest keeps later versions on the genesis's trust domain, so only this check ties
    // the chain to the cluster. Proxies reject every snapshot whose manifest names another one.
    if (accepted.manifest.trustDomain !== this.#trustDomain) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_INVALID',
        `manifest version ${accepted.manifest.version} names trust domain ${accepted.manifest.trustDomain}, but this cluster's trust domain is ${this.#trustDomain}; create the manifest with --trust-domain ${this.#trustDomain}`,
      );
    }
    // Storing it would leave a server that refuses its own manifest at the next start.
    const violation = requiredModeViolation(effectivePosture(accepted.manifest), this.#runMode, 'this server');
    if (violation !== undefined) throw violation;

    const head: ManifestHead = { version: accepted.manifest.version, digest: accepted.digest, appliedAt: accepted.acceptedAt.toISOString() };
    const chainKey = manifestChainKey(accepted.manifest.version);
    const compare = [
      { key: MANIFEST_KEYS.head, modRevision: headRecord?.modRevision ?? 0 },
      { key: chainKey, modRevision: 0 },
    ];
    const success = [
      { type: 'put' as const, key: chainKey, value: encodeJson(document) },
      { type: 'put' as const, key: MANIFEST_KEYS.head, value: encodeJson(head) },
    ];
    if (current === undefined) {
      // The genesis is pinned once; a pin without a head means the store was edited.
      compare.push({ key: MANIFEST_KEYS.pinned, modRevision: 0 });
      success.push({ type: 'put', key: MANIFEST_KEYS.pinned, value: encodeJson({ genesisDigest: accepted.digest, pinnedAt: head.appliedAt }) });
    }
    const result = await this.#store.txn({ compare, success });
    if (!result.succeeded) {
      throw new SealmeshError('SEALMESH_ERR_CONFLICT', `manifest version ${accepted.manifest.version} was not applied because the stored manifest changed meanwhile; run \`sealmesh manifest show\` and retry`);
    }
    return accepted;
  }

  /** Returns the pinned genesis digest, or undefined before the first apply. */
  async pinnedGenesis(): Promise<string | undefined> {
    return (await getJson<{ genesisDigest: string }>(this.#store, MANIFEST_KEYS.pinned))?.value.genesisDigest;
  }
}
