import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { silentLogger } from '../src/log/index.ts';
import type { Endpoint } from '../src/server/index.ts';
import {
  CircuitBreaker,
  DEFAULT_TRAFFIC_SETTINGS,
  LeastRequestBalancer,
  OutlierDetector,
  RetryBudget,
  RoundRobinBalancer,
  TrafficMetrics,
  UpstreamTraffic,
  backoffDelayMs,
  decideRetry,
  resolveTrafficSettings,
  type Ejection,
  type RetryRequest,
} from '../src/proxy/traffic/index.ts';

/** Returns a clock that the test advances by hand. */
function manualClock(start = 1_000): { now: () => number; advance: (ms: number) => void } {
  let time = start;
  return { now: () => time, advance: (ms) => (time += ms) };
}

/** Returns a random source that returns the given values in turn, repeating the list. */
function sequence(...values: number[]): () => number {
  let index = 0;
  return () => values[index++ % values.length]!;
}

function endpoints(count: number): Endpoint[] {
  return Array.from({ length: count }, (_, index) => ({ instanceId: `i${index}`, address: '127.0.0.1', port: 20_000 + index, spiffeId: 'spiffe://example.sealmesh/ns/default/sv/api' }));
}

function recordingEvents(): { ejected: Ejection[]; overflows: string[]; returned: string[]; events: ConstructorParameters<typeof OutlierDetector>[2] } {
  const record = { ejected: [] as Ejection[], overflows: [] as string[], returned: [] as string[] };
  return {
    ...record,
    events: {
      ejected: (ejection) => record.ejected.push(ejection),
      overflow: (instanceId) => record.overflows.push(instanceId),
      returned: (instanceId) => record.returned.push(instanceId),
    },
  };
}

const health = { maxFailures: 3, intervalMs: 10_000, baseEjectionTimeMs: 1_000, maxEjectionTimeMs: 2_500, maxEjectionPercent: 50 };

describe('load balancers', () => {
  test('round robin takes each in turn', () => {
    const balancer = new RoundRobinBalancer();
    const list = endpoints(3);
    const chosen = Array.from({ length: 6 }, () => balancer.choose(list)?.instanceId);
    assert.deepEqual(chosen, ['i0', 'i1', 'i2', 'i0', 'i1', 'i2']);
    assert.equal(balancer.choose([]), undefined);
  });

  test('least request takes the less loaded of two draws', () => {
    const active = new Map([['i0', 5], ['i1', 1], ['i2', 0], ['i3', 2]]);
    // Draws i0 (0.1 × 4) then, among the other three, index 0 of [i1, i2, i3] shifted past i0: i1.
    const balancer = new LeastRequestBalancer(sequence(0.1, 0.1));
    assert.equal(balancer.choose(endpoints(4), (id) => active.get(id) ?? 0)?.instanceId, 'i1');
    // Draws i3 (0.9 × 4) then i2 (0.9 × 3 = index 2, not shifted): i2 has fewer.
    const other = new LeastRequestBalancer(sequence(0.9, 0.9));
    assert.equal(other.choose(endpoints(4), (id) => active.get(id) ?? 0)?.instanceId, 'i2');
  });

  test('least request with two instances always takes the idle one', () => {
    const balancer = new LeastRequestBalancer(Math.random);
    const list = endpoints(2);
    for (let round = 0; round < 50; round += 1) {
      assert.equal(balancer.choose(list, (id) => (id === 'i0' ? 1 : 0))?.instanceId, 'i1');
    }
  });

  test('least request tie goes to the first draw', () => {
    const balancer = new LeastRequestBalancer(sequence(0.6, 0.0));
    assert.equal(balancer.choose(endpoints(2), () => 0)?.instanceId, 'i1');
    assert.equal(balancer.choose(endpoints(1), () => 0)?.instanceId, 'i0');
  });
});

describe('outlier detection', () => {
  test('consecutive connect failures eject', () => {
    const clock = manualClock();
    const record = recordingEvents();
    const detector = new OutlierDetector(health, clock, record.events);
    const list = endpoints(2);
    detector.candidates(list);
    detector.reportConnectFailure('i0');
    detector.reportConnectFailure('i0');
    assert.equal(detector.isEjected('i0'), false);
    detector.reportConnectFailure('i0');
    assert.equal(detector.isEjected('i0'), true);
    assert.deepEqual(record.ejected, [{ instanceId: 'i0', cause: 'consecutive_connect_failures', count: 1, durationMs: 1_000 }]);
    assert.deepEqual(detector.candidates(list).map((endpoint) => endpoint.instanceId), ['i1']);
    assert.equal(detector.ejectedCount(), 1);
  });

  test('success resets the failure count', () => {
    const detector = new OutlierDetector(health, manualClock(), recordingEvents().events);
    detector.candidates(endpoints(2));
    detector.reportConnectFailure('i0');
    detector.reportConnectFailure('i0');
    detector.reportConnectSuccess('i0');
    detector.reportConnectFailure('i0');
    detector.reportConnectFailure('i0');
    assert.equal(detector.isEjected('i0'), false);
  });

  test('consecutive 5xx eject and other statuses reset', () => {
    const record = recordingEvents();
    const detector = new OutlierDetector(health, manualClock(), record.events);
    detector.candidates(endpoints(2));
    detector.reportResponse('i1', 503);
    detector.reportResponse('i1', 500);
    detector.reportResponse('i1', 404);
    detector.reportResponse('i1', 502);
    detector.reportResponse('i1', 500);
    assert.equal(detector.isEjected('i1'), false);
    detector.reportResponse('i1', 504);
    assert.equal(detector.isEjected('i1'), true);
    assert.equal(record.ejected[0]?.cause, 'consecutive_5xx');
  });

  test('ejection ends after its time', () => {
    const clock = manualClock();
    const record = recordingEvents();
    const detector = new OutlierDetector(health, clock, record.events);
    detector.candidates(endpoints(2));
    for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i0');
    clock.advance(999);
    assert.equal(detector.isEjected('i0'), true);
    clock.advance(1);
    assert.equal(detector.isEjected('i0'), false);
    assert.deepEqual(record.returned, ['i0']);
    assert.equal(detector.candidates(endpoints(2)).length, 2);
  });

  test('ejection time grows with the count and is capped', () => {
    const clock = manualClock();
    const record = recordingEvents();
    const detector = new OutlierDetector(health, clock, record.events);
    detector.candidates(endpoints(2));
    for (let round = 0; round < 4; round += 1) {
      for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i0');
      clock.advance(record.ejected.at(-1)!.durationMs);
      assert.equal(detector.isEjected('i0'), false);
    }
    assert.deepEqual(record.ejected.map((ejection) => ejection.durationMs), [1_000, 2_000, 2_500, 2_500]);
    assert.deepEqual(record.ejected.map((ejection) => ejection.count), [1, 2, 3, 4]);
  });

  test('ejection count decays per interval in service', () => {
    const clock = manualClock();
    const record = recordingEvents();
    const detector = new OutlierDetector(health, clock, record.events);
    detector.candidates(endpoints(2));
    for (let round = 0; round < 2; round += 1) {
      for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i0');
      clock.advance(record.ejected.at(-1)!.durationMs);
      assert.equal(detector.isEjected('i0'), false);
    }
    // Two ejections so far; one full interval in service takes one off, so the next is the second.
    clock.advance(health.intervalMs);
    for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i0');
    assert.equal(record.ejected.at(-1)?.count, 2);
    assert.equal(record.ejected.at(-1)?.durationMs, 2_000);
  });

  test('max ejection percent caps ejections', () => {
    const record = recordingEvents();
    // 50% of 4 instances: two at once.
    const detector = new OutlierDetector(health, manualClock(), record.events);
    detector.candidates(endpoints(4));
    for (const id of ['i0', 'i1', 'i2']) for (let i = 0; i < 3; i += 1) detector.reportConnectFailure(id);
    assert.equal(detector.ejectedCount(), 2);
    assert.deepEqual(record.overflows, ['i2']);
    assert.equal(detector.isEjected('i2'), false);
  });

  test('one instance is ejected even under a low percent', () => {
    const detector = new OutlierDetector({ ...health, maxEjectionPercent: 10 }, manualClock(), recordingEvents().events);
    detector.candidates(endpoints(2));
    for (const id of ['i0', 'i1']) for (let i = 0; i < 3; i += 1) detector.reportConnectFailure(id);
    assert.equal(detector.ejectedCount(), 1, 'one of two is ejected and the other kept');
  });

  test('the last instance is never ejected', () => {
    const record = recordingEvents();
    const detector = new OutlierDetector({ ...health, maxEjectionPercent: 100 }, manualClock(), record.events);
    detector.candidates(endpoints(1));
    for (let i = 0; i < 10; i += 1) detector.reportConnectFailure('i0');
    assert.equal(detector.isEjected('i0'), false);
    assert.ok(record.overflows.length > 0);
  });

  test('zero percent disables ejection', () => {
    const detector = new OutlierDetector({ ...health, maxEjectionPercent: 0 }, manualClock(), recordingEvents().events);
    detector.candidates(endpoints(3));
    for (let i = 0; i < 10; i += 1) detector.reportConnectFailure('i0');
    assert.equal(detector.ejectedCount(), 0);
  });

  test('all catalog instances ejected means none excluded', () => {
    const detector = new OutlierDetector(health, manualClock(), recordingEvents().events);
    detector.candidates(endpoints(2));
    for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i1');
    // i0 leaves the catalog; only the ejected i1 remains, and it is still offered.
    assert.deepEqual(detector.candidates(endpoints(2).slice(1)).map((endpoint) => endpoint.instanceId), ['i1']);
    assert.deepEqual(detector.candidates([]), []);
  });

  test('instances that leave the catalog are forgotten', () => {
    const detector = new OutlierDetector(health, manualClock(), recordingEvents().events);
    detector.candidates(endpoints(3));
    for (let i = 0; i < 3; i += 1) detector.reportConnectFailure('i2');
    assert.equal(detector.isEjected('i2'), true);
    detector.candidates(endpoints(2));
    detector.candidates(endpoints(3));
    assert.equal(detector.isEjected('i2'), false);
  });
});

describe('retry budget and backoff', () => {
  test('share of active requests admits retries', () => {
    const budget = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 0 }, manualClock());
    const releases = [budget.tryAcquire(10), budget.tryAcquire(10)];
    assert.ok(releases.every((release) => release !== undefined));
    assert.equal(budget.tryAcquire(10), undefined, 'a third retry exceeds 20% of 10');
    releases[0]!();
    releases[0]!();
    assert.equal(budget.inProgress, 1, 'release is idempotent');
    assert.notEqual(budget.tryAcquire(10), undefined);
  });

  test('per-second minimum admits beyond the share', () => {
    const clock = manualClock();
    const budget = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 3 }, clock);
    for (let i = 0; i < 3; i += 1) assert.notEqual(budget.tryAcquire(0), undefined, `retry ${i + 1} of the minimum`);
    assert.equal(budget.tryAcquire(0), undefined);
    clock.advance(999);
    assert.equal(budget.tryAcquire(0), undefined, 'the window has not passed');
    clock.advance(1);
    assert.notEqual(budget.tryAcquire(0), undefined, 'a new second admits again');
  });

  test('backoff is jittered, doubling and capped', () => {
    const settings = { backoffBaseIntervalMs: 25, backoffMaxIntervalMs: 250 };
    assert.equal(backoffDelayMs(settings, 1, () => 0.999), 24);
    assert.equal(backoffDelayMs(settings, 2, () => 0.999), 49);
    assert.equal(backoffDelayMs(settings, 3, () => 0.5), 50);
    assert.equal(backoffDelayMs(settings, 10, () => 0.999), 249);
    assert.equal(backoffDelayMs(settings, 1, () => 0), 0);
  });
});

describe('retry decision', () => {
  const settings = resolveTrafficSettings({ retry: { numRetries: 2, retryOn: ['connect_failure', 'refused_stream', 'gateway_error'], minRetriesPerSecond: 0, budgetPercent: 100 } }).retry;
  const decide = (request: Partial<RetryRequest>, budget = new RetryBudget(settings, manualClock())) =>
    decideRetry(
      { cause: 'connect_failure', retriesSoFar: 0, reachedApp: false, idempotent: false, ...request },
      { settings, requestTimeoutMs: 1_000, budget, activeRequests: 1, random: () => 0.5 },
    );

  test('connect failure of a non-idempotent request is retried', () => {
    const decision = decide({});
    assert.equal(decision.retry, true);
    if (decision.retry) {
      assert.equal(decision.retryNumber, 1);
      assert.equal(decision.delayMs, 12);
    }
  });

  test('non-idempotent request that reached the app is not retried', () => {
    assert.deepEqual(decide({ cause: 'gateway_error', reachedApp: true, idempotent: false }), { retry: false, reason: 'not_idempotent' });
  });

  test('idempotent request that reached the app is retried', () => {
    assert.equal(decide({ cause: 'gateway_error', reachedApp: true, idempotent: true }).retry, true);
  });

  test('cause outside retry_on is not retried', () => {
    assert.deepEqual(decide({ cause: 'reset', idempotent: true }), { retry: false, reason: 'cause_not_retried' });
  });

  test('retries stop at num_retries', () => {
    assert.deepEqual(decide({ retriesSoFar: 2 }), { retry: false, reason: 'retries_exhausted' });
  });

  test('retry past the request timeout is denied', () => {
    assert.deepEqual(decide({ elapsedMs: 990 }), { retry: false, reason: 'request_timeout' });
  });

  test('exhausted budget denies and takes nothing', () => {
    const budget = new RetryBudget(settings, manualClock());
    const first = decide({}, budget);
    assert.equal(first.retry, true);
    assert.deepEqual(decide({}, budget), { retry: false, reason: 'budget_exhausted' });
    assert.equal(budget.inProgress, 1);
  });
});

describe('circuit breaker', () => {
  test('limits each resource and takes all or nothing', () => {
    const breaker = new CircuitBreaker({ maxConnections: 2, maxPendingRequests: 1, maxConcurrentRequests: 5 });
    assert.equal(breaker.tryAcquire(['connections', 'pending_requests']), undefined);
    assert.deepEqual(breaker.tryAcquire(['connections', 'pending_requests']), { reason: 'max_pending_requests', limit: 1, inUse: 1 });
    assert.equal(breaker.inUse('connections'), 1, 'the rejected acquisition took no connection');
    breaker.release('pending_requests');
    assert.equal(breaker.tryAcquire(['connections', 'pending_requests']), undefined);
    assert.deepEqual(breaker.tryAcquire(['connections']), { reason: 'max_connections', limit: 2, inUse: 2 });
    breaker.release('connections');
    assert.equal(breaker.inUse('connections'), 1);
  });
});

describe('upstream traffic', () => {
  async function metricValue(registry: Registry, name: string, labels: string): Promise<number> {
    const text = await registry.metrics();
    const line = text.split('\n').find((entry) => entry.startsWith(`${name}{`) && entry.includes(labels));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  function traffic(settings = resolveTrafficSettings({ limits: { maxConnections: 2, maxPendingRequests: 1, maxConcurrentRequests: 1 } }), list = endpoints(2)) {
    const registry = new Registry();
    const metrics = new TrafficMetrics(registry);
    const clock = manualClock();
    return { registry, clock, traffic: new UpstreamTraffic({ upstream: 'api', settings, endpoints: () => list, metrics, log: silentLogger(), clock, random: () => 0 }) };
  }

  test('connection admission trips with reason and metric', async () => {
    const { registry, traffic: upstream } = traffic();
    const first = upstream.admitConnection();
    assert.equal(first.admitted, true);
    const second = upstream.admitConnection();
    assert.equal(second.admitted, false);
    if (!second.admitted) {
      assert.equal(second.reason, 'max_pending_requests');
      assert.equal(second.error.code, 'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN');
    }
    if (first.admitted) first.established();
    assert.equal(upstream.admitConnection().admitted, true);
    const third = upstream.admitConnection();
    assert.equal(third.admitted, false);
    if (!third.admitted) assert.equal(third.reason, 'max_connections');
    assert.equal(await metricValue(registry, 'sealmesh_proxy_circuit_breaker_trips_total', 'reason="max_pending_requests"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_circuit_breaker_trips_total', 'reason="max_connections"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_pending_requests', 'upstream="api"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_active_connections', 'upstream="api"'), 2);
  });

  test('request rejection carries a 503 response', () => {
    const { traffic: upstream } = traffic();
    const first = upstream.admitRequest();
    assert.equal(first.admitted, true);
    if (first.admitted) first.established();
    const rejected = upstream.admitRequest();
    assert.equal(rejected.admitted, false);
    if (rejected.admitted) return;
    assert.equal(rejected.reason, 'max_concurrent_requests');
    assert.equal(rejected.response.status, 503);
    assert.equal(rejected.response.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(rejected.response.headers['x-sealmesh-error'], 'SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN');
    assert.match(rejected.response.body, /limits\.max_concurrent_requests = 1/);
    if (first.admitted) first.release();
    assert.equal(upstream.admitRequest().admitted, true, 'a released request frees its slot');
  });

  test('pick skips tried and ejected instances', () => {
    const settings = resolveTrafficSettings({ passiveHealthCheck: { maxFailures: 1, maxEjectionPercent: 50 } });
    const { traffic: upstream } = traffic(settings, endpoints(3));
    assert.equal(upstream.pick(new Set(['i0']))?.instanceId, 'i1');
    upstream.startAttempt(endpoints(3)[1]!).connectFailed();
    const seen = new Set(Array.from({ length: 6 }, () => upstream.pick()?.instanceId));
    assert.deepEqual([...seen].sort(), ['i0', 'i2']);
    assert.equal(upstream.status().instances.find((instance) => instance.instanceId === 'i1')?.ejected, true);
    assert.equal(upstream.pick(new Set(['i0', 'i2']))?.instanceId !== 'i1', true, 'an ejected instance is not offered even when others were tried');
  });

  test('attempts count toward least request', () => {
    const settings = resolveTrafficSettings({ loadBalancer: 'least_request' });
    const { traffic: upstream } = traffic(settings, endpoints(2));
    const busy = upstream.startAttempt(endpoints(2)[0]!);
    assert.equal(upstream.pick()?.instanceId, 'i1');
    busy.finish();
    busy.finish();
    assert.equal(upstream.status().instances.every((instance) => instance.active === 0), true);
  });

  test('try timeout combines per-try and request timeouts', () => {
    const both = traffic(resolveTrafficSettings({ requestTimeoutMs: 1_000, perTryTimeoutMs: 300 })).traffic;
    assert.equal(both.tryTimeoutMs(0), 300);
    assert.equal(both.tryTimeoutMs(800), 200);
    assert.equal(both.tryTimeoutMs(1_500), 0);
    const none = traffic(resolveTrafficSettings({ requestTimeoutMs: 0, perTryTimeoutMs: 0 })).traffic;
    assert.equal(none.tryTimeoutMs(5_000), undefined);
    assert.equal(traffic(resolveTrafficSettings({ requestTimeoutMs: 0, perTryTimeoutMs: 300 })).traffic.tryTimeoutMs(5_000), 300);
  });

  test('retry decision is counted', async () => {
    const { registry, traffic: upstream } = traffic(resolveTrafficSettings({ retry: { budgetPercent: 0, minRetriesPerSecond: 1 } }));
    const admission = upstream.admitConnection();
    assert.equal(admission.admitted, true);
    const request = { cause: 'connect_failure', retriesSoFar: 0, reachedApp: false, idempotent: false } as const;
    assert.equal(upstream.decideRetry(request).retry, true);
    assert.deepEqual(upstream.decideRetry(request), { retry: false, reason: 'budget_exhausted' });
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_retries_total', 'cause="connect_failure"'), 1);
    assert.equal(await metricValue(registry, 'sealmesh_proxy_upstream_retry_budget_exhausted_total', 'upstream="api"'), 1);
  });

  test('defaults are the documented ones', () => {
    assert.deepEqual(resolveTrafficSettings({}), DEFAULT_TRAFFIC_SETTINGS);
  });
});
