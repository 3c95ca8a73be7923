import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Endpoint } from '../src/server/index.ts';
import { EndpointBalancer } from '../src/proxy/traffic/balancer.ts';
import { CircuitBreaker } from '../src/proxy/traffic/circuit-breaker.ts';
import { OutlierDetector } from '../src/proxy/traffic/outlier.ts';
import { RetryBudget } from '../src/proxy/traffic/retry-budget.ts';
import { DEFAULT_TRAFFIC_SETTINGS, parseTrafficSettings } from '../src/proxy/traffic/settings.ts';

const endpoints: Endpoint[] = ['a', 'b', 'c'].map((id, index) => ({ instanceId: id, address: '127.0.0.1', port: 1000 + index, spiffeId: `spiffe://t/ns/default/svc/${id}` }));

describe('endpoint balancer', () => {
  test('round robin cycles', () => {
    const balancer = new EndpointBalancer('round_robin');
    assert.deepEqual([1, 2, 3, 4].map(() => balancer.pick(endpoints)?.instanceId), ['a', 'b', 'c', 'a']);
  });

  test('least request prefers idle', () => {
    // The random source picks indexes 0 and 1 (a and b) every time.
    const draws = [0, 0];
    let call = 0;
    const balancer = new EndpointBalancer('least_request', () => draws[call++ % 2]!);
    const release = balancer.track('a');
    assert.equal(balancer.pick(endpoints)?.instanceId, 'b');
    release();
    assert.equal(balancer.active('a'), 0);
    assert.equal(balancer.pick(endpoints)?.instanceId, 'a');
  });

  test('empty upstream has no pick', () => {
    assert.equal(new EndpointBalancer('least_request').pick([]), undefined);
  });
});

describe('outlier detector', () => {
  const ids = ['a', 'b', 'c', 'd'];

  test('ejection grows and expires', () => {
    let now = 0;
    const ejections: number[] = [];
    const detector = new OutlierDetector({ ...DEFAULT_TRAFFIC_SETTINGS.outlierDetection, consecutive5xx: 2, baseEjectionMs: 1_000 }, (_id, ms) => ejections.push(ms), () => now);
    detector.record('a', 'server_error', ids);
    assert.equal(detector.isEjected('a'), false);
    detector.record('a', 'server_error', ids);
    assert.equal(detector.isEjected('a'), true);
    now = 1_000;
    assert.equal(detector.isEjected('a'), false);
    detector.record('a', 'server_error', ids);
    detector.record('a', 'server_error', ids);
    assert.deepEqual(ejections, [1_000, 2_000]);
  });

  test('success resets the count', () => {
    const detector = new OutlierDetector({ ...DEFAULT_TRAFFIC_SETTINGS.outlierDetection, consecutive5xx: 2 }, () => undefined);
    detector.record('a', 'server_error', ids);
    detector.record('a', 'success', ids);
    detector.record('a', 'server_error', ids);
    assert.equal(detector.isEjected('a'), false);
  });

  test('cap limits ejected share', () => {
    const detector = new OutlierDetector({ ...DEFAULT_TRAFFIC_SETTINGS.outlierDetection, consecutiveConnectFailures: 1, maxEjectionPercent: 50 }, () => undefined);
    for (const id of ids) detector.record(id, 'connect_failure', ids);
    assert.equal(detector.ejectedCount(ids), 2);
  });
});

describe('retry budget', () => {
  test('minimum rate then ratio', () => {
    let now = 0;
    const budget = new RetryBudget({ ...DEFAULT_TRAFFIC_SETTINGS.retries, minRetriesPerSecond: 0.2, budgetRatio: 0.5 }, () => now);
    // 0.2 per second over the 10-second window allows 2 retries without any requests.
    assert.equal(budget.tryAcquire(), true);
    assert.equal(budget.tryAcquire(), true);
    assert.equal(budget.tryAcquire(), false);
    for (let index = 0; index < 4; index += 1) budget.recordRequest();
    assert.equal(budget.tryAcquire(), true);
    assert.equal(budget.tryAcquire(), true);
    assert.equal(budget.tryAcquire(), false);
    now = 11_000;
    assert.equal(budget.tryAcquire(), true);
  });

  test('backoff is jittered and capped', () => {
    const budget = new RetryBudget({ ...DEFAULT_TRAFFIC_SETTINGS.retries, backoffBaseMs: 10, backoffMaxMs: 50 });
    assert.equal(budget.backoffMs(1, () => 0.999), 9);
    assert.equal(budget.backoffMs(3, () => 0.999), 39);
    assert.equal(budget.backoffMs(8, () => 0.999), 49);
    assert.equal(budget.backoffMs(8, () => 0), 0);
  });
});

describe('circuit breaker', () => {
  test('limits and releases', () => {
    const breaker = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 1, maxRequests: 2 });
    const first = breaker.admitRequest();
    const second = breaker.admitRequest();
    assert.deepEqual(breaker.admitRequest(), { limit: 'requests' });
    assert.ok('release' in first && 'release' in second);
    first.release();
    first.release();
    assert.equal(breaker.requests, 1);
    assert.ok('release' in breaker.admitRequest());
    assert.ok('release' in breaker.admitConnection());
    assert.deepEqual(breaker.admitConnection(), { limit: 'connections' });
  });
});

describe('traffic settings', () => {
  test('defaults fill omitted fields', () => {
    const settings = parseTrafficSettings({ retries: { maxAttempts: 5 } }, 'api');
    assert.equal(settings.retries.maxAttempts, 5);
    assert.equal(settings.retries.budgetRatio, 0.2);
    assert.equal(settings.circuitBreaker.maxRequests, 1_024);
  });

  test('unknown field is rejected', () => {
    assert.throws(() => parseTrafficSettings({ retry: {} }, 'api'), { code: 'SEALMESH_ERR_CONFIG_INVALID' });
  });
});

describe('traffic file', () => {
  test('returns settings as written', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { readTrafficFile } = await import('../src/proxy/traffic/settings.ts');
    const dir = mkdtempSync(join(tmpdir(), 'sealmesh-traffic-'));
    try {
      const good = join(dir, 'traffic.yaml');
      writeFileSync(good, 'api:\n  retries:\n    maxAttempts: 2\n');
      assert.deepEqual(readTrafficFile(good), { api: { retries: { maxAttempts: 2 } } });
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, 'api:\n  loadBalancer: random\n');
      assert.throws(() => readTrafficFile(bad), { code: 'SEALMESH_ERR_CONFIG_INVALID' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
