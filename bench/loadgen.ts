import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import * as hdr from 'hdr-histogram-js';

/**
 * A fixed-rate HTTP/1.1 load generator in the manner of wrk2. Request i is due at
 * `start + i / rate`, and its latency is measured from that due time, not from when a connection
 * became free to send it. This corrects for coordinated omission, because a stall of the system
 * under test counts against every request that should have been sent during it.
 */

export interface FixedRateOptions {
  port: number;
  path: string;
  /** Requests per second, spread evenly. */
  rate: number;
  connections: number;
  durationMs: number;
  /** Requests sent before recording starts, at the same rate. */
  warmupMs: number;
  /** Closes each connection after this many responses and opens a new one; never when absent. */
  requestsPerConnection?: number;
}

export interface LatencyFigures {
  rate: number;
  /** Responses recorded, after warm-up. */
  requests: number;
  achievedRps: number;
  /** Failed requests: non-200 status, reset or refused connections. */
  errors: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');

interface Connection {
  socket: Socket;
  /** Due time of the request in flight, or undefined when the connection is free. */
  due: number | undefined;
  buffered: Buffer;
  /** Body bytes still expected, or -1 while the header is incomplete. */
  remaining: number;
  status: number;
  served: number;
  ready: boolean;
}

export async function runFixedRate(options: FixedRateOptions): Promise<LatencyFigures> {
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  const request = Buffer.from(`GET ${options.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const intervalMs = 1000 / options.rate;
  const totalMs = options.warmupMs + options.durationMs;
  const total = Math.floor((totalMs * options.rate) / 1000);
  const queue: number[] = [];
  const connections: Connection[] = [];
  let start = 0;
  let recordFrom = 0;
  let next = 0;
  let finished = 0;
  let recorded = 0;
  let errors = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let done: () => void = () => {};
  const allDone = new Promise<void>((resolve) => {
    done = resolve;
  });

  const complete = (connection: Connection, ok: boolean): void => {
    const due = connection.due;
    if (due === undefined) return;
    connection.due = undefined;
    finished += 1;
    if (due >= recordFrom) {
      if (ok) {
        histogram.recordValue(Math.max(1, Math.round((performance.now() - due) * 1000)));
        recorded += 1;
      } else {
        errors += 1;
      }
    }
    if (finished >= total) done();
  };

  const open = (connection: Connection): void => {
    const socket = connect({ host: '127.0.0.1', port: options.port, noDelay: true });
    connection.socket = socket;
    connection.ready = false;
    connection.buffered = Buffer.alloc(0);
    connection.remaining = -1;
    connection.served = 0;
    socket.on('connect', () => {
      connection.ready = true;
      dispatch(connection);
    });
    socket.on('data', (chunk: Buffer) => onData(connection, chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (connection.socket !== socket) return;
      complete(connection, false);
      // A short pause keeps a refused connection from turning into a busy loop.
      if (!stopped && finished < total) setTimeout(() => open(connection), 10);
    });
  };

  const dispatch = (connection: Connection): void => {
    if (!connection.ready || connection.due !== undefined) return;
    const due = queue.shift();
    if (due === undefined) return;
    connection.due = due;
    connection.remaining = -1;
    connection.socket.write(request);
  };

  const onData = (connection: Connection, chunk: Buffer): void => {
    if (connection.remaining < 0) {
      connection.buffered = connection.buffered.length === 0 ? chunk : Buffer.concat([connection.buffered, chunk]);
      const end = connection.buffered.indexOf(HEADER_END);
      if (end < 0) return;
      const header = connection.buffered.subarray(0, end).toString('latin1');
      connection.status = Number(header.slice(9, 12));
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(header);
      connection.remaining = Number(length?.[1] ?? 0) - (connection.buffered.length - end - HEADER_END.length);
      connection.buffered = Buffer.alloc(0);
    } else {
      connection.remaining -= chunk.length;
    }
    if (connection.remaining > 0) return;
    complete(connection, connection.status === 200);
    connection.served += 1;
    if (options.requestsPerConnection !== undefined && connection.served >= options.requestsPerConnection && !stopped && finished < total) {
      const old = connection.socket;
      open(connection);
      old.destroy();
      return;
    }
    dispatch(connection);
  };

  const pump = (): void => {
    const now = performance.now();
    while (next < total && start + next * intervalMs <= now) {
      queue.push(start + next * intervalMs);
      next += 1;
    }
    for (const connection of connections) {
      if (queue.length === 0) break;
      dispatch(connection);
    }
    if (next < total) timer = setTimeout(pump, Math.max(0, start + next * intervalMs - performance.now()));
  };

  for (let index = 0; index < options.connections; index += 1) {
    const connection: Connection = { socket: undefined as unknown as Socket, due: undefined, buffered: Buffer.alloc(0), remaining: -1, status: 0, served: 0, ready: false };
    connections.push(connection);
    open(connection);
  }
  start = performance.now();
  recordFrom = start + options.warmupMs;
  pump();
  // Requests still queued or in flight well after the last one was due are failures.
  const overrun = setTimeout(() => done(), totalMs + 10_000);
  await allDone;
  stopped = true;
  clearTimeout(overrun);
  if (timer !== undefined) clearTimeout(timer);
  errors += total - finished;
  for (const connection of connections) connection.socket.destroy();
  const ms = (percentile: number): number => histogram.getValueAtPercentile(percentile) / 1000;
  const figures: LatencyFigures = {
    rate: options.rate,
    requests: recorded,
    achievedRps: recorded / (options.durationMs / 1000),
    errors,
    p50: ms(50),
    p90: ms(90),
    p99: ms(99),
    p999: ms(99.9),
    max: histogram.maxValue / 1000,
  };
  histogram.destroy();
  return figures;
}
