/**
 * Arithmetic in GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11b).
 *
 * Addition and subtraction are XOR. Multiplication and division use log and exp tables built on
 * the generator 0x03, because 0x02 does not generate the multiplicative group under 0x11b.
 *
 * NOTE: table lookups indexed by secret bytes can leak those bytes through cache timing to code
 * that shares the CPU. Shamir splitting and combining run once per init or unseal, not per request.
 */

const REDUCTION = 0x11b;

/** EXP[i] = 0x03^i. Doubled in length so EXP[LOG[a] + LOG[b]] needs no reduction mod 255. */
const EXP = new Uint8Array(510);
/** LOG[a] = i such that 0x03^i = a, for a != 0. LOG[0] is unused. */
const LOG = new Uint8Array(256);

/** Multiplies by x in GF(2^8): a shift, reduced by the polynomial when bit 8 is set. */
function multiplyByX(a: number): number {
  const shifted = a << 1;
  return shifted & 0x100 ? shifted ^ REDUCTION : shifted;
}

{
  let power = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = power;
    LOG[power] = i;
    // power * 0x03 = power * x + power.
    power = multiplyByX(power) ^ power;
  }
  if (power !== 1) {
    throw new Error('GF(2^8) table construction failed: 0x03 did not cycle back to 1 after 255 steps');
  }
  for (let i = 255; i < EXP.length; i++) {
    EXP[i] = EXP[i - 255]!;
  }
}

/** Multiplies two field elements (0 to 255). */
export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) {
    return 0;
  }
  return EXP[LOG[a]! + LOG[b]!]!;
}

/** Divides `a` by `b`. Throws RangeError for `b` = 0, which has no inverse. */
export function gfDiv(a: number, b: number): number {
  if (b === 0) {
    throw new RangeError('division by zero in GF(2^8)');
  }
  if (a === 0) {
    return 0;
  }
  return EXP[LOG[a]! + 255 - LOG[b]!]!;
}

/**
 * Evaluates the polynomial with `coefficients` (constant term first) at `x` by Horner's rule.
 */
export function gfEvaluate(coefficients: Uint8Array, x: number): number {
  let result = 0;
  for (let i = coefficients.length - 1; i >= 0; i--) {
    result = gfMul(result, x) ^ coefficients[i]!;
  }
  return result;
}

/**
 * Returns the value at x = 0 of the unique polynomial of degree below `xs.length` through the
 * points (xs[i], ys[i]), by Lagrange interpolation. The x values must be distinct and non-zero.
 */
export function gfInterpolateAtZero(xs: readonly number[], ys: readonly number[]): number {
  let result = 0;
  for (let i = 0; i < xs.length; i++) {
    const xi = xs[i]!;
    // Lagrange basis at 0: the product over j != i of (0 - xj) / (xi - xj), where minus is XOR.
    let basis = 1;
    for (let j = 0; j < xs.length; j++) {
      if (j !== i) {
        const xj = xs[j]!;
        basis = gfMul(basis, gfDiv(xj, xi ^ xj));
      }
    }
    result ^= gfMul(ys[i]!, basis);
  }
  return result;
}
