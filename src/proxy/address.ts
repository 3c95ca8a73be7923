import { isIP } from 'node:net';
import { SealmeshError } from '../errors/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';

export interface HostPort {
  host: string;
  port: number;
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

export interface UpstreamSpec {
  /** Service reference of the destination, `name` or `namespace/name`. */
  service: string;
  namespace: string;
  name: string;
  listen: HostPort;
}

/** Parses `--upstream NAME=HOST:PORT`. */
export function parseUpstream(value: string): UpstreamSpec {
  const equals = value.indexOf('=');
  if (equals <= 0) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--upstream ${JSON.stringify(value)} is invalid: use NAME=HOST:PORT, for example api=127.0.0.1:9191`);
  }
  const ref = parseServiceRef(value.slice(0, equals));
  return { service: formatServiceRef(ref), namespace: ref.namespace, name: ref.service, listen: parseHostPort(value.slice(equals + 1), '--upstream address', true) };
}

/** Formats a host and port for URLs and logs, bracketing IPv6 addresses. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}
