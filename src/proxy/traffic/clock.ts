/** A monotonic time source in milliseconds; tests inject one they advance by hand. */
export interface Clock {
  now(): number;
}

/** The process's monotonic clock. */
export const systemClock: Clock = { now: () => performance.now() };

/** A uniform random number in [0, 1); tests inject a fixed sequence. */
export type RandomSource = () => number;
