import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, normaliseIntentionEnds, type Intention } from '../src/policy/index.ts';
import { isSealmeshError } from '../src/errors/index.ts';

function intention(source: string, destination: string, action: 'allow' | 'deny'): Intention {
  return { source, destination, action, createdAt: '2026-01-01T00:00:00.000Z' };
}

const web = { namespace: 'default', service: 'web' };
const api = { namespace: 'default', service: 'api' };
const billingApi = { namespace: 'billing', service: 'api' };

test('no intention falls back to default deny', () => {
  const decision = decide([], web, api);
  assert.equal(decision.allowed, false);
  assert.equal(decision.reason, 'default');
});

test('exact allow permits the pair', () => {
  assert.equal(decide([intention('web', 'api', 'allow')], web, api).allowed, true);
});

test('exact allow does not cover other sources', () => {
  assert.equal(decide([intention('web', 'api', 'allow')], { namespace: 'default', service: 'batch' }, api).allowed, false);
});

test('exact source beats wildcard source', () => {
  const rules = [intention('*', 'api', 'deny'), intention('web', 'api', 'allow')];
  assert.equal(decide(rules, web, api).allowed, true);
  assert.equal(decide(rules, { namespace: 'default', service: 'batch' }, api).allowed, false);
});

test('exact destination beats wildcard destination', () => {
  const rules = [intention('web', '*', 'allow'), intention('*', 'api', 'deny')];
  assert.equal(decide(rules, web, api).allowed, false);
  assert.equal(decide(rules, web, { namespace: 'default', service: 'db' }).allowed, true);
});

test('wildcard to wildcard is the weakest', () => {
  const rules = [intention('*', '*', 'allow'), intention('web', '*', 'deny')];
  assert.equal(decide(rules, web, api).allowed, false);
  assert.equal(decide(rules, { namespace: 'default', service: 'batch' }, api).allowed, true);
});

test('namespaces keep services apart', () => {
  const rules = [intention('web', 'billing/api', 'allow')];
  assert.equal(decide(rules, web, billingApi).allowed, true);
  assert.equal(decide(rules, web, api).allowed, false);
});

test('reason names the deciding intention', () => {
  assert.equal(decide([intention('web', 'api', 'allow')], web, api).reason, 'web -> api');
});

test('default allow applies when nothing matches', () => {
  assert.equal(decide([], web, api, 'allow').allowed, true);
});

test('intention ends are normalised', () => {
  assert.deepEqual(normaliseIntentionEnds('default/web', 'api'), { source: 'web', destination: 'api' });
  assert.deepEqual(normaliseIntentionEnds('*', 'billing/api'), { source: '*', destination: 'billing/api' });
});

for (const [source, destination] of [
  ['Web', 'api'],
  ['web', 'a/b/c'],
  ['billing/*', 'api'],
  ['', 'api'],
  ['web', '-api'],
]) {
  test(`invalid intention end ${source} -> ${destination}`, () => {
    assert.throws(
      () => normaliseIntentionEnds(source ?? '', destination ?? ''),
      (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_SERVICE_NAME_INVALID'),
    );
  });
}
