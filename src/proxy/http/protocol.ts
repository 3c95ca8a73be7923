import { SealmeshError } from '../../errors/index.ts';

/** The application protocol a service speaks, declared when its proxy enrolls. */
export type ServiceProtocol = 'tcp' | 'http' | 'http2' | 'grpc';

export const SERVICE_PROTOCOLS: readonly ServiceProtocol[] = ['tcp', 'http', 'http2', 'grpc'];

export const DEFAULT_PROTOCOL: ServiceProtocol = 'tcp';

/** True for the protocols the proxies carry as HTTP requests rather than as a byte stream. */
export function isHttpProtocol(protocol: ServiceProtocol): boolean {
  return protocol !== 'tcp';
}

/**
 * ALPN identifiers the inbound listener accepts and the outbound side offers for a protocol. An
 * HTTP/1.1 app's traffic may travel between proxies as HTTP/2 or HTTP/1.1; HTTP/2 and gRPC apps
 * need HTTP/2 end to end, because gRPC relies on trailers and full-duplex streams.
 */
export function alpnFor(protocol: ServiceProtocol): string[] {
  if (protocol === 'tcp') return [];
  if (protocol === 'http') return ['h2', 'http/1.1'];
  return ['h2'];
}

export function parseProtocol(value: string, what = '--protocol'): ServiceProtocol {
  const protocol = SERVICE_PROTOCOLS.find((candidate) => candidate === value);
  if (protocol === undefined) {
    throw new SealmeshError('SEALMESH_ERR_L7_PROTOCOL_INVALID', `${what} ${JSON.stringify(value)} is invalid; use one of ${SERVICE_PROTOCOLS.join(', ')}`);
  }
  return protocol;
}

/**
 * HTTP/2 settings of every session the proxy opens or accepts. The default 64 KiB stream window
 * lets a single stream carry only one window per round trip; 1 MiB per stream and 16 MiB per
 * session keep large bodies moving while flow control still bounds the memory one stream holds.
 */
export const HTTP2_SETTINGS = { initialWindowSize: 1024 * 1024, enablePush: false } as const;

/** Connection-level receive window of every HTTP/2 session, in bytes. */
export const HTTP2_SESSION_WINDOW = 16 * 1024 * 1024;

/** Raises the connection-level window of a session once it is connected. */
export function widenSessionWindow(session: import('node:http2').Http2Session): void {
  const apply = (): void => {
    if (!session.destroyed) session.setLocalWindowSize(HTTP2_SESSION_WINDOW);
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}
