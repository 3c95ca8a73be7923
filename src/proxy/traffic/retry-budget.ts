import type { TrafficSettings } from './settings.ts';

/** Length of the window over which requests and retries are counted, in seconds. */
const WINDOW_SECONDS = 10;

/**
 * Limits retries to a share of recent requests plus a minimum rate, so that retries cannot
 * multiply the load on an upstream that is already failing. Requests and retries are counted in
 * one-second buckets over the last ten seconds.
 */
export class RetryBudget {
  readonly #settings: TrafficSettings['retries'];
  readonly #now: () => number;
  readonly #requests = new Array<number>(WINDOW_SECONDS).fill(0);
  readonly #retries = new Array<number>(WINDOW_SECONDS).fill(0);
  #second = 0;

  constructor(settings: TrafficSettings['retries'], now: () => number = Date.now) {
    this.#settings = settings;
    this.#now = now;
    this.#second = Math.floor(now() / 1000);
  }

  recordRequest(): void {
    this.#advance();
    this.#requests[this.#second % WINDOW_SECONDS]! += 1;
  }

  /** Takes one retry from the budget; returns false when the budget is spent. */
  tryAcquire(): boolean {
    this.#advance();
    const requests = this.#requests.reduce((sum, value) => sum + value, 0);
    const retries = this.#retries.reduce((sum, value) => sum + value, 0);
    const allowed = this.#settings.minRetriesPerSecond * WINDOW_SECONDS + this.#settings.budgetRatio * requests;
    if (retries + 1 > allowed) return false;
    this.#retries[this.#second % WINDOW_SECONDS]! += 1;
    return true;
  }

  /** Returns the jittered backoff before retry number `retry` (1 for the first retry). */
  backoffMs(retry: number, random: () => number = Math.random): number {
    const ceiling = Math.min(this.#settings.backoffMaxMs, this.#settings.backoffBaseMs * 2 ** (retry - 1));
    return Math.floor(random() * ceiling);
  }

  #advance(): void {
    const second = Math.floor(this.#now() / 1000);
    if (second === this.#second) return;
    const steps = Math.min(second - this.#second, WINDOW_SECONDS);
    for (let step = 1; step <= steps; step += 1) {
      const slot = (this.#second + step) % WINDOW_SECONDS;
      this.#requests[slot] = 0;
      this.#retries[slot] = 0;
    }
    this.#second = second;
  }
}
