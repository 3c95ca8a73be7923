import { SealmeshError } from '../errors/index.ts';
import type { EffectivePosture } from '../manifest/index.ts';
import { DEFAULT_POLICY, type Intention } from '../policy/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';
import type { ProxySnapshot } from '../server/index.ts';

/** The manifest functions a proxy needs to verify a chain. */
interface ManifestVerifier {
  verifyChain: typeof import('../manifest/accept.ts').verifyChain;
  manifestDigest: typeof import('../manifest/canonical.ts').manifestDigest;
  effectivePosture: typeof import('../manifest/posture.ts').effectivePosture;
}

let verifier: ManifestVerifier | undefined;
let verifierLoad: Promise<void> | undefined;

/**
 * Loads the manifest verifier (the manifest schema with zod, canonical JSON, signature checks).
 * A proxy loads it only once a snapshot carries a manifest chain, because these modules add about
 * 18 MiB of resident memory to a proxy of a mesh that has no manifest. Loading twice is harmless.
 */
export function loadManifestVerifier(): Promise<void> {
  verifierLoad ??= (async () => {
    const [accept, canonical, posture] = await Promise.all([import('../manifest/accept.ts'), import('../manifest/canonical.ts'), import('../manifest/posture.ts')]);
    verifier = { verifyChain: accept.verifyChain, manifestDigest: canonical.manifestDigest, effectivePosture: posture.effectivePosture };
  })();
  return verifierLoad;
}

/** The manifest a proxy enforces, after its own verification. */
export interface EnforcedManifest {
  version: number;
  digest: string;
  genesisDigest: string;
  posture: EffectivePosture;
}

/**
 * Verifies the manifest chain in every snapshot before the proxy applies it, so that a compromised
 * or misconfigured control plane cannot push a posture that the operators did not sign.
 *
 * The genesis digest is pinned from `--manifest-genesis` or, failing that, from the first chain
 * the proxy receives (trust on first use, over the TLS connection that its CA file authenticates).
 * After that, a snapshot is accepted only when its chain starts at the pinned genesis, every link
 * carries enough signatures of the operators of its predecessor, and its version is not older than
 * the one already enforced. The snapshot's default policy, and its intentions when the manifest
 * manages them, are then taken from the verified manifest, not from the server's fields.
 */
export class ManifestGuard {
  #pinnedGenesis: string | undefined;
  #enforced: EnforcedManifest | undefined;
  readonly #destination: string;

  constructor(destination: { namespace: string; service: string }, pinnedGenesis?: string) {
    this.#destination = formatServiceRef(destination);
    this.#pinnedGenesis = pinnedGenesis;
  }

  get enforced(): EnforcedManifest | undefined {
    return this.#enforced;
  }

  /**
   * Returns a promise to wait for before `check(snapshot)` when the manifest verifier is still
   * loading or must be loaded for this snapshot, and undefined when `check` can run now.
   */
  prepare(snapshot: ProxySnapshot): Promise<void> | undefined {
    if (verifier !== undefined) return undefined;
    if (verifierLoad !== undefined || (snapshot.manifestChain ?? []).length > 0) return loadManifestVerifier();
    return undefined;
  }

  /**
   * Returns the snapshot to apply, with the posture of the verified manifest. Throws a
   * SealmeshError naming the failed check, and the caller then keeps its previous snapshot.
   */
  check(snapshot: ProxySnapshot): ProxySnapshot {
    const chain = snapshot.manifestChain ?? [];
    if (chain.length === 0) {
      if (this.#enforced !== undefined || this.#pinnedGenesis !== undefined) {
        throw new SealmeshError(
          'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN',
          `the control plane sent no manifest chain, but this proxy ${this.#enforced !== undefined ? `enforces manifest version ${this.#enforced.version}` : 'has a pinned genesis manifest'}`,
        );
      }
      // Before any manifest exists the built-in posture applies, whatever the snapshot's field holds.
      return { ...snapshot, defaultPolicy: DEFAULT_POLICY };
    }
    if (verifier === undefined) {
      throw new SealmeshError('SEALMESH_ERR_INTERNAL', 'the manifest verifier is not loaded yet: await prepare(snapshot) before check(snapshot)');
    }
    const { verifyChain, manifestDigest, effectivePosture } = verifier;
    const genesis = chain[0];
    const pinned = this.#pinnedGenesis ?? manifestDigest(genesis!.manifest);
    const accepted = verifyChain(chain, pinned);
    const posture = effectivePosture(accepted.manifest);
    if (this.#enforced !== undefined && posture.version < this.#enforced.version) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER',
        `the control plane sent manifest version ${posture.version}, older than version ${this.#enforced.version} that this proxy enforces`,
      );
    }
    if (posture.trustDomain !== snapshot.trustDomain) {
      throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `the manifest names trust domain ${posture.trustDomain}, but the snapshot is for ${snapshot.trustDomain}`);
    }
    this.#pinnedGenesis = pinned;
    this.#enforced = { version: posture.version, digest: posture.digest, genesisDigest: pinned, posture };
    const intentions = accepted.manifest.intentions.management === 'manifest' ? this.#manifestIntentions(accepted.manifest.intentions.rules ?? []) : snapshot.intentions;
    return { ...snapshot, defaultPolicy: posture.defaultPolicy, intentions };
  }

  /** Converts the manifest's rules whose destination is this proxy's service, or `*`, into intentions. */
  #manifestIntentions(rules: ReadonlyArray<{ source: string; destination: string; action: 'allow' | 'deny'; description?: string }>): Intention[] {
    const normalise = (ref: string): string => (ref === '*' ? '*' : formatServiceRef(parseServiceRef(ref)));
    return rules
      .map((rule) => ({ source: normalise(rule.source), destination: normalise(rule.destination), action: rule.action, createdAt: '' }))
      .filter((rule) => rule.destination === this.#destination || rule.destination === '*');
  }
}
