import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The control plane's Prometheus metrics, in a registry of its own. */
export class ServerMetrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'sealmesh_server_requests_total',
    help: 'API requests by route and HTTP status.',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });

  readonly rejections = new Counter({
    name: 'sealmesh_server_rejections_total',
    help: 'Rejected API requests and TLS connections by error code.',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly tlsConnections = new Counter({
    name: 'sealmesh_server_tls_connections_total',
    help: 'TLS connections whose handshake completed, each one full handshake or resumption.',
    registers: [this.registry],
  });

  readonly svidsIssued = new Counter({
    name: 'sealmesh_server_svids_issued_total',
    help: 'SVIDs issued, by kind of request (enroll or renew).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly attestations = new Counter({
    name: 'sealmesh_server_attestations_total',
    help: 'Enrollments and renewals by evidence provider (none without evidence), result (accepted or rejected), whether the provider is insecure (dev), and kind (enroll or renew).',
    labelNames: ['provider', 'result', 'insecure', 'kind'] as const,
    registers: [this.registry],
  });

  readonly attestationRejections = new Counter({
    name: 'sealmesh_server_attestation_rejections_total',
    help: 'Rejected attestation evidence, by the error code that names the reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly watchStreams = new Gauge({
    name: 'sealmesh_server_watch_streams',
    help: 'Open proxy watch streams.',
    registers: [this.registry],
  });

  readonly snapshotsPushed = new Counter({
    name: 'sealmesh_server_snapshots_pushed_total',
    help: 'Snapshots pushed to proxies over watch streams.',
    registers: [this.registry],
  });

  readonly caRoots = new Gauge({
    name: 'sealmesh_server_ca_roots',
    help: 'Roots in the trust bundle: 2 while a rotated-out root awaits its prune.',
    registers: [this.registry],
  });

  readonly caRootRotations = new Counter({
    name: 'sealmesh_server_ca_root_rotations_total',
    help: 'Root rotations and prunes of retired roots, by step (rotate or prune).',
    labelNames: ['step'] as const,
    registers: [this.registry],
  });

  readonly requestSeconds = new Histogram({
    name: 'sealmesh_server_request_duration_seconds',
    help: 'API request latency by route.',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'sealmesh_server_' });
  }
}
