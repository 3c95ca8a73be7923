import { fork } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Readable } from 'node:stream';
import { ApiClient, ControlConnection } from '../src/client/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { TLS_CLIENT_OPTIONS } from '../src/tls/index.ts';
import { processUsage } from './datapath-setups.ts';
import { integerListSetting, integerSetting } from './settings.ts';

/**
 * The control-plane benchmark: simulated proxies, each with its own SVID and a watch stream over a
 * real mTLS connection on 127.0.0.1, against one control plane in a child process. It measures
 * SVIDs issued per second at enrollment and renewal with the server's CPU time per SVID, the time
 * an intention change takes to reach every stream, and the server's resident memory.
 */

const COUNTS = integerListSetting('SEALMESH_BENCH_PROXIES', [1000, 5000]).sort((a, b) => a - b);
const CHANGES = integerSetting('SEALMESH_BENCH_INTENTION_CHANGES', 5);
const CONCURRENCY = integerSetting('SEALMESH_BENCH_CP_CONCURRENCY', 32);
const SERVICES = 50;
const RENEWALS = integerSetting('SEALMESH_BENCH_RENEWALS', 1000);
const MIB = 1024 * 1024;

interface Simulated {
  service: string;
  csr: string;
  keyPem: Buffer;
  instanceId?: string;
  context?: SecureContext;
  /** The persistent HTTP/2 connection with the current SVID, as a proxy keeps it. */
  connection?: ControlConnection;
  stream?: Readable;
  /** Sources of the intentions in the last snapshot received. */
  sources: Set<string>;
  onSnapshot?: () => void;
}

/** Runs `work` over `items` with at most `limit` at once. */
async function pool<T>(items: T[], limit: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next;
      next += 1;
      await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Writes a progress line with the monotonic clock in microseconds, the clock of V8's CPU profiles
 * on Linux, so that a server profile can be cut at the phases of the run.
 */
function progress(message: string): void {
  process.stderr.write(`controlplane: ${message} [monotonic ${process.hrtime.bigint() / 1000n} us]\n`);
}

let retries = 0;

/** Runs `request` up to three times, as a proxy retries a failed call; counts the retries. */
async function withRetry<T>(request: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await request();
    } catch (error) {
      if (attempt >= 3) throw error;
      retries += 1;
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    }
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** Makes a new key pair and CSR for each proxy's next renewal, before the timed part. */
async function renewalKeys(proxies: Simulated[], trustDomain: string): Promise<Array<{ csr: string; keyPem: Buffer }>> {
  const result: Array<{ csr: string; keyPem: Buffer }> = [];
  for (const proxy of proxies) {
    const keys = await generateKeyPair();
    result.push({ csr: await generateCsr(formatSpiffeId({ trustDomain, namespace: 'default', service: proxy.service }), keys), keyPem: await privateKeyToPem(keys.privateKey) });
  }
  return result;
}

const round = (value: number): number => Math.round(value * 10) / 10;
const hundredths = (value: number): number => Math.round(value * 100) / 100;

async function openStream(client: ApiClient, proxy: Simulated): Promise<void> {
  const response = await client.with({ connection: proxy.connection }).stream(`/v1/watch?instance=${proxy.instanceId}`);
  proxy.stream = response;
  response.setEncoding('utf8');
  let buffered = '';
  response.on('data', (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
      const message = JSON.parse(line) as { type: string; snapshot?: { intentions: Array<{ source: string }> } };
      if (message.type !== 'snapshot' || message.snapshot === undefined) continue;
      proxy.sources = new Set(message.snapshot.intentions.map((intention) => intention.source));
      proxy.onSnapshot?.();
    }
  });
  response.on('error', () => {});
}

/** Changes one intention that applies to every proxy and times its arrival on each stream, in ms. */
async function timeIntentionChange(operator: ApiClient, proxies: Simulated[], source: string): Promise<number[]> {
  const arrivals: number[] = [];
  let start = 0;
  const all = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`intention change reached ${arrivals.length} of ${proxies.length} proxies within 60 s`)), 60_000);
    for (const proxy of proxies) {
      proxy.onSnapshot = () => {
        if (!proxy.sources.has(source)) return;
        proxy.onSnapshot = undefined;
        arrivals.push(performance.now() - start);
        if (arrivals.length === proxies.length) {
          clearTimeout(timer);
          resolve();
        }
      };
    }
  });
  start = performance.now();
  await operator.post('/v1/intentions', { source, destination: '*', action: 'allow', replace: true });
  await all;
  return arrivals.sort((a, b) => a - b);
}

export async function controlplaneBenchmark(): Promise<Record<string, unknown>> {
  const child = fork(join(import.meta.dirname, 'controlplane-server.ts'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: process.env.SEALMESH_BENCH_SERVER_ARGS?.split(' ').filter(Boolean) ?? [] });
  const started = await new Promise<{ url: string; ca: string[]; operatorToken: string }>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`control plane exited with code ${code} before it started`)));
    child.on('message', (message: { type: string; url: string; ca: string[]; operatorToken: string }) => {
      if (message.type === 'started') resolve(message);
    });
  });
  const pid = child.pid ?? 0;
  const rss = (): number => round(processUsage(pid).rssBytes / MIB);
  const serverCpuMs = (): number => processUsage(pid).cpuMs;
  try {
    const anonymous = new ApiClient({ url: started.url, ca: started.ca });
    const operator = anonymous.with({ token: started.operatorToken });
    const { trustDomain } = await anonymous.get<{ trustDomain: string }>('/v1/bundle');
    const total = COUNTS[COUNTS.length - 1] ?? 0;
    const rssAtStart = rss();

    progress(`generating ${total} keys and CSRs`);
    const proxies: Simulated[] = [];
    for (let index = 0; index < total; index += 1) {
      const service = `svc-${index % SERVICES}`;
      const keys = await generateKeyPair();
      const csr = await generateCsr(formatSpiffeId({ trustDomain, namespace: 'default', service }), keys);
      proxies.push({ service, csr, keyPem: await privateKeyToPem(keys.privateKey), sources: new Set() });
    }
    const tokens: string[] = [];
    await pool(proxies, CONCURRENCY, async (proxy, index) => {
      tokens[index] = (await withRetry(() => operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: proxy.service }))).token;
    });

    progress(`enrolling ${total} simulated proxies`);
    const enrollStart = performance.now();
    const enrollCpuStart = serverCpuMs();
    await pool(proxies, CONCURRENCY, async (proxy, index) => {
      const response = await withRetry(() =>
        anonymous.with({ token: tokens[index] }).post<{ instanceId: string; chainPem: string; bundle: string[] }>('/v1/svid/enroll', {
          csr: proxy.csr,
          address: '127.0.0.1',
          port: 20_000 + index,
          upstreams: [],
        }),
      );
      proxy.instanceId = response.instanceId;
      proxy.context = createSecureContext({ ...TLS_CLIENT_OPTIONS, key: proxy.keyPem, cert: response.chainPem, ca: [...new Set([...started.ca, ...response.bundle])] });
      proxy.connection = new ControlConnection(started.url, () => proxy.context as SecureContext);
    });
    const enrollSeconds = (performance.now() - enrollStart) / 1000;
    const enrollCpuMs = serverCpuMs() - enrollCpuStart;
    progress(`${total} enrolled in ${enrollSeconds.toFixed(1)} s, ${retries} requests retried`);
    const rssAfterEnroll = rss();

    const stages: Record<string, unknown>[] = [];
    let open = 0;
    let sourceIndex = 0;
    for (const count of COUNTS) {
      progress(`opening watch streams up to ${count}`);
      const opening = proxies.slice(open, count);
      const openStart = performance.now();
      await pool(opening, CONCURRENCY, (proxy) => withRetry(() => openStream(anonymous, proxy)));
      const openSeconds = (performance.now() - openStart) / 1000;
      open = count;
      // Let the first snapshots and the pushes that registrations caused settle.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const changes: Record<string, number>[] = [];
      const arrivals: number[] = [];
      for (let change = 0; change < CHANGES; change += 1) {
        sourceIndex += 1;
        const times = await timeIntentionChange(operator, proxies.slice(0, count), `probe-${sourceIndex}`);
        changes.push({ p50: round(percentile(times, 50)), p99: round(percentile(times, 99)), max: round(times[times.length - 1] ?? NaN) });
        arrivals.push(...times);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      arrivals.sort((a, b) => a - b);
      stages.push({
        proxies: count,
        streamsOpenedPerSecond: round(opening.length / openSeconds),
        intentionChangeMs: { p50: round(percentile(arrivals, 50)), p99: round(percentile(arrivals, 99)), max: round(arrivals[arrivals.length - 1] ?? NaN), perChange: changes },
        serverRssMiB: rss(),
      });
    }

    const renewing = proxies.slice(0, Math.min(RENEWALS, total));
    progress(`renewing ${renewing.length} SVIDs over the persistent connections, with every stream open`);
    const renewKeys = await renewalKeys(renewing, trustDomain);
    const renewStart = performance.now();
    const renewCpuStart = serverCpuMs();
    const renewed: Array<{ chainPem: string; bundle: string[] }> = [];
    await pool(renewing, CONCURRENCY, async (proxy, index) => {
      const client = anonymous.with({ connection: proxy.connection });
      renewed[index] = await withRetry(() => client.post<{ chainPem: string; bundle: string[] }>('/v1/svid/renew', { csr: renewKeys[index]?.csr, instanceId: proxy.instanceId }));
    });
    const renewSeconds = (performance.now() - renewStart) / 1000;
    const renewCpuMs = serverCpuMs() - renewCpuStart;

    // A proxy then moves its calls and its watch stream to a new connection with the new SVID: one
    // TLS handshake and one new stream each, measured apart from the renewals.
    progress(`moving ${renewing.length} proxies to connections with their new SVID`);
    const moveStart = performance.now();
    const moveCpuStart = serverCpuMs();
    await pool(renewing, CONCURRENCY, async (proxy, index) => {
      const response = renewed[index];
      const keys = renewKeys[index];
      if (response === undefined || keys === undefined) throw new Error(`renewal ${index} returned no SVID`);
      proxy.context = createSecureContext({ ...TLS_CLIENT_OPTIONS, key: keys.keyPem, cert: response.chainPem, ca: [...new Set([...started.ca, ...response.bundle])] });
      proxy.connection?.rotate();
      const old = proxy.stream;
      await withRetry(() => openStream(anonymous, proxy));
      old?.destroy();
    });
    const moveSeconds = (performance.now() - moveStart) / 1000;
    const moveCpuMs = serverCpuMs() - moveCpuStart;

    // The path before persistent connections, side by side: each renewal on a new HTTPS/1.1
    // connection with its own TLS handshake. Its proxies do not move their streams.
    progress(`renewing ${renewing.length} SVIDs on a new connection each`);
    const oldKeys = await renewalKeys(renewing, trustDomain);
    const oldStart = performance.now();
    const oldCpuStart = serverCpuMs();
    await pool(renewing, CONCURRENCY, async (proxy, index) => {
      await withRetry(() => anonymous.with({ secureContext: proxy.context }).post('/v1/svid/renew', { csr: oldKeys[index]?.csr, instanceId: proxy.instanceId }));
    });
    const oldSeconds = (performance.now() - oldStart) / 1000;
    const oldCpuMs = serverCpuMs() - oldCpuStart;
    progress('renewals done');

    for (const proxy of proxies) proxy.stream?.destroy();
    for (const proxy of proxies) proxy.connection?.close();
    return {
      parameters: { counts: COUNTS, intentionChanges: CHANGES, concurrency: CONCURRENCY, services: SERVICES, renewals: renewing.length },
      svidsPerSecond: {
        enroll: round(total / enrollSeconds),
        renew: round(renewing.length / renewSeconds),
        renewWithMove: round(renewing.length / (renewSeconds + moveSeconds)),
        renewOnNewConnection: round(renewing.length / oldSeconds),
      },
      // CPU time of the server process per SVID, TLS handshake and HTTP included, which bounds what
      // one core can issue apart from the benchmark process that shares the machine. `move` is the
      // new connection and watch stream that follow each renewal.
      serverCpuMsPerSvid: {
        enroll: hundredths(enrollCpuMs / total),
        renew: hundredths(renewCpuMs / renewing.length),
        move: hundredths(moveCpuMs / renewing.length),
        renewWithMove: hundredths((renewCpuMs + moveCpuMs) / renewing.length),
        renewOnNewConnection: hundredths(oldCpuMs / renewing.length),
      },
      stages,
      serverRssMiB: { atStart: rssAtStart, afterEnroll: rssAfterEnroll, end: rss() },
      retriedRequests: retries,
    };
  } finally {
    child.disconnect();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, 10_000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
