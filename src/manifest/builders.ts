import { createPublicKey, type KeyObject } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import { DEFAULT_SVID_TTL_SECONDS, MAX_SVID_TTL_SECONDS, MIN_SVID_TTL_SECONDS } from '../pki/index.ts';
import { manifestDigest } from './canonical.ts';
import { parseManifest, publicKeyToPem, type Manifest, type OperatorKey, type OperatorKeyAlgorithm, type SignedManifest } from './schema.ts';
import { operatorKeyId } from './signers.ts';

/** An operator public key given to `initManifest` or `operatorKeyEntry`. */
export interface OperatorKeyInput {
  /** SPKI PEM of an Ed25519 or ECDSA P-256 key; it is rewritten in canonical form. */
  publicKeyPem: string;
  /** Defaults to `operatorKeyId` of the key. */
  id?: string;
  /** Defaults to the algorithm of the key; when given it must match the key. */
  algorithm?: OperatorKeyAlgorithm;
}

/** Settings of the first manifest of a cluster. Omitted sections take the secure defaults. */
export interface InitManifestOptions {
  trustDomain: string;
  operatorKeys: readonly OperatorKeyInput[];
  /** How many operator signatures a change needs, from 1 to the number of keys. */
  threshold: number;
  /** Default 'deny'. */
  defaultPolicy?: Manifest['defaultPolicy'];
  /** Default TLS 1.3 with ECDSA P-256 keys and Node's default key exchange groups. */
  tls?: Manifest['tls'];
  /** Default: the pki bounds, 24 hours by default, 5 minutes to 7 days. */
  svidTtl?: Manifest['svidTtl'];
  /** Default: intentions managed through the API. */
  intentions?: Manifest['intentions'];
  /** Default: attestation not required, no per-service settings, dev provider rejected. */
  attestation?: Manifest['attestation'];
  /** Default: absent, which means production. */
  environment?: Manifest['environment'];
}

/** The sections of a manifest that `nextManifest` may change. Each given section replaces the old one whole. */
export type ManifestChanges = Partial<Pick<Manifest, 'defaultPolicy' | 'tls' | 'svidTtl' | 'intentions' | 'attestation' | 'perimeter' | 'hardening' | 'operators' | 'environment'>>;

/**
 * Builds an operator key entry from a public key, rewriting the PEM in canonical form. Throws
 * SEALMESH_ERR_MANIFEST_INVALID for a private key, an unsupported key type or an algorithm that
 * does not match the key.
 */
export function operatorKeyEntry(input: OperatorKeyInput): OperatorKey {
  const label = input.id === undefined ? 'operator public key' : `operator public key ${JSON.stringify(input.id)}`;
  // createPublicKey also derives a public key from a private key, which must never be copied into
  // a manifest, so the PEM label is checked first.
  if (!/^-----BEGIN PUBLIC KEY-----\r?\n/.test(input.publicKeyPem.trimStart())) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${label} is not an SPKI PEM public key (-----BEGIN PUBLIC KEY-----)`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: input.publicKeyPem, format: 'pem' });
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${label} cannot be decoded`, { cause: error });
  }
  let algorithm: OperatorKeyAlgorithm;
  if (key.asymmetricKeyType === 'ed25519') {
    algorithm = 'ed25519';
  } else if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    algorithm = 'ecdsa-p256';
  } else {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${label} is neither Ed25519 nor ECDSA P-256`);
  }
  if (input.algorithm !== undefined && input.algorithm !== algorithm) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${label} is ${algorithm}, not ${input.algorithm}`);
  }
  const publicKey = publicKeyToPem(key);
  return { id: input.id ?? operatorKeyId(publicKey), algorithm, publicKey };
}

/**
 * Builds the unsigned version 1 of a cluster's manifest. Throws SEALMESH_ERR_MANIFEST_INVALID when
 * the result fails the schema, for example a threshold above the number of keys.
 */
export function initManifest(options: InitManifestOptions): SignedManifest {
  const manifest = {
    version: 1,
    previous: null,
    trustDomain: options.trustDomain,
    defaultPolicy: options.defaultPolicy ?? 'deny',
    tls: options.tls ?? { minVersion: 'TLSv1.3', keyTypes: ['ecdsa-p256'] },
    svidTtl: options.svidTtl ?? { default: DEFAULT_SVID_TTL_SECONDS, min: MIN_SVID_TTL_SECONDS, max: MAX_SVID_TTL_SECONDS },
    intentions: options.intentions ?? { management: 'api' },
    attestation: options.attestation ?? { required: false, services: {}, allowDevProvider: false },
    ...(options.environment !== undefined ? { environment: options.environment } : {}),
    operators: { keys: options.operatorKeys.map(operatorKeyEntry), threshold: options.threshold },
  };
  return { manifest: parseManifest(manifest, 'new manifest'), signatures: [] };
}

/**
 * Builds the unsigned successor of `current`: version + 1, `previous` set to the digest of
 * `current`, and the given sections replaced. The trust domain cannot change. Throws
 * SEALMESH_ERR_MANIFEST_INVALID when the result fails the schema.
 */
export function nextManifest(current: SignedManifest | Manifest, changes: ManifestChanges): SignedManifest {
  const base = parseManifest('manifest' in current ? current.manifest : current, 'current manifest');
  const providedSections = Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined));
  const next = { ...base, ...providedSections, version: base.version + 1, previous: manifestDigest(base), trustDomain: base.trustDomain };
  return { manifest: parseManifest(next, `manifest version ${next.version}`), signatures: [] };
}
