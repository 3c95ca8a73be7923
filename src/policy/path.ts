/**
 * Normalisation of request paths before L7 intentions match them, so that `/admin`, `/./admin`,
 * `//admin` and `/%61dmin` reach the same rule and the app receives the path that was matched.
 */

/** Reason a path was rejected; the proxy responds 400 to each of them. */
export type PathRejection =
  | 'not absolute'
  | 'encoded slash'
  | 'backslash'
  | 'NUL byte'
  | 'invalid percent-encoding'
  | 'dot segment above root';

export type NormalisedPath = { ok: true; path: string } | { ok: false; reason: PathRejection };

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const HEX_PAIR = /^[0-9A-Fa-f]{2}$/;

/**
 * Normalises the path part of a request target (the query is not passed in):
 * 1. percent-decodes unreserved characters (RFC 3986 §2.3) and upper-cases the hex of every other
 *    escape (RFC 3986 §6.2.2.1);
 * 2. merges runs of slashes into one;
 * 3. removes `.` segments and resolves `..` segments (RFC 3986 §5.2.4).
 *
 * It rejects paths that cannot be normalised without changing their meaning for some app. These are
 * an encoded slash (`%2F`) or backslash (`%5C`), a raw backslash, a NUL byte raw or encoded, a `%`
 * not followed by two hex digits, a `..` that climbs above the root, and a path without a leading `/`.
 */
export function normaliseRequestPath(raw: string): NormalisedPath {
  if (!raw.startsWith('/')) return { ok: false, reason: 'not absolute' };
  if (raw.includes('\\')) return { ok: false, reason: 'backslash' };
  if (raw.includes('\0')) return { ok: false, reason: 'NUL byte' };

  let decoded = '';
  for (let index = 0; index < raw.length; index += 1) {
    const char = raw[index]!;
    if (char !== '%') {
      decoded += char;
      continue;
    }
    const hex = raw.slice(index + 1, index + 3);
    if (!HEX_PAIR.test(hex)) return { ok: false, reason: 'invalid percent-encoding' };
    const value = String.fromCharCode(Number.parseInt(hex, 16));
    if (value === '/') return { ok: false, reason: 'encoded slash' };
    if (value === '\\') return { ok: false, reason: 'backslash' };
    if (value === '\0') return { ok: false, reason: 'NUL byte' };
    decoded += UNRESERVED.test(value) ? value : `%${hex.toUpperCase()}`;
    index += 2;
  }

  const segments = decoded.split('/').slice(1);
  const output: string[] = [];
  for (let index = 0; index < segments.length; index += 1) {
    const segment = segments[index]!;
    const last = index === segments.length - 1;
    if (segment === '..') {
      if (output.length === 0) return { ok: false, reason: 'dot segment above root' };
      output.pop();
      // `/a/..` names the directory `/`, so it keeps its trailing slash.
      if (last) output.push('');
      continue;
    }
    if (segment === '.') {
      if (last) output.push('');
      continue;
    }
    // An empty segment comes from a doubled slash; only a trailing one is kept.
    if (segment === '' && !last) continue;
    output.push(segment);
  }
  const path = `/${output.join('/')}`;
  return { ok: true, path: path.replace(/\/{2,}/g, '/') };
}
