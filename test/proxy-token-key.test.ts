import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { findEngineDirectory, TokenTlsKey, type TokenKeyOptions } from '../src/proxy/token-key.ts';
import { assertTlsKeyWithoutSandbox, tokenKeyFromFlags } from '../src/cli/tls-key-flags.ts';
import { ckrName, readBool, readUlong, TokenSession } from '../src/seal/pkcs11/session.ts';
import { allow, eventually, httpGet, startHttpApp, startProxy, startServer, tempDir, type TestServer } from './helpers/mesh.ts';
import { freePort, type CliProcess } from './helpers/cli.ts';
import { createJoinToken, runSealmesh, startProxyProcess, startServerProcess, stopProcesses } from './helpers/process-mesh.ts';
import { fileToken, softHsmSkipReason } from './helpers/softhsm.ts';

const skip = softHsmSkipReason();
const sharedToken = fileToken('proxy-tls-key');

/** Every process warning, to show that the engine options print none (DEP0183 is documentation-only in Node.js 24.21). */
const warnings: Error[] = [];
process.on('warning', (warning) => warnings.push(warning));

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

function keyOptions(keyLabel: string, overrides: Partial<TokenKeyOptions> = {}): TokenKeyOptions {
  const hsm = sharedToken();
  return { module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel, ...overrides };
}

/** Opens a second session on the token, as an operator with the PIN would, to read key attributes. */
function inspectorSession(): TokenSession {
  const hsm = sharedToken();
  return TokenSession.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin }, 'test inspector');
}

async function spkiHex(key: webcrypto.CryptoKey): Promise<string> {
  return Buffer.from(await webcrypto.subtle.exportKey('spki', key)).toString('hex');
}

/** Returns the DER SPKI (hex) of the leaf in a PEM chain. */
function leafSpkiHex(chainPem: string): string {
  return new X509Certificate(chainPem).publicKey.export({ type: 'spki', format: 'der' }).toString('hex');
}

describe('proxy TLS key in a PKCS#11 token', { skip }, () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  const proxies: SidecarProxy[] = [];
  const keys: TokenTlsKey[] = [];
  let pinDir = '';

  before(async () => {
    sharedToken();
    pinDir = mkdtempSync(join(tmpdir(), 'sealmesh-tls-key-pin-'));
    mesh = await startServer();
    app = await startHttpApp('backend');
    await allow(mesh, 'web', 'api');
    await allow(mesh, 'web-token', 'api-plain');
  });

  after(async () => {
    for (const proxy of proxies) await proxy.stop();
    for (const key of keys) key.close();
    await app?.close();
    await mesh?.stop();
    rmSync(pinDir, { recursive: true, force: true });
  });

  async function openKey(keyLabel: string, overrides: Partial<TokenKeyOptions> = {}): Promise<TokenTlsKey> {
    const key = await TokenTlsKey.open(keyOptions(keyLabel, overrides));
    keys.push(key);
    return key;
  }

  test('inbound token key serves mTLS', async () => {
    const key = await openKey('api-tls');
    assert.equal(key.generated, true);
    const api = await startProxy(mesh, 'api', app.port, [], { tokenKey: key });
    proxies.push(api);
    const web = await startProxy(mesh, 'web', 9, ['api']);
    proxies.push(web);

    assert.equal(leafSpkiHex(api.svid?.chainPem ?? ''), await spkiHex(key.publicKey), 'the SVID certifies the token key');
    const port = web.upstreamPort('api') ?? 0;
    await eventually(async () => (await httpGet(port, '/to-token').catch(() => ({ status: 0 }))).status === 200, 15_000, 'traffic from web to the token-key api proxy');
    const response = await httpGet(port, '/to-token');
    assert.equal(response.status, 200);
    assert.equal(JSON.parse(response.body).path, '/to-token');
  });

  test('outbound token key serves mTLS', async () => {
    // A PIN file written by echo ends in a line break, which is not part of the PIN.
    const pinFile = join(pinDir, 'pin');
    writeFileSync(pinFile, `${sharedToken().pin}\n`, { mode: 0o600 });
    const options = tokenKeyFromFlags({ tlsKeyPkcs11Module: sharedToken().module, tlsKeyPkcs11TokenLabel: sharedToken().tokenLabel, tlsKeyPkcs11KeyLabel: 'web-token-tls', tlsKeyPkcs11PinFile: pinFile }, {});
    assert.ok(options !== undefined);
    assert.equal(options.pinFile, pinFile);
    const key = await TokenTlsKey.open(options);
    keys.push(key);
    const plain = await startProxy(mesh, 'api-plain', app.port);
    proxies.push(plain);
    const web = await startProxy(mesh, 'web-token', 9, ['api-plain'], { tokenKey: key });
    proxies.push(web);

    const port = web.upstreamPort('api-plain') ?? 0;
    await eventually(async () => (await httpGet(port, '/from-token').catch(() => ({ status: 0 }))).status === 200, 15_000, 'traffic from the token-key web proxy');
    const response = await httpGet(port, '/from-token');
    assert.equal(response.status, 200);
    assert.equal(JSON.parse(response.body).path, '/from-token');
  });

  test('renewal reuses the token key', async () => {
    const api = proxies[0]!;
    const key = keys[0]!;
    const before = api.svid?.serial;
    await api.renewNow();
    assert.notEqual(api.svid?.serial, before, 'a new certificate was issued');
    assert.equal(leafSpkiHex(api.svid?.chainPem ?? ''), await spkiHex(key.publicKey), 'for the same token key');
    const port = proxies[1]!.upstreamPort('api') ?? 0;
    await eventually(async () => (await httpGet(port, '/after-renewal').catch(() => ({ status: 0 }))).status === 200, 15_000, 'traffic after the renewal');
  });

  test('token key is not extractable', () => {
    const session = inspectorSession();
    try {
      const { api, library } = session;
      const found = session.findObjects([
        { type: api.CKA_CLASS, value: api.CKO_PRIVATE_KEY },
        { type: api.CKA_LABEL, value: 'api-tls' },
      ]);
      assert.equal(found.length, 1, 'one private key has the label');
      const privateKey = found[0]!;
      const attributes = library.C_GetAttributeValue(session.handle, privateKey, [
        { type: api.CKA_TOKEN },
        { type: api.CKA_SENSITIVE },
        { type: api.CKA_EXTRACTABLE },
        { type: api.CKA_NEVER_EXTRACTABLE },
        { type: api.CKA_KEY_TYPE },
      ]);
      const value = (type: number): Buffer | undefined => attributes.find((attribute) => attribute.type === type)?.value;
      assert.equal(readBool(value(api.CKA_EXTRACTABLE)), false);
      assert.equal(readBool(value(api.CKA_SENSITIVE)), true);
      assert.equal(readBool(value(api.CKA_NEVER_EXTRACTABLE)), true);
      assert.equal(readBool(value(api.CKA_TOKEN)), true);
      assert.equal(readUlong(value(api.CKA_KEY_TYPE)), api.CKK_EC);
      assert.throws(
        () => library.C_GetAttributeValue(session.handle, privateKey, [{ type: api.CKA_VALUE }]),
        (error: unknown) => ckrName(error) === 'CKR_ATTRIBUTE_SENSITIVE',
        'the token refuses to return the private value',
      );
    } finally {
      session.close();
    }
  });

  test('existing key found by label', async () => {
    const again = await openKey('api-tls');
    assert.equal(again.generated, false);
    assert.equal(await spkiHex(again.publicKey), await spkiHex(keys[0]!.publicKey));
  });

  test('wrong PIN is rejected', async () => {
    await assert.rejects(TokenTlsKey.open(keyOptions('api-tls', { pin: '0000' })), hasCode('SEALMESH_ERR_TLS_KEY_HSM_LOGIN_FAILED'));
  });

  test('unknown token is rejected', async () => {
    await assert.rejects(TokenTlsKey.open(keyOptions('api-tls', { tokenLabel: 'no-such-token' })), hasCode('SEALMESH_ERR_TLS_KEY_HSM_TOKEN_MISSING'));
  });

  test('missing module is rejected', async () => {
    await assert.rejects(TokenTlsKey.open(keyOptions('api-tls', { module: join(pinDir, 'missing-module.so') })), hasCode('SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE'));
  });

  test('missing engine is rejected', () => {
    assert.throws(() => findEngineDirectory({ OPENSSL_ENGINES: pinDir }), hasCode('SEALMESH_ERR_TLS_KEY_ENGINE_MISSING'));
  });

  test('failed engine load removes the generated pair', () => {
    // A pkcs11.so that is not an engine passes the directory check and fails the load after the
    // pair was generated. The child process keeps this process's engine registration intact.
    const engines = join(pinDir, 'broken-engines');
    mkdirSync(engines);
    writeFileSync(join(engines, 'pkcs11.so'), 'not an engine');
    const script = [
      `import { TokenTlsKey } from ${JSON.stringify(new URL('../src/proxy/token-key.ts', import.meta.url).href)};`,
      `try { await TokenTlsKey.open(${JSON.stringify(keyOptions('engine-fails'))}); console.log('opened'); }`,
      `catch (error) { console.log(error.code); }`,
    ].join('\n');
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, OPENSSL_ENGINES: engines },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.match(result.stdout, /^SEALMESH_ERR_TLS_KEY_ENGINE_/m, `stdout: ${result.stdout}\nstderr: ${result.stderr}`);
    const session = inspectorSession();
    try {
      const left = session.findObjects([{ type: session.api.CKA_LABEL, value: 'engine-fails' }]);
      assert.equal(left.length, 0, 'no key object of the failed start is left in the token');
    } finally {
      session.close();
    }
  });

  test('extractable key is rejected', async () => {
    const session = inspectorSession();
    try {
      const { api, library } = session;
      library.C_GenerateKeyPair(
        session.handle,
        { mechanism: api.CKM_EC_KEY_PAIR_GEN },
        [
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_VERIFY, value: true },
          { type: api.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
          { type: api.CKA_LABEL, value: 'exportable-tls' },
        ],
        [
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_SENSITIVE, value: false },
          { type: api.CKA_EXTRACTABLE, value: true },
          { type: api.CKA_SIGN, value: true },
          { type: api.CKA_LABEL, value: 'exportable-tls' },
        ],
      );
    } finally {
      session.close();
    }
    await assert.rejects(TokenTlsKey.open(keyOptions('exportable-tls')), (error: unknown) => {
      hasCode('SEALMESH_ERR_TLS_KEY_INVALID')(error);
      assert.match((error as Error).message, /CKA_EXTRACTABLE is true/);
      return true;
    });
  });

  test('RSA key is rejected', async () => {
    const session = inspectorSession();
    try {
      const { api, library } = session;
      library.C_GenerateKeyPair(
        session.handle,
        { mechanism: api.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_VERIFY, value: true },
          { type: api.CKA_MODULUS_BITS, value: 2048 },
          { type: api.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
          { type: api.CKA_LABEL, value: 'rsa-tls' },
        ],
        [
          { type: api.CKA_TOKEN, value: true },
          { type: api.CKA_PRIVATE, value: true },
          { type: api.CKA_SENSITIVE, value: true },
          { type: api.CKA_EXTRACTABLE, value: false },
          { type: api.CKA_SIGN, value: true },
          { type: api.CKA_LABEL, value: 'rsa-tls' },
        ],
      );
    } finally {
      session.close();
    }
    await assert.rejects(TokenTlsKey.open(keyOptions('rsa-tls')), (error: unknown) => {
      hasCode('SEALMESH_ERR_TLS_KEY_INVALID')(error);
      assert.match((error as Error).message, /not an EC key/);
      return true;
    });
  });

  test('engine options print no warning', () => {
    assert.deepEqual(
      warnings.map((warning) => `${warning.name} ${(warning as Error & { code?: string }).code ?? ''}: ${warning.message}`),
      [],
    );
  });
});

describe('token key flags', () => {
  test('PIN variable is required', () => {
    assert.throws(
      () => tokenKeyFromFlags({ tlsKeyPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', tlsKeyPkcs11TokenLabel: 'proxy' }, {}),
      hasCode('SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING'),
    );
  });

  test('module and token are required', () => {
    assert.throws(() => tokenKeyFromFlags({ tlsKeyPkcs11TokenLabel: 'proxy' }, { SEALMESH_TLS_KEY_PKCS11_PIN: '1234' }), hasCode('SEALMESH_ERR_CONFIG_INVALID'));
  });

  test('no flags keep the key in memory', () => {
    assert.equal(tokenKeyFromFlags({}, {}), undefined);
  });

  test('sandbox combination is rejected', () => {
    assert.throws(() => assertTlsKeyWithoutSandbox({ tlsKeyPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', sandbox: true }), hasCode('SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED'));
    assert.throws(() => assertTlsKeyWithoutSandbox({ tlsKeyPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', sandboxPrint: true }), hasCode('SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED'));
    assert.doesNotThrow(() => assertTlsKeyWithoutSandbox({ sandbox: true }));
  });

  test('production mode combination is rejected', () => {
    assert.throws(() => assertTlsKeyWithoutSandbox({ tlsKeyPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', mode: 'production' }), (error: unknown) => {
      hasCode('SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED')(error);
      assert.match((error as Error).message, /^--tls-key-pkcs11-module cannot be combined with --mode production: /);
      return true;
    });
    assert.doesNotThrow(() => assertTlsKeyWithoutSandbox({ tlsKeyPkcs11Module: '/usr/lib/softhsm/libsofthsm2.so', mode: 'development' }));
    assert.doesNotThrow(() => assertTlsKeyWithoutSandbox({ mode: 'production' }));
  });

  test('sandboxed CLI proxy is rejected', async () => {
    const result = await runSealmesh([
      'proxy',
      '--service',
      'api',
      '--listen',
      '127.0.0.1:0',
      '--app',
      '127.0.0.1:9',
      '--join-token',
      'unused',
      '--ca-file',
      '/dev/null',
      '--tls-key-pkcs11-module',
      '/usr/lib/softhsm/libsofthsm2.so',
      '--tls-key-pkcs11-token-label',
      'proxy',
      '--sandbox',
    ]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED/);
    assert.match(result.stderr, /ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED/);
  });

  test('missing PIN is logged', async () => {
    const result = await runSealmesh(
      [
        'proxy',
        '--service',
        'api',
        '--listen',
        '127.0.0.1:0',
        '--app',
        '127.0.0.1:9',
        '--ca-file',
        '/dev/null',
        '--tls-key-pkcs11-module',
        '/usr/lib/softhsm/libsofthsm2.so',
        '--tls-key-pkcs11-token-label',
        'proxy',
      ],
      { env: { SEALMESH_JOIN_TOKEN: 'unused', SEALMESH_TLS_KEY_PKCS11_PIN: '' } },
    );
    assert.equal(result.code, 1);
    assert.match(result.stderr, /"code":"SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING"/, 'the rejection is a log line as well as an error');
    assert.match(result.stderr, /"msg":"the TLS key in the PKCS#11 token cannot be used"/);
  });
});

describe('proxy command with a token key', { skip }, () => {
  const dir = tempDir('sealmesh-tls-key-cli-');
  const processes: CliProcess[] = [];
  let app: Awaited<ReturnType<typeof startHttpApp>>;

  after(async () => {
    await stopProcesses(processes);
    await app?.close();
    dir.remove();
  });

  test('token-key proxy carries traffic', async () => {
    const hsm = sharedToken();
    const server = await startServerProcess(dir.path);
    processes.push(server.running);
    app = await startHttpApp('backend');
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });
    const tokenFlags = ['--tls-key-pkcs11-module', hsm.module, '--tls-key-pkcs11-token-label', hsm.tokenLabel, '--tls-key-pkcs11-key-label', 'cli-api-tls'];
    const api = await startProxyProcess(server, 'api', await createJoinToken(server, 'api'), ['--app', `127.0.0.1:${app.port}`, ...tokenFlags], {
      env: { SEALMESH_TLS_KEY_PKCS11_PIN: hsm.pin },
    });
    processes.push(api.running);
    const port = await freePort();
    const web = await startProxyProcess(server, 'web', await createJoinToken(server, 'web'), ['--app', '127.0.0.1:9', '--upstream', `api=127.0.0.1:${port}`]);
    processes.push(web.running);

    await eventually(async () => (await httpGet(port, '/cli').catch(() => ({ status: 0 }))).status === 200, 30_000, 'traffic to the token-key proxy process');
    const output = api.running.stdout() + api.running.stderr();
    assert.match(output, /TLS key generated in the PKCS#11 token/);
    assert.match(output, new RegExp(`"tokenLabel":"${hsm.tokenLabel}"`), 'the log names the token label instead of redacting it');
    assert.doesNotMatch(api.running.stderr(), /DEP0183|Warning|Login failed/, 'the engine leaves the log clean');
    assert.doesNotMatch(output, /pin-value/, 'the engine key URI, which contains the PIN, is not logged');

    const apiStatus = JSON.parse((await httpGet(api.adminPort, '/status')).body) as { tlsKey: unknown };
    assert.deepEqual(apiStatus.tlsKey, { location: 'pkcs11', tokenLabel: hsm.tokenLabel, keyLabel: 'cli-api-tls' });
    const webStatus = JSON.parse((await httpGet(web.adminPort, '/status')).body) as { tlsKey: unknown };
    assert.deepEqual(webStatus.tlsKey, { location: 'memory' });
  });
});
