import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize, type RoundFigures } from '../bench/datapath.ts';

function wrk(rps: number, errors: number): NonNullable<RoundFigures['saturation']> {
  return { rps, mibPerSecond: rps / 1024, errors, cpuMsPer1000: 50 };
}

test('datapath report omits skipped scenarios', () => {
  // As with SEALMESH_BENCH_SCENARIOS=saturation, only the saturation figures exist.
  const rounds: Record<string, RoundFigures[]> = {
    direct: [{ latency: {}, saturation: wrk(8000, 0) }],
    sealmesh: [{ latency: {}, saturation: wrk(2000, 3) }],
  };
  const report = summarize(rounds, { total: {}, anonymous: {}, fileBacked: {} }, {});

  assert.deepEqual(Object.keys(report.wrkErrors as object), ['saturation']);
  assert.deepEqual(Object.keys(report.cpuMsPer1000Requests as object), ['saturation']);
  assert.ok('saturationRps' in report);
  assert.ok(!('bulkMiBPerSecond' in report), 'no bulk figures for a bulk scenario that did not run');
  assert.ok(!('newConnectionsPerSecond' in report));

  const errors = report.wrkErrors as Record<string, Record<string, { median: number }>>;
  assert.equal(errors.saturation?.sealmesh?.median, 3);
  const saturation = report.saturationRps as { ratios: Record<string, { median: number }> };
  assert.equal(saturation.ratios['sealmesh/direct']?.median, 0.25);
});
