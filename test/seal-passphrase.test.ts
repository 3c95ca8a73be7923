import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { DEFAULT_SCRYPT_COST, PassphraseSealProvider, readPassphrase, type PassphraseParams } from '../src/seal/index.ts';

const PASSPHRASE = 'correct horse battery staple';
const AAD = new TextEncoder().encode('record/key-1');
const DATA_KEY = new Uint8Array(32).map((_, i) => i);

/** Asserts that `promise` rejects with a SealmeshError carrying `code`. */
async function rejectsWithCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error, code), `expected ${code}, got ${String(error)}`);
    return true;
  });
}

/**
 * A fake terminal that types one scripted line each time raw mode is switched on, as a user
 * answering each prompt would.
 */
class FakeTerminal extends PassThrough {
  readonly isTTY = true;
  readonly rawModes: boolean[] = [];
  readonly #lines: string[];

  constructor(lines: string[]) {
    super();
    this.#lines = [...lines];
  }

  setRawMode(mode: boolean): this {
    this.rawModes.push(mode);
    const line = mode ? this.#lines.shift() : undefined;
    if (line !== undefined) {
      process.nextTick(() => this.write(line));
    }
    return this;
  }
}

function collectOutput(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('PassphraseSealProvider', () => {
  test('round trip through create and open', async () => {
    const { provider, params } = await PassphraseSealProvider.create(PASSPHRASE);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await provider.close();

    const stored = JSON.parse(JSON.stringify(params)) as PassphraseParams;
    const reopened = await PassphraseSealProvider.open(PASSPHRASE, stored);
    assert.deepEqual(await reopened.unwrap(wrapped, AAD), DATA_KEY);
    assert.equal(reopened.name, 'passphrase');
    assert.match(reopened.strength, /weak to moderate/);
    await reopened.close();
  });

  test('params use the default scrypt cost', async () => {
    const { provider, params } = await PassphraseSealProvider.create(PASSPHRASE);
    await provider.close();
    assert.equal(params.kdf, 'scrypt');
    assert.equal(params.N, DEFAULT_SCRYPT_COST.N);
    assert.equal(params.N, 2 ** 17);
    assert.equal(params.r, 8);
    assert.equal(params.p, 1);
    assert.equal(params.keyLength, 32);
    assert.equal(Buffer.from(params.salt, 'base64').length, 16);
  });

  test('two creates use different salts', async () => {
    const first = await PassphraseSealProvider.create(PASSPHRASE);
    const second = await PassphraseSealProvider.create(PASSPHRASE);
    assert.notEqual(first.params.salt, second.params.salt);
    const wrapped = await first.provider.wrap(DATA_KEY, AAD);
    await rejectsWithCode(second.provider.unwrap(wrapped, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await first.provider.close();
    await second.provider.close();
  });

  test('wrong passphrase fails unwrap', async () => {
    const { provider, params } = await PassphraseSealProvider.create(PASSPHRASE);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await provider.close();
    const wrong = await PassphraseSealProvider.open('correct horse battery stapler', params);
    await rejectsWithCode(wrong.unwrap(wrapped, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await wrong.close();
  });

  test('AAD mismatch and altered bytes fail unwrap', async () => {
    const { provider } = await PassphraseSealProvider.create(PASSPHRASE);
    const wrapped = await provider.wrap(DATA_KEY, AAD);

    await rejectsWithCode(provider.unwrap(wrapped, new TextEncoder().encode('record/key-2')), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await rejectsWithCode(provider.unwrap(wrapped, new Uint8Array(0)), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');

    for (const position of [0, 1, 13, 20, wrapped.length - 1]) {
      const altered = Uint8Array.from(wrapped);
      altered[position]! ^= 0x01;
      await rejectsWithCode(provider.unwrap(altered, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    }
    await rejectsWithCode(provider.unwrap(wrapped.subarray(0, 28), AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await rejectsWithCode(provider.unwrap(wrapped.subarray(0, wrapped.length - 1), AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await provider.close();
  });

  test('wrapped format has version, nonce and tag', async () => {
    const { provider } = await PassphraseSealProvider.create(PASSPHRASE);
    const first = await provider.wrap(DATA_KEY, AAD);
    const second = await provider.wrap(DATA_KEY, AAD);
    assert.equal(first.length, 1 + 12 + DATA_KEY.length + 16);
    assert.equal(first[0], 1);
    assert.notDeepEqual(first.subarray(1, 13), second.subarray(1, 13), 'each wrap must use a fresh nonce');

    const empty = await provider.wrap(new Uint8Array(0), AAD);
    assert.equal(empty.length, 1 + 12 + 16);
    assert.deepEqual(await provider.unwrap(empty, AAD), new Uint8Array(0));
    await provider.close();
  });

  test('passphrase shorter than 12 characters rejected', async () => {
    await rejectsWithCode(PassphraseSealProvider.create('eleven char'), 'SEALMESH_ERR_SEAL_KEY_WEAK');
    // Eleven code points, although the string has more UTF-16 units.
    await rejectsWithCode(PassphraseSealProvider.create('😀😀😀😀😀😀😀😀😀😀😀'), 'SEALMESH_ERR_SEAL_KEY_WEAK');
    await rejectsWithCode(PassphraseSealProvider.create(''), 'SEALMESH_ERR_SEAL_KEY_MISSING');
    const { provider } = await PassphraseSealProvider.create('twelve chars');
    await provider.close();
  });

  test('composed and decomposed accents derive the same key', async () => {
    const composed = 'caf\u00e9 au lait, s\u2019il vous pla\u00eet';
    const decomposed = composed.normalize('NFD');
    assert.notEqual(composed, decomposed);
    const { provider, params } = await PassphraseSealProvider.create(composed);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await provider.close();
    const reopened = await PassphraseSealProvider.open(decomposed, params);
    assert.deepEqual(await reopened.unwrap(wrapped, AAD), DATA_KEY);
    await reopened.close();
  });

  test('invalid params rejected before deriving', async () => {
    const valid: PassphraseParams = { kdf: 'scrypt', salt: Buffer.alloc(16, 7).toString('base64'), N: 2 ** 14, r: 8, p: 1, keyLength: 32 };
    const cases: Array<[string, PassphraseParams]> = [
      ['unknown kdf', { ...valid, kdf: 'pbkdf2' as 'scrypt' }],
      ['salt not base64', { ...valid, salt: 'not base64!' }],
      ['salt too short', { ...valid, salt: Buffer.alloc(8).toString('base64') }],
      ['N below 2^14', { ...valid, N: 2 ** 10 }],
      ['N not a power of two', { ...valid, N: 3 * 2 ** 14 }],
      ['r zero', { ...valid, r: 0 }],
      ['p too high', { ...valid, p: 1000 }],
      ['more than 1 GiB', { ...valid, N: 2 ** 22, r: 8 }],
      ['key length 16', { ...valid, keyLength: 16 }],
    ];
    for (const [name, params] of cases) {
      await assert.rejects(PassphraseSealProvider.open(PASSPHRASE, params), (error: unknown) => {
        assert.ok(isSealmeshError(error, 'SEALMESH_ERR_INVALID_ARGUMENT'), `${name}: got ${String(error)}`);
        return true;
      });
    }
    const provider = await PassphraseSealProvider.open(PASSPHRASE, valid);
    await provider.close();
  });

  test('closed provider rejects wrap and unwrap', async () => {
    const { provider } = await PassphraseSealProvider.create(PASSPHRASE);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await provider.close();
    await provider.close();
    await rejectsWithCode(provider.wrap(DATA_KEY, AAD), 'SEALMESH_ERR_SEAL_CLOSED');
    await rejectsWithCode(provider.unwrap(wrapped, AAD), 'SEALMESH_ERR_SEAL_CLOSED');
  });
});

describe('readPassphrase', () => {
  test('reads the environment variable', async () => {
    const input = new FakeTerminal(['typed\r']);
    const value = await readPassphrase({ env: { SEALMESH_SEAL_PASSPHRASE: 'from the environment' }, input });
    assert.equal(value, 'from the environment');
    assert.deepEqual(input.rawModes, [], 'must not prompt when the variable is set');
  });

  test('missing without variable or terminal', async () => {
    const input = new PassThrough();
    await rejectsWithCode(readPassphrase({ env: {}, input }), 'SEALMESH_ERR_SEAL_KEY_MISSING');
    await rejectsWithCode(readPassphrase({ env: { SEALMESH_SEAL_PASSPHRASE: '' }, input }), 'SEALMESH_ERR_SEAL_KEY_MISSING');
  });

  test('prompts on a terminal without echo', async () => {
    const input = new FakeTerminal(['a long secret phrasX\u007fe\r']);
    const output = collectOutput();
    const value = await readPassphrase({ env: {}, input, output: output.stream, prompt: 'Passphrase: ' });
    assert.equal(value, 'a long secret phrase');
    assert.equal(output.text(), 'Passphrase: \n');
    assert.deepEqual(input.rawModes, [true, false]);
  });

  test('Ctrl-U clears and escape keys are ignored', async () => {
    const input = new FakeTerminal(['wrong start\u0015right\u001b[A one\u001b[1;5C\u001bOP\u001bx\r']);
    const value = await readPassphrase({ env: {}, input, output: collectOutput().stream });
    assert.equal(value, 'right one');
  });

  test('Ctrl-C cancels the prompt', async () => {
    const input = new FakeTerminal(['abc\u0003']);
    await rejectsWithCode(readPassphrase({ env: {}, input, output: collectOutput().stream }), 'SEALMESH_ERR_SEAL_KEY_MISSING');
    assert.deepEqual(input.rawModes, [true, false]);
  });

  test('confirm accepts matching entries', async () => {
    const input = new FakeTerminal(['same passphrase\r', 'same passphrase\r']);
    const output = collectOutput();
    const value = await readPassphrase({ env: {}, input, output: output.stream, confirm: true });
    assert.equal(value, 'same passphrase');
    assert.match(output.text(), /Repeat the passphrase: /);
  });

  test('confirm rejects different entries', async () => {
    const input = new FakeTerminal(['first passphrase\r', 'second passphrase\r']);
    await rejectsWithCode(readPassphrase({ env: {}, input, output: collectOutput().stream, confirm: true }), 'SEALMESH_ERR_INVALID_ARGUMENT');
  });
});
