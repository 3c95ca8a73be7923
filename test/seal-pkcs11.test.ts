import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { Pkcs11Counter, Pkcs11SealProvider, type Pkcs11SealOptions } from '../src/seal/index.ts';
import { TokenSession, ckrName, readBool } from '../src/seal/pkcs11/session.ts';
import { createSoftHsmToken, softHsmSkipReason, type SoftHsmToken } from './helpers/softhsm.ts';

const AAD = new TextEncoder().encode('record/key-1');
const DATA_KEY = new Uint8Array(32).map((_, i) => i + 100);

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error, code), `expected ${code}, got ${String(error)}`);
    if (message !== undefined) {
      assert.match(error.message, message);
    }
    return true;
  });
}

const skip = softHsmSkipReason();

describe('PKCS#11 seal on SoftHSM2', { skip: skip ?? false }, () => {
  let token: SoftHsmToken;
  let keyNumber = 0;

  /** Options for a new key label on the test token. */
  const options = (overrides: Partial<Pkcs11SealOptions> = {}): Pkcs11SealOptions => ({
    module: token.module,
    tokenLabel: token.tokenLabel,
    pin: token.pin,
    keyLabel: `kek-${++keyNumber}`,
    ...overrides,
  });

  before(() => {
    token = createSoftHsmToken();
  });
  after(() => token?.remove());

  test('create, wrap and unwrap', async () => {
    const keyOptions = options();
    const provider = await Pkcs11SealProvider.create(keyOptions);
    assert.equal(provider.name, 'pkcs11');
    assert.match(provider.strength, /never leaves the HSM/);
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    assert.equal(wrapped.length, 1 + 12 + DATA_KEY.length + 16);
    assert.equal(wrapped[0], 1);
    assert.deepEqual(await provider.unwrap(wrapped, AAD), DATA_KEY);

    const empty = await provider.wrap(DATA_KEY, new Uint8Array(0));
    assert.deepEqual(await provider.unwrap(empty, new Uint8Array(0)), DATA_KEY);
    await provider.close();

    const reopened = await Pkcs11SealProvider.open(keyOptions);
    assert.deepEqual(await reopened.unwrap(wrapped, AAD), DATA_KEY);
    await reopened.close();
  });

  test('AAD mismatch fails unwrap', async () => {
    const provider = await Pkcs11SealProvider.create(options());
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    await rejectsWith(provider.unwrap(wrapped, new TextEncoder().encode('record/key-2')), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await provider.close();
  });

  test('altered ciphertext fails unwrap', async () => {
    const provider = await Pkcs11SealProvider.create(options());
    const wrapped = await provider.wrap(DATA_KEY, AAD);
    for (const position of [1, 13, 30, wrapped.length - 1]) {
      const altered = Uint8Array.from(wrapped);
      altered[position]! ^= 0x04;
      await rejectsWith(provider.unwrap(altered, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    }
    await rejectsWith(provider.unwrap(wrapped.subarray(0, 20), AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED', /truncated/);
    // The session stays usable after a failed decrypt.
    assert.deepEqual(await provider.unwrap(wrapped, AAD), DATA_KEY);
    await provider.close();
  });

  test('another key fails unwrap', async () => {
    const first = await Pkcs11SealProvider.create(options());
    const second = await Pkcs11SealProvider.create(options());
    const wrapped = await first.wrap(DATA_KEY, AAD);
    await rejectsWith(second.unwrap(wrapped, AAD), 'SEALMESH_ERR_SEAL_UNWRAP_FAILED');
    await first.close();
    await second.close();
  });

  test('key is not extractable', async () => {
    const keyOptions = options();
    const provider = await Pkcs11SealProvider.create(keyOptions);
    const session = TokenSession.open(keyOptions, 'test');
    try {
      const { api, library } = session;
      const [key] = session.findObjects([
        { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
        { type: api.CKA_LABEL, value: keyOptions.keyLabel },
      ]);
      assert.ok(key !== undefined, 'the created key must be found');

      assert.throws(
        () => library.C_GetAttributeValue(session.handle, key, [{ type: api.CKA_VALUE }]),
        (error: unknown) => ckrName(error) === 'CKR_ATTRIBUTE_SENSITIVE',
      );
      const [extractable, sensitive, tokenObject] = library.C_GetAttributeValue(session.handle, key, [
        { type: api.CKA_EXTRACTABLE },
        { type: api.CKA_SENSITIVE },
        { type: api.CKA_TOKEN },
      ]);
      assert.equal(readBool(extractable?.value), false);
      assert.equal(readBool(sensitive?.value), true);
      assert.equal(readBool(tokenObject?.value), true);
    } finally {
      session.close();
      await provider.close();
    }
  });

  test('extractable key with the label rejected', async () => {
    const keyOptions = options();
    const session = TokenSession.open(keyOptions, 'test');
    try {
      const { api, library } = session;
      library.C_GenerateKey(session.handle, { mechanism: api.CKM_AES_KEY_GEN }, [
        { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
        { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
        { type: api.CKA_VALUE_LEN, value: 32 },
        { type: api.CKA_LABEL, value: keyOptions.keyLabel },
        { type: api.CKA_TOKEN, value: true },
        { type: api.CKA_PRIVATE, value: true },
        { type: api.CKA_SENSITIVE, value: false },
        { type: api.CKA_EXTRACTABLE, value: true },
        { type: api.CKA_ENCRYPT, value: true },
        { type: api.CKA_DECRYPT, value: true },
      ]);
    } finally {
      session.close();
    }
    await rejectsWith(Pkcs11SealProvider.open(keyOptions), 'SEALMESH_ERR_SEAL_KEY_PERMISSIONS', /can be exported/);
  });

  test('create rejects an existing label', async () => {
    const keyOptions = options();
    await (await Pkcs11SealProvider.create(keyOptions)).close();
    await rejectsWith(Pkcs11SealProvider.create(keyOptions), 'SEALMESH_ERR_CONFLICT', /already has a key/);
  });

  test('wrong PIN rejected', async () => {
    const keyOptions = options();
    await (await Pkcs11SealProvider.create(keyOptions)).close();
    await rejectsWith(Pkcs11SealProvider.open({ ...keyOptions, pin: '9999' }), 'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED', /rejected the user PIN/);
  });

  test('wrong PIN rejected while logged in', async () => {
    const keyOptions = options();
    const provider = await Pkcs11SealProvider.create(keyOptions);
    await rejectsWith(Pkcs11SealProvider.open({ ...keyOptions, pin: '9999' }), 'SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED', /already logged in/);
    const second = await Pkcs11SealProvider.open(keyOptions);
    await second.close();
    assert.deepEqual(await provider.unwrap(await provider.wrap(DATA_KEY, AAD), AAD), DATA_KEY);
    await provider.close();
  });

  test('missing key label rejected', async () => {
    await rejectsWith(Pkcs11SealProvider.open(options({ keyLabel: 'no-such-key' })), 'SEALMESH_ERR_SEAL_KEY_MISSING', /no-such-key.*sealmesh-test/);
  });

  test('missing token label rejected', async () => {
    await rejectsWith(Pkcs11SealProvider.open(options({ tokenLabel: 'no-such-token' })), 'SEALMESH_ERR_SEAL_KEY_MISSING', /no token labelled "no-such-token"/);
  });

  test('unloadable module rejected', async () => {
    await rejectsWith(Pkcs11SealProvider.open(options({ module: '/nonexistent/libpkcs11.so' })), 'SEALMESH_ERR_SEAL_HSM_UNAVAILABLE', /cannot load/);
  });

  test('closed provider rejects wrap', async () => {
    const provider = await Pkcs11SealProvider.create(options());
    await provider.close();
    await provider.close();
    await rejectsWith(provider.wrap(DATA_KEY, AAD), 'SEALMESH_ERR_SEAL_CLOSED');
  });

  describe('Pkcs11Counter', () => {
    const counterOptions = (label: string): Parameters<typeof Pkcs11Counter.open>[0] => ({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
      label,
    });

    test('advance, read and reopen', async () => {
      const counter = await Pkcs11Counter.create(counterOptions('rollback-counter'));
      assert.equal(counter.name, 'pkcs11:sealmesh-test/rollback-counter');
      assert.equal(await counter.read(), 0n);
      await counter.advanceTo(5n);
      assert.equal(await counter.read(), 5n);
      await counter.advanceTo(5n);
      assert.equal(await counter.read(), 5n);
      await counter.advanceTo(2n ** 40n);
      await counter.close();

      const reopened = await Pkcs11Counter.open(counterOptions('rollback-counter'));
      assert.equal(await reopened.read(), 2n ** 40n);
      await reopened.close();
    });

    test('regression rejected', async () => {
      const counter = await Pkcs11Counter.create(counterOptions('regression-counter'), 10n);
      await rejectsWith(counter.advanceTo(9n), 'SEALMESH_ERR_SEAL_COUNTER_REGRESSION', /is at 10 and cannot go down to 9/);
      assert.equal(await counter.read(), 10n);
      await counter.close();
    });

    test('values outside 64 bits rejected', async () => {
      const counter = await Pkcs11Counter.create(counterOptions('range-counter'));
      await rejectsWith(counter.advanceTo(-1n), 'SEALMESH_ERR_INVALID_ARGUMENT');
      await rejectsWith(counter.advanceTo(2n ** 64n), 'SEALMESH_ERR_INVALID_ARGUMENT');
      await counter.advanceTo(2n ** 64n - 1n);
      assert.equal(await counter.read(), 2n ** 64n - 1n);
      await counter.close();
    });

    test('missing counter rejected', async () => {
      await rejectsWith(Pkcs11Counter.open(counterOptions('no-such-counter')), 'SEALMESH_ERR_SEAL_KEY_MISSING', /no-such-counter/);
    });

    test('create rejects an existing label', async () => {
      await (await Pkcs11Counter.create(counterOptions('duplicate-counter'))).close();
      await rejectsWith(Pkcs11Counter.create(counterOptions('duplicate-counter')), 'SEALMESH_ERR_CONFLICT');
    });

    test('interrupted advance repaired on open', async () => {
      const options = counterOptions('interrupted-counter');
      await (await Pkcs11Counter.create(options, 3n)).close();

      // A second object with a higher value, as left by a crash between create and destroy.
      const session = TokenSession.open(options, 'test');
      try {
        const { api, library } = session;
        const value = Buffer.alloc(8);
        value.writeBigUInt64BE(7n);
        library.C_CreateObject(session.handle, [
          { type: api.CKA_CLASS, value: api.CKO_DATA },
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_LABEL, value: options.label },
          { type: api.CKA_VALUE, value },
        ]);
      } finally {
        session.close();
      }

      const counter = await Pkcs11Counter.open(options);
      assert.equal(await counter.read(), 7n);
      await counter.advanceTo(8n);
      await counter.close();

      const check = TokenSession.open(options, 'test');
      try {
        const objects = check.findObjects([
          { type: check.api.CKA_CLASS, value: check.api.CKO_DATA },
          { type: check.api.CKA_LABEL, value: options.label },
        ]);
        assert.equal(objects.length, 1, 'open and advanceTo must leave exactly one object');
      } finally {
        check.close();
      }
    });

    test('counter and provider share a login', async () => {
      const keyOptions = options();
      const provider = await Pkcs11SealProvider.create(keyOptions);
      const counter = await Pkcs11Counter.create(counterOptions('shared-login-counter'));
      await counter.close();
      assert.deepEqual(await provider.unwrap(await provider.wrap(DATA_KEY, AAD), AAD), DATA_KEY);
      await provider.close();
    });
  });
});
