import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessLog, checkSampleRate } from '../src/proxy/http/access-log.ts';
import { continueTrace, formatTraceparent, parseTraceparent } from '../src/proxy/http/trace-context.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const VALID = `00-${TRACE_ID}-${PARENT_ID}-01`;

test('traceparent version 00 parsed', () => {
  assert.deepEqual(parseTraceparent(VALID), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 1 });
  assert.deepEqual(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-00`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 0 });
});

test('traceparent later version read by version 00 rules', () => {
  assert.deepEqual(parseTraceparent(`cc-${TRACE_ID}-${PARENT_ID}-01`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 1 });
  assert.deepEqual(parseTraceparent(`cc-${TRACE_ID}-${PARENT_ID}-01-what-the-future-holds`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: 1 });
  assert.equal(parseTraceparent(`cc-${TRACE_ID}-${PARENT_ID}-01x`), undefined);
});

const INVALID: Array<[string, string | string[] | undefined]> = [
  ['missing', undefined],
  ['empty', ''],
  ['version ff', `ff-${TRACE_ID}-${PARENT_ID}-01`],
  ['upper-case hex', `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`],
  ['non-hex trace id', `00-${TRACE_ID.slice(0, 31)}g-${PARENT_ID}-01`],
  ['short trace id', `00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`],
  ['long parent id', `00-${TRACE_ID}-${PARENT_ID}0-01`],
  ['all-zero trace id', `00-${'0'.repeat(32)}-${PARENT_ID}-01`],
  ['all-zero parent id', `00-${TRACE_ID}-${'0'.repeat(16)}-01`],
  ['version 00 with an extra field', `${VALID}-extra`],
  ['one-digit flags', `00-${TRACE_ID}-${PARENT_ID}-1`],
  ['bad version', `0g-${TRACE_ID}-${PARENT_ID}-01`],
  ['two headers', [VALID, VALID]],
];

for (const [name, value] of INVALID) {
  test(`traceparent rejected: ${name}`, () => {
    assert.equal(parseTraceparent(value), undefined);
  });
}

test('trace continued with a new parent id', () => {
  const headers: Record<string, string | string[]> = { traceparent: VALID, tracestate: 'vendor=abc,other=1' };
  const trace = continueTrace(headers, false);
  assert.equal(trace.traceId, TRACE_ID);
  assert.equal(trace.parentSpanId, PARENT_ID);
  assert.equal(trace.started, false);
  assert.match(trace.spanId, /^[0-9a-f]{16}$/);
  assert.notEqual(trace.spanId, PARENT_ID);
  assert.equal(headers.traceparent, `00-${TRACE_ID}-${trace.spanId}-01`);
  assert.equal(headers.tracestate, 'vendor=abc,other=1');
});

test('later version continued as version 00', () => {
  const headers: Record<string, string | string[]> = { traceparent: `cc-${TRACE_ID}-${PARENT_ID}-ff-extra` };
  const trace = continueTrace(headers, false);
  assert.equal(headers.traceparent, `00-${TRACE_ID}-${trace.spanId}-03`);
});

test('trace started when traceparent malformed', () => {
  const headers: Record<string, string | string[]> = { traceparent: `ff-${TRACE_ID}-${PARENT_ID}-01`, tracestate: 'vendor=abc' };
  const trace = continueTrace(headers, true);
  assert.equal(trace.started, true);
  assert.notEqual(trace.traceId, TRACE_ID);
  assert.equal(trace.parentSpanId, undefined);
  assert.equal(headers.traceparent, formatTraceparent(trace.traceId, trace.spanId, 1));
  assert.equal(headers.tracestate, undefined);
  assert.ok(parseTraceparent(headers.traceparent) !== undefined);
});

test('trace started unsampled without traceparent', () => {
  const headers: Record<string, string | string[]> = {};
  const trace = continueTrace(headers, false);
  assert.match(trace.traceId, /^[0-9a-f]{32}$/);
  assert.equal(headers.traceparent, `00-${trace.traceId}-${trace.spanId}-00`);
});

test('sampling rate checked', () => {
  for (const rate of [0, 0.25, 1]) assert.equal(checkSampleRate(rate, 'rate'), undefined);
  for (const rate of [-0.1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) assert.match(checkSampleRate(rate, 'rate') ?? '', /not a sampling rate/);
  assert.throws(() => new AccessLog({ sampleRate: 2, write: () => undefined }), RangeError);
});

test('access log path normalised without query', () => {
  const lines: string[] = [];
  const plain = new AccessLog({ sampleRate: 1, write: (line) => lines.push(line) });
  assert.equal(plain.loggedPath('/a/./b/../c?token=secret'), '/a/c');
  assert.equal(plain.loggedPath('/x%2Fy?token=secret'), '/x%2Fy');
  const withQuery = new AccessLog({ sampleRate: 1, includeQuery: true, write: (line) => lines.push(line) });
  assert.equal(withQuery.loggedPath('/a/./b?page=2'), '/a/b?page=2');
});

test('access log sampling keeps proxy errors', () => {
  const lines: string[] = [];
  const log = new AccessLog({ sampleRate: 0, write: (line) => lines.push(line) });
  assert.equal(log.sample(), false);
  const entry = { timestamp: new Date(0).toISOString(), direction: 'inbound' as const, source: 'a', destination: 'b', method: 'GET', path: '/', protocol: 'HTTP/1.1' as const, status: 200, bytes_received: 0, bytes_sent: 2, duration_ms: 1, trace_id: TRACE_ID, span_id: PARENT_ID };
  log.record(entry, false);
  assert.equal(lines.length, 0);
  log.record({ ...entry, status: 403, response_flag: 'SEALMESH_ERR_L7_REQUEST_DENIED' }, false);
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(line.type, 'access');
  assert.equal(line.response_flag, 'SEALMESH_ERR_L7_REQUEST_DENIED');
  assert.ok(lines[0]!.endsWith('\n'));
  assert.equal(new AccessLog({ sampleRate: 1, write: () => undefined }).sample(), true);
});
