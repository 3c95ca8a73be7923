import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { controlplaneBenchmark } from './controlplane.ts';
import { datapathBenchmark } from './datapath.ts';
import { storeRound, type StoreFigures } from './store.ts';
import { signingBenchmark } from './signing.ts';

/**
 * `npm run bench`: runs each benchmark side by side in one process, alternating the variants
 * round by round so that noise from other load on the machine hits both alike, and reports
 * medians, spreads and ratios. Results go to bench/results/<time>.json.
 */

const ROUNDS = Number(process.env.SEALMESH_BENCH_ROUNDS ?? 5);
const WRITES = Number(process.env.SEALMESH_BENCH_WRITES ?? 2000);
const READS = Number(process.env.SEALMESH_BENCH_READS ?? 20000);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function summary(values: number[]): { median: number; min: number; max: number; runs: number[] } {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), runs: values.map((value) => Math.round(value)) };
}

async function storeBenchmark(): Promise<Record<string, unknown>> {
  const results: Record<'unsealed' | 'sealed', StoreFigures[]> = { unsealed: [], sealed: [] };
  for (let round = 0; round < ROUNDS; round += 1) {
    // Alternate which variant goes first, so that warm-up and drift do not favour one.
    const order: Array<'unsealed' | 'sealed'> = round % 2 === 0 ? ['unsealed', 'sealed'] : ['sealed', 'unsealed'];
    for (const kind of order) results[kind].push(await storeRound(kind, WRITES, READS));
    process.stderr.write(`store round ${round + 1}/${ROUNDS} done\n`);
  }
  const figure = (kind: 'unsealed' | 'sealed', field: keyof StoreFigures) => summary(results[kind].map((entry) => entry[field]));
  const writes = { unsealed: figure('unsealed', 'writesPerSecond'), sealed: figure('sealed', 'writesPerSecond') };
  const reads = { unsealed: figure('unsealed', 'readsPerSecond'), sealed: figure('sealed', 'readsPerSecond') };
  return {
    parameters: { rounds: ROUNDS, writes: WRITES, reads: READS, valueBytes: 1024 },
    writesPerSecond: writes,
    readsPerSecond: reads,
    ratios: {
      writes: writes.sealed.median / writes.unsealed.median,
      reads: reads.sealed.median / reads.unsealed.median,
    },
  };
}

/**
 * Every benchmark by name. `npm run bench` runs them all in this order; `npm run bench -- NAME...`
 * runs the named ones. Each lives in a module of its own and returns a JSON-ready report.
 */
const BENCHMARKS: Record<string, () => Promise<Record<string, unknown>>> = {
  store: storeBenchmark,
  signing: signingBenchmark,
  datapath: datapathBenchmark,
  controlplane: controlplaneBenchmark,
};

const requested = process.argv.slice(2);
const unknown = requested.filter((name) => !(name in BENCHMARKS));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark ${unknown.join(', ')}; known: ${Object.keys(BENCHMARKS).join(', ')}\n`);
  process.exit(2);
}
const selected = requested.length > 0 ? requested : Object.keys(BENCHMARKS);
const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, openssl: process.versions.openssl };
const startedAt = new Date().toISOString();
const report: Record<string, unknown> = { startedAt, machine };
for (const name of selected) {
  report[name] = await (BENCHMARKS[name] as () => Promise<Record<string, unknown>>)();
}
mkdirSync(join('bench', 'results'), { recursive: true });
const path = join('bench', 'results', `${startedAt.replace(/[:.]/g, '-')}.json`);
writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(report, null, 2)}\nwritten to ${path}\n`);
