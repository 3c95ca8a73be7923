import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';

/**
 * The prom-client classes the proxy uses, loaded from their own modules. prom-client's entry
 * module loads every module of the package, among them the default process metrics with
 * @opentelemetry/api and perf_hooks, the push gateway client with node:https and node:zlib, and the
 * cluster aggregator with node:cluster. In prom-client 15.1 that costs about 17 MiB of resident
 * memory in every proxy, against about 4 MiB for these four modules. The package declares no
 * `exports` map, so these paths are part of what it publishes.
 */
const require = createRequire(import.meta.url);

export const Registry = require('prom-client/lib/registry') as typeof PromClient.Registry;
export const Counter = require('prom-client/lib/counter') as typeof PromClient.Counter;
export const Gauge = require('prom-client/lib/gauge') as typeof PromClient.Gauge;
export const Histogram = require('prom-client/lib/histogram') as typeof PromClient.Histogram;

export type Registry = PromClient.Registry;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;

/**
 * Registers prom-client's default metrics (CPU time, resident memory, heap, event loop lag, garbage
 * collection) in `registry`. Their modules load here, on first use, so a proxy without an admin
 * endpoint neither loads them nor runs their event loop monitor.
 */
export function collectDefaultMetrics(registry: PromClient.Registry, prefix: string): void {
  const collect = require('prom-client/lib/defaultMetrics') as typeof PromClient.collectDefaultMetrics;
  collect({ register: registry, prefix });
}
