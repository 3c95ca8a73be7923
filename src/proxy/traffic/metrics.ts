import { Counter, Gauge, type Registry } from '../prom-client.ts';

/** Live counts that the gauges read from each upstream when metrics are scraped. */
export interface TrafficGaugeSource {
  ejectedInstances(): number;
  activeConnections(): number;
  pendingRequests(): number;
  activeRequests(): number;
}

/** Metrics of load balancing, retries, outlier detection and circuit breaking, by upstream. */
export class TrafficMetrics {
  readonly #sources = new Map<string, TrafficGaugeSource>();

  readonly retries: Counter<'upstream' | 'cause'>;
  readonly retryBudgetExhausted: Counter<'upstream'>;
  readonly ejections: Counter<'upstream' | 'cause'>;
  readonly ejectionOverflows: Counter<'upstream'>;
  readonly circuitBreakerTrips: Counter<'upstream' | 'reason'>;

  constructor(registry: Registry) {
    const registers = [registry];
    const sources = this.#sources;
    this.retries = new Counter({
      name: 'sealmesh_proxy_upstream_retries_total',
      help: 'Retries of connections or requests to an upstream, by upstream and the cause of the failed try.',
      labelNames: ['upstream', 'cause'] as const,
      registers,
    });
    this.retryBudgetExhausted = new Counter({
      name: 'sealmesh_proxy_upstream_retry_budget_exhausted_total',
      help: 'Retries not made because the upstream\'s retry budget had no room, by upstream.',
      labelNames: ['upstream'] as const,
      registers,
    });
    this.ejections = new Counter({
      name: 'sealmesh_proxy_outlier_ejections_total',
      help: 'Instances ejected from load balancing by passive health checking, by upstream and cause.',
      labelNames: ['upstream', 'cause'] as const,
      registers,
    });
    this.ejectionOverflows = new Counter({
      name: 'sealmesh_proxy_outlier_ejections_overflow_total',
      help: 'Instances that reached the failure count but stayed in service because of the max ejection percent, by upstream.',
      labelNames: ['upstream'] as const,
      registers,
    });
    this.circuitBreakerTrips = new Counter({
      name: 'sealmesh_proxy_circuit_breaker_trips_total',
      help: 'Connections and requests rejected by an upstream\'s circuit-breaker limits, by upstream and the limit reached.',
      labelNames: ['upstream', 'reason'] as const,
      registers,
    });
    const gauge = (name: string, help: string, read: (source: TrafficGaugeSource) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['upstream'] as const,
        registers,
        collect() {
          for (const [upstream, source] of sources) this.set({ upstream }, read(source));
        },
      });
    };
    gauge('sealmesh_proxy_outlier_ejected_instances', 'Instances of an upstream ejected from load balancing now.', (source) => source.ejectedInstances());
    gauge('sealmesh_proxy_upstream_active_connections', 'Open connections to an upstream\'s instances.', (source) => source.activeConnections());
    gauge('sealmesh_proxy_upstream_pending_requests', 'Connections and requests waiting for a connection to an upstream instance.', (source) => source.pendingRequests());
    gauge('sealmesh_proxy_upstream_active_requests', 'HTTP requests in progress to an upstream.', (source) => source.activeRequests());
  }

  /** Adds an upstream whose counts the gauges report. */
  track(upstream: string, source: TrafficGaugeSource): void {
    this.#sources.set(upstream, source);
  }
}
