import { SealmeshError } from '../errors/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';
import type { Permission } from './permissions.ts';

/** Whether an intention lets its source connect to its destination. */
export type IntentionAction = 'allow' | 'deny';

/** The policy applied when no intention matches a source and destination. */
export type DefaultPolicy = 'allow' | 'deny';

export const DEFAULT_POLICY: DefaultPolicy = 'deny';

/**
 * A rule that lets a source service connect to a destination service, or forbids it. Source and
 * destination are service references (`name` in the default namespace or `namespace/name`), and
 * either may be `*` to match every service.
 */
export interface Intention {
  source: string;
  destination: string;
  action: IntentionAction;
  /**
   * L7 permissions, checked in order for each request when the destination speaks HTTP, HTTP/2 or
   * gRPC; `action` decides requests that none matches. A TCP destination denies every connection
   * under an intention with permissions, because it cannot check them.
   */
  permissions?: Permission[];
  description?: string;
  createdAt: string;
}

/** The outcome of an authorization check, with the intention that decided it. */
export interface Decision {
  allowed: boolean;
  /** `SOURCE -> DESTINATION` of the deciding intention, or `default` when the default policy decided. */
  reason: string;
  /** The deciding intention; absent when the default policy decided. */
  intention?: Intention;
}

interface ServiceRef {
  namespace: string;
  service: string;
}

/**
 * Returns the precedence of an intention: higher wins. An exact service beats a wildcard, and the
 * destination counts more than the source, so `web -> api` beats `* -> api`, which beats
 * `web -> *`, which beats `* -> *`.
 */
export function intentionPrecedence(intention: Pick<Intention, 'source' | 'destination'>): number {
  const sourceExact = intention.source !== '*';
  const destinationExact = intention.destination !== '*';
  return (destinationExact ? 2 : 0) + (sourceExact ? 1 : 0);
}

/** Normalises and checks the source and destination of an intention; `*` is allowed in both. */
export function normaliseIntentionEnds(source: string, destination: string): { source: string; destination: string } {
  const src = parseServiceRef(source, true);
  const dst = parseServiceRef(destination, true);
  if (src.service === '*' && src.namespace !== '*') {
    throw new SealmeshError('SEALMESH_ERR_SERVICE_NAME_INVALID', `source ${JSON.stringify(source)} is invalid: a wildcard covers every namespace, write '*'`);
  }
  if (dst.service === '*' && dst.namespace !== '*') {
    throw new SealmeshError('SEALMESH_ERR_SERVICE_NAME_INVALID', `destination ${JSON.stringify(destination)} is invalid: a wildcard covers every namespace, write '*'`);
  }
  return { source: formatServiceRef(src), destination: formatServiceRef(dst) };
}

function matches(pattern: string, ref: string): boolean {
  return pattern === '*' || pattern === ref;
}

/**
 * Decides whether `source` may connect to `destination`. This is the one authorization function of
 * the mesh: the proxy calls it for every inbound connection and the server for reporting.
 *
 * The matching intention with the highest precedence decides; among equal precedence a deny wins
 * so that an ambiguous rule set fails closed. With no match the default policy decides.
 */
export function decide(
  intentions: readonly Intention[],
  source: ServiceRef,
  destination: ServiceRef,
  defaultPolicy: DefaultPolicy = DEFAULT_POLICY,
): Decision {
  const sourceRef = formatServiceRef(source);
  const destinationRef = formatServiceRef(destination);
  let best: Intention | undefined;
  let bestPrecedence = -1;
  for (const intention of intentions) {
    if (!matches(intention.source, sourceRef) || !matches(intention.destination, destinationRef)) continue;
    const precedence = intentionPrecedence(intention);
    if (precedence > bestPrecedence || (precedence === bestPrecedence && intention.action === 'deny')) {
      best = intention;
      bestPrecedence = precedence;
    }
  }
  if (best === undefined) return { allowed: defaultPolicy === 'allow', reason: 'default' };
  const reason = `${best.source} -> ${best.destination}`;
  // An intention with permissions admits the connection when any request could be allowed; the
  // proxy then decides each request with `decideRequest`.
  const allowed = best.action === 'allow' || (best.permissions ?? []).some((permission) => permission.action === 'allow');
  return { allowed, reason, intention: best };
}
