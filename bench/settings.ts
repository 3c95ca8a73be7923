import { SealmeshError } from '../src/errors/index.ts';

/**
 * Readers of the `SEALMESH_BENCH_*` environment variables. An unset or empty variable gives the
 * default, and any other value that is not of the expected form fails with
 * SEALMESH_ERR_CONFIG_INVALID before a benchmark starts, so a typing error never yields an empty
 * or partial report.
 */

function invalid(name: string, value: string, expected: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${name}=${JSON.stringify(value)} is invalid: expected ${expected}`);
}

function raw(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

function parseInteger(name: string, text: string, value: string, minimum: number): number {
  const parsed = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(parsed) || parsed < minimum) throw invalid(name, value, `a whole number of at least ${minimum}`);
  return parsed;
}

/** Reads a whole number of at least `minimum`, such as a count of rounds or requests. */
export function integerSetting(name: string, fallback: number, minimum = 1): number {
  const value = raw(name);
  return value === undefined ? fallback : parseInteger(name, value, value, minimum);
}

/** Reads a comma-separated list of whole numbers, each at least `minimum`. */
export function integerListSetting(name: string, fallback: number[], minimum = 1): number[] {
  const value = raw(name);
  if (value === undefined) return fallback;
  return value.split(',').map((part) => parseInteger(name, part.trim(), value, minimum));
}

/** Reads a comma-separated subset of `choices`. An unset variable gives undefined, which means all of them. */
export function choiceListSetting<T extends string>(name: string, choices: readonly T[]): T[] | undefined {
  const value = raw(name);
  if (value === undefined) return undefined;
  const parts = value.split(',').map((part) => part.trim());
  for (const part of parts) {
    if (!(choices as readonly string[]).includes(part)) throw invalid(name, value, `a comma-separated list of ${choices.join(', ')}`);
  }
  return parts as T[];
}
