import { randomBytes } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';

/**
 * A workload identity in the form `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`.
 */
export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  service: string;
}

/** The namespace used when a command or API call names a service without one. */
export const DEFAULT_NAMESPACE = 'default';

// SPIFFE-ID §2.1: a trust domain contains only lowercase letters, digits, '.', '-' and '_'.
const TRUST_DOMAIN_PATTERN = /^[a-z0-9._-]{1,255}$/;
// SPIFFE-ID §2.2 allows letters, digits, '.', '-' and '_' in path segments. sealmesh narrows names
// to DNS-label style so that they also work as hostnames and metric labels.
const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// SPIFFE-ID §2: a SPIFFE ID is at most 2048 bytes.
const MAX_SPIFFE_ID_LENGTH = 2048;

/** Throws SEALMESH_ERR_TRUST_DOMAIN_INVALID unless `name` is a valid trust domain name. */
export function assertTrustDomain(name: string): void {
  if (!TRUST_DOMAIN_PATTERN.test(name) || name.startsWith('.') || name.endsWith('.') || name.includes('..')) {
    throw new SealmeshError(
      'SEALMESH_ERR_TRUST_DOMAIN_INVALID',
      `trust domain ${JSON.stringify(name)} is invalid: use lowercase letters, digits, '.', '-' and '_'`,
    );
  }
}

/** Throws SEALMESH_ERR_SERVICE_NAME_INVALID unless `name` is a valid service or namespace name. */
export function assertName(kind: 'service' | 'namespace', name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new SealmeshError(
      'SEALMESH_ERR_SERVICE_NAME_INVALID',
      `${kind} name ${JSON.stringify(name)} is invalid: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  }
}

/**
 * Generates a trust domain unique to one cluster, such as `a1b2c3d4e5f6a7b8.sealmesh`, so that two
 * clusters never share a trust domain by accident.
 */
export function generateTrustDomain(): string {
  return `${randomBytes(8).toString('hex')}.sealmesh`;
}

/** Formats an identity as its SPIFFE ID URI. */
export function formatSpiffeId(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/svc/${id.service}`;
}

/**
 * Parses a SPIFFE ID URI of the form sealmesh issues. Throws SEALMESH_ERR_SPIFFE_ID_INVALID for any
 * other URI, including ones with a query, fragment, port, user info, percent-encoding or extra
 * path segments.
 */
export function parseSpiffeId(uri: string): SpiffeId {
  const invalid = (why: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_SPIFFE_ID_INVALID', `SPIFFE ID ${JSON.stringify(uri.slice(0, 200))} is invalid: ${why}`);
  if (uri.length > MAX_SPIFFE_ID_LENGTH) throw invalid('longer than 2048 bytes');
  if (!uri.startsWith('spiffe://')) throw invalid("scheme is not 'spiffe'");
  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) throw invalid('missing trust domain or path');
  const trustDomain = rest.slice(0, slash);
  if (!TRUST_DOMAIN_PATTERN.test(trustDomain)) throw invalid('trust domain has characters outside [a-z0-9._-]');
  const segments = rest.slice(slash + 1).split('/');
  if (segments.length !== 4 || segments[0] !== 'ns' || segments[2] !== 'svc') {
    throw invalid("path is not '/ns/<namespace>/svc/<service>'");
  }
  const namespace = segments[1] ?? '';
  const service = segments[3] ?? '';
  if (!NAME_PATTERN.test(namespace)) throw invalid('namespace is not a valid name');
  if (!NAME_PATTERN.test(service)) throw invalid('service is not a valid name');
  return { trustDomain, namespace, service };
}

/**
 * Parses a service reference as written on the command line or in the API: `name` in the default
 * namespace, or `namespace/name`. The wildcard `*` is accepted only when `allowWildcard` is set.
 */
export function parseServiceRef(ref: string, allowWildcard = false): { namespace: string; service: string } {
  if (allowWildcard && ref === '*') return { namespace: '*', service: '*' };
  const parts = ref.split('/');
  if (parts.length > 2) {
    throw new SealmeshError('SEALMESH_ERR_SERVICE_NAME_INVALID', `service reference ${JSON.stringify(ref)} is invalid: use NAME or NAMESPACE/NAME`);
  }
  const [namespace, service] = parts.length === 2 ? [parts[0] ?? '', parts[1] ?? ''] : [DEFAULT_NAMESPACE, parts[0] ?? ''];
  assertName('namespace', namespace);
  if (allowWildcard && service === '*') return { namespace, service };
  assertName('service', service);
  return { namespace, service };
}

/** Formats a service reference, omitting the default namespace. */
export function formatServiceRef(ref: { namespace: string; service: string }): string {
  if (ref.service === '*' && ref.namespace === '*') return '*';
  return ref.namespace === DEFAULT_NAMESPACE ? ref.service : `${ref.namespace}/${ref.service}`;
}
