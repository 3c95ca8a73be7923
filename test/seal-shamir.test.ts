import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { ShamirSealProvider, ShamirUnsealer, combine, split } from '../src/seal/index.ts';
import { gfDiv, gfMul } from '../src/seal/shamir/gf256.ts';

const AAD = new TextEncoder().encode('record/key-1');
const DATA_KEY = new Uint8Array(32).map((_, i) => i * 7);

function throwsWithCode(run: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isSealmeshError(error, code), `expected ${code}, got ${String(error)}`);
    if (message !== undefined) {
      assert.match(error.message, message);
    }
    return true;
  });
}

/** Returns every subset of `items` with exactly `size` elements, in order. */
function subsets<T>(items: readonly T[], size: number): T[][] {
  if (size === 0) {
    return [[]];
  }
  const result: T[][] = [];
  items.forEach((item, i) => {
    for (const rest of subsets(items.slice(i + 1), size - 1)) {
      result.push([item, ...rest]);
    }
  });
  return result;
}

/** Carry-less multiplication reduced by 0x11b, bit by bit, as an independent reference. */
function referenceMul(a: number, b: number): number {
  let result = 0;
  let x = a;
  for (let bit = 0; bit < 8; bit++) {
    if ((b >> bit) & 1) {
      result ^= x;
    }
    x <<= 1;
    if (x & 0x100) {
      x ^= 0x11b;
    }
  }
  return result;
}

/** Changes one character of the share's data part to another base64url character. */
function mistype(share: string, offset: number): string {
  const position = 'smsh1-1-'.length + offset;
  const original = share[position]!;
  const replacement = original === 'A' ? 'B' : 'A';
  return share.slice(0, position) + replacement + share.slice(position + 1);
}

describe('GF(2^8) arithmetic', () => {
  test('multiplication matches the bitwise reference', () => {
    for (let a = 0; a < 256; a++) {
      for (let b = 0; b < 256; b++) {
        if (gfMul(a, b) !== referenceMul(a, b)) {
          assert.fail(`gfMul(${a}, ${b}) = ${gfMul(a, b)}, expected ${referenceMul(a, b)}`);
        }
      }
    }
    // The AES specification's worked example: {57} · {83} = {c1}.
    assert.equal(gfMul(0x57, 0x83), 0xc1);
  });

  test('division inverts multiplication', () => {
    for (let a = 0; a < 256; a++) {
      for (let b = 1; b < 256; b++) {
        if (gfDiv(gfMul(a, b), b) !== a) {
          assert.fail(`gfDiv(gfMul(${a}, ${b}), ${b}) != ${a}`);
        }
      }
    }
    assert.throws(() => gfDiv(1, 0), RangeError);
  });
});

describe('split and combine', () => {
  test('every 3-subset of 5 shares recovers the secret', () => {
    const secret = randomBytes(32);
    const shares = split(secret, 5, 3);
    assert.equal(shares.length, 5);
    const chosen = subsets(shares, 3);
    assert.equal(chosen.length, 10);
    for (const subset of chosen) {
      assert.deepEqual(Buffer.from(combine(subset)), secret);
      assert.deepEqual(Buffer.from(combine([...subset].reverse())), secret);
    }
    assert.deepEqual(Buffer.from(combine(shares)), secret);
  });

  test('share text has the documented form', () => {
    const shares = split(randomBytes(32), 3, 2);
    shares.forEach((share, i) => assert.match(share, new RegExp(`^smsh1-${i + 1}-[A-Za-z0-9_-]+-[0-9a-f]{8}$`)));
  });

  test('two of three required shares fail', () => {
    const shares = split(randomBytes(32), 5, 3);
    throwsWithCode(() => combine(shares.slice(0, 2)), 'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT', /2 of 3/);
    throwsWithCode(() => combine([]), 'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT');
  });

  test('duplicate share fails', () => {
    const shares = split(randomBytes(32), 5, 3);
    throwsWithCode(() => combine([shares[0]!, shares[1]!, shares[0]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /given twice/);
  });

  test('share from another split fails', () => {
    const secret = randomBytes(32);
    const first = split(secret, 5, 3);
    const second = split(secret, 5, 3);
    throwsWithCode(() => combine([first[0]!, first[1]!, second[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /different split/);
  });

  test('corrupted character fails the checksum', () => {
    const shares = split(randomBytes(32), 5, 3);
    for (const offset of [0, 5, 17, 30]) {
      throwsWithCode(() => combine([mistype(shares[0]!, offset), shares[1]!, shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /checksum/);
    }
    const badChecksum = shares[1]!.slice(0, -1) + (shares[1]!.endsWith('0') ? '1' : '0');
    throwsWithCode(() => combine([shares[0]!, badChecksum, shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /checksum/);
    throwsWithCode(() => combine([shares[0]!, shares[1]!.slice(0, 40), shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID');
    throwsWithCode(() => combine([shares[0]!, 'not a share', shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /does not have the form/);
  });

  test('relabelled share fails', () => {
    const shares = split(randomBytes(32), 3, 2);
    const relabelled = shares[0]!.replace(/^smsh1-1-/, 'smsh1-2-');
    throwsWithCode(() => combine([relabelled, shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /checksum/);

    // With a recomputed checksum, the index stored in the data still disagrees with the text.
    const body = relabelled.slice(0, relabelled.lastIndexOf('-'));
    const rechecked = `${body}-${crc32(body).toString(16).padStart(8, '0')}`;
    throwsWithCode(() => combine([rechecked, shares[2]!]), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /index 2 in its text but 1 in its data/);
  });

  test('surrounding whitespace is ignored', () => {
    const secret = randomBytes(16);
    const shares = split(secret, 3, 2);
    assert.deepEqual(Buffer.from(combine([`  ${shares[0]!}\n`, `\t${shares[2]!} `])), secret);
  });

  test('share and threshold bounds', () => {
    const secret = randomBytes(32);
    throwsWithCode(() => split(secret, 0, 0), 'SEALMESH_ERR_INVALID_ARGUMENT');
    throwsWithCode(() => split(secret, 256, 2), 'SEALMESH_ERR_INVALID_ARGUMENT');
    throwsWithCode(() => split(secret, 3, 4), 'SEALMESH_ERR_INVALID_ARGUMENT');
    throwsWithCode(() => split(secret, 3, 1), 'SEALMESH_ERR_INVALID_ARGUMENT', /threshold of at least 2/);
    throwsWithCode(() => split(secret, 2.5, 2), 'SEALMESH_ERR_INVALID_ARGUMENT');
    throwsWithCode(() => split(new Uint8Array(0), 3, 2), 'SEALMESH_ERR_INVALID_ARGUMENT');
    assert.deepEqual(Buffer.from(combine(split(secret, 1, 1))), secret);
    const maximal = split(secret, 255, 255);
    assert.equal(maximal.length, 255);
    assert.deepEqual(Buffer.from(combine(maximal)), secret);
  });

  test('random secrets and thresholds round trip', () => {
    for (let round = 0; round < 150; round++) {
      const secret = randomBytes(randomInt(1, 65));
      const count = randomInt(1, 21);
      const threshold = count === 1 ? 1 : randomInt(2, count + 1);
      const shares = split(secret, count, threshold);

      // A random subset of exactly `threshold` shares, in random order.
      const shuffled = [...shares];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = randomInt(0, i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const subset = shuffled.slice(0, threshold);
      assert.deepEqual(Buffer.from(combine(subset)), secret, `n=${count} k=${threshold} length=${secret.length}`);
      if (threshold > 1) {
        throwsWithCode(() => combine(subset.slice(1)), 'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT');
      }
    }
  });

  test('two shares of threshold 3 miss the secret', () => {
    const secret = new Uint8Array(32);
    const shares = split(secret, 5, 3);
    const combined = combineIgnoringThreshold(shares.slice(0, 2));
    assert.notDeepEqual(combined, secret);
  });
});

/** Interpolates the given shares at x = 0 regardless of their stored threshold. */
function combineIgnoringThreshold(shares: string[]): Uint8Array {
  const secretLength = 32;
  const xs: number[] = [];
  const ys: Uint8Array[] = [];
  for (const share of shares) {
    const [, index, data] = /^smsh1-(\d+)-(.+)-[0-9a-f]{8}$/.exec(share)!;
    xs.push(Number(index));
    ys.push(Buffer.from(data!, 'base64url').subarray(11));
  }
  const out = new Uint8Array(secretLength);
  for (let position = 0; position < secretLength; position++) {
    let value = 0;
    for (let i = 0; i < xs.length; i++) {
      let basis = 1;
      for (let j = 0; j < xs.length; j++) {
        if (j !== i) {
          basis = gfMul(basis, gfDiv(xs[j]!, xs[i]! ^ xs[j]!));
        }
      }
      value ^= gfMul(ys[i]![position]!, basis);
    }
    out[position] = value;
  }
  return out;
}

describe('ShamirSealProvider', () => {
  test('round trip through create and fromShares', async () => {
    const { provider, shares, verification } = ShamirSealProvider.create({ shares: 5, threshold: 3 });
    assert.equal(shares.length, 5);
    assert.equal(provider.name, 'shamir');
    assert.match(provider.strength, /starts sealed after every restart/);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await provider.close();

    const reopened = ShamirSealProvider.fromShares([shares[4]!, shares[0]!, shares[2]!], verification);
    assert.deepEqual(await reopened.unwrap(wrapped, AAD), DATA_KEY);
    await reopened.close();
  });

  test('AAD mismatch and altered bytes fail unwrap', async () => {
    const { provider } = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await assert.rejects(provider.unwrap(wrapped, new Uint8Array([1])), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_SEAL_UNWRAP_FAILED'));
    const altered = Uint8Array.from(wrapped);
    altered[altered.length - 1]! ^= 1;
    await assert.rejects(provider.unwrap(altered, AAD), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_SEAL_UNWRAP_FAILED'));
    await provider.close();
  });

  test('shares of another cluster fail verification', () => {
    const first = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const second = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    throwsWithCode(() => ShamirSealProvider.fromShares(second.shares.slice(0, 2), first.verification), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
  });

  test('createVerification matches the stored blob', async () => {
    const { provider, shares } = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const verification = await provider.createVerification();
    const reopened = ShamirSealProvider.fromShares(shares.slice(1), verification);
    await reopened.close();
    await provider.close();
  });
});

describe('ShamirUnsealer', () => {
  test('unseals after the threshold', async () => {
    const { provider, shares, verification } = ShamirSealProvider.create({ shares: 5, threshold: 3 });
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    const unsealer = new ShamirUnsealer(verification);

    assert.deepEqual(unsealer.status(), { progress: 0, threshold: 0, unsealed: false });
    throwsWithCode(() => unsealer.provider, 'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT');
    assert.deepEqual(unsealer.submit(shares[1]!), { progress: 1, threshold: 3, unsealed: false });
    assert.deepEqual(unsealer.submit(shares[3]!), { progress: 2, threshold: 3, unsealed: false });
    throwsWithCode(() => unsealer.provider, 'SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT', /2 of 3/);
    assert.deepEqual(unsealer.submit(shares[4]!), { progress: 3, threshold: 3, unsealed: true });
    assert.deepEqual(unsealer.submit(shares[0]!), { progress: 3, threshold: 3, unsealed: true });
    assert.deepEqual(await unsealer.provider.unwrap(wrapped, AAD), DATA_KEY);
    await provider.close();
  });

  test('duplicate and mistyped shares keep progress', () => {
    const { shares, verification } = ShamirSealProvider.create({ shares: 5, threshold: 3 });
    const unsealer = new ShamirUnsealer(verification);
    unsealer.submit(shares[0]!);
    throwsWithCode(() => unsealer.submit(shares[0]!), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /given twice/);
    throwsWithCode(() => unsealer.submit(mistype(shares[1]!, 3)), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /checksum/);
    assert.deepEqual(unsealer.status(), { progress: 1, threshold: 3, unsealed: false });
    unsealer.submit(shares[1]!);
    assert.equal(unsealer.submit(shares[2]!).unsealed, true);
  });

  test('share from another split rejected until reset', () => {
    const first = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const second = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const unsealer = new ShamirUnsealer(first.verification);
    unsealer.submit(second.shares[0]!);
    throwsWithCode(() => unsealer.submit(first.shares[1]!), 'SEALMESH_ERR_SEAL_SHARE_INVALID', /different split/);
    unsealer.reset();
    assert.deepEqual(unsealer.status(), { progress: 0, threshold: 0, unsealed: false });
    unsealer.submit(first.shares[1]!);
    assert.equal(unsealer.submit(first.shares[2]!).unsealed, true);
  });

  test('wrong combination resets progress', () => {
    const first = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const second = ShamirSealProvider.create({ shares: 3, threshold: 2 });
    const unsealer = new ShamirUnsealer(first.verification);
    unsealer.submit(second.shares[0]!);
    throwsWithCode(() => unsealer.submit(second.shares[1]!), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', /discarded/);
    assert.deepEqual(unsealer.status(), { progress: 0, threshold: 0, unsealed: false });
    unsealer.submit(first.shares[0]!);
    assert.equal(unsealer.submit(first.shares[2]!).unsealed, true);
  });
});
