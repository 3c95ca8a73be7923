/**
 * Recognising names of security settings, and suggesting the closest allowed name for a typo.
 *
 * A name is split into lowercase words at `.`, `_`, `-`, spaces and camelCase boundaries, so
 * `trust_domain`, `trustDomain`, `TRUST-DOMAIN` and `--trust-domain` all read as `trust domain`.
 */

// A name containing any of these words configures security: access control, TLS, identity
// lifetimes, attestation, authorization, the operator set or the manifest itself.
const SECURITY_WORDS = new Set([
  'acl',
  'acls',
  'attest',
  'attestation',
  'attestations',
  'authorization',
  'authz',
  'cipher',
  'ciphers',
  'ciphersuites',
  'genesis',
  'insecure',
  'intention',
  'intentions',
  'manifest',
  'manifests',
  'mtls',
  'operator',
  'operators',
  'policies',
  'policy',
  'posture',
  'rbac',
  'ssl',
  'svid',
  'svids',
  'threshold',
  'tls',
  'verify',
]);

// The same settings written as one word, such as `TRUSTDOMAIN` or `aclenabled`, which the word
// split cannot separate. A name matches when its words joined together contain one of these.
const SECURITY_COMPOUNDS = [
  'trustdomain',
  'defaultpolicy',
  'svidttl',
  'keyexchange',
  'keytypes',
  'allowdevprovider',
  'devprovider',
  'minversion',
  'tlsversion',
  'aclenabled',
  'enableacl',
  'verifyincoming',
  'verifyoutgoing',
  'skipverify',
];

/** Splits a setting, flag or variable name into lowercase words. */
export function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter((word) => word !== '')
    .map((word) => word.toLowerCase());
}

/**
 * Returns true when `name` names a security setting, which only the signed manifest may set.
 * `name` may be a dotted key path (`acl.enabled`), a flag (`--default-policy`) or the part of an
 * environment variable after `SEALMESH_` (`DEFAULT_POLICY`).
 */
export function isSecuritySettingName(name: string): boolean {
  const words = nameWords(name);
  if (words.some((word) => SECURITY_WORDS.has(word))) {
    return true;
  }
  const joined = words.join('');
  return SECURITY_COMPOUNDS.some((compound) => joined.includes(compound));
}

function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Returns the allowed name closest to `name`, comparing words without separators or case, or
 * undefined when none is within about a third of its length in edits.
 */
export function closestName(name: string, allowed: readonly string[]): string | undefined {
  const target = nameWords(name).join('');
  let best: { name: string; distance: number } | undefined;
  for (const candidate of allowed) {
    const distance = levenshtein(target, nameWords(candidate).join(''));
    if (best === undefined || distance < best.distance) {
      best = { name: candidate, distance };
    }
  }
  if (best === undefined || best.distance > Math.max(1, Math.floor(target.length / 3))) {
    return undefined;
  }
  return best.name;
}
