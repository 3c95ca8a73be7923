import { readFileSync } from 'node:fs';
import { sandboxDeniedError } from '../hardening/index.ts';
import { ApiClient } from '../client/index.ts';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';

/** Exit codes of every command. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const DEFAULT_ADDR = 'https://127.0.0.1:8501';

/** Options shared by every command that calls the control plane. */
export interface ClientFlags {
  addr?: string;
  token?: string;
  caFile?: string;
  json?: boolean;
}

/**
 * Builds the API client from flags, falling back to SEALMESH_ADDR, SEALMESH_TOKEN and
 * SEALMESH_CACERT. A server address without a CA file is an error: the CLI never skips
 * verification of the server's certificate.
 */
export function clientFromFlags(flags: ClientFlags, requireToken = true): ApiClient {
  const addr = flags.addr ?? process.env.SEALMESH_ADDR ?? DEFAULT_ADDR;
  const token = flags.token ?? process.env.SEALMESH_TOKEN;
  const caFile = flags.caFile ?? (process.env.SEALMESH_CACERT === '' ? undefined : process.env.SEALMESH_CACERT);
  let url: URL;
  try {
    url = new URL(addr.includes('://') ? addr : `https://${addr}`);
  } catch {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `server address ${JSON.stringify(addr)} is invalid; use https://HOST:PORT`);
  }
  if (url.protocol !== 'https:') {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `server address ${JSON.stringify(addr)} must use https`);
  }
  if (caFile === undefined) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_INVALID',
      'no CA file given: pass --ca-file or set SEALMESH_CACERT to the server\'s <data-dir>/trust-bundle.pem',
    );
  }
  if (requireToken && (token === undefined || token === '')) {
    throw new SealmeshError('SEALMESH_ERR_ACL_TOKEN_MISSING', 'no ACL token given: pass --token or set SEALMESH_TOKEN');
  }
  return new ApiClient({ url: url.origin, ca: readCaFile(caFile), ...(token !== undefined && token !== '' ? { token } : {}) });
}

/** Reads a PEM bundle file, with an error that names the file. */
export function readCaFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot read CA file ${path}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, { cause });
  }
  const certificates = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (certificates.length === 0) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `CA file ${path} contains no PEM certificate`);
  }
  return certificates.map((pem) => `${pem}\n`);
}

/** Prints `value` as JSON with --json, or as the given lines of text otherwise. */
export function print(flags: { json?: boolean }, value: unknown, text: () => string): void {
  if (flags.json === true) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  else process.stdout.write(`${text()}\n`);
}

/** Formats rows as aligned columns. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** Codes of mistakes in flags, configuration files or the environment, which exit with EXIT_USAGE. */
const USAGE_ERROR_CODES: ReadonlySet<string> = new Set([
  'SEALMESH_ERR_CONFIG_INVALID',
  'SEALMESH_ERR_INVALID_ARGUMENT',
  'SEALMESH_ERR_CONFIG_SECURITY_SETTING',
  'SEALMESH_ERR_CONFIG_UNKNOWN_KEY',
  'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID',
  'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY',
  'SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN',
]);

/** Prints an error to standard error and returns the exit code for it. */
export function reportError(error: unknown, json: boolean): number {
  const failure = isSealmeshError(error)
    ? error
    : (sandboxDeniedError(error) ?? new SealmeshError('SEALMESH_ERR_INTERNAL', error instanceof Error ? error.message : String(error)));
  if (json) process.stderr.write(`${JSON.stringify(failure.toJSON())}\n`);
  else process.stderr.write(`error: ${failure.message} (${failure.code})\n`);
  return USAGE_ERROR_CODES.has(failure.code) ? EXIT_USAGE : EXIT_FAILURE;
}

/** Parses a duration such as `90s`, `30m`, `24h` or `7d`; a bare number is seconds. */
export function parseDuration(value: string, what: string): number {
  const match = /^(\d+)(s|m|h|d)?$/.exec(value.trim());
  if (match === null) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${JSON.stringify(value)} is invalid; use a number with s, m, h or d, for example 24h`);
  }
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(match[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}
