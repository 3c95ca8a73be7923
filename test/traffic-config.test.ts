import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isSealmeshError } from '../src/errors/index.ts';
import { parseLocalConfig } from '../src/config/index.ts';
import { parseUpstream } from '../src/proxy/index.ts';
import { runCli } from './helpers/cli.ts';
import { applyUpstreamTraffic, parseTrafficFlag, readTrafficConfig, resolveTrafficSettings } from '../src/proxy/traffic/index.ts';

const source = { source: 'configuration file proxy.yaml', baseDir: '/etc/sealmesh' };

test('file settings are read into upstream traffic', () => {
  const config = parseLocalConfig(
    {
      upstreams: { api: '127.0.0.1:9191', 'billing/ledger': '127.0.0.1:9192' },
      upstream_config: {
        defaults: { connect_timeout_ms: 2000, retry: { backoff_base_interval: '10ms' } },
        overrides: {
          api: {
            load_balancer: 'least_request',
            request_timeout_ms: 3000,
            per_try_timeout_ms: 1000,
            limits: { max_connections: 50, max_pending_requests: 10, max_concurrent_requests: 40 },
            passive_health_check: { max_failures: 2, interval: '5s', base_ejection_time: '10s', max_ejection_time: '1m', max_ejection_percent: 50 },
            retry: { num_retries: 1, retry_on: ['connect_failure', 'reset'], budget_percent: 12.5, min_retries_per_second: 3 },
          },
        },
      },
    },
    'proxy',
    source,
  );
  const [api, ledger] = applyUpstreamTraffic(config.upstreams ?? [], config.upstreamConfig, []);
  assert.deepEqual(api?.traffic, {
    connectTimeoutMs: 2000,
    requestTimeoutMs: 3000,
    perTryTimeoutMs: 1000,
    loadBalancer: 'least_request',
    limits: { maxConnections: 50, maxPendingRequests: 10, maxConcurrentRequests: 40 },
    passiveHealthCheck: { maxFailures: 2, intervalMs: 5000, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 60_000, maxEjectionPercent: 50 },
    retry: { numRetries: 1, retryOn: ['connect_failure', 'reset'], budgetPercent: 12.5, minRetriesPerSecond: 3, backoffBaseIntervalMs: 10, backoffMaxIntervalMs: 100 },
  });
  assert.equal(ledger?.traffic?.connectTimeoutMs, 2000);
  assert.equal(ledger?.traffic?.loadBalancer, 'round_robin');
  assert.equal(ledger?.traffic?.retry.backoffMaxIntervalMs, 100, 'the max backoff defaults to 10 times the base');
});

test('flags override the file per key', () => {
  const upstreams = [parseUpstream('api=127.0.0.1:9191'), parseUpstream('db=127.0.0.1:9192')];
  const file = { defaults: { connectTimeoutMs: 2000 }, overrides: { api: { loadBalancer: 'least_request' as const, connectTimeoutMs: 1500 } } };
  const flags = ['*:connect_timeout_ms=800', 'api:limits.max_connections=7', 'db:passive_health_check.base_ejection_time=2s', 'default/db:retry.retry_on=connect_failure,gateway_error'].map(parseTrafficFlag);
  const [api, db] = applyUpstreamTraffic(upstreams, file, flags);
  assert.equal(api?.traffic?.connectTimeoutMs, 1500, "the file's per-upstream value beats a flag for every upstream");
  assert.equal(api?.traffic?.loadBalancer, 'least_request');
  assert.equal(api?.traffic?.limits.maxConnections, 7);
  assert.equal(api?.traffic?.limits.maxPendingRequests, 1024);
  assert.equal(db?.traffic?.connectTimeoutMs, 800);
  assert.equal(db?.traffic?.passiveHealthCheck.baseEjectionTimeMs, 2000);
  assert.deepEqual(db?.traffic?.retry.retryOn, ['connect_failure', 'gateway_error']);
});

test('upstreams without settings get the defaults', () => {
  const [api] = applyUpstreamTraffic([parseUpstream('api=127.0.0.1:9191')], undefined, []);
  assert.deepEqual(api?.traffic, resolveTrafficSettings({}));
});

/** Returns the error code `run` throws. */
function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    if (isSealmeshError(error)) return error.code;
    throw error;
  }
  return undefined;
}

test('bad file settings fail with stable codes', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['unknown top key', { connect_timeout: 10 }, 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['unknown section key', { limits: { max_requests: 10 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['section not a map', { limits: 10 }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['timeout as text', { connect_timeout_ms: '2000' }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['zero connect timeout', { connect_timeout_ms: 0 }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['fractional limit', { limits: { max_connections: 1.5 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['zero limit', { limits: { max_pending_requests: 0 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['negative failures', { passive_health_check: { max_failures: -1 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['duration without unit', { passive_health_check: { interval: 10 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['duration with bad unit', { passive_health_check: { base_ejection_time: '10 minutes' } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['percent over 100', { passive_health_check: { max_ejection_percent: 101 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['unknown balancer', { load_balancer: 'random' }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['unknown retry cause', { retry: { retry_on: ['5xx'] } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['retry cause twice', { retry: { retry_on: ['reset', 'reset'] } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['retry causes not a list', { retry: { retry_on: 'reset' } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['too many retries', { retry: { num_retries: 11 } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['budget not a number', { retry: { budget_percent: '20%' } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
  ];
  for (const [name, settings, code] of cases) {
    assert.equal(codeOf(() => readTrafficConfig(settings, 'test')), code, name);
  }
});

test('contradicting settings fail', () => {
  const cases: Array<[string, Parameters<typeof resolveTrafficSettings>[0]]> = [
    ['per-try above request timeout', { requestTimeoutMs: 1000, perTryTimeoutMs: 2000 }],
    ['max ejection below base', { passiveHealthCheck: { baseEjectionTimeMs: 60_000, maxEjectionTimeMs: 30_000 } }],
    ['max backoff below base', { retry: { backoffBaseIntervalMs: 100, backoffMaxIntervalMs: 50 } }],
  ];
  for (const [name, input] of cases) {
    assert.equal(codeOf(() => resolveTrafficSettings(input)), 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID', name);
  }
  assert.equal(resolveTrafficSettings({ passiveHealthCheck: { baseEjectionTimeMs: 600_000 } }).passiveHealthCheck.maxEjectionTimeMs, 600_000, 'the max ejection time follows a base above 300 s');
});

test('bad flags fail with stable codes', () => {
  const cases: Array<[string, string]> = [
    ['api=connect_timeout_ms:5', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['api:connect_timeout_ms=', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['api:connect_timeout_ms=5s', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['api:limits=5', 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['api:load_balancing=round_robin', 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['api:retry.retry_on=connect_failure,nope', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
  ];
  for (const [flag, code] of cases) {
    assert.equal(codeOf(() => parseTrafficFlag(flag)), code, flag);
  }
  assert.deepEqual(parseTrafficFlag('api:retry.budget_percent=12.5').input, { retry: { budgetPercent: 12.5 } });
});

test('unknown key message reads as sentences', () => {
  const messageOf = (flag: string): string => {
    try {
      parseTrafficFlag(flag);
    } catch (error) {
      if (error instanceof Error) return error.message;
    }
    return '';
  };
  assert.match(messageOf('api:limits=5'), /"limits" is not a traffic setting\. Allowed keys: connect_timeout_ms, /);
  assert.match(messageOf('api:retry.numretries=1'), /did you mean "retry\.num_retries"\? Allowed keys: /);
});

test('settings for an undeclared upstream fail', () => {
  const upstreams = [parseUpstream('api=127.0.0.1:9191')];
  assert.equal(codeOf(() => applyUpstreamTraffic(upstreams, undefined, [parseTrafficFlag('db:load_balancer=least_request')])), 'SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN');
  assert.equal(codeOf(() => applyUpstreamTraffic(upstreams, { overrides: { db: {} } }, [])), 'SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN');
});

test('bad upstream_config fails naming the file', () => {
  const cases: Array<[string, unknown, string]> = [
    ['not a map', 'fast', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['unknown section', { default: {} }, 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['bad service name', { overrides: { Bad_Name: {} } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['override contradicts defaults', { defaults: { request_timeout_ms: 1000 }, overrides: { api: { per_try_timeout_ms: 2000 } } }, 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
  ];
  for (const [name, value, code] of cases) {
    let caught: unknown;
    try {
      parseLocalConfig({ upstream_config: value }, 'proxy', source);
    } catch (error) {
      caught = error;
    }
    assert.ok(isSealmeshError(caught), name);
    assert.equal(caught.code, code, name);
    assert.match(caught.message, /proxy\.yaml/, name);
  }
});

test('proxy CLI rejects bad traffic flags', async () => {
  const base = ['proxy', '--service', 'web', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9', '--upstream', 'api=127.0.0.1:0'];
  const cases: Array<[string, string]> = [
    ['api:limits.max_connection=5', 'SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY'],
    ['api:load_balancer=random', 'SEALMESH_ERR_TRAFFIC_CONFIG_INVALID'],
    ['db:load_balancer=least_request', 'SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN'],
  ];
  const results = await Promise.all(cases.map(([flag]) => runCli([...base, '--upstream-config', flag])));
  for (const [index, [flag, code]] of cases.entries()) {
    const result = results[index]!;
    assert.equal(result.code, 2, `${flag}: ${result.stderr}`);
    assert.match(result.stderr, new RegExp(code), flag);
  }
});
