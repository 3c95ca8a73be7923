import { SealmeshError } from '../../errors/index.ts';
import { closestName } from '../../config/names.ts';
import { formatServiceRef, parseServiceRef } from '../../spiffe/index.ts';
import type { UpstreamSpec } from '../address.ts';
import { LOAD_BALANCER_POLICIES, RETRY_CAUSES, resolveTrafficSettings, type TrafficSettingsInput } from './upstream-settings.ts';

/**
 * Readers of the per-upstream traffic settings in a proxy's configuration file and in
 * `--upstream-config` flags. Both go through one table of settings, so a value is checked the same
 * way wherever it is given. Keys are snake_case, as in the rest of the local configuration file and
 * in Consul's upstream configuration (`connect_timeout_ms`, `limits.max_connections`,
 * `passive_health_check.max_failures`).
 */

type SettingKind =
  | { type: 'integer'; min: number; max: number }
  | { type: 'percent' }
  | { type: 'duration'; minMs: number; maxMs: number }
  | { type: 'choice'; choices: readonly string[] }
  | { type: 'list'; choices: readonly string[] };

interface SettingDescriptor {
  /** Path of the value in `TrafficSettingsInput`: a top-level property, or a section and a property. */
  target: [string] | [string, string];
  kind: SettingKind;
}

const HOUR_MS = 3_600_000;

/** Every traffic setting, by its dotted key. */
const SETTINGS: Record<string, SettingDescriptor> = {
  connect_timeout_ms: { target: ['connectTimeoutMs'], kind: { type: 'integer', min: 1, max: 600_000 } },
  request_timeout_ms: { target: ['requestTimeoutMs'], kind: { type: 'integer', min: 0, max: HOUR_MS } },
  per_try_timeout_ms: { target: ['perTryTimeoutMs'], kind: { type: 'integer', min: 0, max: HOUR_MS } },
  load_balancer: { target: ['loadBalancer'], kind: { type: 'choice', choices: LOAD_BALANCER_POLICIES } },
  'limits.max_connections': { target: ['limits', 'maxConnections'], kind: { type: 'integer', min: 1, max: 1_000_000 } },
  'limits.max_pending_requests': { target: ['limits', 'maxPendingRequests'], kind: { type: 'integer', min: 1, max: 1_000_000 } },
  'limits.max_concurrent_requests': { target: ['limits', 'maxConcurrentRequests'], kind: { type: 'integer', min: 1, max: 1_000_000 } },
  'passive_health_check.max_failures': { target: ['passiveHealthCheck', 'maxFailures'], kind: { type: 'integer', min: 1, max: 1000 } },
  'passive_health_check.interval': { target: ['passiveHealthCheck', 'intervalMs'], kind: { type: 'duration', minMs: 1, maxMs: HOUR_MS } },
  'passive_health_check.base_ejection_time': { target: ['passiveHealthCheck', 'baseEjectionTimeMs'], kind: { type: 'duration', minMs: 1, maxMs: HOUR_MS } },
  'passive_health_check.max_ejection_time': { target: ['passiveHealthCheck', 'maxEjectionTimeMs'], kind: { type: 'duration', minMs: 1, maxMs: 24 * HOUR_MS } },
  'passive_health_check.max_ejection_percent': { target: ['passiveHealthCheck', 'maxEjectionPercent'], kind: { type: 'integer', min: 0, max: 100 } },
  'retry.num_retries': { target: ['retry', 'numRetries'], kind: { type: 'integer', min: 0, max: 10 } },
  'retry.retry_on': { target: ['retry', 'retryOn'], kind: { type: 'list', choices: RETRY_CAUSES } },
  'retry.budget_percent': { target: ['retry', 'budgetPercent'], kind: { type: 'percent' } },
  'retry.min_retries_per_second': { target: ['retry', 'minRetriesPerSecond'], kind: { type: 'integer', min: 0, max: 100_000 } },
  'retry.backoff_base_interval': { target: ['retry', 'backoffBaseIntervalMs'], kind: { type: 'duration', minMs: 1, maxMs: 60_000 } },
  'retry.backoff_max_interval': { target: ['retry', 'backoffMaxIntervalMs'], kind: { type: 'duration', minMs: 1, maxMs: 300_000 } },
};

/** Sections that group settings; a section's value is a map. */
const SECTIONS = new Set(Object.keys(SETTINGS).filter((key) => key.includes('.')).map((key) => key.split('.')[0]!));

/** Returns the dotted keys of every traffic setting. */
export function trafficSettingKeys(): string[] {
  return Object.keys(SETTINGS);
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: HOUR_MS };

function invalid(where: string, key: string, reason: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_TRAFFIC_CONFIG_INVALID', `${where}: key ${JSON.stringify(key)} is invalid: ${reason}`);
}

function unknownKey(where: string, key: string, allowed: readonly string[]): SealmeshError {
  const suggestion = closestName(key, allowed);
  return new SealmeshError(
    'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY',
    `${where}: key ${JSON.stringify(key)} is not a traffic setting${suggestion === undefined ? '.' : `; did you mean ${JSON.stringify(suggestion)}?`} Allowed keys: ${allowed.join(', ')}`,
  );
}

/** Converts one value; `fromText` is set for flag values, which arrive as text. */
function readValue(kind: SettingKind, value: unknown, where: string, key: string, fromText: boolean): unknown {
  switch (kind.type) {
    case 'integer': {
      const number = fromText && typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value.trim()) : value;
      if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < kind.min || number > kind.max) {
        throw invalid(where, key, `${JSON.stringify(value)} is not a whole number from ${kind.min} to ${kind.max}`);
      }
      return number;
    }
    case 'percent': {
      const number = fromText && typeof value === 'string' && /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value.trim()) : value;
      if (typeof number !== 'number' || !Number.isFinite(number) || number < 0 || number > 100) {
        throw invalid(where, key, `${JSON.stringify(value)} is not a percentage from 0 to 100`);
      }
      return number;
    }
    case 'duration': {
      const match = typeof value === 'string' ? /^(\d+)(ms|s|m|h)$/.exec(value.trim()) : null;
      if (match === null) {
        throw invalid(where, key, `${JSON.stringify(value)} is not a duration; write a whole number with the unit ms, s, m or h, for example 250ms or 30s`);
      }
      const ms = Number(match[1]) * DURATION_UNITS_MS[match[2]!]!;
      if (ms < kind.minMs || ms > kind.maxMs) throw invalid(where, key, `${JSON.stringify(value)} is outside ${kind.minMs} ms to ${kind.maxMs} ms`);
      return ms;
    }
    case 'choice': {
      if (typeof value !== 'string' || !kind.choices.includes(value)) {
        throw invalid(where, key, `${JSON.stringify(value)} is not one of ${kind.choices.join(', ')}`);
      }
      return value;
    }
    case 'list': {
      const items = fromText && typeof value === 'string' ? value.split(',').map((item) => item.trim()) : value;
      if (!Array.isArray(items)) throw invalid(where, key, `expected a list of ${kind.choices.join(', ')}`);
      for (const item of items) {
        if (typeof item !== 'string' || !kind.choices.includes(item)) {
          throw invalid(where, key, `${JSON.stringify(item)} is not one of ${kind.choices.join(', ')}`);
        }
      }
      if (new Set(items).size !== items.length) throw invalid(where, key, 'an entry is listed twice');
      return items;
    }
  }
}

/** Stores one checked value in `input` at the descriptor's target. */
function assign(input: TrafficSettingsInput, descriptor: SettingDescriptor, value: unknown): void {
  const record = input as Record<string, unknown>;
  if (descriptor.target.length === 1) {
    record[descriptor.target[0]] = value;
    return;
  }
  const [section, property] = descriptor.target;
  const existing = (record[section] ?? {}) as Record<string, unknown>;
  record[section] = { ...existing, [property]: value };
}

/**
 * Reads the traffic settings of one upstream from a configuration file's map. Throws
 * SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY for a key that is no traffic setting, with the closest
 * one, and SEALMESH_ERR_TRAFFIC_CONFIG_INVALID for a value of the wrong form or range.
 */
export function readTrafficConfig(map: Record<string, unknown>, where: string): TrafficSettingsInput {
  const input: TrafficSettingsInput = {};
  const topLevel = [...Object.keys(SETTINGS).filter((key) => !key.includes('.')), ...SECTIONS];
  for (const [key, value] of Object.entries(map)) {
    if (SECTIONS.has(key)) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw invalid(where, key, 'expected a map of settings');
      }
      const members = Object.keys(SETTINGS).filter((name) => name.startsWith(`${key}.`));
      for (const [member, memberValue] of Object.entries(value)) {
        const dotted = `${key}.${member}`;
        const descriptor = Object.hasOwn(SETTINGS, dotted) ? SETTINGS[dotted] : undefined;
        if (descriptor === undefined) throw unknownKey(where, dotted, members);
        assign(input, descriptor, readValue(descriptor.kind, memberValue, where, dotted, false));
      }
      continue;
    }
    const descriptor = Object.hasOwn(SETTINGS, key) ? SETTINGS[key] : undefined;
    if (descriptor === undefined) throw unknownKey(where, key, topLevel);
    assign(input, descriptor, readValue(descriptor.kind, value, where, key, false));
  }
  return input;
}

/** One `--upstream-config` flag: the upstream it names and the setting it sets. */
export interface TrafficFlag {
  upstream: string;
  key: string;
  input: TrafficSettingsInput;
}

/**
 * Parses `--upstream-config NAME:KEY=VALUE`, such as `api:limits.max_connections=100`. NAME is the
 * upstream as given to `--upstream`, or `*` for every upstream; KEY is a dotted traffic setting
 * key. Throws
 * SEALMESH_ERR_TRAFFIC_CONFIG_INVALID for a malformed flag or value and
 * SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY for an unknown key.
 */
export function parseTrafficFlag(value: string): TrafficFlag {
  const where = `--upstream-config ${JSON.stringify(value)}`;
  const match = /^([^:=\s]+):([a-z_.]+)=(.+)$/.exec(value);
  if (match === null) {
    throw new SealmeshError('SEALMESH_ERR_TRAFFIC_CONFIG_INVALID', `${where} is invalid: use NAME:KEY=VALUE, for example api:limits.max_connections=100`);
  }
  const [, upstream, key, text] = match as unknown as [string, string, string, string];
  const descriptor = Object.hasOwn(SETTINGS, key) ? SETTINGS[key] : undefined;
  if (descriptor === undefined) throw unknownKey(where, key, Object.keys(SETTINGS));
  const input: TrafficSettingsInput = {};
  assign(input, descriptor, readValue(descriptor.kind, text, where, key, true));
  return { upstream, key, input };
}

/** Merges settings field by field; a later layer replaces what an earlier one set. */
export function mergeTrafficInputs(...layers: TrafficSettingsInput[]): TrafficSettingsInput {
  const merged: TrafficSettingsInput = {};
  for (const layer of layers) {
    const { limits, passiveHealthCheck, retry, ...plain } = layer;
    Object.assign(merged, plain);
    if (limits !== undefined) merged.limits = { ...merged.limits, ...limits };
    if (passiveHealthCheck !== undefined) merged.passiveHealthCheck = { ...merged.passiveHealthCheck, ...passiveHealthCheck };
    if (retry !== undefined) merged.retry = { ...merged.retry, ...retry };
  }
  return merged;
}

/** Traffic settings from a configuration file's `upstream_config`: for every upstream, and per upstream. */
export interface UpstreamConfig {
  defaults?: TrafficSettingsInput;
  /** By service reference in canonical form, as `formatServiceRef` writes it. */
  overrides?: Record<string, TrafficSettingsInput>;
}

/**
 * Reads `upstream_config` of a proxy's configuration file: `defaults` for every upstream and
 * `overrides`, a map of upstream service to settings. Each override is also resolved over the
 * defaults, so a contradiction between settings fails here, naming the file.
 */
export function readUpstreamConfig(value: unknown, where: string): UpstreamConfig {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(where, 'upstream_config', 'expected a map with defaults and overrides, for example { defaults: { connect_timeout_ms: 2000 }, overrides: { api: { load_balancer: least_request } } }');
  }
  const config: UpstreamConfig = {};
  for (const [key, member] of Object.entries(value)) {
    if (key === 'defaults') {
      if (member === null || typeof member !== 'object' || Array.isArray(member)) throw invalid(where, 'upstream_config.defaults', 'expected a map of traffic settings');
      config.defaults = readTrafficConfig(member as Record<string, unknown>, `${where} upstream_config.defaults`);
      resolveTrafficSettings(config.defaults, `${where} upstream_config.defaults`);
      continue;
    }
    if (key === 'overrides') {
      if (member === null || typeof member !== 'object' || Array.isArray(member)) throw invalid(where, 'upstream_config.overrides', 'expected a map of upstream service to traffic settings');
      config.overrides = {};
      for (const [service, settings] of Object.entries(member)) {
        const context = `${where} upstream_config.overrides.${service}`;
        let ref: string;
        try {
          ref = formatServiceRef(parseServiceRef(service));
        } catch (error) {
          throw invalid(where, `upstream_config.overrides.${service}`, error instanceof Error ? error.message : String(error));
        }
        if (settings === null || typeof settings !== 'object' || Array.isArray(settings)) throw invalid(where, `upstream_config.overrides.${service}`, 'expected a map of traffic settings');
        const input = readTrafficConfig(settings as Record<string, unknown>, context);
        resolveTrafficSettings(mergeTrafficInputs(config.defaults ?? {}, input), context);
        config.overrides[ref] = input;
      }
      continue;
    }
    throw unknownKey(where, `upstream_config.${key}`, ['upstream_config.defaults', 'upstream_config.overrides']);
  }
  return config;
}

/**
 * Returns `upstreams` with their traffic settings resolved from four layers, each replacing what
 * the one before set: the file's defaults, `--upstream-config '*:…'` flags, the file's override
 * for the upstream, and `--upstream-config NAME:…` flags. Throws
 * SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN for an override or flag that names no declared upstream,
 * and the errors of `resolveTrafficSettings`.
 */
export function applyUpstreamTraffic(upstreams: readonly UpstreamSpec[], file: UpstreamConfig | undefined, flags: readonly TrafficFlag[]): UpstreamSpec[] {
  const declared = new Set(upstreams.map((upstream) => upstream.service));
  const flagDefaults: TrafficSettingsInput[] = [];
  const flagOverrides = new Map<string, TrafficSettingsInput[]>();
  for (const flag of flags) {
    if (flag.upstream === '*') {
      flagDefaults.push(flag.input);
      continue;
    }
    const service = formatServiceRef(parseServiceRef(flag.upstream));
    if (!declared.has(service)) {
      throw new SealmeshError('SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN', `--upstream-config ${flag.upstream}:${flag.key} names upstream ${service}, which no --upstream or upstreams entry declares; declared: ${[...declared].join(', ') || 'none'}`);
    }
    flagOverrides.set(service, [...(flagOverrides.get(service) ?? []), flag.input]);
  }
  for (const service of Object.keys(file?.overrides ?? {})) {
    if (!declared.has(service)) {
      throw new SealmeshError('SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN', `upstream_config.overrides names upstream ${service}, which no --upstream or upstreams entry declares; declared: ${[...declared].join(', ') || 'none'}`);
    }
  }
  return upstreams.map((upstream) => {
    const input = mergeTrafficInputs(file?.defaults ?? {}, ...flagDefaults, file?.overrides?.[upstream.service] ?? {}, ...(flagOverrides.get(upstream.service) ?? []));
    return { ...upstream, traffic: resolveTrafficSettings(input, `traffic settings of upstream ${upstream.service}`) };
  });
}
