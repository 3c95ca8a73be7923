import { Counter, Gauge, Registry, collectDefaultMetrics } from './prom-client.ts';
import { HttpMetrics } from './http/metrics.ts';
import { TrafficMetrics } from './traffic/metrics.ts';

/** The sidecar's Prometheus metrics, in a registry of its own. */
export class ProxyMetrics {
  readonly registry = new Registry();

  readonly inboundConnections = new Counter({
    name: 'sealmesh_proxy_inbound_connections_total',
    help: 'Inbound mTLS connections by result (allowed, denied, rejected).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly outboundConnections = new Counter({
    name: 'sealmesh_proxy_upstream_connections_total',
    help: 'Connections opened to upstream services by upstream and result.',
    labelNames: ['upstream', 'result'] as const,
    registers: [this.registry],
  });

  readonly rejections = new Counter({
    name: 'sealmesh_proxy_rejections_total',
    help: 'Rejected connections by error code.',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly activeConnections = new Gauge({
    name: 'sealmesh_proxy_active_connections',
    help: 'Open proxied connections by direction.',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  readonly closedCertExpired = new Counter({
    name: 'sealmesh_proxy_connections_closed_cert_expired_total',
    help: 'Established connections closed because the certificate that their peer authenticated with expired.',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  readonly closedByPolicy = new Counter({
    name: 'sealmesh_proxy_connections_closed_by_policy_total',
    help: 'Established connections closed because an intention change now denies them.',
    registers: [this.registry],
  });

  readonly svidRenewals = new Counter({
    name: 'sealmesh_proxy_svid_renewals_total',
    help: 'SVID renewal attempts by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly attestationProvider = new Gauge({
    name: 'sealmesh_proxy_attestation_provider',
    help: 'Set to 1 for the evidence provider this proxy enrolls with (none when it presents no evidence); insecure is true for the dev provider.',
    labelNames: ['provider', 'insecure'] as const,
    registers: [this.registry],
  });

  readonly svidExpirySeconds = new Gauge({
    name: 'sealmesh_proxy_svid_expiry_seconds',
    help: 'Seconds until the current SVID expires.',
    registers: [this.registry],
  });

  readonly snapshotsApplied = new Counter({
    name: 'sealmesh_proxy_snapshots_applied_total',
    help: 'Configuration snapshots received from the control plane and applied.',
    registers: [this.registry],
  });

  readonly controlPlaneConnected = new Gauge({
    name: 'sealmesh_proxy_control_plane_connected',
    help: '1 while the watch stream to the control plane is open, 0 otherwise.',
    registers: [this.registry],
  });

  readonly appExposed = new Gauge({
    name: 'sealmesh_proxy_app_exposed',
    help: '1 while the last check found the app listening on a wildcard or non-loopback address, 0 otherwise.',
    registers: [this.registry],
  });

  readonly appExposureDetections = new Counter({
    name: 'sealmesh_proxy_app_exposure_detections_total',
    help: 'Checks of the socket tables that found the app reachable around the proxy.',
    registers: [this.registry],
  });

  readonly manifestVersion = new Gauge({
    name: 'sealmesh_proxy_manifest_version',
    help: 'Version of the signed security manifest this proxy verified and enforces; 0 before the first.',
    registers: [this.registry],
  });

  /** Metrics of the HTTP, HTTP/2 and gRPC data path. */
  readonly http = new HttpMetrics(this.registry);
  readonly resumedSessions = new Counter({
    name: 'sealmesh_proxy_upstream_tls_resumptions_total',
    help: 'Connections to upstream instances that resumed a TLS session of an earlier verified handshake, by upstream.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  /** Metrics of load balancing, retries, outlier detection and circuit breaking. */
  readonly traffic = new TrafficMetrics(this.registry);

  #processMetrics = false;

  /**
   * Adds prom-client's default metrics of the process (`sealmesh_proxy_process_*` and
   * `sealmesh_proxy_nodejs_*`). The proxy calls it when it starts its admin endpoint, the only place
   * that serves the registry, so a proxy without one does not load or run their collectors.
   */
  collectProcessMetrics(): void {
    if (this.#processMetrics) return;
    this.#processMetrics = true;
    collectDefaultMetrics(this.registry, 'sealmesh_proxy_');
  }
}
