import type { Clock, RandomSource } from './clock.ts';
import type { RetryCause, RetrySettings } from './upstream-settings.ts';

/** Reason a retry was denied. */
export type RetryDenial =
  /** The failure's cause is not in `retryOn`. */
  | 'cause_not_retried'
  /** The request may have reached the app and is not idempotent, so a retry could repeat its effect. */
  | 'not_idempotent'
  /** The connection or request has used `numRetries`. */
  | 'retries_exhausted'
  /** The retry budget has no room. */
  | 'budget_exhausted'
  /** The backoff would end after the request timeout. */
  | 'request_timeout';

/** The caller's account of the failed try. */
export interface RetryRequest {
  cause: RetryCause;
  /** Retries made so far for this connection or request: 0 after the first try failed. */
  retriesSoFar: number;
  /** Whether any byte of the request may have reached the app. False for connect failures and refused streams. */
  reachedApp: boolean;
  /** Whether repeating the request is safe, such as GET, HEAD, OPTIONS, PUT or DELETE in HTTP. */
  idempotent: boolean;
  /** Time since the request started, checked against the request timeout; omit to skip the check. */
  elapsedMs?: number;
}

export type RetryDecision =
  | {
      retry: true;
      /** Backoff to wait before the retry. */
      delayMs: number;
      /** Number of this retry, from 1. */
      retryNumber: number;
      /** Ends the retry's hold on the budget; call it once the retried try has ended (idempotent). */
      release: () => void;
    }
  | { retry: false; reason: RetryDenial };

/**
 * The retry budget of one upstream. A retry is admitted while the retries in progress are fewer
 * than `budgetPercent` of the active connections and requests, as Envoy's retry budget counts
 * them. Beyond that share, up to `minRetriesPerSecond` more are admitted in any one-second window,
 * as in Linkerd's budget, so that an upstream with little traffic can still retry.
 */
export class RetryBudget {
  readonly #settings: Pick<RetrySettings, 'budgetPercent' | 'minRetriesPerSecond'>;
  readonly #clock: Clock;
  #inProgress = 0;
  /** Times of the retries admitted under the per-second minimum within the last second, oldest first. */
  readonly #recentExtra: number[] = [];

  constructor(settings: Pick<RetrySettings, 'budgetPercent' | 'minRetriesPerSecond'>, clock: Clock) {
    this.#settings = settings;
    this.#clock = clock;
  }

  /** Retries admitted and not yet released. */
  get inProgress(): number {
    return this.#inProgress;
  }

  /**
   * Admits one retry when the budget has room for the upstream's `activeRequests` and returns the
   * function that releases it. Returns undefined when the budget is exhausted.
   */
  tryAcquire(activeRequests: number): (() => void) | undefined {
    const share = Math.floor((activeRequests * this.#settings.budgetPercent) / 100);
    if (this.#inProgress >= share && !this.#takeExtra()) return undefined;
    this.#inProgress += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inProgress -= 1;
    };
  }

  #takeExtra(): boolean {
    const now = this.#clock.now();
    while (this.#recentExtra.length > 0 && now - this.#recentExtra[0]! >= 1000) this.#recentExtra.shift();
    if (this.#recentExtra.length >= this.#settings.minRetriesPerSecond) return false;
    this.#recentExtra.push(now);
    return true;
  }
}

/**
 * Returns the backoff before retry number `retryNumber` (from 1) with full jitter: uniform between
 * 0 and `base × 2^(retryNumber - 1)`, capped at the max interval, as Envoy's retry backoff.
 */
export function backoffDelayMs(settings: Pick<RetrySettings, 'backoffBaseIntervalMs' | 'backoffMaxIntervalMs'>, retryNumber: number, random: RandomSource): number {
  const ceiling = Math.min(settings.backoffMaxIntervalMs, settings.backoffBaseIntervalMs * 2 ** Math.min(30, Math.max(0, retryNumber - 1)));
  return Math.floor(random() * ceiling);
}

/**
 * Decides whether a failed try may be retried. The checks run in this order:
 * 1. the cause is in `retryOn`;
 * 2. a request that may have reached the app is idempotent;
 * 3. fewer than `numRetries` retries were made;
 * 4. the backoff ends before the request timeout;
 * 5. the budget has room.
 * Only the last check takes anything, so a denial leaves the budget as it was.
 */
export function decideRetry(
  request: RetryRequest,
  context: { settings: RetrySettings; requestTimeoutMs: number; budget: RetryBudget; activeRequests: number; random: RandomSource },
): RetryDecision {
  const { settings } = context;
  if (!settings.retryOn.includes(request.cause)) return { retry: false, reason: 'cause_not_retried' };
  if (request.reachedApp && !request.idempotent) return { retry: false, reason: 'not_idempotent' };
  if (request.retriesSoFar >= settings.numRetries) return { retry: false, reason: 'retries_exhausted' };
  const retryNumber = request.retriesSoFar + 1;
  const delayMs = backoffDelayMs(settings, retryNumber, context.random);
  if (request.elapsedMs !== undefined && context.requestTimeoutMs > 0 && request.elapsedMs + delayMs >= context.requestTimeoutMs) {
    return { retry: false, reason: 'request_timeout' };
  }
  const release = context.budget.tryAcquire(context.activeRequests);
  if (release === undefined) return { retry: false, reason: 'budget_exhausted' };
  return { retry: true, delayMs, retryNumber, release };
}
