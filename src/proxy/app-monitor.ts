import type { Logger } from '../log/index.ts';
import { checkTcpAppExposure, describeExposure, type ExposureReport, type PerimeterMode } from '../perimeter/exposure.ts';
import { isUnixAddress, type SocketAddress } from './address.ts';
import { checkApp, type AppCheckResult, type CheckStatus } from './app-check.ts';
import type { ProxyMetrics } from './metrics.ts';

/** Health of the app as the proxy sends it in `PUT /v1/agent/health`, without the instance id. */
export interface HealthReport {
  status: CheckStatus;
  output: string;
  /** Absent when the app is reached through a Unix socket, which has no TCP binding to check. */
  appExposure?: ExposureReport;
}

export interface AppMonitorOptions {
  app: SocketAddress;
  /** HTTP path of the app's health check; a plain connect when absent. */
  httpPath?: string;
  perimeter: PerimeterMode;
  /** Time allowed for one check of the app. */
  timeoutMs: number;
  metrics: ProxyMetrics;
  log: Logger;
  /** Sends a report to the control plane; rejects when the server could not be reached. */
  report: (report: HealthReport) => Promise<void>;
  /** Under the strict setting, stops inbound traffic while the app is exposed and restarts it after. */
  setServing: (serving: boolean, reason: string) => void;
  /** Directory of the kernel's socket tables; `/proc/net` when absent. */
  procNet?: string;
}

/**
 * Watches the app behind the proxy: whether it responds (the health check) and whether it can be
 * reached around the proxy (the exposure check). Both results feed one health state, which the
 * prober's endpoint returns and which is sent to the control plane whenever it changes.
 */
export class AppMonitor {
  readonly #options: AppMonitorOptions;
  #health: AppCheckResult | undefined;
  #exposure: ExposureReport | undefined;
  #inflight: Promise<AppCheckResult> | undefined;
  /** The last report the control plane accepted, as JSON; undefined until one is sent. */
  #lastReported: string | undefined;
  #sending: Promise<void> = Promise.resolve();
  #exposureReadFailed = false;
  #timers: NodeJS.Timeout[] = [];
  /** Reports go out only between `start` and `stop`, while the proxy has a registered instance. */
  #reporting = false;
  /** True while `start` runs its first checks, which send one report together instead of one each. */
  #starting = false;

  constructor(options: AppMonitorOptions) {
    this.#options = options;
  }

  /**
   * Changes the perimeter setting, as a newly verified manifest does, and checks the app again
   * under it, so that an app already exposed stops inbound traffic as soon as the setting is strict.
   */
  async setPerimeter(mode: AppMonitorOptions['perimeter']): Promise<void> {
    if (this.#options.perimeter === mode) return;
    const wasStrict = this.#options.perimeter === 'strict';
    this.#options.perimeter = mode;
    this.#options.log.info({ perimeter: mode }, 'perimeter setting changed by the signed manifest');
    if (wasStrict) this.#options.setServing(true, 'the perimeter setting is no longer strict');
    this.#exposure = undefined;
    await this.checkExposure();
    await this.sync();
  }

  get exposure(): ExposureReport | undefined {
    return this.#exposure;
  }

  /** Returns the current health: critical while the app is exposed under the strict setting, otherwise the last check's result. */
  current(): HealthReport {
    const health = this.#health ?? { status: 'passing', output: 'the app has not been checked yet' };
    const exposure = this.#exposure;
    const appExposure = exposure === undefined ? {} : { appExposure: exposure };
    if (this.#options.perimeter === 'strict' && exposure?.exposed === true && !isUnixAddress(this.#options.app)) {
      return { status: 'critical', output: `inbound traffic stopped: ${describeExposure(exposure, this.#options.app.port)}`, ...appExposure };
    }
    return { ...health, ...appExposure };
  }

  /** Checks the app now and returns the resulting health. Concurrent calls share one check. */
  async checkHealth(): Promise<HealthReport> {
    this.#inflight ??= checkApp(this.#options.app, { timeoutMs: this.#options.timeoutMs, ...(this.#options.httpPath !== undefined ? { httpPath: this.#options.httpPath } : {}) }).finally(() => {
      this.#inflight = undefined;
    });
    const result = await this.#inflight;
    const previous = this.#health;
    this.#health = result;
    if (previous?.status !== result.status) this.#options.log.info({ status: result.status, output: result.output }, 'app health changed');
    if (!this.#starting) void this.sync();
    return this.current();
  }

  /**
   * Reads the socket tables for the app's port and records whether the app is exposed. Under the
   * strict setting an exposed app stops inbound traffic until a later check finds it bound to
   * loopback only. Returns undefined for an app on a Unix socket.
   */
  async checkExposure(): Promise<ExposureReport | undefined> {
    const app = this.#options.app;
    if (isUnixAddress(app)) return undefined;

    let report: ExposureReport;
    try {
      report = await checkTcpAppExposure(app, this.#options.procNet);
    } catch (error) {
      if (!this.#exposureReadFailed) this.#options.log.warn({ err: error }, 'failed to read the socket tables; app exposure is unknown until a later check succeeds');
      this.#exposureReadFailed = true;
      return this.#exposure;
    }
    this.#exposureReadFailed = false;
    const previous = this.#exposure;
    this.#exposure = report;
    this.#options.metrics.appExposed.set(report.exposed ? 1 : 0);

    const strict = this.#options.perimeter === 'strict';
    if (report.exposed) {
      this.#options.metrics.appExposureDetections.inc();
      // Logged when the exposure starts or its addresses change, not at every check.
      if (previous?.exposed !== true || previous.bindings.join() !== report.bindings.join()) {
        const fields = { code: 'SEALMESH_ERR_APP_EXPOSED', bindings: report.bindings, perimeter: this.#options.perimeter };
        const message = describeExposure(report, app.port);
        if (strict) this.#options.log.error(fields, `stopping inbound traffic: ${message}`);
        else this.#options.log.warn(fields, message);
      }
    } else if (previous?.exposed === true) {
      this.#options.log.info({ port: app.port }, 'the app is no longer reachable around the proxy');
    }

    if (strict && (previous?.exposed ?? false) !== report.exposed) {
      this.#options.setServing(!report.exposed, report.exposed ? describeExposure(report, app.port) : 'the app listens on loopback only');
    }
    if (!this.#starting) void this.sync();
    return report;
  }

  /** Sends the current health to the control plane when it differs from the last report it accepted. */
  sync(): Promise<void> {
    const run = this.#sending.then(() => this.#send());
    this.#sending = run.catch(() => undefined);
    return run;
  }

  /** Makes the next sync send the current health even when it has not changed, for example after registering again. */
  forgetReported(): void {
    this.#lastReported = undefined;
  }

  /** Starts reporting, runs both checks once, then runs them periodically until `stop`. */
  async start(healthIntervalMs: number, exposureIntervalMs: number): Promise<void> {
    this.#reporting = true;
    // The first report carries both results: a report after the exposure check alone would claim a
    // health that no check has measured yet.
    this.#starting = true;
    try {
      await this.checkExposure();
      await this.checkHealth();
    } finally {
      this.#starting = false;
    }
    if (!this.#reporting) return;
    void this.sync();
    const health = setInterval(() => void this.checkHealth(), healthIntervalMs);
    const exposure = setInterval(() => void this.checkExposure(), exposureIntervalMs);
    health.unref();
    exposure.unref();
    this.#timers.push(health, exposure);
  }

  stop(): void {
    this.#reporting = false;
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
  }

  async #send(): Promise<void> {
    if (!this.#reporting) return;
    const report = this.current();
    const serialized = JSON.stringify(report);
    if (serialized === this.#lastReported) return;
    try {
      await this.#options.report(report);
      this.#lastReported = serialized;
      this.#options.log.info({ status: report.status, exposed: report.appExposure?.exposed }, 'app health reported to the control plane');
    } catch (error) {
      this.#options.log.warn({ reason: (error as Error).message }, 'failed to report app health; retrying at the next check');
    }
  }
}
