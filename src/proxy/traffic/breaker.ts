import type { TrafficLimits } from './upstream-settings.ts';

/** The counted resources of one upstream. */
export type BreakerResource = 'connections' | 'pending_requests' | 'requests';

/** The limit that rejected a connection or request, as the metric label and log field name it. */
export type CircuitBreakerReason = 'max_connections' | 'max_pending_requests' | 'max_concurrent_requests';

const REASON_OF: Record<BreakerResource, CircuitBreakerReason> = {
  connections: 'max_connections',
  pending_requests: 'max_pending_requests',
  requests: 'max_concurrent_requests',
};

/** A limit reached: which one, its value, and how many were in use. */
export interface BreakerTrip {
  reason: CircuitBreakerReason;
  limit: number;
  inUse: number;
}

/**
 * Counts connections, pending requests and active requests of one upstream against its limits.
 * `tryAcquire` takes a set of resources together or none of them.
 */
export class CircuitBreaker {
  readonly #limits: TrafficLimits;
  readonly #inUse: Record<BreakerResource, number> = { connections: 0, pending_requests: 0, requests: 0 };

  constructor(limits: TrafficLimits) {
    this.#limits = limits;
  }

  inUse(resource: BreakerResource): number {
    return this.#inUse[resource];
  }

  #limit(resource: BreakerResource): number {
    if (resource === 'connections') return this.#limits.maxConnections;
    if (resource === 'pending_requests') return this.#limits.maxPendingRequests;
    return this.#limits.maxConcurrentRequests;
  }

  /** Takes one of each resource, or returns the first limit that has no room and takes nothing. */
  tryAcquire(resources: readonly BreakerResource[]): BreakerTrip | undefined {
    for (const resource of resources) {
      const limit = this.#limit(resource);
      if (this.#inUse[resource] >= limit) return { reason: REASON_OF[resource], limit, inUse: this.#inUse[resource] };
    }
    for (const resource of resources) this.#inUse[resource] += 1;
    return undefined;
  }

  release(resource: BreakerResource): void {
    if (this.#inUse[resource] > 0) this.#inUse[resource] -= 1;
  }
}
