import { request } from '../node/http.ts';
import { connect } from 'node:net';
import { SealmeshError } from '../errors/index.ts';
import { formatSocketAddress, isUnixAddress, type SocketAddress } from './address.ts';

export type CheckStatus = 'passing' | 'critical';

/** Outcome of one check of the app. `output` describes what the check saw, for the catalog and the prober. */
export interface AppCheckResult {
  status: CheckStatus;
  output: string;
}

export interface AppCheckOptions {
  /** HTTP path to GET, such as `/healthz`; a plain connect when absent. */
  httpPath?: string;
  /** Time allowed for the whole check: connect, and for HTTP also the response headers. */
  timeoutMs: number;
}

function target(app: SocketAddress): { socketPath: string } | { host: string; port: number } {
  return isUnixAddress(app) ? { socketPath: app.path } : { host: app.host, port: app.port };
}

/** Checks that the app accepts a connection. */
function checkConnect(app: SocketAddress, timeoutMs: number): Promise<AppCheckResult> {
  const where = formatSocketAddress(app);
  return new Promise((resolve) => {
    const socket = isUnixAddress(app) ? connect({ path: app.path }) : connect({ host: app.host, port: app.port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ status: 'critical', output: `app at ${where} did not accept a connection within ${timeoutMs} ms` });
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: 'passing', output: `app at ${where} accepts connections` });
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ status: 'critical', output: `connection to the app at ${where} failed: ${error.code ?? error.message}` });
    });
  });
}

/** GETs the app's health path; any 2xx status passes. */
function checkHttp(app: SocketAddress, path: string, timeoutMs: number): Promise<AppCheckResult> {
  const label = `GET ${path} on the app at ${formatSocketAddress(app)}`;
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: AppCheckResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = request({ ...target(app), path, method: 'GET', agent: false, headers: { host: 'localhost', 'user-agent': 'sealmesh-health-check' } }, (response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      req.destroy();
      settle(
        status >= 200 && status < 300
          ? { status: 'passing', output: `${label} returned HTTP ${status}` }
          : { status: 'critical', output: `${label} returned HTTP ${status}` },
      );
    });
    const timer = setTimeout(() => {
      req.destroy();
      settle({ status: 'critical', output: `${label} did not answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.once('error', (error: NodeJS.ErrnoException) => settle({ status: 'critical', output: `${label} failed: ${error.code ?? error.message}` }));
    req.end();
  });
}

/** Checks the app once: an HTTP GET of `httpPath` when given, a connect otherwise. */
export function checkApp(app: SocketAddress, options: AppCheckOptions): Promise<AppCheckResult> {
  return options.httpPath === undefined ? checkConnect(app, options.timeoutMs) : checkHttp(app, options.httpPath, options.timeoutMs);
}

/** Parses `--app-health-path`: an absolute HTTP path with an optional query, such as `/healthz`. */
export function parseHealthPath(value: string): string {
  if (!/^\/[\x21-\x7e]*$/.test(value)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--app-health-path ${JSON.stringify(value)} is invalid: use a path that starts with / and has no spaces, for example /healthz`);
  }
  return value;
}
