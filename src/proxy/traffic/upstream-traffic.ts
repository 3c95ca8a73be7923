import { SealmeshError } from '../../errors/index.ts';
import { RejectionLog, type Logger } from '../../log/index.ts';
import type { Endpoint } from '../../server/index.ts';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.ts';
import { CircuitBreaker, type BreakerResource, type BreakerTrip, type CircuitBreakerReason } from './breaker.ts';
import { systemClock, type Clock, type RandomSource } from './clock.ts';
import type { TrafficMetrics } from './metrics.ts';
import { OutlierDetector } from './outlier-detection.ts';
import { decideRetry, RetryBudget, type RetryDecision, type RetryRequest } from './retry.ts';
import type { TrafficSettings } from './upstream-settings.ts';

export interface UpstreamTrafficOptions {
  /** Service reference of the upstream, as in `--upstream`; the metric label. */
  upstream: string;
  settings: TrafficSettings;
  /** The catalog's healthy endpoints of the upstream, from the current snapshot. */
  endpoints: () => readonly Endpoint[];
  metrics: TrafficMetrics;
  log: Logger;
  clock?: Clock;
  random?: RandomSource;
}

/** A connection or request admitted by the circuit breaker. */
export interface Admission {
  readonly admitted: true;
  /**
   * Ends the pending state: the TCP path calls it once the upstream connection is established,
   * the HTTP path once the request has an upstream connection or stream. Idempotent.
   */
  established(): void;
  /** Gives back everything the admission holds; call it when the connection or request ends. Idempotent. */
  release(): void;
}

/** A connection or request rejected by the circuit breaker, with what an HTTP path sends back. */
export interface TrafficRejection extends BreakerTrip {
  readonly admitted: false;
  /** SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN, naming the upstream and the limit. */
  error: SealmeshError;
  /**
   * A 503 response for the HTTP path to send: the error's message as plain text, the code in
   * `x-sealmesh-error`, as in every other reply the proxy makes itself.
   */
  response: { status: 503; headers: Record<string, string>; body: string };
}

/** One try on one instance, counted for least request and reported to outlier detection. */
export interface Attempt {
  readonly endpoint: Endpoint;
  /** The connection to the instance is established. */
  connected(): void;
  /** The connection to the instance failed or timed out; this also ends the attempt. */
  connectFailed(): void;
  /** The instance responded with this HTTP status; a 5xx counts toward ejection. */
  responded(status: number): void;
  /** The try is over, so the instance has one active connection or request less. Idempotent. */
  finish(): void;
}

/** The state of one upstream for the admin endpoint and tests. */
export interface UpstreamTrafficStatus {
  upstream: string;
  loadBalancer: string;
  activeConnections: number;
  pendingRequests: number;
  activeRequests: number;
  retriesInProgress: number;
  instances: Array<{ instanceId: string; active: number; ejected: boolean }>;
}

/**
 * Traffic management of one upstream, shared by every connection and request to it: circuit
 * breaking, the choice of an instance (load balancing over the catalog's healthy instances minus
 * the ejected ones), outlier detection, and the retry decision with its budget. It carries no
 * bytes: the TCP path and the HTTP path call it around their own dials and requests.
 */
export class UpstreamTraffic {
  readonly upstream: string;
  readonly settings: TrafficSettings;
  readonly #options: UpstreamTrafficOptions;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #breaker: CircuitBreaker;
  readonly #balancer: LoadBalancer;
  readonly #outliers: OutlierDetector;
  readonly #budget: RetryBudget;
  readonly #rejections: RejectionLog;
  /** Connections and requests tried on each instance and not finished. */
  readonly #active = new Map<string, number>();
  /** Client connections and requests admitted and not released: the base of the retry budget. */
  #admitted = 0;

  constructor(options: UpstreamTrafficOptions) {
    this.#options = options;
    this.upstream = options.upstream;
    this.settings = options.settings;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#breaker = new CircuitBreaker(options.settings.limits);
    this.#balancer = createLoadBalancer(options.settings.loadBalancer, this.#random);
    this.#budget = new RetryBudget(options.settings.retry, this.#clock);
    this.#rejections = new RejectionLog(options.log);
    const { metrics, log, upstream } = options;
    this.#outliers = new OutlierDetector(options.settings.passiveHealthCheck, this.#clock, {
      ejected: (ejection) => {
        metrics.ejections.inc({ upstream, cause: ejection.cause });
        log.warn({ upstream, instance: ejection.instanceId, cause: ejection.cause, ejections: ejection.count, ejectionMs: ejection.durationMs }, 'instance ejected from load balancing');
      },
      overflow: (instanceId, cause) => {
        metrics.ejectionOverflows.inc({ upstream });
        this.#rejections.warn(`overflow:${instanceId}`, { upstream, instance: instanceId, cause, maxEjectionPercent: options.settings.passiveHealthCheck.maxEjectionPercent }, 'instance kept in service: ejecting it would exceed the max ejection percent or leave no instance in service');
      },
      returned: (instanceId) => log.info({ upstream, instance: instanceId }, 'ejected instance returned to load balancing'),
    });
    metrics.track(upstream, {
      ejectedInstances: () => this.#outliers.ejectedCount(),
      activeConnections: () => this.#breaker.inUse('connections'),
      pendingRequests: () => this.#breaker.inUse('pending_requests'),
      activeRequests: () => this.#breaker.inUse('requests'),
    });
  }

  /**
   * Admits a client connection of the TCP path against max connections and max pending requests.
   * A rejected connection is counted and logged here; the caller closes it.
   */
  admitConnection(): Admission | TrafficRejection {
    return this.#admit(['connections', 'pending_requests'], true);
  }

  /**
   * Admits an HTTP request against max concurrent requests and max pending requests. A rejected
   * request is counted and logged here; the caller replies with `rejection.response`.
   */
  admitRequest(): Admission | TrafficRejection {
    return this.#admit(['requests', 'pending_requests'], true);
  }

  /**
   * Admits a new connection of an HTTP connection pool against max connections. It does not count
   * toward the retry budget, whose base is the requests. `established` has nothing to end here.
   */
  admitUpstreamConnection(): Admission | TrafficRejection {
    return this.#admit(['connections'], false);
  }

  #admit(resources: BreakerResource[], countsForBudget: boolean): Admission | TrafficRejection {
    const trip = this.#breaker.tryAcquire(resources);
    if (trip !== undefined) return this.#reject(trip);
    if (countsForBudget) this.#admitted += 1;
    let pending = resources.includes('pending_requests');
    let released = false;
    return {
      admitted: true,
      established: () => {
        if (!pending || released) return;
        pending = false;
        this.#breaker.release('pending_requests');
      },
      release: () => {
        if (released) return;
        released = true;
        if (countsForBudget) this.#admitted -= 1;
        for (const resource of resources) {
          if (resource === 'pending_requests' && !pending) continue;
          this.#breaker.release(resource);
        }
      },
    };
  }

  #reject(trip: BreakerTrip): TrafficRejection {
    const { upstream, metrics } = this.#options;
    metrics.circuitBreakerTrips.inc({ upstream, reason: trip.reason });
    this.#rejections.warn(`circuit:${trip.reason}`, { upstream, code: 'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN', reason: trip.reason, limit: trip.limit }, 'circuit breaker open: connection or request rejected');
    const error = new SealmeshError(
      'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN',
      `upstream ${upstream} has reached its circuit-breaker limit ${limitKey(trip.reason)} = ${trip.limit}; the request was rejected without being sent, retry later or raise the limit`,
    );
    return {
      admitted: false,
      ...trip,
      error,
      response: {
        status: 503,
        headers: { 'content-type': 'text/plain; charset=utf-8', 'x-sealmesh-error': error.code, 'x-sealmesh-circuit-breaker': trip.reason },
        body: `${error.message}\n`,
      },
    };
  }

  /**
   * Chooses an instance for a new try: among the catalog's healthy endpoints that are not ejected
   * and not in `tried` (unless every candidate was tried), by the upstream's load-balancing policy.
   * Returns undefined when the catalog lists no healthy endpoint.
   */
  pick(tried?: ReadonlySet<string>): Endpoint | undefined {
    const candidates = this.#outliers.candidates(this.#options.endpoints());
    const untried = tried === undefined || tried.size === 0 ? candidates : candidates.filter((endpoint) => !tried.has(endpoint.instanceId));
    return this.#balancer.choose(untried.length > 0 ? untried : candidates, (instanceId) => this.#active.get(instanceId) ?? 0);
  }

  /** Starts a try on `endpoint`, which counts as active on it until `finish` or `connectFailed`. */
  startAttempt(endpoint: Endpoint): Attempt {
    const instanceId = endpoint.instanceId;
    this.#active.set(instanceId, (this.#active.get(instanceId) ?? 0) + 1);
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      const count = (this.#active.get(instanceId) ?? 1) - 1;
      if (count <= 0) this.#active.delete(instanceId);
      else this.#active.set(instanceId, count);
    };
    return {
      endpoint,
      connected: () => this.#outliers.reportConnectSuccess(instanceId),
      connectFailed: () => {
        this.#outliers.reportConnectFailure(instanceId);
        finish();
      },
      responded: (status) => this.#outliers.reportResponse(instanceId, status),
      finish,
    };
  }

  /**
   * Decides whether a failed try may be retried (see `decideRetry`), and counts the retry or the
   * exhausted budget. An allowed retry keeps its share of the budget until its `release` is called.
   */
  decideRetry(request: RetryRequest): RetryDecision {
    const decision = decideRetry(request, {
      settings: this.settings.retry,
      requestTimeoutMs: this.settings.requestTimeoutMs,
      budget: this.#budget,
      activeRequests: this.#admitted,
      random: this.#random,
    });
    const { upstream, metrics } = this.#options;
    if (decision.retry) metrics.retries.inc({ upstream, cause: request.cause });
    else if (decision.reason === 'budget_exhausted') {
      metrics.retryBudgetExhausted.inc({ upstream });
      this.#rejections.warn('retry-budget', { upstream, code: 'SEALMESH_ERR_TRAFFIC_RETRY_BUDGET_EXHAUSTED', cause: request.cause, retriesInProgress: this.#budget.inProgress, active: this.#admitted }, 'retry not made: the retry budget is exhausted');
    }
    return decision;
  }

  /**
   * Returns the timeout of the next try of an HTTP request that started `elapsedMs` ago: the
   * per-try timeout cut to what remains of the request timeout; undefined when neither is set, and
   * 0 when the request timeout has passed.
   */
  tryTimeoutMs(elapsedMs: number): number | undefined {
    const { requestTimeoutMs, perTryTimeoutMs } = this.settings;
    const remaining = requestTimeoutMs > 0 ? Math.max(0, requestTimeoutMs - elapsedMs) : undefined;
    if (perTryTimeoutMs === 0) return remaining;
    return remaining === undefined ? perTryTimeoutMs : Math.min(perTryTimeoutMs, remaining);
  }

  status(): UpstreamTrafficStatus {
    return {
      upstream: this.upstream,
      loadBalancer: this.settings.loadBalancer,
      activeConnections: this.#breaker.inUse('connections'),
      pendingRequests: this.#breaker.inUse('pending_requests'),
      activeRequests: this.#breaker.inUse('requests'),
      retriesInProgress: this.#budget.inProgress,
      instances: this.#options.endpoints().map((endpoint) => ({
        instanceId: endpoint.instanceId,
        active: this.#active.get(endpoint.instanceId) ?? 0,
        ejected: this.#outliers.isEjected(endpoint.instanceId),
      })),
    };
  }
}

/** Returns the configuration key of a circuit-breaker limit, for messages. */
function limitKey(reason: CircuitBreakerReason): string {
  return `limits.${reason}`;
}
