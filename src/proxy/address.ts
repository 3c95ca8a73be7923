import { isIP } from 'node:net';
import { SealmeshError } from '../errors/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';
import type { TrafficSettings } from './traffic/upstream-settings.ts';

export interface HostPort {
  host: string;
  port: number;
}

/** A Unix domain socket, written `unix:/absolute/path` on the command line. */
export interface UnixAddress {
  path: string;
}

/** Address a listener binds to or the proxy connects to: TCP or a Unix domain socket. */
export type SocketAddress = HostPort | UnixAddress;

/** Prefix that marks a Unix domain socket path in an address option. */
const UNIX_PREFIX = 'unix:';

/** Longest Unix socket path Linux accepts: `sun_path` is 108 bytes including the terminating NUL. */
export const MAX_UNIX_PATH_BYTES = 107;

export function isUnixAddress(address: SocketAddress): address is UnixAddress {
  return 'path' in address;
}

/**
 * Parses `HOST:PORT` or `[IPv6]:PORT`. Port 0 is allowed only with `allowZero`, for listeners that
 * take any free port.
 */
export function parseHostPort(value: string, what: string, allowZero = false): HostPort {
  const invalid = (why: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(value)} is invalid: ${why}; use HOST:PORT, for example 127.0.0.1:8080`);
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close < 0 || value[close + 1] !== ':') throw invalid('unclosed IPv6 bracket or missing port');
    host = value.slice(1, close);
    portText = value.slice(close + 2);
    if (isIP(host) !== 6) throw invalid('not an IPv6 address inside the brackets');
  } else {
    const colon = value.lastIndexOf(':');
    if (colon <= 0) throw invalid('missing port');
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (host.includes(':')) throw invalid('an IPv6 address must be written in brackets');
  }
  if (!/^\d{1,5}$/.test(portText)) throw invalid('port is not a number');
  const port = Number(portText);
  if (port > 65535 || (port === 0 && !allowZero)) throw invalid('port is outside 1-65535');
  return { host, port };
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `unix:/absolute/path`. The path must be absolute and fit in
 * `sun_path`.
 */
export function parseSocketAddress(value: string, what: string, allowZero = false): SocketAddress {
  if (!value.startsWith(UNIX_PREFIX)) return parseHostPort(value, what, allowZero);
  const path = value.slice(UNIX_PREFIX.length);
  const invalid = (why: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(value)} is invalid: ${why}; use unix:/absolute/path, for example unix:/run/sealmesh/web/api.sock`);
  if (!path.startsWith('/')) throw invalid('the socket path is not absolute');
  if (path.endsWith('/')) throw invalid('the socket path names a directory');
  if (path.includes('\0')) throw invalid('the socket path contains a NUL byte');
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_PATH_BYTES) throw invalid(`the socket path is ${bytes} bytes long and Linux allows at most ${MAX_UNIX_PATH_BYTES}`);
  return { path };
}

export interface UpstreamSpec {
  /** Service reference of the destination, `name` or `namespace/name`. */
  service: string;
  namespace: string;
  name: string;
  listen: SocketAddress;
  /** Load balancing, timeouts, retries, outlier detection and limits; the defaults when absent. */
  traffic?: TrafficSettings;
}

/** Parses `--upstream NAME=HOST:PORT` or `--upstream NAME=unix:/absolute/path`. */
export function parseUpstream(value: string): UpstreamSpec {
  const equals = value.indexOf('=');
  if (equals <= 0) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_INVALID',
      `--upstream ${JSON.stringify(value)} is invalid: use NAME=HOST:PORT or NAME=unix:PATH, for example api=127.0.0.1:9191`,
    );
  }
  const ref = parseServiceRef(value.slice(0, equals));
  return { service: formatServiceRef(ref), namespace: ref.namespace, name: ref.service, listen: parseSocketAddress(value.slice(equals + 1), '--upstream address', true) };
}

/** Formats a host and port for URLs and logs, bracketing IPv6 addresses. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

/** Formats an address for logs and messages: `HOST:PORT` or `unix:PATH`. */
export function formatSocketAddress(address: SocketAddress): string {
  return isUnixAddress(address) ? `${UNIX_PREFIX}${address.path}` : formatHostPort(address);
}
