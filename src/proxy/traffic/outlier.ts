import type { TrafficSettings } from './settings.ts';

/** The outcome of one try against an instance, as outlier detection counts it. */
export type TryOutcome = 'success' | 'server_error' | 'connect_failure';

interface InstanceState {
  consecutive5xx: number;
  consecutiveConnectFailures: number;
  /** Times the instance has been ejected; each ejection lasts longer. */
  ejections: number;
  ejectedUntil: number;
}

/**
 * Passive health checking of an upstream's instances. An instance that returns too many 5xx
 * responses or fails too many connects in a row is left out of load balancing for a while. Each
 * new ejection of the same instance lasts longer. The catalog's health checks decide which
 * instances are candidates at all, and this decides which of those are used.
 */
export class OutlierDetector {
  readonly #settings: TrafficSettings['outlierDetection'];
  readonly #states = new Map<string, InstanceState>();
  readonly #now: () => number;
  readonly #onEject: (instanceId: string, durationMs: number) => void;

  constructor(settings: TrafficSettings['outlierDetection'], onEject: (instanceId: string, durationMs: number) => void, now: () => number = Date.now) {
    this.#settings = settings;
    this.#onEject = onEject;
    this.#now = now;
  }

  isEjected(instanceId: string): boolean {
    const state = this.#states.get(instanceId);
    return state !== undefined && state.ejectedUntil > this.#now();
  }

  /** Counts instances of `instanceIds` that are ejected now. */
  ejectedCount(instanceIds: readonly string[]): number {
    return instanceIds.filter((id) => this.isEjected(id)).length;
  }

  /**
   * Records the outcome of a try. `instanceIds` are the upstream's current instances, against which
   * the cap on the ejected share is checked: an instance past its threshold stays in service when
   * ejecting it would exceed `maxEjectionPercent`.
   */
  record(instanceId: string, outcome: TryOutcome, instanceIds: readonly string[]): void {
    let state = this.#states.get(instanceId);
    if (state === undefined) {
      state = { consecutive5xx: 0, consecutiveConnectFailures: 0, ejections: 0, ejectedUntil: 0 };
      this.#states.set(instanceId, state);
    }
    if (outcome === 'success') {
      state.consecutive5xx = 0;
      state.consecutiveConnectFailures = 0;
      return;
    }
    if (outcome === 'server_error') state.consecutive5xx += 1;
    else state.consecutiveConnectFailures += 1;
    const settings = this.#settings;
    const tripped =
      (settings.consecutive5xx > 0 && state.consecutive5xx >= settings.consecutive5xx) ||
      (settings.consecutiveConnectFailures > 0 && state.consecutiveConnectFailures >= settings.consecutiveConnectFailures);
    if (!tripped || this.isEjected(instanceId)) return;
    const maxEjected = Math.floor((instanceIds.length * settings.maxEjectionPercent) / 100);
    if (this.ejectedCount(instanceIds) + 1 > maxEjected) return;
    state.ejections += 1;
    const durationMs = Math.min(settings.baseEjectionMs * state.ejections, settings.maxEjectionMs);
    state.ejectedUntil = this.#now() + durationMs;
    state.consecutive5xx = 0;
    state.consecutiveConnectFailures = 0;
    this.#onEject(instanceId, durationMs);
  }

  /** Forgets instances that left the catalog. */
  retain(instanceIds: readonly string[]): void {
    const keep = new Set(instanceIds);
    for (const id of this.#states.keys()) if (!keep.has(id)) this.#states.delete(id);
  }
}
