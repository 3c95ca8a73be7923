import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { SealmeshError } from '../src/errors/index.ts';
import { runFixedRate, type LatencyFigures } from './loadgen.ts';
import { NGINX_STREAM_MODULE, processUsage, startBench, TOOL_PACKAGES, type Bench } from './datapath-setups.ts';
import { choiceListSetting, integerListSetting, integerSetting } from './settings.ts';

/**
 * The data-path benchmark: the same nginx backend reached directly (B0) and through three pairs
 * of proxies with mTLS between them (sealmesh, HAProxy, nginx stream), measured side by side in
 * each round, with the order of the setups rotated round by round.
 */

// wrk takes its duration in whole seconds, so every duration setting is a whole number.
const DURATION_S = integerSetting('SEALMESH_BENCH_DURATION_S', 5);
const WARMUP_S = integerSetting('SEALMESH_BENCH_WARMUP_S', 1, 0);
const ROUNDS = integerSetting('SEALMESH_BENCH_DATAPATH_ROUNDS', 3);
const ROTATE_EVERY_S = integerSetting('SEALMESH_BENCH_ROTATE_S', 2);
const RATES = integerListSetting('SEALMESH_BENCH_RATES', [1000, 5000]);
const LATENCY_CONNECTIONS = 16;
const SATURATION_CONNECTIONS = 64;
const BULK_CONNECTIONS = 8;
const NEW_CONNECTION_CLIENTS = 16;
/** Setups and scenarios to run, for profiling one of them; all when unset. */
const SETUP_NAMES = ['direct', 'sealmesh', 'haproxy', 'nginx'] as const;
const SCENARIO_NAMES = ['latency', 'saturation', 'bulk', 'connections', 'rotation'] as const;
const SETUPS = choiceListSetting('SEALMESH_BENCH_SETUPS', SETUP_NAMES);
const SCENARIOS = choiceListSetting('SEALMESH_BENCH_SCENARIOS', SCENARIO_NAMES);
const wanted = (scenario: (typeof SCENARIO_NAMES)[number]): boolean => SCENARIOS === undefined || SCENARIOS.includes(scenario);

type SetupName = (typeof SETUP_NAMES)[number];

interface Target {
  name: SetupName;
  port: number;
  /** Proxy processes of the setup: client side, then server side; none for the direct setup. */
  pids: number[];
}

interface WrkFigures {
  rps: number;
  mibPerSecond: number;
  errors: number;
  /** CPU time (user plus system) of the setup's proxy processes per 1,000 requests; 0 for the direct setup. */
  cpuMsPer1000: number;
}

/** One setup's figures of one round. A scenario that SEALMESH_BENCH_SCENARIOS leaves out is absent. */
export interface RoundFigures {
  latency: Record<string, LatencyFigures & { cpuMsPer1000: number; rssBytes: number[] }>;
  saturation?: WrkFigures;
  bulk?: WrkFigures;
  newConnections?: WrkFigures;
}

/** The wrk scenarios with the figure each reports per setup. */
const WRK_SCENARIOS = [
  { scenario: 'saturation', label: 'saturationRps', figure: (figures: WrkFigures) => figures.rps },
  { scenario: 'bulk', label: 'bulkMiBPerSecond', figure: (figures: WrkFigures) => figures.mibPerSecond },
  { scenario: 'newConnections', label: 'newConnectionsPerSecond', figure: (figures: WrkFigures) => figures.rps },
] as const;

/** Checks every external tool and returns their versions; a missing one stops the benchmark with the install line. */
export function checkTools(): Record<string, string> {
  const missing = new Set<string>();
  for (const [tool, pkg] of Object.entries(TOOL_PACKAGES)) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) missing.add(pkg);
  }
  if (!existsSync(NGINX_STREAM_MODULE)) missing.add('libnginx-mod-stream');
  if (missing.size > 0) {
    const packages = [...missing].join(' ');
    throw new SealmeshError('SEALMESH_ERR_BENCH_TOOL_MISSING', `the data-path benchmark needs Debian packages that are not installed (${packages}); install them with \`apt-get install -y ${packages}\``);
  }
  const firstLine = (command: string, args: string[]): string => {
    const result = spawnSync(command, args, { encoding: 'utf8' });
    return `${result.stdout}${result.stderr}`.split('\n')[0]?.trim() ?? '';
  };
  return {
    wrk: firstLine('wrk', ['--version']),
    h2load: firstLine('h2load', ['--version']),
    haproxy: firstLine('haproxy', ['-v']),
    nginx: firstLine('nginx', ['-v']),
    nginxOpenssl: spawnSync('nginx', ['-V'], { encoding: 'utf8' }).stderr.split('\n').find((line) => line.startsWith('built with OpenSSL'))?.trim() ?? '',
    haproxyOpenssl: execFileSync('haproxy', ['-vv'], { encoding: 'utf8' }).split('\n').find((line) => line.startsWith('Running on OpenSSL'))?.trim() ?? '',
    nodeOpenssl: process.versions.openssl,
  };
}

const BYTE_UNITS: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };

/**
 * Runs wrk for DURATION_S and returns requests per second, MiB per second, failed requests and the
 * CPU time that the setup's proxies spent per 1,000 requests.
 */
function runWrk(target: Target, path: string, connections: number, extraArgs: string[] = []): WrkFigures {
  const { port } = target;
  const cpuBefore = target.pids.map((pid) => processUsage(pid).cpuMs);
  const result = spawnSync('wrk', ['-t1', `-c${connections}`, `-d${DURATION_S}s`, ...extraArgs, `http://127.0.0.1:${port}${path}`], { encoding: 'utf8', timeout: (DURATION_S + 30) * 1000 });
  const output = result.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? NaN);
  const transfer = /Transfer\/sec:\s+([\d.]+)(\w+)/.exec(output);
  const mibPerSecond = transfer === null ? NaN : (Number(transfer[1]) * (BYTE_UNITS[transfer[2] ?? 'B'] ?? 1)) / 1024 ** 2;
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  // Without keep-alive the server's close after each response is no error, so read errors are left out there.
  const closing = extraArgs.includes('Connection: close');
  const socketErrors = socket === null ? 0 : Number(socket[1]) + (closing ? 0 : Number(socket[2])) + Number(socket[3]) + Number(socket[4]);
  if (Number.isNaN(rps)) process.stderr.write(`wrk printed no result for port ${port}: ${output}${result.stderr}\n`);
  const cpuMs = target.pids.reduce((sum, pid, index) => sum + processUsage(pid).cpuMs - (cpuBefore[index] ?? 0), 0);
  const requests = Number(/(\d+) requests in/.exec(output)?.[1] ?? NaN);
  const cpuMsPer1000 = target.pids.length === 0 ? 0 : (cpuMs / requests) * 1000;
  return { rps, mibPerSecond, errors: non2xx + socketErrors, cpuMsPer1000 };
}

/** Runs the fixed-rate scenario and reads the proxies' CPU time and peak RSS over it. */
async function runLatency(target: Target, rate: number): Promise<LatencyFigures & { cpuMsPer1000: number; rssBytes: number[] }> {
  const cpuBefore = target.pids.map((pid) => processUsage(pid).cpuMs);
  const peakRss = target.pids.map(() => 0);
  const sampler = setInterval(() => {
    target.pids.forEach((pid, index) => {
      peakRss[index] = Math.max(peakRss[index] ?? 0, processUsage(pid).rssBytes);
    });
  }, 250);
  const figures = await runFixedRate({ port: target.port, path: '/1k', rate, connections: LATENCY_CONNECTIONS, durationMs: DURATION_S * 1000, warmupMs: WARMUP_S * 1000 });
  clearInterval(sampler);
  const cpuMs = target.pids.reduce((sum, pid, index) => sum + processUsage(pid).cpuMs - (cpuBefore[index] ?? 0), 0);
  const sent = (rate * (DURATION_S + WARMUP_S));
  return { ...figures, cpuMsPer1000: target.pids.length === 0 ? 0 : (cpuMs / sent) * 1000, rssBytes: peakRss };
}

async function runRound(target: Target): Promise<RoundFigures> {
  const figures: RoundFigures = { latency: {} };
  if (wanted('latency')) for (const rate of RATES) figures.latency[String(rate)] = await runLatency(target, rate);
  if (wanted('saturation')) figures.saturation = runWrk(target, '/1k', SATURATION_CONNECTIONS);
  if (wanted('bulk')) figures.bulk = runWrk(target, '/1m', BULK_CONNECTIONS);
  if (wanted('connections')) figures.newConnections = runWrk(target, '/1k', NEW_CONNECTION_CLIENTS, ['-H', 'Connection: close']);
  return figures;
}

/** Scenario 5: fixed-rate load on sealmesh while both proxies renew their SVIDs in turn. */
async function runRotation(bench: Bench, target: Target): Promise<Record<string, unknown>> {
  let renewals = 0;
  let renewalErrors = 0;
  let side: 'client' | 'server' = 'client';
  let running = true;
  const loop = (async () => {
    while (running) {
      await new Promise((resolve) => setTimeout(resolve, ROTATE_EVERY_S * 1000));
      if (!running) break;
      try {
        await bench.renew(side);
        renewals += 1;
      } catch (error) {
        renewalErrors += 1;
        process.stderr.write(`${(error as Error).message}\n`);
      }
      side = side === 'client' ? 'server' : 'client';
    }
  })();
  // Each connection is replaced after 200 responses, so new mTLS handshakes keep happening across rotations.
  const figures = await runFixedRate({ port: target.port, path: '/1k', rate: 1000, connections: LATENCY_CONNECTIONS, durationMs: DURATION_S * 2 * 1000, warmupMs: WARMUP_S * 1000, requestsPerConnection: 200 });
  running = false;
  await loop;
  return { ...figures, renewals, renewalErrors, rotateEverySeconds: ROTATE_EVERY_S };
}

function median(values: number[]): number {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? NaN) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

function spread(values: number[]): Spread {
  const round = (value: number): number => Math.round(value * 1000) / 1000;
  return { median: round(median(values)), min: round(Math.min(...values)), max: round(Math.max(...values)), runs: values.map(round) };
}

export async function datapathBenchmark(): Promise<Record<string, unknown>> {
  const tools = checkTools();
  process.stderr.write(`datapath: ${ROUNDS} rounds of ${DURATION_S} s measurements; starting the setups\n`);
  const bench = await startBench();
  try {
    const targets: Target[] = [
      { name: 'direct' as const, port: bench.backendPort, pids: [] },
      ...bench.pairs.map((pair) => ({ name: pair.name, port: pair.port, pids: [pair.client.pid ?? 0, pair.server.pid ?? 0] })),
    ].filter((target) => SETUPS === undefined || SETUPS.includes(target.name));
    // A few requests through every setup first, so that idle memory is read after the first connection.
    for (const target of targets) await runFixedRate({ port: target.port, path: '/1k', rate: 100, connections: 2, durationMs: 200, warmupMs: 0 });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const idleRss: Record<string, number[]> = {};
    const idleRssAnon: Record<string, number[]> = {};
    const idleRssFile: Record<string, number[]> = {};
    for (const target of targets.filter((entry) => entry.pids.length > 0)) {
      const usages = target.pids.map((pid) => processUsage(pid));
      idleRss[target.name] = usages.map((usage) => usage.rssBytes);
      idleRssAnon[target.name] = usages.map((usage) => usage.rssAnonBytes);
      idleRssFile[target.name] = usages.map((usage) => usage.rssFileBytes);
    }

    const rounds: Record<string, RoundFigures[]> = Object.fromEntries(targets.map((target) => [target.name, []]));
    const rotation: Record<string, unknown>[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = targets.map((_, index) => targets[(index + round) % targets.length] as Target);
      for (const target of order) {
        process.stderr.write(`datapath round ${round + 1}/${ROUNDS}: ${target.name}\n`);
        (rounds[target.name] as RoundFigures[]).push(await runRound(target));
      }
      const sealmesh = targets.find((target) => target.name === 'sealmesh');
      if (sealmesh === undefined || !wanted('rotation')) continue;
      process.stderr.write(`datapath round ${round + 1}/${ROUNDS}: sealmesh under SVID rotation\n`);
      rotation.push(await runRotation(bench, sealmesh));
    }
    const idleRssAfter: Record<string, number[]> = {};
    for (const target of targets.filter((entry) => entry.pids.length > 0)) idleRssAfter[target.name] = target.pids.map((pid) => processUsage(pid).rssBytes);
    return { parameters: { rounds: ROUNDS, durationSeconds: DURATION_S, warmupSeconds: WARMUP_S, rates: RATES, latencyConnections: LATENCY_CONNECTIONS, saturationConnections: SATURATION_CONNECTIONS, bulkConnections: BULK_CONNECTIONS, newConnectionClients: NEW_CONNECTION_CLIENTS }, tools, ...summarize(rounds, { total: idleRss, anonymous: idleRssAnon, fileBacked: idleRssFile }, idleRssAfter), rotation };
  } finally {
    await bench.stop();
  }
}

const MIB = 1024 * 1024;

/**
 * Returns medians with spreads per setup, and per-round ratios to the direct setup and between
 * proxies. A wrk scenario that did not run in every round of every setup is left out of the report.
 */
export function summarize(
  rounds: Record<string, RoundFigures[]>,
  idleRss: { total: Record<string, number[]>; anonymous: Record<string, number[]>; fileBacked: Record<string, number[]> },
  idleRssAfter: Record<string, number[]>,
): Record<string, unknown> {
  const names = Object.keys(rounds) as SetupName[];
  const latencyRates = RATES.filter((rate) => names.every((name) => rounds[name]?.[0]?.latency[String(rate)] !== undefined));
  const proxies = names.filter((name) => name !== 'direct');
  const perSetup = (pick: (figures: RoundFigures) => number): Record<string, Spread> => Object.fromEntries(names.map((name) => [name, spread((rounds[name] ?? []).map(pick))]));
  /** The median over rounds of a figure computed from two setups of the same round. */
  const paired = (a: SetupName, b: SetupName, combine: (x: RoundFigures, y: RoundFigures) => number): Spread =>
    spread((rounds[a] ?? []).map((figures, index) => combine(figures, (rounds[b] ?? [])[index] as RoundFigures)));

  const results: Record<string, unknown> = {};
  const latency: Record<string, unknown> = {};
  for (const rate of latencyRates) {
    const key = String(rate);
    const pick = (field: 'p50' | 'p90' | 'p99' | 'p999') => perSetup((figures) => figures.latency[key]?.[field] ?? NaN);
    latency[key] = {
      ms: { p50: pick('p50'), p90: pick('p90'), p99: pick('p99'), p999: pick('p999') },
      errors: perSetup((figures) => figures.latency[key]?.errors ?? NaN),
      addedP99Ms: Object.fromEntries(proxies.filter(() => names.includes('direct')).map((name) => [name, paired(name, 'direct', (x, y) => (x.latency[key]?.p99 ?? NaN) - (y.latency[key]?.p99 ?? NaN))])),
      addedP50Ms: Object.fromEntries(proxies.filter(() => names.includes('direct')).map((name) => [name, paired(name, 'direct', (x, y) => (x.latency[key]?.p50 ?? NaN) - (y.latency[key]?.p50 ?? NaN))])),
      cpuMsPer1000Requests: Object.fromEntries(proxies.map((name) => [name, spread((rounds[name] ?? []).map((figures) => figures.latency[key]?.cpuMsPer1000 ?? NaN))])),
      peakRssMiB: Object.fromEntries(proxies.map((name) => [name, ['client', 'server'].map((_, side) => spread((rounds[name] ?? []).map((figures) => (figures.latency[key]?.rssBytes[side] ?? NaN) / MIB)))])),
    };
  }
  results.latency = latency;
  const throughput = (label: string, pick: (figures: RoundFigures) => number) => {
    const ratios: Record<string, Spread> = {};
    if (names.includes('direct')) for (const name of proxies) ratios[`${name}/direct`] = paired(name, 'direct', (x, y) => pick(x) / pick(y));
    for (const peer of proxies.filter((name) => name !== 'sealmesh' && names.includes('sealmesh'))) ratios[`sealmesh/${peer}`] = paired('sealmesh', peer, (x, y) => pick(x) / pick(y));
    results[label] = { figures: perSetup(pick), ratios };
  };
  const measured = WRK_SCENARIOS.filter(({ scenario }) => names.length > 0 && names.every((name) => (rounds[name] ?? []).every((figures) => figures[scenario] !== undefined)));
  const wrkFigures = (figures: RoundFigures, scenario: (typeof WRK_SCENARIOS)[number]['scenario']): WrkFigures => figures[scenario] as WrkFigures;
  for (const { scenario, label, figure } of measured) throughput(label, (figures) => figure(wrkFigures(figures, scenario)));
  const cpuMsPer1000Requests: Record<string, unknown> = {};
  const wrkErrors: Record<string, unknown> = {};
  for (const { scenario } of measured) {
    cpuMsPer1000Requests[scenario] = Object.fromEntries(proxies.map((name) => [name, spread((rounds[name] ?? []).map((figures) => wrkFigures(figures, scenario).cpuMsPer1000))]));
    wrkErrors[scenario] = perSetup((figures) => wrkFigures(figures, scenario).errors);
  }
  results.cpuMsPer1000Requests = cpuMsPer1000Requests;
  results.wrkErrors = wrkErrors;
  const toMiB = (values: Record<string, number[]>) => Object.fromEntries(Object.entries(values).map(([name, list]) => [name, list.map((bytes) => Math.round((bytes / MIB) * 10) / 10)]));
  results.idleRssMiB = {
    afterStart: toMiB(idleRss.total),
    // Anonymous memory is each process's own. File-backed pages, mostly of the executable, are shared by every process that runs it.
    afterStartAnonymous: toMiB(idleRss.anonymous),
    afterStartFileBacked: toMiB(idleRss.fileBacked),
    afterLoad: toMiB(idleRssAfter),
    order: ['client side', 'server side'],
  };
  return results;
}
