import { BlockList, isIP } from 'node:net';
import { checkAppExposure, type ListeningSocket } from './socket-table.ts';

/**
 * Reaction of the proxy to an app that can be reached around it: `strict` stops serving, `warn`
 * logs, counts and reports the exposure.
 */
export type PerimeterMode = 'strict' | 'warn';

/** Reachability of the app from other hosts without going through the proxy. */
export interface ExposureReport {
  exposed: boolean;
  /** Addresses other hosts can reach the app on, such as `0.0.0.0:8080` or `[::]:8080`. */
  bindings: string[];
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** Returns true for `localhost` and for IPv4 or IPv6 loopback addresses, including IPv4-mapped ones. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const family = isIP(host);
  if (family === 0) return false;
  return LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

/** Formats a listening socket as `ADDRESS:PORT`, with an IPv6 address compressed and bracketed. */
export function formatBinding(socket: Pick<ListeningSocket, 'family' | 'address' | 'port'>): string {
  if (socket.family === 4) return `${socket.address}:${socket.port}`;
  // The URL parser writes an IPv6 host in its shortest form, such as [::] for 0:0:0:0:0:0:0:0,
  // but an IPv4-mapped address in hex (::ffff:a00:5), so that one is written with its IPv4 part.
  const hostname = new URL(`http://[${socket.address}]/`).hostname;
  const mapped = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(hostname);
  if (mapped === null) return `${hostname}:${socket.port}`;
  const high = Number.parseInt(mapped[1] ?? '0', 16);
  const low = Number.parseInt(mapped[2] ?? '0', 16);
  return `[::ffff:${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}]:${socket.port}`;
}

/**
 * Checks how the app's TCP address is bound, from the socket tables of this network namespace.
 * The proxy and the app share that namespace in every sidecar setup, so the tables show the app's
 * listeners. An app address that is not loopback counts as exposed by itself, because the proxy
 * then sends plaintext to it over a network.
 */
export async function checkTcpAppExposure(app: { host: string; port: number }, procNet = '/proc/net'): Promise<ExposureReport> {
  const bindings: string[] = [];
  if (!isLoopbackHost(app.host)) bindings.push(isIP(app.host) === 6 ? `[${app.host}]:${app.port}` : `${app.host}:${app.port}`);
  const exposure = await checkAppExposure(app.port, procNet);
  for (const socket of exposure.listeners) {
    if (socket.scope === 'loopback') continue;
    const binding = formatBinding(socket);
    if (!bindings.includes(binding)) bindings.push(binding);
  }
  return { exposed: bindings.length > 0, bindings };
}

/** Explains an exposure and how to fix it, for logs, health output and the strict-mode error. */
export function describeExposure(report: ExposureReport, appPort: number): string {
  return (
    `the app is reachable around the proxy on ${report.bindings.join(', ')}, so other hosts can call it without mTLS or intentions; ` +
    `bind the app to 127.0.0.1:${appPort} (or [::1]:${appPort}), or to a Unix socket passed as --app unix:PATH`
  );
}
