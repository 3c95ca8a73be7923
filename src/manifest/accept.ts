import { createPublicKey } from 'node:crypto';
import { SealmeshError, isSealmeshError } from '../errors/index.ts';
import { manifestDigest, manifestSigningInput } from './canonical.ts';
import { parseManifest, parseSignedManifest, type Manifest, type SignedManifest } from './schema.ts';
import { verifyOperatorSignature } from './signers.ts';

/** The outcome of `acceptManifest`: the manifest that may be applied, with its digest. */
export interface AcceptedManifest {
  manifest: Manifest;
  /** Lowercase hex SHA-256 of the canonical manifest; the next version names it in `previous`. */
  digest: string;
  /** Ids of the operator keys whose valid signatures counted toward the threshold, sorted. */
  approvedBy: string[];
  /** The `now` passed to `acceptManifest`, for the audit record of the change. */
  acceptedAt: Date;
}

/** The error of `verifyChain`, naming the first link that is not accepted. */
export class ManifestChainError extends SealmeshError {
  /** Position of the bad link in the chain, 0 for the genesis. */
  readonly link: number;
  /** The `version` field of the bad link, when it could be read. */
  readonly version: number | undefined;

  constructor(link: number, version: number | undefined, message: string, options?: { cause?: unknown }) {
    super('SEALMESH_ERR_MANIFEST_CHAIN_BROKEN', message, options);
    this.name = 'ManifestChainError';
    this.link = link;
    this.version = version;
  }
}

const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/**
 * Checks every signature of `document` and returns the sorted ids of the approving keys.
 *
 * A signature by a key of `approving` must verify and counts toward its threshold. A signature by
 * a key that only `proposed` lists, which is a key that the candidate adds, must verify too, so
 * operators may prove that they hold a new key. It does not count, because a new key cannot
 * approve its own addition. A key id in neither set is rejected, which also rejects the signature
 * of a key that an earlier version removed.
 */
function checkSignatures(document: SignedManifest, approving: Manifest, proposed: Manifest | undefined, role: string): string[] {
  const input = manifestSigningInput(document.manifest);
  const version = document.manifest.version;
  const approvedBy: string[] = [];

  for (const signature of document.signatures) {
    const approvingKey = approving.operators.keys.find((key) => key.id === signature.keyId);
    const key = approvingKey ?? proposed?.operators.keys.find((candidate) => candidate.id === signature.keyId);
    if (key === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY',
        `manifest version ${version} carries a signature by key ${JSON.stringify(signature.keyId)}, which is not in the operator set of ${role}; remove that signature`,
      );
    }
    if (signature.algorithm !== key.algorithm) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID',
        `manifest version ${version}: the signature by key ${JSON.stringify(key.id)} claims algorithm ${signature.algorithm} but the key is ${key.algorithm}`,
      );
    }
    const publicKey = createPublicKey({ key: key.publicKey, format: 'pem' });
    if (!verifyOperatorSignature(key.algorithm, publicKey, input, Buffer.from(signature.signature, 'base64'))) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID',
        `manifest version ${version}: the signature by key ${JSON.stringify(key.id)} does not verify, so the manifest or the signature was changed after signing; sign the manifest again`,
      );
    }
    if (approvingKey !== undefined) {
      approvedBy.push(key.id);
    }
  }

  const threshold = approving.operators.threshold;
  if (approvedBy.length < threshold) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET',
      `manifest version ${version} has ${approvedBy.length} valid signature(s) from the operator set of ${role}, which requires ${threshold}; collect signatures from more of its operators`,
    );
  }
  return approvedBy.sort();
}

/**
 * Decides whether `candidate` may replace `current`. This is the one function that accepts a
 * manifest: the server calls it before it applies one and proxies call it through `verifyChain`.
 *
 * Without `current`, the candidate must be a genesis: version 1, `previous` null, and at least
 * `operators.threshold` valid signatures from its own operator set. NOTE: a genesis approves
 * itself, so the caller must also compare its digest with the digest pinned at enrollment or
 * cluster creation (`verifyChain` does).
 *
 * With `current`, in this order:
 * - the same digest as `current` is SEALMESH_ERR_MANIFEST_REPLAY;
 * - a lower version is SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER;
 * - the same version with another digest is SEALMESH_ERR_MANIFEST_FORK;
 * - a higher version whose `previous` is not the digest of `current` is
 *   SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH. The version only has to be greater, so a chain may
 *   skip version numbers, but each link names its direct predecessor by digest, so no manifest
 *   can be left out of the chain;
 * - a changed `trustDomain` is SEALMESH_ERR_MANIFEST_INVALID, because every issued identity names it;
 * - then the signatures are checked against the operator set of `current`, not the candidate's:
 *   a key removed by `current` or earlier no longer counts and a key that the candidate adds
 *   cannot approve its own addition. A signature that does not verify is
 *   SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID even when the others reach the threshold, a key id in
 *   neither set is SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY, and too few approving signatures
 *   is SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET.
 *
 * A candidate that fails the schema is SEALMESH_ERR_MANIFEST_INVALID before any other check.
 * `current` is expected to be a manifest that this function accepted before.
 */
export function acceptManifest(candidate: SignedManifest, current: SignedManifest | undefined, now: Date = new Date()): AcceptedManifest {
  const document = parseSignedManifest(candidate, 'candidate manifest');
  const manifest = document.manifest;
  const digest = manifestDigest(manifest);

  if (current === undefined) {
    if (manifest.version !== 1) {
      throw new SealmeshError(
        'SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH',
        `manifest version ${manifest.version} builds on predecessor ${manifest.previous ?? 'none'}, but no manifest is applied yet; apply the chain from version 1`,
      );
    }
    const approvedBy = checkSignatures(document, manifest, undefined, 'the genesis manifest itself');
    return { manifest, digest, approvedBy, acceptedAt: now };
  }

  const applied = parseManifest(current.manifest, 'current manifest');
  const appliedDigest = manifestDigest(applied);
  if (digest === appliedDigest) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_REPLAY', `manifest version ${manifest.version} (digest ${digest}) is already the current manifest`);
  }
  if (manifest.version < applied.version) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER',
      `manifest version ${manifest.version} is older than the current version ${applied.version}; a manifest can only move forward`,
    );
  }
  if (manifest.version === applied.version) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_FORK',
      `manifest version ${manifest.version} (digest ${digest}) differs from the current manifest of the same version (digest ${appliedDigest}); build the change on the current manifest as version ${applied.version + 1}`,
    );
  }
  if (manifest.previous !== appliedDigest) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH',
      `manifest version ${manifest.version} names predecessor ${manifest.previous ?? 'none'}, but the current manifest is version ${applied.version} with digest ${appliedDigest}; build the change on the current manifest, or apply the missing versions first`,
    );
  }
  if (manifest.trustDomain !== applied.trustDomain) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_INVALID',
      `manifest version ${manifest.version} changes the trust domain from ${applied.trustDomain} to ${manifest.trustDomain}; every issued identity names the trust domain, so a new trust domain needs a new cluster`,
    );
  }

  const approvedBy = checkSignatures(document, applied, manifest, `the current manifest (version ${applied.version})`);
  return { manifest, digest, approvedBy, acceptedAt: now };
}

/**
 * Walks a chain of manifests from its genesis, as a proxy does with the digest of version 1 that it
 * pinned at enrollment. `chain[0]` must have the pinned digest and each later link must be accepted
 * by `acceptManifest` with its predecessor as the current manifest. Returns the acceptance of the
 * last link. Throws ManifestChainError (SEALMESH_ERR_MANIFEST_CHAIN_BROKEN) naming the first bad
 * link, with the error of that link as `cause`.
 */
export function verifyChain(chain: readonly SignedManifest[], pinnedGenesisDigest: string, now: Date = new Date()): AcceptedManifest {
  if (!DIGEST_PATTERN.test(pinnedGenesisDigest)) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `pinned genesis digest ${JSON.stringify(pinnedGenesisDigest)} is not 64 lowercase hex digits`);
  }
  let current: SignedManifest | undefined;
  let accepted: AcceptedManifest | undefined;
  for (const [index, link] of chain.entries()) {
    const version = readVersion(link);
    try {
      if (index === 0) {
        checkPinnedGenesis(link, version, pinnedGenesisDigest);
      }
      accepted = acceptManifest(link, current, now);
    } catch (error) {
      if (error instanceof ManifestChainError) throw error;
      const detail = isSealmeshError(error) ? `${error.message} (${error.code})` : String(error);
      throw new ManifestChainError(index, version, `manifest chain is broken at link ${index} (version ${version ?? 'unknown'}): ${detail}`, { cause: error });
    }
    current = link;
  }
  if (accepted === undefined) {
    throw new ManifestChainError(0, undefined, 'manifest chain is empty; it must start with the genesis manifest');
  }
  return accepted;
}

function checkPinnedGenesis(link: SignedManifest, version: number | undefined, pinnedGenesisDigest: string): void {
  const genesisDigest = manifestDigest(parseManifest(link.manifest, 'genesis manifest'));
  if (genesisDigest !== pinnedGenesisDigest) {
    throw new ManifestChainError(
      0,
      version,
      `manifest chain is broken at link 0: the genesis digest ${genesisDigest} is not the pinned digest ${pinnedGenesisDigest}, so the chain belongs to another cluster`,
    );
  }
}

function readVersion(link: SignedManifest): number | undefined {
  const version: unknown = (link as { manifest?: { version?: unknown } } | undefined)?.manifest?.version;
  return typeof version === 'number' ? version : undefined;
}
