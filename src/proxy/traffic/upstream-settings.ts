import { SealmeshError } from '../../errors/index.ts';

/** How an upstream's instance is chosen for each new connection or request. */
export const LOAD_BALANCER_POLICIES = ['round_robin', 'least_request'] as const;
export type LoadBalancerPolicy = (typeof LOAD_BALANCER_POLICIES)[number];

/**
 * Failures after which a connection or request may be retried on another instance.
 * `connect_failure` and `refused_stream` never reached the app; `reset`, `per_try_timeout` and
 * `gateway_error` (502, 503, 504) may have, so the retry rule also asks whether the request is
 * idempotent.
 */
export const RETRY_CAUSES = ['connect_failure', 'refused_stream', 'reset', 'per_try_timeout', 'gateway_error'] as const;
export type RetryCause = (typeof RETRY_CAUSES)[number];

/** Circuit-breaker limits of one upstream, counted by this proxy alone. */
export interface TrafficLimits {
  /** Open connections to the upstream's instances. Default 1024. */
  maxConnections: number;
  /** Connections or requests waiting for an upstream connection to be established. Default 1024. */
  maxPendingRequests: number;
  /** Requests in progress to the upstream; the HTTP path applies it. Default 1024. */
  maxConcurrentRequests: number;
}

/** Passive health checking (outlier detection) of one upstream's instances. */
export interface PassiveHealthCheck {
  /** Consecutive 5xx responses, or consecutive connect failures, that eject an instance. Default 5. */
  maxFailures: number;
  /** Each full interval an instance stays in service takes one off its ejection count. Default 10 s. */
  intervalMs: number;
  /** Ejection time of a first ejection; the n-th ejection lasts n times as long. Default 30 s. */
  baseEjectionTimeMs: number;
  /** Cap on one ejection's time. Default the larger of 300 s and the base ejection time. */
  maxEjectionTimeMs: number;
  /** Share of the upstream's instances, in percent, that may be ejected at once; 0 disables ejection. Default 10. */
  maxEjectionPercent: number;
}

/** Retry policy and retry budget of one upstream. */
export interface RetrySettings {
  /** Retries after the first try of one connection or request. Default 2. */
  numRetries: number;
  /** Failures that may be retried. Default connect_failure and refused_stream. */
  retryOn: readonly RetryCause[];
  /** Retries in progress may be this share, in percent, of the active connections and requests. Default 20. */
  budgetPercent: number;
  /** Retries allowed per second beyond that share, so that light traffic can still retry. Default 10. */
  minRetriesPerSecond: number;
  /** Cap of the first retry's backoff; each later retry doubles it. Default 25 ms. */
  backoffBaseIntervalMs: number;
  /** Cap of any retry's backoff. Default 10 times the base interval. */
  backoffMaxIntervalMs: number;
}

/** Traffic management settings of one upstream, with every default filled in. */
export interface TrafficSettings {
  /** Time allowed for the TCP connect and TLS handshake to an instance. Default 5000 ms. */
  connectTimeoutMs: number;
  /** Time allowed for a whole HTTP request, retries included; 0 for none. Default 15000 ms. */
  requestTimeoutMs: number;
  /** Time allowed for one try of an HTTP request; 0 for none, so only the request timeout applies. Default 0. */
  perTryTimeoutMs: number;
  loadBalancer: LoadBalancerPolicy;
  limits: TrafficLimits;
  passiveHealthCheck: PassiveHealthCheck;
  retry: RetrySettings;
}

/** Settings given in a configuration file or on the command line; what is missing takes its default. */
export interface TrafficSettingsInput {
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  perTryTimeoutMs?: number;
  loadBalancer?: LoadBalancerPolicy;
  limits?: Partial<TrafficLimits>;
  passiveHealthCheck?: Partial<PassiveHealthCheck>;
  retry?: Partial<RetrySettings>;
}

const DEFAULT_BACKOFF_BASE_INTERVAL_MS = 25;
const DEFAULT_BASE_EJECTION_TIME_MS = 30_000;
const MIN_MAX_EJECTION_TIME_MS = 300_000;

/** The defaults, which follow Envoy's and Consul's defaults for the same settings. */
export const DEFAULT_TRAFFIC_SETTINGS: TrafficSettings = Object.freeze({
  connectTimeoutMs: 5_000,
  requestTimeoutMs: 15_000,
  perTryTimeoutMs: 0,
  loadBalancer: 'round_robin',
  limits: Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, maxConcurrentRequests: 1024 }),
  passiveHealthCheck: Object.freeze({
    maxFailures: 5,
    intervalMs: 10_000,
    baseEjectionTimeMs: DEFAULT_BASE_EJECTION_TIME_MS,
    maxEjectionTimeMs: MIN_MAX_EJECTION_TIME_MS,
    maxEjectionPercent: 10,
  }),
  retry: Object.freeze({
    numRetries: 2,
    retryOn: Object.freeze(['connect_failure', 'refused_stream'] as RetryCause[]),
    budgetPercent: 20,
    minRetriesPerSecond: 10,
    backoffBaseIntervalMs: DEFAULT_BACKOFF_BASE_INTERVAL_MS,
    backoffMaxIntervalMs: 10 * DEFAULT_BACKOFF_BASE_INTERVAL_MS,
  }),
}) as TrafficSettings;

function inconsistent(where: string, message: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_TRAFFIC_CONFIG_INVALID', `${where}: ${message}`);
}

/**
 * Fills in the defaults of `input` and checks the settings that depend on each other. Each value
 * has already been checked on its own by the reader of the file or flag. Throws
 * SEALMESH_ERR_TRAFFIC_CONFIG_INVALID, naming `where`, for a per-try timeout longer than the
 * request timeout, a max ejection time below the base ejection time, or a max backoff interval
 * below the base interval.
 */
export function resolveTrafficSettings(input: TrafficSettingsInput = {}, where = 'traffic settings'): TrafficSettings {
  const defaults = DEFAULT_TRAFFIC_SETTINGS;
  const health = input.passiveHealthCheck ?? {};
  const retry = input.retry ?? {};
  const baseEjectionTimeMs = health.baseEjectionTimeMs ?? defaults.passiveHealthCheck.baseEjectionTimeMs;
  const backoffBaseIntervalMs = retry.backoffBaseIntervalMs ?? defaults.retry.backoffBaseIntervalMs;
  const settings: TrafficSettings = {
    connectTimeoutMs: input.connectTimeoutMs ?? defaults.connectTimeoutMs,
    requestTimeoutMs: input.requestTimeoutMs ?? defaults.requestTimeoutMs,
    perTryTimeoutMs: input.perTryTimeoutMs ?? defaults.perTryTimeoutMs,
    loadBalancer: input.loadBalancer ?? defaults.loadBalancer,
    limits: { ...defaults.limits, ...input.limits },
    passiveHealthCheck: {
      maxFailures: health.maxFailures ?? defaults.passiveHealthCheck.maxFailures,
      intervalMs: health.intervalMs ?? defaults.passiveHealthCheck.intervalMs,
      baseEjectionTimeMs,
      maxEjectionTimeMs: health.maxEjectionTimeMs ?? Math.max(MIN_MAX_EJECTION_TIME_MS, baseEjectionTimeMs),
      maxEjectionPercent: health.maxEjectionPercent ?? defaults.passiveHealthCheck.maxEjectionPercent,
    },
    retry: {
      numRetries: retry.numRetries ?? defaults.retry.numRetries,
      retryOn: [...(retry.retryOn ?? defaults.retry.retryOn)],
      budgetPercent: retry.budgetPercent ?? defaults.retry.budgetPercent,
      minRetriesPerSecond: retry.minRetriesPerSecond ?? defaults.retry.minRetriesPerSecond,
      backoffBaseIntervalMs,
      backoffMaxIntervalMs: retry.backoffMaxIntervalMs ?? 10 * backoffBaseIntervalMs,
    },
  };
  if (settings.perTryTimeoutMs > 0 && settings.requestTimeoutMs > 0 && settings.perTryTimeoutMs > settings.requestTimeoutMs) {
    throw inconsistent(where, `per_try_timeout_ms ${settings.perTryTimeoutMs} is longer than request_timeout_ms ${settings.requestTimeoutMs}; make the per-try timeout at most the request timeout`);
  }
  const { maxEjectionTimeMs } = settings.passiveHealthCheck;
  if (maxEjectionTimeMs < baseEjectionTimeMs) {
    throw inconsistent(where, `passive_health_check.max_ejection_time ${maxEjectionTimeMs} ms is shorter than base_ejection_time ${baseEjectionTimeMs} ms; raise max_ejection_time`);
  }
  if (settings.retry.backoffMaxIntervalMs < backoffBaseIntervalMs) {
    throw inconsistent(where, `retry.backoff_max_interval ${settings.retry.backoffMaxIntervalMs} ms is shorter than backoff_base_interval ${backoffBaseIntervalMs} ms; raise backoff_max_interval`);
  }
  return settings;
}
