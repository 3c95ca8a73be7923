import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { isSealmeshError, SealmeshError } from '../src/errors/index.ts';
import { integerSetting } from './settings.ts';
import { storeRound, type StoreFigures } from './store.ts';

/**
 * `npm run bench`: runs each benchmark side by side in one process, alternating the variants
 * round by round so that noise from other load on the machine hits both alike, and reports
 * medians, spreads and ratios. Results go to bench/results/<time>.json.
 */

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function summary(values: number[]): { median: number; min: number; max: number; runs: number[] } {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), runs: values.map((value) => Math.round(value)) };
}

interface StoreSettings {
  rounds: number;
  writes: number;
  reads: number;
}

function storeSettings(): StoreSettings {
  return {
    rounds: integerSetting('SEALMESH_BENCH_ROUNDS', 5),
    writes: integerSetting('SEALMESH_BENCH_WRITES', 2000),
    reads: integerSetting('SEALMESH_BENCH_READS', 20000),
  };
}

async function storeBenchmark(settings: StoreSettings): Promise<Record<string, unknown>> {
  const results: Record<'unsealed' | 'sealed', StoreFigures[]> = { unsealed: [], sealed: [] };
  for (let round = 0; round < settings.rounds; round += 1) {
    // Alternate which variant goes first, so that warm-up and drift do not favour one.
    const order: Array<'unsealed' | 'sealed'> = round % 2 === 0 ? ['unsealed', 'sealed'] : ['sealed', 'unsealed'];
    for (const kind of order) results[kind].push(await storeRound(kind, settings.writes, settings.reads));
    process.stderr.write(`store round ${round + 1}/${settings.rounds} done\n`);
  }
  const figure = (kind: 'unsealed' | 'sealed', field: keyof StoreFigures) => summary(results[kind].map((entry) => entry[field]));
  const writes = { unsealed: figure('unsealed', 'writesPerSecond'), sealed: figure('sealed', 'writesPerSecond') };
  const reads = { unsealed: figure('unsealed', 'readsPerSecond'), sealed: figure('sealed', 'readsPerSecond') };
  return {
    parameters: { ...settings, valueBytes: 1024 },
    writesPerSecond: writes,
    readsPerSecond: reads,
    ratios: {
      writes: writes.sealed.median / writes.unsealed.median,
      reads: reads.sealed.median / reads.unsealed.median,
    },
  };
}

type BenchmarkRun = () => Promise<Record<string, unknown>>;

/**
 * Every benchmark by name. `npm run bench` runs them all in this order; `npm run bench -- NAME...`
 * runs the named ones. Each lives in a module of its own and returns a JSON-ready report. Loading
 * one reads its settings and checks the programs it needs, so that a bad setting or a missing tool
 * stops the run before any benchmark has started.
 */
const BENCHMARKS: Record<string, () => Promise<BenchmarkRun>> = {
  store: async () => {
    const settings = storeSettings();
    return () => storeBenchmark(settings);
  },
  signing: async () => {
    const { checkSoftHsm, signingBenchmark } = await import('./signing.ts');
    checkSoftHsm();
    return signingBenchmark;
  },
  datapath: async () => {
    const { checkTools, datapathBenchmark } = await import('./datapath.ts');
    checkTools();
    return datapathBenchmark;
  },
  controlplane: async () => (await import('./controlplane.ts')).controlplaneBenchmark,
};

async function main(): Promise<void> {
  const requested = process.argv.slice(2);
  const unknown = requested.filter((name) => !(name in BENCHMARKS));
  if (unknown.length > 0) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `unknown benchmark ${unknown.join(', ')}; known: ${Object.keys(BENCHMARKS).join(', ')}`);
  }
  const selected = requested.length > 0 ? requested : Object.keys(BENCHMARKS);
  const runs: Array<[string, BenchmarkRun]> = [];
  for (const name of selected) runs.push([name, await (BENCHMARKS[name] as () => Promise<BenchmarkRun>)()]);

  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, openssl: process.versions.openssl };
  const startedAt = new Date().toISOString();
  const report: Record<string, unknown> = { startedAt, machine };
  mkdirSync(join('bench', 'results'), { recursive: true });
  const path = join('bench', 'results', `${startedAt.replace(/[:.]/g, '-')}.json`);
  for (const [name, run] of runs) {
    report[name] = await run();
    // Written after each benchmark, so that one that fails later leaves the finished results.
    writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  }
  process.stdout.write(`${JSON.stringify(report, null, 2)}\nwritten to ${path}\n`);
}

try {
  await main();
} catch (error) {
  if (!isSealmeshError(error)) throw error;
  // A bad setting or benchmark name is a usage error (exit 2), as in the sealmesh CLI.
  process.stderr.write(`error: ${error.message} (${error.code})\n`);
  process.exitCode = error.code === 'SEALMESH_ERR_CONFIG_INVALID' ? 2 : 1;
}
