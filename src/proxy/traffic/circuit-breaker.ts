import type { TrafficSettings } from './settings.ts';

export type CircuitLimit = 'connections' | 'pending' | 'requests';

/**
 * Caps what one upstream may hold: open connections, requests waiting for a connection and
 * requests in flight. A request over a cap is rejected at once with 503 instead of queueing, so an
 * overloaded upstream sheds load rather than building latency.
 */
export class CircuitBreaker {
  readonly #settings: TrafficSettings['circuitBreaker'];
  #connections = 0;
  #pending = 0;
  #requests = 0;

  constructor(settings: TrafficSettings['circuitBreaker']) {
    this.#settings = settings;
  }

  get requests(): number {
    return this.#requests;
  }

  /** Admits a request, or returns the limit it would break. The release function must be called once. */
  admitRequest(): { release: () => void } | { limit: CircuitLimit } {
    if (this.#requests >= this.#settings.maxRequests) return { limit: 'requests' };
    this.#requests += 1;
    return { release: once(() => (this.#requests -= 1)) };
  }

  /** Admits a wait for a new connection, or returns the limit it would break. */
  admitPending(): { release: () => void } | { limit: CircuitLimit } {
    if (this.#pending >= this.#settings.maxPendingRequests) return { limit: 'pending' };
    this.#pending += 1;
    return { release: once(() => (this.#pending -= 1)) };
  }

  /** Admits a new connection, or returns the limit it would break. */
  admitConnection(): { release: () => void } | { limit: CircuitLimit } {
    if (this.#connections >= this.#settings.maxConnections) return { limit: 'connections' };
    this.#connections += 1;
    return { release: once(() => (this.#connections -= 1)) };
  }
}

function once(action: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    action();
  };
}
