import { ApiClient, ControlConnection } from '../client/index.ts';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { RejectionLog, silentLogger, type Logger } from '../log/index.ts';
import { decide, preparePermissionsSchema, type Decision } from '../policy/index.ts';
import { formatServiceRef, parseServiceRef, type SpiffeId } from '../spiffe/index.ts';
import type { Endpoint, ProxySnapshot } from '../server/index.ts';
import { checkTcpAppExposure, describeExposure, type ExposureReport, type PerimeterMode } from '../perimeter/exposure.ts';
import { DEFAULT_SOCKET_MODE, type SocketPermissions } from '../perimeter/unix-socket.ts';
import type { AdminServer } from './admin.ts';
import { formatHostPort, formatSocketAddress, isUnixAddress, type HostPort, type SocketAddress, type UpstreamSpec } from './address.ts';
import { AppMonitor, type HealthReport } from './app-monitor.ts';
import { HealthEndpoint } from './health-endpoint.ts';
import { enroll, renew, renewalDelayMs, withTrustBundle, type SvidContexts } from './identity.ts';
import { InboundListener } from './inbound.ts';
import { ProxyMetrics } from './metrics.ts';
import { OutboundListener } from './outbound.ts';
import { DEFAULT_TRAFFIC_SETTINGS, UpstreamTraffic } from './traffic/index.ts';
import { WatchClient } from './watch-client.ts';
import { ManifestGuard, type EnforcedManifest } from './manifest-guard.ts';
import { TLS_SERVER_OPTIONS } from '../tls/index.ts';
import { InboundHttp } from './http/inbound-http.ts';
import { OutboundHttp } from './http/outbound-http.ts';
import { AccessLog, type AccessLogOptions } from './http/access-log.ts';
import { PeerPool } from './http/peer-pool.ts';
import { PeerSessionCache } from './tls-sessions.ts';
import { alpnFor, DEFAULT_PROTOCOL, isHttpProtocol, type ServiceProtocol } from './http/protocol.ts';
import type { EvidenceProvider } from '../attest/index.ts';
import type { AttestationMode } from '../attest/providers/index.ts';
import { requiredModeViolation } from '../hardening/required-mode.ts';
import type { RunMode } from '../hardening/production.ts';
import type { TokenTlsKey } from './token-key.ts';
import { runAtWallClock } from './cert-expiry.ts';

/** The proxy's link to the control plane as `/status` shows it. */
export interface ControlPlaneStatus {
  url: string;
  /** True while the watch stream for catalog and intention updates is open. */
  watchConnected: boolean;
  /** Connections opened to the control plane since start, each with its own TLS handshake. Failed attempts are not counted. */
  connectionsOpened: number;
  /** When the proxy renews its SVID next, as an ISO 8601 time; null while no renewal is scheduled. */
  nextRenewalAt: string | null;
  /** Renewal attempts that failed since the last success; each failure is retried with backoff. */
  renewalFailures: number;
}

export interface ProxyOptions {
  /** Service this proxy fronts: `name` or `namespace/name`. */
  service: string;
  /**
   * Single-use join token for the first enrollment. The proxy drops its reference once enrolled, and
   * `options.joinToken` reads as an empty string.
   */
  joinToken: string;
  /** Control-plane URL, such as `https://127.0.0.1:8501`. */
  serverUrl: string;
  /** PEM roots that the control plane's certificate chains to (the trust bundle file). */
  serverCa: string[];
  /** Inbound mTLS listener. Port 0 takes any free port. */
  listen: HostPort;
  /** Address other proxies dial; the listen address when absent. */
  advertise?: HostPort;
  /** The local app that inbound connections are forwarded to: loopback TCP or a Unix socket. */
  app: SocketAddress;
  upstreams: UpstreamSpec[];
  /** Application protocol of the app, registered in the catalog for the callers' proxies; `tcp` when absent. */
  protocol?: ServiceProtocol;
  /** Loopback or Unix socket HTTP endpoint for metrics and status; none when absent. */
  admin?: SocketAddress;
  /** Owner, group and mode of every Unix socket the proxy creates; mode 0600 and the proxy's user when absent. */
  socketPermissions?: Partial<SocketPermissions>;
  /** Plain HTTP endpoint serving `GET /healthz` for the orchestrator's prober; none when absent. */
  health?: HostPort;
  /** HTTP path the app is checked at, such as `/healthz`; a plain connect when absent. */
  appHealthPath?: string;
  /**
   * Reaction to an app that listens on a wildcard or non-loopback address: `strict` rejects the
   * start and later stops inbound traffic, `warn` (the default) logs, counts and reports it.
   * NOTE: this belongs in the signed security manifest. It is deliberately not a command-line flag,
   * because a local flag must never be able to weaken the posture.
   */
  perimeter?: PerimeterMode;
  /**
   * SHA-256 digest of the genesis manifest to pin. Without it the proxy pins the genesis of the
   * first manifest chain it receives.
   */
  manifestGenesis?: string;
  /** Interval of the socket-table check of the app's binding. */
  exposureCheckIntervalMs?: number;
  /** Requested SVID TTL in seconds; the server's default when absent. */
  svidTtlSeconds?: number;
  /**
   * Wall-clock time in milliseconds since the epoch, by which the proxy decides that its SVID has
   * expired; `Date.now` when absent. Tests pass a clock that runs ahead.
   */
  now?: () => number;
  /** How long SIGTERM waits for established connections to finish. */
  drainSeconds?: number;
  /** Interval of the health check of the app. */
  healthCheckIntervalMs?: number;
  /**
   * Evidence provider to enroll and renew with. `auto` (the default) detects configfs-tsm or
   * Gramine's /dev/attestation, `none` sends no evidence, and `dev` sends insecure software evidence.
   */
  attestation?: AttestationMode;
  /** Measurement that the dev provider claims, 96 hex digits. */
  devMeasurement?: string;
  /** Mount point of configfs-tsm; default /sys/kernel/config/tsm. */
  tsmRoot?: string;
  /** Gramine's attestation directory; default /dev/attestation. */
  gramineRoot?: string;
  /** An evidence provider to use in place of the one `attestation` selects. */
  evidenceProvider?: EvidenceProvider;
  /** The `--mode` the proxy runs in, checked against the manifest's requirement. `development` when absent. */
  runMode?: RunMode;
  /**
   * A TLS key pair in a PKCS#11 token, reused for every SVID, in place of a new in-memory key per
   * SVID. The caller opens it and closes it after `stop`.
   */
  tokenKey?: TokenTlsKey;
  log?: Logger;
  /** JSON access log of the HTTP path, one line per request; none when absent. */
  accessLog?: AccessLogOptions;
}

const RENEW_RETRY_MIN_MS = 1_000;
const RENEW_RETRY_MAX_MS = 30_000;
const DEFAULT_DRAIN_SECONDS = 10;
const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 10_000;
const DEFAULT_EXPOSURE_CHECK_INTERVAL_MS = 30_000;
const HEALTH_CHECK_TIMEOUT_MS = 2_000;

/**
 * The sidecar proxy. It keeps its private key only in memory, enrolls with a join token, keeps its
 * SVID fresh, applies the control plane's snapshots without restarting, and carries traffic:
 * inbound mTLS to the local app, and plain TCP from the app over mTLS to upstream services.
 */
export class SidecarProxy {
  readonly options: ProxyOptions;
  readonly log: Logger;
  readonly metrics = new ProxyMetrics();
  readonly identity: Omit<SpiffeId, 'trustDomain'>;
  #trustDomain = '';
  #instanceId = '';
  #svid: SvidContexts | undefined;
  #snapshot: ProxySnapshot | undefined;
  /** Version of the last snapshot received, applied or rejected. */
  #receivedVersion: string | undefined;
  readonly #manifestGuard: ManifestGuard;
  #client: ApiClient;
  /**
   * The one HTTP/2 connection, authenticated with the current SVID, that carries the watch stream,
   * renewals, health reports and registrations. Created when the first SVID is installed.
   */
  #control: ControlConnection | undefined;
  #inbound: InboundListener | undefined;
  readonly #outbound = new Map<string, OutboundListener>();
  readonly #traffic = new Map<string, UpstreamTraffic>();
  #watch: WatchClient | undefined;
  #admin: AdminServer | undefined;
  #healthEndpoint: HealthEndpoint | undefined;
  readonly #monitor: AppMonitor;
  #renewTimer: NodeJS.Timeout | undefined;
  /** Cancels the check at the current SVID's notAfter, which stops the proxy unless a renewal replaced the SVID. */
  #cancelExpiry: () => void = () => undefined;
  /** When the renewal timer fires next; undefined while none is scheduled. */
  #nextRenewalAt: Date | undefined;
  /** Renewal attempts that failed since the last one that succeeded. */
  #renewalFailures = 0;
  #watchConnected = false;
  #inboundPort = 0;
  readonly #upstreamAddresses = new Map<string, SocketAddress>();
  #stopping = false;
  readonly protocol: ServiceProtocol;
  #inboundHttp: InboundHttp | undefined;
  readonly #peerPools = new Map<string, PeerPool>();
  /** Last protocol seen for each upstream, kept while the upstream has no healthy instance. */
  readonly #upstreamProtocols = new Map<string, ServiceProtocol>();
  #evidenceProvider: EvidenceProvider | undefined;
  #attestation: { provider: string; insecure: boolean; policy: string } | null = null;
  /** Trust bundle updates run one after another, in the order the snapshots arrived. */
  #trustUpdate: Promise<void> = Promise.resolve();
  #joinToken: string | undefined;
  readonly #accessLog: AccessLog | undefined;
  readonly #halt = Promise.withResolvers<SealmeshError>();
  /** The error that stopped inbound traffic for good, once `#refuseToRun` has run. */
  #refusal: SealmeshError | undefined;

  constructor(options: ProxyOptions) {
    this.#joinToken = options.joinToken;
    this.options = { ...options, joinToken: '' };
    this.log = options.log ?? silentLogger();
    const ref = parseServiceRef(options.service);
    this.identity = { namespace: ref.namespace, service: ref.service };
    this.protocol = options.protocol ?? DEFAULT_PROTOCOL;
    if (options.accessLog !== undefined) this.#accessLog = new AccessLog(options.accessLog, this.log.child({ subsystem: 'access-log' }));
    this.#client = new ApiClient({ url: options.serverUrl, ca: options.serverCa });
    this.#manifestGuard = new ManifestGuard(this.identity, options.manifestGenesis);
    this.#monitor = new AppMonitor({
      app: options.app,
      perimeter: options.perimeter ?? 'warn',
      timeoutMs: HEALTH_CHECK_TIMEOUT_MS,
      metrics: this.metrics,
      log: this.log.child({ subsystem: 'app-monitor' }),
      report: (report) => this.#reportHealth(report),
      setServing: (serving, reason) => {
        // A proxy that refused to run stays suspended whatever the app's exposure.
        if (serving && this.#refusal === undefined) this.#inbound?.resume();
        else this.#inbound?.suspend('SEALMESH_ERR_APP_EXPOSED', reason);
      },
      ...(options.appHealthPath !== undefined ? { httpPath: options.appHealthPath } : {}),
    });
  }

  /**
   * Settles with the error that made the proxy stop serving for good: a verified manifest that
   * requires production mode while the proxy runs in development mode, or an SVID that expired
   * before a renewal succeeded. The caller should stop it.
   */
  get halted(): Promise<SealmeshError> {
    return this.#halt.promise;
  }

  get spiffeId(): string | undefined {
    return this.#svid?.spiffeId;
  }

  get instanceId(): string {
    return this.#instanceId;
  }

  get svid(): Pick<SvidContexts, 'serial' | 'notBefore' | 'notAfter' | 'spiffeId' | 'chainPem' | 'certificateSha256'> | undefined {
    return this.#svid;
  }

  /** The roots (PEM) that this proxy's TLS contexts trust now. */
  get trustBundle(): string[] {
    return [...(this.#svid?.bundle ?? [])];
  }

  /** The signed manifest this proxy verified and enforces, if any. */
  get enforcedManifest(): EnforcedManifest | undefined {
    return this.#manifestGuard.enforced;
  }

  /** The proxy's link to the control plane, for `/status`. */
  get controlPlane(): ControlPlaneStatus {
    return {
      url: this.options.serverUrl,
      watchConnected: this.#watchConnected,
      connectionsOpened: this.#control?.sessionsOpened ?? 0,
      nextRenewalAt: this.#nextRenewalAt?.toISOString() ?? null,
      renewalFailures: this.#renewalFailures,
    };
  }

  get snapshotVersion(): string | undefined {
    return this.#snapshot?.version;
  }

  get inboundPort(): number {
    return this.#inboundPort;
  }

  /** Returns the TCP port of an upstream listener; undefined for an unknown upstream or one on a Unix socket. */
  upstreamPort(service: string): number | undefined {
    const address = this.upstreamAddress(service);
    return address === undefined || isUnixAddress(address) ? undefined : address.port;
  }

  /** Returns the bound address of an upstream listener: TCP with its real port, or the resolved Unix socket path. */
  upstreamAddress(service: string): SocketAddress | undefined {
    return this.#upstreamAddresses.get(formatServiceRef(parseServiceRef(service)));
  }

  get adminPort(): number | undefined {
    return this.#admin?.port;
  }

  get healthPort(): number | undefined {
    return this.#healthEndpoint?.port;
  }

  /** The app's health and exposure as last checked, which the control plane has received or is about to. */
  get appHealth(): HealthReport {
    return this.#monitor.current();
  }

  get appExposure(): ExposureReport | undefined {
    return this.#monitor.exposure;
  }

  #socketPermissions(): SocketPermissions {
    const configured = this.options.socketPermissions ?? {};
    return { ...configured, mode: configured.mode ?? DEFAULT_SOCKET_MODE };
  }

  /**
   * Enrolls, starts every listener and the watch stream. Under the strict perimeter setting an app
   * reachable around the proxy stops the start before the join token is spent.
   */
  async start(): Promise<void> {
    const self = { ...this.identity };
    await this.#refuseExposedApp();
    const protocol = this.protocol;
    if (protocol !== 'tcp') {
      this.#inboundHttp = new InboundHttp({
        protocol,
        app: this.options.app,
        self,
        localSpiffeId: () => this.#svid?.spiffeId,
        authorize: (peer) => this.authorize(peer),
        log: this.log.child({ listener: 'inbound', protocol }),
        metrics: this.metrics,
        ...(this.#accessLog !== undefined ? { accessLog: this.#accessLog } : {}),
      });
    }
    this.#inbound = new InboundListener({
      ...(this.#inboundHttp !== undefined ? { http: { handler: this.#inboundHttp, alpn: alpnFor(protocol) } } : {}),
      listen: this.options.listen,
      app: this.options.app,
      self,
      trustDomain: () => this.#trustDomain,
      authorize: (peer) => this.authorize(peer),
      log: this.log.child({ listener: 'inbound' }),
      metrics: this.metrics,
    });
    // The listener binds before enrollment so that the registered address carries the real port when
    // port 0 is requested. Until the SVID is installed it has no certificate, so every handshake fails.
    this.#inboundPort = await this.#inbound.start({ ...TLS_SERVER_OPTIONS });
    const advertise = this.options.advertise ?? { host: this.options.listen.host, port: this.#inboundPort };

    // Every local listener binds before enrollment too, so that a refused Unix socket path or a
    // taken port fails the start before the single-use join token is spent. Without an SVID the
    // upstream listeners close each connection.
    try {
      await this.#startLocalListeners();
    } catch (error) {
      await this.#abortStart();
      throw error;
    }

    // The CSR names the full SPIFFE ID, so the trust domain is read first from the server, which the
    // client has authenticated against the CA file.
    const { trustDomain } = await this.#client.get<{ trustDomain: string }>('/v1/bundle').catch(async (error: unknown) => {
      await this.#abortStart();
      throw error;
    });
    try {
      this.#evidenceProvider = await this.#selectEvidenceProvider();
    } catch (error) {
      await this.#abortStart();
      throw error;
    }
    const { response, contexts } = await enroll(
      this.#client,
      { trustDomain, ...self },
      {
        joinToken: this.#joinToken ?? '',
        address: advertise.host,
        port: advertise.port === 0 ? this.#inboundPort : advertise.port,
        upstreams: this.options.upstreams.map((upstream) => upstream.service),
        protocol: this.protocol,
        mode: this.options.runMode ?? 'development',
        ...(this.options.svidTtlSeconds !== undefined ? { ttlSeconds: this.options.svidTtlSeconds } : {}),
        ...(this.#evidenceProvider !== undefined ? { evidenceProvider: this.#evidenceProvider } : {}),
        ...(this.options.tokenKey !== undefined ? { tokenKey: this.options.tokenKey } : {}),
      },
      this.options.serverCa,
    ).catch(async (error: unknown) => {
      await this.#abortStart();
      throw error;
    });
    // The server has marked the token used; dropping the reference lets the string be collected.
    this.#joinToken = undefined;
    this.#trustDomain = response.trustDomain;
    this.#instanceId = response.instanceId;
    this.#installSvid(contexts);
    this.#recordAttestation(response.attestation);
    this.log.info(
      { spiffeId: contexts.spiffeId, instance: this.#instanceId, serial: contexts.serial, notAfter: contexts.notAfter.toISOString(), attestation: this.#attestation?.provider ?? 'none', insecure: this.#attestation?.insecure },
      this.#attestation?.insecure === true ? 'enrolled with INSECURE dev attestation evidence' : 'enrolled',
    );

    this.#watch = new WatchClient({
      client: () => this.#controlClient(),
      instanceId: () => this.#instanceId,
      onSnapshot: (snapshot) => this.#applySnapshot(snapshot),
      onConnected: (connected) => {
        this.#watchConnected = connected;
        this.metrics.controlPlaneConnected.set(connected ? 1 : 0);
      },
      onUnknownInstance: () => this.#registerAgain(advertise),
      log: this.log.child({ subsystem: 'watch' }),
    });
    this.#watch.start();

    // The first checks run at once, so the control plane learns about a down or exposed app now.
    await this.#monitor.start(
      this.options.healthCheckIntervalMs ?? DEFAULT_HEALTH_CHECK_INTERVAL_MS,
      this.options.exposureCheckIntervalMs ?? DEFAULT_EXPOSURE_CHECK_INTERVAL_MS,
    );
    // The first snapshot can arrive during start. A proxy that refused to run has logged why and
    // serves nothing, so it does not report that it started.
    if (this.#refusal !== undefined) return;
    this.log.info(
      { protocol: this.protocol, inbound: formatHostPort({ host: this.options.listen.host, port: this.#inboundPort }), app: formatSocketAddress(this.options.app) },
      'sealmesh proxy started',
    );
  }

  /** Starts the upstream listeners, the admin endpoint and the prober's health endpoint. */
  async #startLocalListeners(): Promise<void> {
    for (const upstream of this.options.upstreams) {
      const log = this.log.child({ listener: 'upstream', upstream: upstream.service });
      const traffic = new UpstreamTraffic({
        upstream: upstream.service,
        settings: upstream.traffic ?? DEFAULT_TRAFFIC_SETTINGS,
        // Instances that declared another protocol than the upstream's are never chosen.
        endpoints: () => this.#endpointsSpeaking(upstream.service, this.upstreamProtocol(upstream.service)),
        metrics: this.metrics.traffic,
        // Every traffic log line names its upstream itself.
        log: this.log.child({ subsystem: 'traffic' }),
      });
      this.#traffic.set(upstream.service, traffic);
      const expiryLog = new RejectionLog(log);
      const pool = new PeerPool({
        admitConnection: () => traffic.admitUpstreamConnection(),
        expected: { namespace: upstream.namespace, service: upstream.name },
        trustDomain: () => this.#trustDomain,
        secureContext: () => this.#svid?.outbound,
        alpn: () => alpnFor(this.upstreamProtocol(upstream.service) ?? 'http'),
        connectTimeoutMs: traffic.settings.connectTimeoutMs,
        sessions: new PeerSessionCache(),
        onHandshake: (resumed) => this.metrics.http.handshakes.inc({ direction: 'outbound', resumed: String(resumed) }),
        onPeerCertExpired: (endpoint, notAfter) => {
          this.metrics.closedCertExpired.inc({ direction: 'outbound' });
          expiryLog.info('cert-expired', { instance: endpoint.instanceId, notAfter: new Date(notAfter).toISOString() }, 'closing a pooled connection whose server certificate expired');
        },
      });
      this.#peerPools.set(upstream.service, pool);
      const accessLog = this.#accessLog !== undefined ? { accessLog: this.#accessLog } : {};
      const http = new OutboundHttp({ upstream, source: formatServiceRef(this.identity), traffic, pool, log, metrics: this.metrics, ...accessLog });
      const listener = new OutboundListener({
        upstream,
        trustDomain: () => this.#trustDomain,
        endpoints: () => this.#endpointsSpeaking(upstream.service, 'tcp'),
        traffic,
        http: { protocol: () => this.upstreamProtocol(upstream.service), handler: http },
        secureContext: () => this.#svid?.outbound,
        socketPermissions: this.#socketPermissions(),
        log,
        metrics: this.metrics,
      });
      // Registered before it binds, so that a failed start still closes the listeners bound so far.
      this.#outbound.set(upstream.service, listener);
      const address = await listener.listen();
      this.#upstreamAddresses.set(upstream.service, address);
      this.log.info({ upstream: upstream.service, listen: formatSocketAddress(address) }, 'upstream listener started');
    }
    if (this.options.admin !== undefined) {
      this.metrics.collectProcessMetrics();
      const { AdminServer } = await import('./admin.ts');
      this.#admin = new AdminServer({ listen: this.options.admin, socketPermissions: this.#socketPermissions(), proxy: this, log: this.log.child({ subsystem: 'admin' }) });
      await this.#admin.start();
    }
    if (this.options.health !== undefined) {
      this.#healthEndpoint = new HealthEndpoint({ listen: this.options.health, check: () => this.#monitor.checkHealth(), log: this.log.child({ subsystem: 'health' }) });
      await this.#healthEndpoint.start();
    }
  }

  /** Under the strict setting, rejects an app that other hosts can reach without the proxy. */
  async #refuseExposedApp(): Promise<void> {
    const app = this.options.app;
    if ((this.options.perimeter ?? 'warn') !== 'strict' || isUnixAddress(app)) return;
    const exposure = await checkTcpAppExposure(app);
    if (!exposure.exposed) return;
    this.metrics.appExposed.set(1);
    this.metrics.appExposureDetections.inc();
    throw new SealmeshError('SEALMESH_ERR_APP_EXPOSED', `proxy start rejected: ${describeExposure(exposure, app.port)}`);
  }

  /** Closes what a failed start has opened, so that no listener or socket file is left behind. */
  async #abortStart(): Promise<void> {
    this.#stopping = true;
    this.#monitor.stop();
    this.#watch?.stop();
    if (this.#renewTimer !== undefined) clearTimeout(this.#renewTimer);
    this.#cancelExpiry();
    this.#nextRenewalAt = undefined;
    this.#inbound?.stopAccepting();
    this.#inbound?.destroyAll();
    for (const listener of this.#outbound.values()) {
      listener.stopAccepting();
      listener.destroyAll();
      await listener.removeSocket();
    }
    await this.#admin?.stop();
    await this.#healthEndpoint?.stop();
  }

  /** Decides whether an inbound peer may connect, from the current snapshot's intentions. */
  authorize(peer: SpiffeId): Decision {
    const snapshot = this.#snapshot;
    // Fail closed until the first snapshot has arrived.
    if (snapshot === undefined) return { allowed: false, reason: 'no configuration yet' };
    const decision = decide(snapshot.intentions, peer, this.identity, snapshot.defaultPolicy);
    // A TCP service cannot check L7 permissions, so an intention that has them admits no caller.
    if (decision.allowed && !isHttpProtocol(this.protocol) && (decision.intention?.permissions?.length ?? 0) > 0) {
      return { allowed: false, reason: `${decision.reason} (L7 permissions on a tcp service)`, intention: decision.intention! };
    }
    return decision;
  }

  endpoints(upstream: string): readonly Endpoint[] {
    return this.#snapshot?.upstreams[upstream] ?? [];
  }

  /**
   * Returns the protocol of an upstream from the catalog, which is that of the first healthy
   * instance in the snapshot. While the upstream has none it returns the last one seen, and
   * undefined before any was seen.
   */
  upstreamProtocol(upstream: string): ServiceProtocol | undefined {
    const first = this.endpoints(upstream)[0];
    if (first === undefined) return this.#upstreamProtocols.get(upstream);
    const protocol = first.protocol ?? 'tcp';
    this.#upstreamProtocols.set(upstream, protocol);
    return protocol;
  }

  /** Endpoints of an upstream that declared `protocol`; instances that declared another are skipped. */
  #endpointsSpeaking(upstream: string, protocol: ServiceProtocol | undefined): readonly Endpoint[] {
    return this.endpoints(upstream).filter((endpoint) => (endpoint.protocol ?? 'tcp') === protocol);
  }

  /** The evidence this proxy last enrolled or renewed with, as the server recorded it; null without evidence. */
  get attestation(): { provider: string; insecure: boolean; policy: string } | null {
    return this.#attestation;
  }

  async #selectEvidenceProvider(): Promise<EvidenceProvider | undefined> {
    if (this.options.evidenceProvider !== undefined) return this.options.evidenceProvider;
    // Loaded here, because the evidence providers are needed only to enroll and renew.
    const { createEvidenceProvider } = await import('../attest/providers/select.ts');
    return createEvidenceProvider({
      mode: this.options.attestation ?? 'auto',
      ...(this.options.devMeasurement !== undefined ? { devMeasurement: this.options.devMeasurement } : {}),
      ...(this.options.tsmRoot !== undefined ? { tsmRoot: this.options.tsmRoot } : {}),
      ...(this.options.gramineRoot !== undefined ? { gramineRoot: this.options.gramineRoot } : {}),
      log: this.log.child({ subsystem: 'attestation' }),
    });
  }

  #recordAttestation(attestation: { provider: string; insecure: boolean; policy: string } | undefined): void {
    this.metrics.attestationProvider.reset();
    this.#attestation = attestation ?? null;
    this.metrics.attestationProvider.set({ provider: attestation?.provider ?? 'none', insecure: String(attestation?.insecure ?? false) }, 1);
  }

  /**
   * Returns the traffic management of an upstream (circuit breaker, load balancer, outlier
   * detection, retries), which every connection and request to it goes through.
   */
  traffic(service: string): UpstreamTraffic | undefined {
    return this.#traffic.get(formatServiceRef(parseServiceRef(service)));
  }

  /** Renews the SVID now with a new key pair, or the token key again; established connections keep running. */
  async renewNow(): Promise<void> {
    const current = this.#svid;
    if (current === undefined) throw new SealmeshError('SEALMESH_ERR_ENROLLMENT_FAILED', 'the proxy has no SVID to renew; it must enroll first');
    try {
      const { response, contexts } = await renew(
        this.#controlClient(),
        current,
        { trustDomain: this.#trustDomain, ...this.identity },
        this.#instanceId,
        this.options.serverCa,
        this.options.svidTtlSeconds,
        this.#evidenceProvider,
        this.options.tokenKey,
      );
      this.#installSvid(contexts);
      this.#recordAttestation(response.attestation);
      this.metrics.svidRenewals.inc({ result: 'success' });
      this.log.info({ serial: contexts.serial, notAfter: contexts.notAfter.toISOString() }, 'SVID renewed');
    } catch (error) {
      this.metrics.svidRenewals.inc({ result: 'failure' });
      throw error;
    }
  }

  /**
   * Stops gracefully: stops accepting, deregisters, waits up to the drain period for established
   * connections to finish, then closes what is left.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#renewTimer !== undefined) clearTimeout(this.#renewTimer);
    this.#cancelExpiry();
    this.#nextRenewalAt = undefined;
    this.#monitor.stop();
    this.#inbound?.stopAccepting();
    for (const listener of this.#outbound.values()) {
      listener.stopAccepting();
      await listener.removeSocket();
    }
    if (this.#svid !== undefined && this.#instanceId !== '') {
      try {
        await this.#controlClient().with({ timeoutMs: 3_000 }).post('/v1/agent/deregister', { instanceId: this.#instanceId });
        this.log.info({ instance: this.#instanceId }, 'deregistered');
      } catch (error) {
        this.log.warn({ reason: (error as Error).message }, 'failed to deregister; the server removes the instance when its lease lapses');
      }
    }
    this.#watch?.stop();
    this.#control?.close();
    const deadline = Date.now() + (this.options.drainSeconds ?? DEFAULT_DRAIN_SECONDS) * 1000;
    while (this.#activeConnections() > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const left = this.#activeConnections();
    if (left > 0) this.log.warn({ connections: left }, 'drain period over; closing the remaining connections');
    this.#inbound?.destroyAll();
    for (const listener of this.#outbound.values()) listener.destroyAll();
    this.#inboundHttp?.close();
    for (const pool of this.#peerPools.values()) pool.close();
    await this.#admin?.stop();
    await this.#healthEndpoint?.stop();
    this.#accessLog?.close();
    this.log.info('sealmesh proxy stopped');
  }

  #activeConnections(): number {
    let count = this.#inbound?.activeConnections ?? 0;
    for (const listener of this.#outbound.values()) count += listener.activeConnections;
    return count;
  }

  #installSvid(contexts: SvidContexts): void {
    const previous = this.#svid;
    this.#svid = contexts;
    this.#inbound?.setSecureContext(contexts.inboundOptions);
    // The listener has built its context; the key copy in the options is no longer needed.
    (contexts.inboundOptions.key as Buffer | undefined)?.fill(0);
    contexts.inboundOptions.key = undefined;
    this.metrics.svidExpirySeconds.set((contexts.notAfter.getTime() - Date.now()) / 1000);
    this.#renewalFailures = 0;
    this.#scheduleRenewal(renewalDelayMs(contexts));
    this.#scheduleExpiry(contexts);
    if (this.#control === undefined) {
      // Sessions open with the context current at that time, which a trust bundle update replaces too.
      this.#control = new ControlConnection(this.options.serverUrl, () => (this.#svid ?? contexts).control);
    } else if (previous !== undefined) {
      // The server accepts a superseded SVID's requests no more, and ends its watch stream after a
      // grace period. Later requests and the watch stream move to a session with the new SVID, and
      // the old session closes once the old watch stream has ended.
      this.#control.rotate();
      this.#watch?.reconnect();
    }
  }

  /** Returns the client for the mTLS endpoints, which sends over the persistent control-plane connection. */
  #controlClient(): ApiClient {
    if (this.#control === undefined) throw new SealmeshError('SEALMESH_ERR_ENROLLMENT_FAILED', 'the proxy has no SVID yet; it must enroll first');
    return this.#client.with({ connection: this.#control, token: undefined });
  }

  /**
   * Stops the proxy for good when `contexts` is still its SVID at its notAfter. The server rejects a
   * renewal made with an expired SVID and peers reject its handshakes, so retrying cannot help: the
   * proxy needs a restart with a new join token.
   */
  #scheduleExpiry(contexts: SvidContexts): void {
    this.#cancelExpiry();
    this.#cancelExpiry = runAtWallClock(
      contexts.notAfter.getTime(),
      () => {
        if (this.#svid !== contexts || this.#stopping) return;
        const error = new SealmeshError(
          'SEALMESH_ERR_SVID_EXPIRED',
          `the proxy's SVID (serial ${contexts.serial}) expired at ${contexts.notAfter.toISOString()} before a renewal succeeded, after ${this.#renewalFailures} failed renewals; ` +
            `check that the control plane at ${this.options.serverUrl} is reachable, then restart the proxy with a new join token`,
        );
        this.#refuseToRun(error, 'proxy stops serving: its SVID expired before a renewal succeeded');
      },
      this.options.now,
    );
  }

  #scheduleRenewal(delayMs: number, retryMs = RENEW_RETRY_MIN_MS): void {
    if (this.#renewTimer !== undefined) clearTimeout(this.#renewTimer);
    this.#nextRenewalAt = undefined;
    if (this.#stopping) return;
    const delay = Math.min(delayMs, 2 ** 31 - 1);
    this.#nextRenewalAt = new Date(Date.now() + delay);
    this.#renewTimer = setTimeout(() => {
      this.renewNow().catch((error: unknown) => {
        this.#renewalFailures += 1;
        const expiresInMs = (this.#svid?.notAfter.getTime() ?? 0) - Date.now();
        const code = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_INTERNAL';
        this.log.warn({ code, reason: (error as Error).message, retryInMs: retryMs, expiresInMs }, 'SVID renewal failed; serving on the current SVID and retrying');
        this.#scheduleRenewal(retryMs, Math.min(RENEW_RETRY_MAX_MS, retryMs * 2));
      });
    }, delay);
    this.#renewTimer.unref();
  }

  #applySnapshot(received: ProxySnapshot): void {
    // The first manifest chain loads the verifier, and the first L7 permissions load their schema.
    // This snapshot and later ones wait for them in order. A manifest can carry permissions too.
    const needsPermissions = (received.manifestChain ?? []).length > 0 || received.intentions.some((intention) => (intention.permissions?.length ?? 0) > 0);
    const loads = [this.#manifestGuard.prepare(received), preparePermissionsSchema(needsPermissions)].filter((load) => load !== undefined);
    if (loads.length > 0) {
      Promise.all(loads).then(
        () => this.#applySnapshot(received),
        (error: unknown) => {
          this.metrics.rejections.inc({ code: 'SEALMESH_ERR_INTERNAL' });
          this.log.error({ code: 'SEALMESH_ERR_INTERNAL', version: received.version, reason: (error as Error).message }, 'failed to load the manifest verifier or the L7 permission schema; the snapshot is rejected and the current configuration stays in force');
        },
      );
      return;
    }
    if (this.#receivedVersion === received.version) return;
    this.#receivedVersion = received.version;
    const enforcedBefore = this.#manifestGuard.enforced?.version;
    let snapshot: ProxySnapshot;
    try {
      snapshot = this.#manifestGuard.check(received);
    } catch (error) {
      const code = isSealmeshError(error) ? error.code : 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN';
      this.metrics.rejections.inc({ code });
      this.log.error({ code, reason: (error as Error).message }, 'configuration snapshot rejected: its manifest chain does not verify; the current configuration stays in force');
      return;
    }
    const enforced = this.#manifestGuard.enforced;
    if (enforced !== undefined) {
      this.metrics.manifestVersion.set(enforced.version);
      const violation = requiredModeViolation(enforced.posture, this.options.runMode ?? 'development', 'this proxy');
      if (violation !== undefined) {
        this.#refuseToRun(violation, 'proxy stops serving: the manifest requires production mode');
        return;
      }
      const mode = enforced.posture.perimeter.appBinding === 'strict' ? 'strict' : (this.options.perimeter ?? 'warn');
      void this.#monitor.setPerimeter(mode);
      // The control plane shows which manifest each proxy enforces, so a new one is reported at once.
      if (enforced.version !== enforcedBefore && this.#instanceId !== '') {
        this.#reportHealth(this.#monitor.current()).catch((error: unknown) => {
          this.log.warn({ reason: (error as Error).message }, 'failed to report the enforced manifest; the next health report carries it');
        });
      }
    }
    this.#snapshot = snapshot;
    this.metrics.snapshotsApplied.inc();
    this.log.info(
      { version: snapshot.version, intentions: snapshot.intentions.length, upstreams: Object.fromEntries(Object.entries(snapshot.upstreams).map(([name, list]) => [name, list.length])) },
      'configuration snapshot applied',
    );
    const closed = this.#inbound?.reevaluate() ?? 0;
    if (closed > 0) this.log.info({ closed }, 'closed connections that the new intentions deny');
    const bundle = snapshot.bundle;
    this.#trustUpdate = this.#trustUpdate.then(() => this.#applyTrustBundle(bundle));
  }

  /** Stops inbound traffic for good, logs `message` and counts `error`, and settles `halted` with it. */
  #refuseToRun(error: SealmeshError, message: string): void {
    this.#refusal = error;
    this.metrics.rejections.inc({ code: error.code });
    this.log.error({ code: error.code, reason: error.message }, message);
    this.#inbound?.suspend(error.code, error.message);
    this.#halt.resolve(error);
  }

  /**
   * Rebuilds the TLS contexts when the snapshot's trust bundle differs from the one they trust:
   * a root rotation adds the new root and its prune removes the retired one. An empty bundle is
   * ignored, because trusting nothing would only break every connection.
   */
  async #applyTrustBundle(bundle: string[]): Promise<void> {
    if (bundle.length === 0) {
      this.log.warn('configuration snapshot has an empty trust bundle; keeping the current one');
      return;
    }
    for (;;) {
      const current = this.#svid;
      if (current === undefined || this.#stopping || sameRoots(current.bundle, bundle)) return;
      let contexts: SvidContexts;
      try {
        contexts = await withTrustBundle(current, bundle, this.options.serverCa);
      } catch (error) {
        this.log.error({ reason: (error as Error).message }, 'failed to apply the new trust bundle; keeping the current one');
        return;
      }
      // A renewal installed another SVID meanwhile: apply the bundle to that one instead.
      if (this.#svid !== current) continue;
      this.#svid = contexts;
      this.#inbound?.setSecureContext(contexts.inboundOptions);
      (contexts.inboundOptions.key as Buffer | undefined)?.fill(0);
      contexts.inboundOptions.key = undefined;
      this.log.info({ roots: bundle.length }, 'trust bundle updated');
      return;
    }
  }

  async #registerAgain(advertise: HostPort): Promise<void> {
    await this.#controlClient().post('/v1/agent/register', {
      instanceId: this.#instanceId,
      address: advertise.host,
      port: advertise.port === 0 ? this.#inboundPort : advertise.port,
      upstreams: this.options.upstreams.map((upstream) => upstream.service),
      protocol: this.protocol,
    });
    // A new registration starts as passing; send the real state again.
    this.#monitor.forgetReported();
    void this.#monitor.sync();
  }

  async #reportHealth(report: HealthReport): Promise<void> {
    const enforced = this.#manifestGuard.enforced;
    await this.#controlClient().put('/v1/agent/health', {
      instanceId: this.#instanceId,
      ...report,
      ...(enforced !== undefined ? { manifest: { version: enforced.version, digest: enforced.digest } } : {}),
    });
  }

}

/** Returns true when both bundles hold the same root certificates, in any order. */
function sameRoots(a: readonly string[], b: readonly string[]): boolean {
  const normalize = (bundle: readonly string[]): string => [...bundle].map((pem) => pem.trim()).sort().join('\n');
  return normalize(a) === normalize(b);
}
