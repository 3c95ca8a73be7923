import type { Endpoint } from '../../server/index.ts';

/** Chooses the instance of an upstream for each try of a request. */
export class EndpointBalancer {
  readonly #policy: 'round_robin' | 'least_request';
  readonly #active = new Map<string, number>();
  readonly #random: () => number;
  #next = 0;

  constructor(policy: 'round_robin' | 'least_request', random: () => number = Math.random) {
    this.#policy = policy;
    this.#random = random;
  }

  /**
   * Picks one of `candidates`: the next in turn for round robin, or for least request the one with
   * fewer requests in flight of two chosen at random (the power of two choices).
   */
  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length === 0) return undefined;
    if (this.#policy === 'round_robin' || candidates.length === 1) {
      const endpoint = candidates[this.#next % candidates.length];
      this.#next = (this.#next + 1) % 1_000_000_007;
      return endpoint;
    }
    const first = Math.floor(this.#random() * candidates.length);
    let second = Math.floor(this.#random() * (candidates.length - 1));
    if (second >= first) second += 1;
    const a = candidates[first]!;
    const b = candidates[second]!;
    return this.active(a.instanceId) <= this.active(b.instanceId) ? a : b;
  }

  active(instanceId: string): number {
    return this.#active.get(instanceId) ?? 0;
  }

  /** Counts a request in flight to an instance until the returned function is called. */
  track(instanceId: string): () => void {
    this.#active.set(instanceId, this.active(instanceId) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = this.active(instanceId) - 1;
      if (left <= 0) this.#active.delete(instanceId);
      else this.#active.set(instanceId, left);
    };
  }
}
