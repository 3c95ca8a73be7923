import { writeFileSync, chmodSync } from 'node:fs';
import { hostname } from 'node:os';
import { createServer as createNetServer, isIP } from 'node:net';
import { join } from 'node:path';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { fastify, type FastifyError, type FastifyInstance } from 'fastify';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { silentLogger, type Logger } from '../log/index.ts';
import type { Store } from '../store/index.ts';
import { CertificateAuthority, Pkcs11KeyCustody, SealedKeyCustody, generateKeyPair, privateKeyToPem, type KeyCustody } from '../pki/index.ts';
import type { VerifierRegistry } from '../attest/index.ts';
import { createVerifierRegistry } from '../attest/registry.ts';
import { createCollateralSources, type CollateralConfig } from '../attest/collateral-sources/index.ts';
import { AttestationGate } from './attestation.ts';
import { NonceStore } from './nonces.ts';
import { assertTrustDomain, generateTrustDomain } from '../spiffe/index.ts';
import { TLS_SERVER_OPTIONS } from '../tls/index.ts';
import { requiredModeViolation, sandboxDeniedError, type RunMode } from '../hardening/index.ts';
import { AuditLog } from '../audit/index.ts';
import { AclService } from './acl.ts';
import { Catalog } from './catalog.ts';
import { IntentionStore } from './intentions.ts';
import { ManifestService } from './manifest-service.ts';
import { ServerMetrics } from './metrics.ts';
import { encodeJson, getJson, KEYS } from './records.ts';
import { registerRoutes } from './routes.ts';
import { WatchHub } from './watch.ts';
import { CA_PRUNE_INTERVAL_MS, CaRotation } from './ca-rotation.ts';
import { SealLifecycle } from './seal-lifecycle.ts';
import { createDataDirectory, type CounterConfig, type SealConfig } from './seal-setup.ts';

export const DEFAULT_SERVER_HOST = '127.0.0.1';
export const DEFAULT_SERVER_PORT = 8501;
export const DEFAULT_SVID_TTL_SECONDS = 24 * 3600;
export const DEFAULT_LEASE_SECONDS = 30;
/** Largest accepted request body. CSRs and evidence are far smaller; anything larger is an attack or a bug. */
const BODY_LIMIT_BYTES = 512 * 1024;
/** A TLS client that has not finished its handshake by then is disconnected. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * An HTTP/2 connection without any frame for this long is closed. A proxy's watch stream carries a
 * heartbeat every 15 s, so only connections without a watch stream reach it.
 */
const HTTP2_IDLE_TIMEOUT_MS = 120_000;
const SERVER_CERT_TTL_SECONDS = 7 * 24 * 3600;
const PACKAGE_VERSION = '0.1.0';

export interface ServerOptions {
  dataDir: string;
  host?: string;
  port?: number;
  /** Trust domain for a new cluster; a generated one when absent. Must match an existing cluster's. */
  trustDomain?: string;
  svidTtlSeconds?: number;
  leaseSeconds?: number;
  log?: Logger;
  /**
   * An already open store. Without it the server opens the sealed store `<dataDir>/sealmesh.db`
   * with the seal provider of `seal`.
   */
  store?: Store;
  /** Seal provider of the data directory; a key file beside the data directory when absent. */
  seal?: SealConfig;
  /** Monotonic counter that detects a rollback of the whole data directory. */
  counter?: CounterConfig;
  /** Control socket of a Shamir-sealed server; a sibling of the data directory when absent. */
  unsealSocket?: string;
  /** Sources of attestation collateral: a directory, a caching service, or both. */
  collateral?: CollateralConfig;
  /**
   * The verifiers of attestation evidence. Default: `createVerifierRegistry` with the collateral
   * sources of `collateral`. Tests pass their own.
   */
  verifiers?: VerifierRegistry;
  /** Custody of the CA private keys. `sealed` (in the sealed store) when absent. */
  caCustody?: CaCustodyConfig;
  /** The `--mode` the server runs in, checked against the manifest's requirement. `development` when absent. */
  runMode?: RunMode;
  /**
   * Clock of the CA: certificate validity and the prune of a retired root. `() => new Date()` when
   * absent; tests move it forward to reach the expiry of certificates without waiting.
   */
  caClock?: () => Date;
}

/** The key custody of the CA keys, chosen with `--ca-custody`. */
export type CaCustodyConfig =
  | { kind: 'sealed' }
  /** The keys of this cluster are labelled with its trust domain in the token. */
  | { kind: 'pkcs11'; module: string; tokenLabel: string; pin: string };

interface ClusterMeta {
  trustDomain: string;
  createdAt: string;
}

/**
 * The control plane: the CA, the catalog, intentions, ACL tokens and the watch streams, served
 * over an HTTPS JSON API whose certificate is issued by the mesh CA itself.
 */
export class ControlPlane {
  readonly options: ServerOptions;
  readonly log: Logger;
  readonly metrics = new ServerMetrics();
  #store: Store | undefined;
  #app: FastifyInstance | undefined;
  #hub: WatchHub | undefined;
  #ca: CertificateAuthority | undefined;
  #trustDomain = '';
  #renewTimer: NodeJS.Timeout | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #custody: KeyCustody | undefined;
  #rotation: CaRotation | undefined;
  #audit: AuditLog | undefined;
  readonly #seal: SealLifecycle;

  constructor(options: ServerOptions) {
    this.options = options;
    this.log = options.log ?? silentLogger();
    this.#seal = new SealLifecycle(this, this.log.child({ subsystem: 'seal' }));
  }

  /** True while a Shamir-sealed server waits for key shares or for `operator init`. */
  get sealed(): boolean {
    return this.#app === undefined;
  }

  /** Seal provider, counter and data-key state of the open store. */
  get seal(): SealLifecycle {
    return this.#seal;
  }

  /** Resolves once the store is open and the HTTPS API is listening. */
  whenOpen(): Promise<void> {
    return this.#seal.opened;
  }

  get trustDomain(): string {
    return this.#trustDomain;
  }

  get ca(): CertificateAuthority {
    if (this.#ca === undefined) throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'the server has not started');
    return this.#ca;
  }

  /** Root rotation and prune with their audit entries, once the store is open. */
  get caRotation(): CaRotation {
    if (this.#rotation === undefined) throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'the server has not started');
    return this.#rotation;
  }

  /** The audit log in the open store. */
  get audit(): AuditLog {
    if (this.#audit === undefined) throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'the server has no open store');
    return this.#audit;
  }

  /** Path of the PEM trust bundle that clients pass as `--ca-file`. */
  get trustBundlePath(): string {
    return join(this.options.dataDir, 'trust-bundle.pem');
  }

  /** The bound address, available after `start`. */
  get address(): { host: string; port: number } {
    const address = this.#app?.server.address();
    if (address === null || address === undefined || typeof address === 'string') {
      throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'the server is not listening');
    }
    return { host: address.address, port: address.port };
  }

  get url(): string {
    const { host, port } = this.address;
    return `https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  }

  /**
   * Starts the server. With a key-file, passphrase or PKCS#11 seal it opens the store and the API
   * before it returns. With a Shamir seal it returns once the sealed-state control socket listens;
   * `whenOpen` resolves after enough key shares arrive.
   */
  async start(): Promise<void> {
    createDataDirectory(this.options.dataDir);
    // A taken address fails here, before a new cluster is created in an empty data directory.
    await probeListen(this.options.host ?? DEFAULT_SERVER_HOST, this.options.port ?? DEFAULT_SERVER_PORT);
    if (this.options.store !== undefined) {
      await this.openWithStore(this.options.store);
      return;
    }
    await this.#seal.start();
  }

  /**
   * Throws SEALMESH_ERR_PRODUCTION_MODE_REQUIRED, logged and counted, when the current manifest
   * requires production mode and the server does not run in it. Nothing is served before this check.
   */
  async #refuseUnlessRunModeAllowed(store: Store): Promise<void> {
    const posture = await new ManifestService(store, this.#trustDomain, DEFAULT_SVID_TTL_SECONDS).posture();
    const violation = requiredModeViolation(posture, this.options.runMode ?? 'development', 'this server');
    if (violation === undefined) return;
    this.metrics.rejections.inc({ code: violation.code });
    this.log.error({ code: violation.code, reason: violation.message, manifestVersion: posture?.version }, 'server start rejected: the manifest requires production mode');
    throw violation;
  }

  /** Serves the API on an open store. Called once, by `start` or after an unseal. */
  async openWithStore(store: Store): Promise<void> {
    this.#store = store;
    this.#trustDomain = await this.#loadTrustDomain(store);
    await this.#refuseUnlessRunModeAllowed(store);
    const custody = this.#openCustody(store);
    this.#custody = custody;
    let ca: CertificateAuthority;
    try {
      ca = await CertificateAuthority.open({
        store,
        custody,
        trustDomain: this.#trustDomain,
        ...(this.options.caClock !== undefined ? { now: this.options.caClock } : {}),
      });
    } catch (error) {
      this.#custody = undefined;
      await custody.close();
      throw error;
    }
    this.#ca = ca;
    this.#writeTrustBundle();

    const acl = new AclService(store);
    const catalog = new Catalog(store);
    const intentions = new IntentionStore(store);
    const audit = new AuditLog(store);
    this.#audit = audit;
    const svidTtlSeconds = this.options.svidTtlSeconds ?? DEFAULT_SVID_TTL_SECONDS;
    const manifests = new ManifestService(store, this.#trustDomain, svidTtlSeconds, this.options.runMode);
    const verifiers =
      this.options.verifiers ??
      createVerifierRegistry(createCollateralSources(this.options.collateral ?? {}, store, this.log.child({ subsystem: 'collateral' })));
    const attestation = new AttestationGate({
      verifiers,
      nonces: new NonceStore(),
      posture: () => manifests.posture(),
      metrics: this.metrics,
      audit,
      log: this.log.child({ subsystem: 'attestation' }),
    });
    const host = this.options.host ?? DEFAULT_SERVER_HOST;
    const rotation = new CaRotation({
      ca,
      audit,
      log: this.log.child({ subsystem: 'ca' }),
      metrics: this.metrics,
      onBundleChanged: async () => {
        this.#writeTrustBundle();
        await this.#renewServerCertificate(host);
        this.#hub?.schedulePush();
      },
    });
    this.#rotation = rotation;
    const hub = new WatchHub({
      store,
      catalog,
      intentions,
      trustDomain: this.#trustDomain,
      bundle: () => ca.bundle(),
      log: this.log.child({ subsystem: 'watch' }),
      leaseSeconds: this.options.leaseSeconds ?? DEFAULT_LEASE_SECONDS,
      onPush: (count) => this.metrics.snapshotsPushed.inc(count),
      manifests,
    });
    this.#hub = hub;

    const tlsOptions = await this.#serverTlsOptions(host);
    // HTTP/2 lets a proxy send its watch stream, renewals and health reports over one long-lived
    // connection; ALPN falls back to HTTP/1.1 for the CLI, curl and other HTTP/1.1 clients. Routes
    // are written against the HTTP/1.1 request and response types, and the HTTP/2 compatibility API
    // provides the members they use, so the instance is typed as an HTTP/1.1 one.
    const app = fastify({
      logger: false,
      bodyLimit: BODY_LIMIT_BYTES,
      http2: true,
      https: { ...TLS_SERVER_OPTIONS, ...tlsOptions, allowHTTP1: true, requestCert: true, rejectUnauthorized: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS },
      http2SessionTimeout: HTTP2_IDLE_TIMEOUT_MS,
      forceCloseConnections: true,
    }) as unknown as FastifyInstance;
    // The TLS layer has its own copy of the key now; this buffer is no longer needed.
    tlsOptions.key.fill(0);
    this.#app = app;
    // The API speaks JSON only; without this, fastify would hand text/plain bodies to the handlers.
    app.removeContentTypeParser('text/plain');
    this.#installErrorHandling(app);
    registerRoutes(app, {
      acl,
      ca,
      catalog,
      intentions,
      hub,
      metrics: this.metrics,
      attestation,
      nonces: attestation.nonces,
      log: this.log.child({ subsystem: 'api' }),
      trustDomain: this.#trustDomain,
      manifests,
      audit,
      storeRevision: () => store.revision(),
      version: PACKAGE_VERSION,
      seal: this.#seal,
      caRotation: rotation,
      // The clock TLS verified the client certificate with at the handshake, not the CA's clock.
      now: () => new Date(),
    });

    await hub.start();
    await app.listen({ host, port: this.options.port ?? DEFAULT_SERVER_PORT });
    const renewEveryMs = (SERVER_CERT_TTL_SECONDS * 1000) / 2;
    this.#renewTimer = setInterval(() => void this.#renewServerCertificate(host), renewEveryMs);
    this.#renewTimer.unref();
    this.#pruneTimer = setInterval(() => void rotation.pruneOnTimer(), CA_PRUNE_INTERVAL_MS);
    this.#pruneTimer.unref();
    this.log.info(
      { url: this.url, trustDomain: this.#trustDomain, rootFingerprintSha256: ca.rootFingerprintSha256(), caCustody: custody.name, trustBundle: this.trustBundlePath },
      'sealmesh server started',
    );
    this.#seal.markOpen();
  }

  /** Issues the first operator token; succeeds once per cluster. */
  async bootstrapAcl(): Promise<{ token: string; accessorId: string }> {
    if (this.#store === undefined) throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'the server has no open store');
    const issued = await new AclService(this.#store).bootstrap();
    await this.audit.append({ action: 'operator.init', actor: { kind: 'system', accessorId: 'server' }, subject: issued.accessorId });
    return issued;
  }

  async stop(): Promise<void> {
    if (this.#renewTimer !== undefined) clearInterval(this.#renewTimer);
    if (this.#pruneTimer !== undefined) clearInterval(this.#pruneTimer);
    this.#hub?.stop();
    await this.#app?.close();
    await this.#seal.stopBackground();
    await this.#custody?.close();
    await this.#store?.close();
    await this.#seal.stop();
    this.log.info('sealmesh server stopped');
  }

  /**
   * Opens the CA key custody. A PKCS#11 custody fails here, before anything is served, when the
   * token, the PIN or the module is wrong (SEALMESH_ERR_CA_HSM_*).
   */
  #openCustody(store: Store): KeyCustody {
    const config = this.options.caCustody ?? { kind: 'sealed' };
    if (config.kind === 'sealed') return new SealedKeyCustody(store);
    return Pkcs11KeyCustody.open({ module: config.module, tokenLabel: config.tokenLabel, pin: config.pin, cluster: this.#trustDomain });
  }

  /** Writes the public trust bundle that clients pass as `--ca-file`. */
  #writeTrustBundle(): void {
    writeFileSync(this.trustBundlePath, this.ca.bundlePem(), { mode: 0o644 });
    chmodSync(this.trustBundlePath, 0o644);
  }

  async #loadTrustDomain(store: Store): Promise<string> {
    const existing = await getJson<ClusterMeta>(store, KEYS.clusterMeta);
    if (existing !== undefined) {
      const requested = this.options.trustDomain;
      if (requested !== undefined && requested !== existing.value.trustDomain) {
        throw new SealmeshError(
          'SEALMESH_ERR_CONFIG_INVALID',
          `--trust-domain ${requested} does not match the trust domain ${existing.value.trustDomain} of the cluster in ${this.options.dataDir}; the trust domain is fixed at initialisation`,
        );
      }
      return existing.value.trustDomain;
    }
    const trustDomain = this.options.trustDomain ?? generateTrustDomain();
    assertTrustDomain(trustDomain);
    const meta: ClusterMeta = { trustDomain, createdAt: new Date().toISOString() };
    await store.txn({ compare: [{ key: KEYS.clusterMeta, modRevision: 0 }], success: [{ type: 'put', key: KEYS.clusterMeta, value: encodeJson(meta) }] });
    this.log.info({ trustDomain }, 'new cluster created');
    return trustDomain;
  }

  /** Issues the server a fresh certificate from the mesh CA for a key that exists only in memory. */
  async #serverTlsOptions(host: string): Promise<{ key: Buffer; cert: string; ca: string[] }> {
    const ca = this.ca;
    const keys = await generateKeyPair();
    const ipAddresses = ['127.0.0.1', '::1'];
    const dnsNames = ['localhost', hostname().toLowerCase()];
    if (isIP(host) !== 0 && !ipAddresses.includes(host) && host !== '0.0.0.0' && host !== '::') ipAddresses.push(host);
    if (isIP(host) === 0 && !dnsNames.includes(host)) dnsNames.push(host);
    const issued = await ca.issueServerCertificate({
      publicKey: keys.publicKey,
      dnsNames,
      ipAddresses,
      uri: `spiffe://${this.#trustDomain}/ns/sealmesh/svc/server`,
      ttlSeconds: SERVER_CERT_TTL_SECONDS,
    });
    return { key: await privateKeyToPem(keys.privateKey), cert: issued.chainPem, ca: ca.bundle() };
  }

  async #renewServerCertificate(host: string): Promise<void> {
    try {
      const options = await this.#serverTlsOptions(host);
      (this.#app?.server as unknown as TlsServer | undefined)?.setSecureContext({ ...TLS_SERVER_OPTIONS, ...options });
      options.key.fill(0);
      this.log.info('server certificate renewed');
    } catch (error) {
      this.log.error({ err: error }, 'failed to renew the server certificate; retrying at the next interval');
    }
  }

  #installErrorHandling(app: FastifyInstance): void {
    app.setNotFoundHandler(async (request) => {
      throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
    });
    app.setErrorHandler(async (error: FastifyError, request, reply) => {
      const failure = toSealmeshError(error);
      this.metrics.rejections.inc({ code: failure.code });
      const context = { code: failure.code, method: request.method, route: request.routeOptions.url ?? request.url.split('?')[0], ip: request.ip };
      if (failure.status >= 500) this.log.error({ ...context, err: error }, 'request failed');
      else this.log.warn({ ...context, reason: failure.message }, 'request rejected');
      await reply.status(failure.status).send(failure.toJSON());
    });
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched';
      this.metrics.requests.inc({ route, status: String(reply.statusCode) });
      this.metrics.requestSeconds.observe({ route }, reply.elapsedTime / 1000);
    });
    const server = app.server as unknown as TlsServer;
    server.on('secureConnection', () => this.metrics.tlsConnections.inc());
    server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
      this.metrics.rejections.inc({ code: 'SEALMESH_ERR_TLS_HANDSHAKE_FAILED' });
      this.log.warn({ code: 'SEALMESH_ERR_TLS_HANDSHAKE_FAILED', reason: error.code ?? error.message, ip: socket.remoteAddress }, 'TLS handshake rejected');
      // With a listener attached, Node leaves closing the failed socket to it.
      socket.destroy();
    });
  }
}

/** Binds and releases `host:port`, failing with SEALMESH_ERR_CONFIG_INVALID when it is taken. */
async function probeListen(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const probe = createNetServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot listen on ${host}:${port}: ${error.code ?? error.message}; choose another --addr or stop what uses it`)),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/** Maps any error raised while handling a request to a SealmeshError with a stable code. */
function toSealmeshError(error: FastifyError | Error): SealmeshError {
  if (isSealmeshError(error)) return error;
  const denied = sandboxDeniedError(error);
  if (denied !== undefined) return denied;
  const code = (error as FastifyError).code;
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new SealmeshError('SEALMESH_ERR_BODY_TOO_LARGE', `the request body exceeds ${BODY_LIMIT_BYTES} bytes`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new SealmeshError('SEALMESH_ERR_UNSUPPORTED_MEDIA_TYPE', 'the request body must be JSON with content-type application/json');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new SealmeshError('SEALMESH_ERR_BAD_REQUEST', 'the request body is empty; send a JSON object');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new SealmeshError('SEALMESH_ERR_BAD_REQUEST', 'the request body is not valid JSON');
    default:
      break;
  }
  const status = (error as FastifyError).statusCode;
  if (error instanceof SyntaxError || (status !== undefined && status >= 400 && status < 500)) {
    return new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `the request is invalid: ${error.message}`);
  }
  return new SealmeshError('SEALMESH_ERR_INTERNAL', 'an internal error occurred; the server log has the details');
}
