import type { Endpoint } from '../../server/index.ts';
import type { RandomSource } from './clock.ts';
import type { LoadBalancerPolicy } from './upstream-settings.ts';

/**
 * Chooses one instance among candidates. `active` returns the connections or requests in progress
 * on an instance, which the least-request policy compares.
 */
export interface LoadBalancer {
  readonly policy: LoadBalancerPolicy;
  choose(candidates: readonly Endpoint[], active: (instanceId: string) => number): Endpoint | undefined;
}

/** Takes the candidates in turn. */
export class RoundRobinBalancer implements LoadBalancer {
  readonly policy = 'round_robin';
  #next = 0;

  choose(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length === 0) return undefined;
    const endpoint = candidates[this.#next % candidates.length];
    this.#next = (this.#next + 1) % 1_000_000_007;
    return endpoint;
  }
}

/**
 * Least request by the power of two choices: two distinct candidates drawn at random, and the one
 * with fewer active connections or requests wins; a tie goes to the first drawn. With two
 * candidates this always takes the less loaded one.
 */
export class LeastRequestBalancer implements LoadBalancer {
  readonly policy = 'least_request';
  readonly #random: RandomSource;

  constructor(random: RandomSource) {
    this.#random = random;
  }

  choose(candidates: readonly Endpoint[], active: (instanceId: string) => number): Endpoint | undefined {
    if (candidates.length <= 1) return candidates[0];
    const first = Math.min(candidates.length - 1, Math.floor(this.#random() * candidates.length));
    let second = Math.min(candidates.length - 2, Math.floor(this.#random() * (candidates.length - 1)));
    if (second >= first) second += 1;
    const a = candidates[first]!;
    const b = candidates[second]!;
    return active(b.instanceId) < active(a.instanceId) ? b : a;
  }
}

export function createLoadBalancer(policy: LoadBalancerPolicy, random: RandomSource): LoadBalancer {
  return policy === 'least_request' ? new LeastRequestBalancer(random) : new RoundRobinBalancer();
}
