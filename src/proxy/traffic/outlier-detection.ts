import type { Endpoint } from '../../server/index.ts';
import type { Clock } from './clock.ts';
import type { PassiveHealthCheck } from './upstream-settings.ts';

/** Cause of an ejection. */
export type EjectionCause = 'consecutive_5xx' | 'consecutive_connect_failures';

export interface Ejection {
  instanceId: string;
  cause: EjectionCause;
  /** This instance's ejection count, which multiplies the base ejection time. */
  count: number;
  durationMs: number;
}

/** Callbacks for the log and the metrics; the detector itself neither logs nor counts. */
export interface OutlierEvents {
  ejected(ejection: Ejection): void;
  /** An instance reached `maxFailures` but the max ejection percent kept it in service. */
  overflow(instanceId: string, cause: EjectionCause): void;
  returned(instanceId: string): void;
}

interface InstanceState {
  consecutive5xx: number;
  consecutiveConnectFailures: number;
  /** Ejection count after the decay of the intervals spent in service. */
  ejections: number;
  /** When the current ejection ends; undefined while the instance is in service. */
  ejectedUntil: number | undefined;
  /** When the last ejection ended; the decay of the ejection count is measured from it. */
  returnedAt: number;
}

/**
 * Passive health checking of one upstream's instances, in the manner of Envoy's outlier detection.
 * An instance is ejected after `maxFailures` consecutive 5xx responses or consecutive connect
 * failures, for `baseEjectionTime × ejection count`, capped at `maxEjectionTime`, and returns to
 * service once that time has passed. Each full `interval` spent in service after an ejection
 * takes one off the instance's ejection count.
 *
 * At most `maxEjectionPercent` of the catalog's instances are ejected at once, rounded down but at
 * least one, and never the last instance in service. When the catalog's instances are all
 * ejected anyway (after others left the catalog), `candidates` ignores the ejections, so traffic
 * goes on to instances the catalog reports healthy rather than to none.
 */
export class OutlierDetector {
  readonly #settings: PassiveHealthCheck;
  readonly #clock: Clock;
  readonly #events: OutlierEvents;
  readonly #instances = new Map<string, InstanceState>();
  /** Instance ids of the catalog's last endpoint list. */
  #catalog = new Set<string>();

  constructor(settings: PassiveHealthCheck, clock: Clock, events: OutlierEvents) {
    this.#settings = settings;
    this.#clock = clock;
    this.#events = events;
  }

  /**
   * Returns the endpoints that may be chosen: the catalog's endpoints that are not ejected, or all
   * of them when every one is ejected. It also drops the state of instances that left the catalog
   * and returns instances whose ejection time has passed.
   */
  candidates(endpoints: readonly Endpoint[]): readonly Endpoint[] {
    this.#reconcile(endpoints);
    const inService = endpoints.filter((endpoint) => !this.isEjected(endpoint.instanceId));
    return inService.length > 0 ? inService : endpoints;
  }

  /** Returns whether the instance is ejected now; an ejection whose time has passed ends here. */
  isEjected(instanceId: string): boolean {
    const state = this.#instances.get(instanceId);
    if (state?.ejectedUntil === undefined) return false;
    const now = this.#clock.now();
    if (now < state.ejectedUntil) return true;
    state.ejectedUntil = undefined;
    state.returnedAt = now;
    state.consecutive5xx = 0;
    state.consecutiveConnectFailures = 0;
    this.#events.returned(instanceId);
    return false;
  }

  /** Number of the catalog's instances that are ejected now. */
  ejectedCount(): number {
    let count = 0;
    for (const instanceId of this.#catalog) if (this.isEjected(instanceId)) count += 1;
    return count;
  }

  reportConnectSuccess(instanceId: string): void {
    const state = this.#instances.get(instanceId);
    if (state !== undefined) state.consecutiveConnectFailures = 0;
  }

  reportConnectFailure(instanceId: string): void {
    const state = this.#state(instanceId);
    state.consecutiveConnectFailures += 1;
    if (state.consecutiveConnectFailures >= this.#settings.maxFailures) this.#eject(instanceId, state, 'consecutive_connect_failures');
  }

  /** Records an HTTP response status: a 5xx counts toward ejection and any other status resets the count. */
  reportResponse(instanceId: string, status: number): void {
    if (status < 500) {
      const state = this.#instances.get(instanceId);
      if (state !== undefined) state.consecutive5xx = 0;
      return;
    }
    const state = this.#state(instanceId);
    state.consecutive5xx += 1;
    if (state.consecutive5xx >= this.#settings.maxFailures) this.#eject(instanceId, state, 'consecutive_5xx');
  }

  /** Number of catalog instances that may be ejected at once. */
  #maxEjected(): number {
    const total = this.#catalog.size;
    if (this.#settings.maxEjectionPercent === 0 || total < 2) return 0;
    const byPercent = Math.floor((total * this.#settings.maxEjectionPercent) / 100);
    return Math.min(total - 1, Math.max(1, byPercent));
  }

  #eject(instanceId: string, state: InstanceState, cause: EjectionCause): void {
    if (state.ejectedUntil !== undefined) return;
    // An instance that left the catalog is no longer chosen, so it needs no ejection.
    if (!this.#catalog.has(instanceId)) return;
    if (this.ejectedCount() >= this.#maxEjected()) {
      this.#events.overflow(instanceId, cause);
      return;
    }
    const now = this.#clock.now();
    const { intervalMs, baseEjectionTimeMs, maxEjectionTimeMs } = this.#settings;
    const decayed = Math.max(0, state.ejections - Math.floor((now - state.returnedAt) / intervalMs));
    state.ejections = decayed + 1;
    const durationMs = Math.min(maxEjectionTimeMs, baseEjectionTimeMs * state.ejections);
    state.ejectedUntil = now + durationMs;
    state.consecutive5xx = 0;
    state.consecutiveConnectFailures = 0;
    this.#events.ejected({ instanceId, cause, count: state.ejections, durationMs });
  }

  #state(instanceId: string): InstanceState {
    let state = this.#instances.get(instanceId);
    if (state === undefined) {
      state = { consecutive5xx: 0, consecutiveConnectFailures: 0, ejections: 0, ejectedUntil: undefined, returnedAt: this.#clock.now() };
      this.#instances.set(instanceId, state);
    }
    return state;
  }

  #reconcile(endpoints: readonly Endpoint[]): void {
    this.#catalog = new Set(endpoints.map((endpoint) => endpoint.instanceId));
    for (const instanceId of this.#instances.keys()) {
      if (!this.#catalog.has(instanceId)) this.#instances.delete(instanceId);
    }
  }
}
