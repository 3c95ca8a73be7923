import { Counter, Gauge, Histogram, type Registry } from '../prom-client.ts';
import { HTTP_METHODS } from '../../policy/index.ts';

const KNOWN_METHODS = new Set<string>(HTTP_METHODS);

/** Bounds the method label: a method outside the standard set counts as `OTHER`. */
export function methodLabel(method: string): string {
  return KNOWN_METHODS.has(method) ? method : 'OTHER';
}

/** Status class label, such as `2xx`; `0xx` when no response was received. */
export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/**
 * Metrics of the HTTP, HTTP/2 and gRPC data path, in the proxy's registry. Retries, ejections and
 * circuit-breaker trips are counted by the traffic metrics, shared with the TCP path.
 */
export class HttpMetrics {
  readonly requests: Counter<'direction' | 'source' | 'destination' | 'method' | 'status'>;
  readonly duration: Histogram<'direction' | 'destination'>;
  readonly denials: Counter<'source' | 'destination' | 'reason'>;
  readonly handshakes: Counter<'direction' | 'resumed'>;
  readonly activeRequests: Gauge<'direction'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'sealmesh_proxy_http_requests_total',
      help: 'HTTP requests by direction, source service, destination service, method and status class.',
      labelNames: ['direction', 'source', 'destination', 'method', 'status'] as const,
      registers,
    });
    this.duration = new Histogram({
      name: 'sealmesh_proxy_http_request_duration_seconds',
      help: 'Time from receiving a request to the end of its response, by direction and destination service.',
      labelNames: ['direction', 'destination'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.denials = new Counter({
      name: 'sealmesh_proxy_http_denials_total',
      help: 'HTTP requests rejected by the inbound proxy, by source, destination and reason (intention, invalid_path, permissions_invalid).',
      labelNames: ['source', 'destination', 'reason'] as const,
      registers,
    });
    this.handshakes = new Counter({
      name: 'sealmesh_proxy_tls_handshakes_total',
      help: 'TLS handshakes with peer proxies that passed the identity checks, by direction and whether a session was resumed.',
      labelNames: ['direction', 'resumed'] as const,
      registers,
    });
    this.activeRequests = new Gauge({
      name: 'sealmesh_proxy_http_active_requests',
      help: 'HTTP requests in flight by direction.',
      labelNames: ['direction'] as const,
      registers,
    });
  }
}
