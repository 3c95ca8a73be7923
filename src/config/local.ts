import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { SealmeshError } from '../errors/index.ts';
import { isUnixAddress, parseHostPort, parseSocketAddress, type HostPort, type UpstreamSpec } from '../proxy/address.ts';
import { readUpstreamConfig, type UpstreamConfig } from '../proxy/traffic/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';
import { closestName, isSecuritySettingName } from './names.ts';

/**
 * The local configuration file of `sealmesh server` and `sealmesh proxy`.
 *
 * The file may set only what differs from host to host: listen addresses, ports, paths, the log
 * level and timing such as the drain and lease durations. Every setting that decides security
 * lives in the signed manifest, so a key such as `default_policy` or `acl.enabled` is rejected
 * with SEALMESH_ERR_CONFIG_SECURITY_SETTING rather than ignored, and any other key outside the
 * allow-list below with SEALMESH_ERR_CONFIG_UNKNOWN_KEY.
 *
 * Keys are snake_case. Relative paths are resolved against the directory of the file.
 */

/** The programs that read a local configuration file. */
export type LocalConfigProgram = 'server' | 'proxy';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Settings of `sealmesh server` that a local file may set. */
export interface ServerLocalConfig {
  /** Directory of the data store and trust bundle (`data_dir`). */
  dataDir?: string;
  /** Listen address of the HTTPS API (`addr`); port 0 takes a free port. */
  addr?: HostPort;
  /** Seconds an instance stays registered after its proxy disconnects (`lease`). */
  leaseSeconds?: number;
  logLevel?: LogLevel;
}

/** Settings of `sealmesh proxy` that a local file may set. */
export interface ProxyLocalConfig {
  /** Service this proxy fronts, `name` or `namespace/name` (`service`). */
  service?: string;
  /** Inbound mTLS listener (`listen`). */
  listen?: HostPort;
  /** The local app that inbound traffic goes to (`app`). */
  app?: HostPort;
  /** Listeners for upstream services (`upstreams`, a map of service to a loopback HOST:PORT or unix:PATH). */
  upstreams?: UpstreamSpec[];
  /** Traffic settings of the upstreams (`upstream_config`: `defaults` and `overrides` by service). */
  upstreamConfig?: UpstreamConfig;
  /** Address other proxies dial (`advertise`). */
  advertise?: HostPort;
  /** Loopback endpoint for /metrics, /ready and /status (`admin`). */
  admin?: HostPort;
  /** Seconds SIGTERM waits for open connections (`drain`). */
  drainSeconds?: number;
  /** Origin of the control-plane API, such as https://127.0.0.1:8501 (`addr`). */
  addr?: string;
  /** PEM trust bundle of the control plane (`ca_file`). */
  caFile?: string;
  logLevel?: LogLevel;
  /** Writes the JSON access log of the HTTP path (`access_log`). */
  accessLog?: boolean;
  /** Share of requests in the access log, 0 to 1 (`access_log_sampling`). */
  accessLogSampling?: number;
  /** File the access log is appended to in place of standard output (`access_log_path`). */
  accessLogPath?: string;
  /** Keeps query strings in the access log (`access_log_query`). */
  accessLogQuery?: boolean;
}

export interface LocalConfigByProgram {
  server: ServerLocalConfig;
  proxy: ProxyLocalConfig;
}

/** Reads one value; `key` and `source` name it in error messages. */
type ValueReader = (value: unknown, context: { key: string; source: string; baseDir: string }) => unknown;

interface AllowedKey {
  /** Property of the returned config object. */
  property: string;
  read: ValueReader;
  /** Whether the value is a map whose keys are data, such as service names, not settings. */
  dataMap?: boolean;
}

function invalid(context: { key: string; source: string }, reason: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${context.source}: key ${JSON.stringify(context.key)} is invalid: ${reason}`);
}

const readString: ValueReader = (value, context) => {
  if (typeof value !== 'string' || value.trim() === '') {
    throw invalid(context, 'expected a non-empty string');
  }
  return value;
};

const readPath: ValueReader = (value, context) => {
  const path = readString(value, context) as string;
  return isAbsolute(path) ? path : resolve(context.baseDir, path);
};

function hostPortReader(options: { allowZero: boolean; loopbackOnly: boolean }): ValueReader {
  return (value, context) => {
    const text = readString(value, context) as string;
    const parsed = parseHostPort(text, `${context.source}: key ${JSON.stringify(context.key)}`, options.allowZero);
    if (options.loopbackOnly && !isLoopback(parsed.host)) {
      throw invalid(context, `${text} is not a loopback address; this listener serves only the local host, so use 127.0.0.1 or [::1]`);
    }
    return parsed;
  };
}

/** Returns true for `localhost`, 127.0.0.0/8 and ::1. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

const readDuration: ValueReader = (value, context) => {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    return value;
  }
  const match = typeof value === 'string' ? /^(\d+)(s|m|h|d)?$/.exec(value.trim()) : null;
  if (match === null) {
    throw invalid(context, `${JSON.stringify(value)} is not a duration; use a number of seconds or a number with s, m, h or d, for example 30s`);
  }
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(match[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
};

const readLogLevel: ValueReader = (value, context) => {
  if (typeof value !== 'string' || !(LOG_LEVELS as readonly string[]).includes(value)) {
    throw invalid(context, `${JSON.stringify(value)} is not a log level; use one of ${LOG_LEVELS.join(', ')}`);
  }
  return value;
};

const readBoolean: ValueReader = (value, context) => {
  if (typeof value !== 'boolean') throw invalid(context, `${JSON.stringify(value)} is not a boolean; use true or false`);
  return value;
};

const readSampleRate: ValueReader = (value, context) => {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
    throw invalid(context, `${JSON.stringify(value)} is not a sampling rate; use a number from 0 to 1, such as 0.1`);
  }
  return value;
};

const readService: ValueReader = (value, context) => {
  const text = readString(value, context) as string;
  try {
    parseServiceRef(text);
  } catch (error) {
    throw invalid(context, error instanceof Error ? error.message : String(error));
  }
  return text;
};

const readServerUrl: ValueReader = (value, context) => {
  const text = readString(value, context) as string;
  let url: URL;
  try {
    url = new URL(text.includes('://') ? text : `https://${text}`);
  } catch {
    throw invalid(context, `${JSON.stringify(text)} is not a URL; use https://HOST:PORT`);
  }
  if (url.protocol !== 'https:') {
    throw invalid(context, `${JSON.stringify(text)} does not use https; the control plane is reached only over TLS`);
  }
  return url.origin;
};

const readUpstreams: ValueReader = (value, context) => {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(context, 'expected a map of service name to HOST:PORT or unix:PATH, for example { api: 127.0.0.1:9191 }');
  }
  return Object.entries(value).map(([service, address]): UpstreamSpec => {
    const entryContext = { ...context, key: `${context.key}.${service}` };
    let ref: { namespace: string; service: string };
    try {
      ref = parseServiceRef(service);
    } catch (error) {
      throw invalid(entryContext, error instanceof Error ? error.message : String(error));
    }
    const text = readString(address, entryContext) as string;
    const listen = parseSocketAddress(text, `${context.source}: key ${JSON.stringify(entryContext.key)}`, true);
    // An upstream listener forwards any client that connects under the proxy's identity, so over TCP
    // it must accept only local clients. A Unix socket is limited by its file permissions instead.
    if (!isUnixAddress(listen) && !isLoopback(listen.host)) {
      throw invalid(entryContext, `${text} is not a loopback address; this listener serves only the local host, so use 127.0.0.1 or [::1]`);
    }
    return { service: formatServiceRef(ref), namespace: ref.namespace, name: ref.service, listen };
  });
};

const ALLOWED_KEYS: Record<LocalConfigProgram, Record<string, AllowedKey>> = {
  server: {
    data_dir: { property: 'dataDir', read: readPath },
    addr: { property: 'addr', read: hostPortReader({ allowZero: true, loopbackOnly: false }) },
    lease: { property: 'leaseSeconds', read: readDuration },
    log_level: { property: 'logLevel', read: readLogLevel },
  },
  proxy: {
    service: { property: 'service', read: readService },
    listen: { property: 'listen', read: hostPortReader({ allowZero: true, loopbackOnly: false }) },
    app: { property: 'app', read: hostPortReader({ allowZero: false, loopbackOnly: false }) },
    upstreams: { property: 'upstreams', read: readUpstreams, dataMap: true },
    // Its reader rejects every key that is no traffic setting, so the security-name check of the
    // keys inside it, skipped because it contains service names, cannot miss one.
    upstream_config: { property: 'upstreamConfig', read: (value, context) => readUpstreamConfig(value, context.source), dataMap: true },
    advertise: { property: 'advertise', read: hostPortReader({ allowZero: false, loopbackOnly: false }) },
    admin: { property: 'admin', read: hostPortReader({ allowZero: true, loopbackOnly: true }) },
    drain: { property: 'drainSeconds', read: readDuration },
    addr: { property: 'addr', read: readServerUrl },
    ca_file: { property: 'caFile', read: readPath },
    log_level: { property: 'logLevel', read: readLogLevel },
    access_log: { property: 'accessLog', read: readBoolean },
    access_log_sampling: { property: 'accessLogSampling', read: readSampleRate },
    access_log_path: { property: 'accessLogPath', read: readPath },
    access_log_query: { property: 'accessLogQuery', read: readBoolean },
  },
};

/** Returns the keys that a local file of `program` may set. */
export function allowedLocalConfigKeys(program: LocalConfigProgram): string[] {
  return Object.keys(ALLOWED_KEYS[program]);
}

/** Lists every key path in `value` as dotted text, except inside maps whose keys are data. */
function keyPaths(value: unknown, prefix: string, allowed: Record<string, AllowedKey>): string[] {
  if (value === null || typeof value !== 'object') return [];
  const entries: Array<[string, unknown]> = Array.isArray(value) ? value.map((item, index) => [String(index), item]) : Object.entries(value);
  const paths: string[] = [];
  for (const [key, member] of entries) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (!Array.isArray(value)) paths.push(path);
    if (prefix === '' && allowed[key]?.dataMap === true) continue;
    paths.push(...keyPaths(member, path, allowed));
  }
  return paths;
}

function quoteList(names: readonly string[]): string {
  return names.map((name) => JSON.stringify(name)).join(', ');
}

/**
 * Checks and converts the parsed content of a local configuration file. `source` names the file in
 * messages and `baseDir` anchors relative paths. Throws, naming the source and the key:
 * - SEALMESH_ERR_CONFIG_SECURITY_SETTING for every key, at any depth, whose name is a security setting;
 * - SEALMESH_ERR_CONFIG_UNKNOWN_KEY for a key outside the allow-list of `program`, with the
 *   closest allowed key when one is near;
 * - SEALMESH_ERR_CONFIG_INVALID for content that is not a map, or a value of the wrong form.
 */
export function parseLocalConfig<P extends LocalConfigProgram>(
  content: unknown,
  program: P,
  options: { source: string; baseDir: string },
): LocalConfigByProgram[P] {
  const { source, baseDir } = options;
  if (content === null || content === undefined) {
    return {};
  }
  if (typeof content !== 'object' || Array.isArray(content)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${source} is invalid: expected a map of settings at the top level`);
  }
  const allowed = ALLOWED_KEYS[program];
  const record = content as Record<string, unknown>;

  // A key inside a security section, such as `acl.enabled` under `acl`, is covered by its section.
  const security: string[] = [];
  for (const path of keyPaths(record, '', allowed)) {
    if (isSecuritySettingName(path) && !security.some((listed) => path.startsWith(`${listed}.`))) {
      security.push(path);
    }
  }
  if (security.length > 0) {
    const single = security.length === 1;
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_SECURITY_SETTING',
      `${source}: ${single ? 'key' : 'keys'} ${quoteList(security)} ${single ? 'is a security setting' : 'are security settings'}, which only the signed manifest may set. Remove ${single ? 'it' : 'them'} from this file and change the manifest with \`sealmesh manifest\``,
    );
  }

  const config: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    const entry = Object.hasOwn(allowed, key) ? allowed[key] : undefined;
    if (entry === undefined) {
      const suggestion = closestName(key, Object.keys(allowed));
      throw new SealmeshError(
        'SEALMESH_ERR_CONFIG_UNKNOWN_KEY',
        `${source}: key ${JSON.stringify(key)} is not a ${program} setting${suggestion === undefined ? '.' : `; did you mean ${JSON.stringify(suggestion)}?`} Allowed keys: ${Object.keys(allowed).join(', ')}`,
      );
    }
    config[entry.property] = entry.read(value, { key, source, baseDir });
  }
  return config as LocalConfigByProgram[P];
}

/**
 * Reads the local configuration file of `program` from `path`: JSON for a `.json` file, YAML for
 * any other. Throws SEALMESH_ERR_CONFIG_INVALID when the file cannot be read or parsed, and the
 * errors of `parseLocalConfig`.
 */
export async function loadLocalConfig<P extends LocalConfigProgram>(path: string, program: P): Promise<LocalConfigByProgram[P]> {
  const source = `configuration file ${path}`;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${source} cannot be read: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const json = extname(path).toLowerCase() === '.json';
  if (json) {
    try {
      JSON.parse(text);
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${source} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  }
  // The YAML parser also reads JSON, and unlike JSON.parse it rejects a key given twice. It is
  // loaded here, because a proxy started without --config never needs it.
  const { parseDocument } = await import('yaml');
  const document = parseDocument(text, { schema: json ? 'json' : 'core', uniqueKeys: true, resolveKnownTags: false, prettyErrors: false });
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem !== undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${source} is not valid ${json ? 'JSON' : 'YAML'}: ${problem.message}`, { cause: problem });
  }
  // toJS throws for problems that parsing does not report, such as an alias without an anchor.
  let content: unknown;
  try {
    content = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${source} is not valid YAML: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return parseLocalConfig(content, program, { source, baseDir: dirname(resolve(path)) });
}
