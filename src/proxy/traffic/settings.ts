import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { SealmeshError } from '../../errors/index.ts';

/**
 * Traffic settings of one upstream on the HTTP data path. Every field has a default, written next
 * to it, so a settings file names only what it changes.
 */
export const trafficSettingsSchema = z.strictObject({
  /** `round_robin` (default) or `least_request`, which picks the less busy of two random instances. */
  loadBalancer: z.enum(['round_robin', 'least_request']).default('round_robin'),
  /** Time to open and verify an mTLS connection to an instance. Default 5000 ms. */
  connectTimeoutMs: z.number().int().min(1).max(60_000).default(5_000),
  /** Time from receiving a request to the upstream's response headers, over all tries; 0 for none. Default 0. */
  requestTimeoutMs: z.number().int().min(0).max(3_600_000).default(0),
  /** Time one try may wait for response headers before an idempotent request without a body is retried; 0 for none. Default 0. */
  perTryTimeoutMs: z.number().int().min(0).max(3_600_000).default(0),
  retries: z
    .strictObject({
      /** Tries per request, the first included. Default 3. */
      maxAttempts: z.number().int().min(1).max(10).default(3),
      /** Retries allowed as a share of the requests of the last 10 seconds. Default 0.2. */
      budgetRatio: z.number().min(0).max(1).default(0.2),
      /** Retries per second allowed whatever the budget ratio gives. Default 10. */
      minRetriesPerSecond: z.number().min(0).max(10_000).default(10),
      /** First backoff before a retry; each later one doubles, with full jitter. Default 25 ms. */
      backoffBaseMs: z.number().int().min(0).max(10_000).default(25),
      /** Maximum backoff before a retry. Default 250 ms. */
      backoffMaxMs: z.number().int().min(0).max(60_000).default(250),
    })
    .prefault({}),
  outlierDetection: z
    .strictObject({
      /** Consecutive 5xx responses from one instance that eject it; 0 turns this off. Default 5. */
      consecutive5xx: z.number().int().min(0).max(1_000).default(5),
      /** Consecutive connect failures to one instance that eject it; 0 turns this off. Default 5. */
      consecutiveConnectFailures: z.number().int().min(0).max(1_000).default(5),
      /** Ejection time of a first ejection; the n-th ejection of an instance lasts n times as long. Default 30000 ms. */
      baseEjectionMs: z.number().int().min(1).max(3_600_000).default(30_000),
      /** Maximum ejection time. Default 300000 ms. */
      maxEjectionMs: z.number().int().min(1).max(86_400_000).default(300_000),
      /** Largest share of the upstream's instances ejected at once, in percent. Default 50. */
      maxEjectionPercent: z.number().int().min(0).max(100).default(50),
    })
    .prefault({}),
  circuitBreaker: z
    .strictObject({
      /** Open connections to all instances of the upstream. Default 1024. */
      maxConnections: z.number().int().min(1).max(1_000_000).default(1_024),
      /** Requests waiting for a connection to be opened. Default 1024. */
      maxPendingRequests: z.number().int().min(1).max(1_000_000).default(1_024),
      /** Requests in flight to the upstream. Default 1024. */
      maxRequests: z.number().int().min(1).max(1_000_000).default(1_024),
    })
    .prefault({}),
});

export type TrafficSettings = z.output<typeof trafficSettingsSchema>;
export type TrafficSettingsInput = z.input<typeof trafficSettingsSchema>;

export const DEFAULT_TRAFFIC_SETTINGS: TrafficSettings = trafficSettingsSchema.parse({});

/** Settings for several upstreams, keyed by upstream service reference. */
export const trafficFileSchema = z.record(z.string().min(1).max(128), trafficSettingsSchema);

/** Validates settings for one upstream, naming the upstream in the error. */
export function parseTrafficSettings(value: unknown, upstream: string): TrafficSettings {
  const parsed = trafficSettingsSchema.safeParse(value ?? {});
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(settings)'}: ${issue.message}`).join('; ');
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `traffic settings of upstream ${upstream} are invalid: ${issues}`);
  }
  return parsed.data;
}

/**
 * Reads `--traffic-file`: a YAML or JSON map from upstream service to its traffic settings. The
 * settings are validated here and returned as written, so that omitted fields can still take
 * values from other flags before the defaults fill them.
 */
export function readTrafficFile(path: string): Record<string, TrafficSettingsInput> {
  let document: unknown;
  try {
    document = parseYaml(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot read --traffic-file ${path}: ${(error as Error).message}`);
  }
  const parsed = trafficFileSchema.safeParse(document);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(file)'}: ${issue.message}`).join('; ');
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--traffic-file ${path} is invalid: ${issues}`);
  }
  return document as Record<string, TrafficSettingsInput>;
}
