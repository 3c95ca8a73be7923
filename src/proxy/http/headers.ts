import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { IncomingHttpHeaders as Http2IncomingHeaders } from 'node:http2';

/** Plain header map with lower-case names, no pseudo-headers and no hop-by-hop headers. */
export type HeaderMap = Record<string, string | string[]>;

/**
 * Connection-specific headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2) that a proxy must not forward.
 * `te` is handled apart: only `te: trailers` survives, because gRPC needs it.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

/** Header set by the inbound proxy for the app; a copy from the caller is always removed. */
export const XFCC_HEADER = 'x-forwarded-client-cert';

/**
 * Copies end-to-end headers: drops pseudo-headers, hop-by-hop headers and the headers the
 * `connection` header names, and keeps `te` only as `trailers`.
 */
export function endToEndHeaders(headers: IncomingHttpHeaders | Http2IncomingHeaders): HeaderMap {
  const named = new Set<string>();
  const connection = headers.connection;
  let connectionValues: string[] = [];
  if (Array.isArray(connection)) connectionValues = connection;
  else if (connection !== undefined) connectionValues = [connection];
  for (const value of connectionValues) {
    for (const token of value.split(',')) named.add(token.trim().toLowerCase());
  }
  const result: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(':') || HOP_BY_HOP.has(name) || named.has(name)) continue;
    if (name === 'te') {
      if (String(value).toLowerCase().split(',').some((token) => token.trim() === 'trailers')) result.te = 'trailers';
      continue;
    }
    result[name] = Array.isArray(value) ? value : String(value);
  }
  return result;
}

/** Returns one header's value, several values joined with `, ` as RFC 9110 §5.3 allows. */
export function headerValue(headers: HeaderMap | IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value.join(', ') : String(value);
}

/** Headers of a response or trailers without pseudo-headers and hop-by-hop headers. */
export function responseHeaders(headers: IncomingHttpHeaders | Http2IncomingHeaders | OutgoingHttpHeaders): HeaderMap {
  return endToEndHeaders(headers as IncomingHttpHeaders);
}
