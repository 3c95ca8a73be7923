import type { Readable } from 'node:stream';
import type { ApiClient } from '../client/index.ts';
import { isSealmeshError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';
import type { ProxySnapshot } from '../server/index.ts';

const INITIAL_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 15_000;
/** The server sends a heartbeat every 15 s; a stream silent for longer than this is dead. */
const IDLE_TIMEOUT_MS = 45_000;
/** Largest line accepted on the watch stream. */
const MAX_LINE_BYTES = 8 * 1024 * 1024;

export interface WatchClientOptions {
  client: () => ApiClient;
  instanceId: () => string;
  onSnapshot: (snapshot: ProxySnapshot) => void;
  onConnected: (connected: boolean) => void;
  /** Registers the instance again after the server reports it unknown, for example after its lease lapsed. */
  onUnknownInstance: () => Promise<void>;
  log: Logger;
}

/**
 * Keeps one watch stream to the control plane open, reconnecting with jittered exponential backoff.
 * While the server is unreachable the proxy keeps serving with its last snapshot.
 */
export class WatchClient {
  readonly #options: WatchClientOptions;
  #stopped = false;
  /** Set when the stream is dropped on purpose, for a new certificate, so its end is not a warning. */
  #reconnecting = false;
  #response: Readable | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #backoffMs = INITIAL_BACKOFF_MS;

  constructor(options: WatchClientOptions) {
    this.#options = options;
  }

  start(): void {
    void this.#connect();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#response?.destroy();
  }

  /** Drops the current stream so that the next one uses a new client certificate. */
  reconnect(): void {
    this.#reconnecting = true;
    // Reported at once, so that the gauge reads connected only once the new stream is open.
    if (this.#response !== undefined) this.#options.onConnected(false);
    this.#response?.destroy();
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    try {
      const response = await this.#options.client().stream(`/v1/watch?instance=${encodeURIComponent(this.#options.instanceId())}`);
      if (this.#stopped) {
        response.destroy();
        return;
      }
      this.#response = response;
      this.#options.onConnected(true);
      this.#options.log.info('watch stream to the control plane open');
      await this.#read(response);
      if (this.#stopped) return;
      if (this.#reconnecting) this.#options.log.info('watch stream closed to reopen it with the renewed SVID');
      else this.#options.log.warn('watch stream to the control plane ended; reconnecting');
      this.#reconnecting = false;
    } catch (error) {
      if (isSealmeshError(error, 'SEALMESH_ERR_NOT_FOUND')) {
        this.#options.log.warn('the control plane no longer knows this instance; registering it again');
        try {
          await this.#options.onUnknownInstance();
          this.#backoffMs = INITIAL_BACKOFF_MS;
        } catch (registerError) {
          this.#options.log.warn({ err: registerError }, 'failed to register the instance again');
        }
      } else {
        this.#options.log.warn({ code: isSealmeshError(error) ? error.code : undefined, reason: (error as Error).message }, 'watch stream to the control plane failed');
      }
    } finally {
      this.#response = undefined;
      this.#options.onConnected(false);
    }
    this.#scheduleReconnect();
  }

  async #read(response: Readable): Promise<void> {
    let idle: NodeJS.Timeout | undefined;
    const resetIdle = (): void => {
      if (idle !== undefined) clearTimeout(idle);
      idle = setTimeout(() => response.destroy(new Error('watch stream idle')), IDLE_TIMEOUT_MS);
    };
    resetIdle();
    // The stream is read directly rather than through readline, whose iterator never finishes when
    // the response is destroyed without an 'end' event, as happens on reconnect.
    response.setEncoding('utf8');
    let buffered = '';
    try {
      for await (const chunk of response as AsyncIterable<string>) {
        resetIdle();
        this.#backoffMs = INITIAL_BACKOFF_MS;
        buffered += chunk;
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          newline = buffered.indexOf('\n');
          if (line.length === 0) continue;
          const message = JSON.parse(line) as { type: string; snapshot?: ProxySnapshot };
          if (message.type === 'snapshot' && message.snapshot !== undefined) this.#options.onSnapshot(message.snapshot);
        }
        // What is left is the start of an unfinished line.
        if (buffered.length > MAX_LINE_BYTES) throw new Error(`watch stream line longer than ${MAX_LINE_BYTES} bytes`);
      }
    } catch (error) {
      if (!this.#stopped && !this.#reconnecting) this.#options.log.warn({ reason: (error as Error).message }, 'watch stream read failed');
    } finally {
      if (idle !== undefined) clearTimeout(idle);
    }
  }

  #scheduleReconnect(): void {
    if (this.#stopped) return;
    const delay = this.#backoffMs * (0.5 + Math.random() * 0.5);
    this.#backoffMs = Math.min(MAX_BACKOFF_MS, this.#backoffMs * 2);
    this.#retryTimer = setTimeout(() => void this.#connect(), delay);
  }
}
