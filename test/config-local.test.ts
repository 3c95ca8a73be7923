import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  KNOWN_ENVIRONMENT_VARIABLES,
  allowedLocalConfigKeys,
  checkEnvironment,
  checkFlagName,
  isSecuritySettingName,
  loadLocalConfig,
  type LocalConfigProgram,
} from '../src/config/index.ts';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';

function hasCode(code: ErrorCode, ...patterns: RegExp[]): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeConfig(t: TestContext, name: string, text: string): string {
  const path = join(tempDir(t), name);
  writeFileSync(path, text);
  return path;
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

test('valid server file loads', async (t) => {
  const path = writeConfig(t, 'server.yaml', 'data_dir: data\naddr: 127.0.0.1:9501\nlease: 45s\nlog_level: debug\n');

  const config = await loadLocalConfig(path, 'server');

  assert.deepEqual(config, {
    dataDir: join(path, '..', 'data'),
    addr: { host: '127.0.0.1', port: 9501 },
    leaseSeconds: 45,
    logLevel: 'debug',
  });
});

test('valid proxy file loads', async (t) => {
  const path = writeConfig(
    t,
    'proxy.json',
    JSON.stringify({
      service: 'web',
      listen: '0.0.0.0:21000',
      app: '127.0.0.1:8080',
      upstreams: { api: '127.0.0.1:9191', 'billing/ledger': '[::1]:9192', cache: 'unix:/run/sealmesh/web/cache.sock' },
      advertise: '10.0.0.5:21000',
      admin: 'localhost:19000',
      drain: 30,
      addr: '127.0.0.1:8501',
      ca_file: '/etc/sealmesh/trust-bundle.pem',
      log_level: 'warn',
    }),
  );

  const config = await loadLocalConfig(path, 'proxy');

  assert.equal(config.service, 'web');
  assert.deepEqual(config.listen, { host: '0.0.0.0', port: 21000 });
  assert.deepEqual(config.upstreams, [
    { service: 'api', namespace: 'default', name: 'api', listen: { host: '127.0.0.1', port: 9191 } },
    { service: 'billing/ledger', namespace: 'billing', name: 'ledger', listen: { host: '::1', port: 9192 } },
    { service: 'cache', namespace: 'default', name: 'cache', listen: { path: '/run/sealmesh/web/cache.sock' } },
  ]);
  assert.deepEqual(config.admin, { host: 'localhost', port: 19000 });
  assert.equal(config.drainSeconds, 30);
  assert.equal(config.addr, 'https://127.0.0.1:8501');
  assert.equal(config.caFile, '/etc/sealmesh/trust-bundle.pem');
  assert.equal(config.logLevel, 'warn');
});

test('empty file loads as no settings', async (t) => {
  assert.deepEqual(await loadLocalConfig(writeConfig(t, 'server.yaml', ''), 'server'), {});
  assert.deepEqual(await loadLocalConfig(writeConfig(t, 'server.json', '{}'), 'server'), {});
});

for (const [format, name, text] of [
  ['YAML', 'server.yaml', 'addr: 127.0.0.1:8501\ndefault_policy: allow\n'],
  ['JSON', 'server.json', '{"addr": "127.0.0.1:8501", "default_policy": "allow"}'],
] as const) {
  test(`default policy in ${format} file rejected`, async (t) => {
    const path = writeConfig(t, name, text);

    await assert.rejects(
      loadLocalConfig(path, 'server'),
      hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', new RegExp(escape(path)), /"default_policy"/, /signed manifest/, /sealmesh manifest/),
    );
  });
}

for (const [format, name, text, key] of [
  ['YAML', 'server.yaml', 'acl:\n  enabled: false\n', 'acl'],
  ['JSON', 'server.json', '{"acl": {"enabled": false}}', 'acl'],
  ['YAML', 'proxy.yaml', 'acl_enabled: false\n', 'acl_enabled'],
  ['JSON', 'proxy.json', '{"aclEnabled": false}', 'aclEnabled'],
] as const) {
  test(`ACLs disabled in ${format} file ${name} rejected`, async (t) => {
    const path = writeConfig(t, name, text);
    const program = name.startsWith('server') ? 'server' : 'proxy';

    await assert.rejects(loadLocalConfig(path, program), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', new RegExp(escape(path)), new RegExp(`"${key}"`)));
  });
}

test('nested security key named by its path', async (t) => {
  const path = writeConfig(t, 'server.yaml', 'connect:\n  verify_incoming: false\n');

  await assert.rejects(loadLocalConfig(path, 'server'), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', /"connect\.verify_incoming"/));
});

test('every security setting in a file listed', async (t) => {
  const path = writeConfig(t, 'server.yaml', 'trustDomain: other.sealmesh\ntls:\n  min_version: TLSv1.2\nsvid_ttl_max: 30d\n');

  await assert.rejects(loadLocalConfig(path, 'server'), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', /keys "trustDomain", "tls", "svid_ttl_max" are security settings/));
});

test('security keys rejected in both programs', async (t) => {
  const keys = [
    'trust_domain',
    'trustDomain',
    'default_policy',
    'defaultPolicy',
    'acl',
    'acl_enabled',
    'tls',
    'svid_ttl',
    'svidTtlMin',
    'operators',
    'manifest',
    'attestation',
    'intentions',
    'verify_incoming',
    'insecure_skip_verify',
    'key_exchange',
    'allow_dev_provider',
  ];
  const dir = tempDir(t);
  for (const program of ['server', 'proxy'] satisfies LocalConfigProgram[]) {
    for (const key of keys) {
      const path = join(dir, `${program}-${key}.json`);
      writeFileSync(path, JSON.stringify({ [key]: true }));
      await assert.rejects(loadLocalConfig(path, program), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', new RegExp(`"${key}"`)), `${program} ${key}`);
    }
  }
});

test('unknown key rejected with the closest key', async (t) => {
  const path = writeConfig(t, 'server.yaml', 'dataDir: /var/lib/sealmesh\n');

  await assert.rejects(loadLocalConfig(path, 'server'), hasCode('SEALMESH_ERR_CONFIG_UNKNOWN_KEY', new RegExp(escape(path)), /"dataDir"/, /did you mean "data_dir"/));
});

test('unknown key without a near match', async (t) => {
  const path = writeConfig(t, 'proxy.json', '{"colour": "blue"}');

  await assert.rejects(
    loadLocalConfig(path, 'proxy'),
    (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_CONFIG_UNKNOWN_KEY'));
      assert.match(error.message, /"colour"/);
      assert.doesNotMatch(error.message, /did you mean/);
      return true;
    },
  );
});

test('server key unknown to the proxy', async (t) => {
  const path = writeConfig(t, 'proxy.yaml', 'data_dir: /var/lib/sealmesh\n');

  await assert.rejects(loadLocalConfig(path, 'proxy'), hasCode('SEALMESH_ERR_CONFIG_UNKNOWN_KEY', /"data_dir" is not a proxy setting\. Allowed keys: service, /));
});

test('upstream service names are not setting names', async (t) => {
  const path = writeConfig(t, 'proxy.yaml', 'upstreams:\n  tls-gateway: 127.0.0.1:9300\n');

  const config = await loadLocalConfig(path, 'proxy');

  assert.equal(config.upstreams?.[0]?.service, 'tls-gateway');
});

test('invalid values rejected with file and key', async (t) => {
  const cases: Array<[LocalConfigProgram, string, RegExp]> = [
    ['server', 'addr: localhost\n', /"addr".*missing port/],
    ['server', 'lease: soon\n', /"lease".*not a duration/],
    ['server', 'log_level: loud\n', /"log_level".*not a log level/],
    ['server', 'data_dir: ""\n', /"data_dir".*non-empty string/],
    ['proxy', 'admin: 0.0.0.0:19000\n', /"admin".*not a loopback address/],
    ['proxy', 'upstreams:\n  api: 0.0.0.0:9191\n', /"upstreams\.api".*not a loopback address/],
    ['proxy', 'upstreams:\n  Bad_Name: 127.0.0.1:9191\n', /"upstreams\.Bad_Name"/],
    ['proxy', 'upstreams: [api]\n', /"upstreams".*map of service name/],
    ['proxy', 'upstreams:\n  api: unix:relative.sock\n', /"upstreams\.api".*not absolute/],
    ['proxy', 'addr: http://127.0.0.1:8501\n', /"addr".*does not use https/],
    ['proxy', 'app: 127.0.0.1:0\n', /"app".*outside 1-65535/],
    ['proxy', 'service: Web\n', /"service"/],
  ];
  const dir = tempDir(t);
  for (const [index, [program, text, pattern]] of cases.entries()) {
    const path = join(dir, `case-${index}.yaml`);
    writeFileSync(path, text);
    await assert.rejects(loadLocalConfig(path, program), hasCode('SEALMESH_ERR_CONFIG_INVALID', new RegExp(escape(path)), pattern), text);
  }
});

test('malformed files rejected', async (t) => {
  await assert.rejects(loadLocalConfig(writeConfig(t, 'server.json', '{"addr": '), 'server'), hasCode('SEALMESH_ERR_CONFIG_INVALID', /not valid JSON/));
  await assert.rejects(loadLocalConfig(writeConfig(t, 'server.yaml', 'addr: [\n'), 'server'), hasCode('SEALMESH_ERR_CONFIG_INVALID', /not valid YAML/));
  await assert.rejects(loadLocalConfig(writeConfig(t, 'server.yaml', '- addr\n'), 'server'), hasCode('SEALMESH_ERR_CONFIG_INVALID', /map of settings/));
  await assert.rejects(loadLocalConfig(writeConfig(t, 'server.yaml', 'addr: *missing\n'), 'server'), hasCode('SEALMESH_ERR_CONFIG_INVALID', /alias/));
  await assert.rejects(
    loadLocalConfig(writeConfig(t, 'server.json', '{"lease": "10s", "lease": "20s"}'), 'server'),
    hasCode('SEALMESH_ERR_CONFIG_INVALID', /unique/),
  );
  await assert.rejects(loadLocalConfig(join(tempDir(t), 'absent.yaml'), 'server'), hasCode('SEALMESH_ERR_CONFIG_INVALID', /cannot be read/));
});

test('allowed keys are not security settings', () => {
  for (const program of ['server', 'proxy'] satisfies LocalConfigProgram[]) {
    for (const key of allowedLocalConfigKeys(program)) {
      assert.equal(isSecuritySettingName(key), false, key);
    }
  }
});

test('known environment variables pass', () => {
  const env = Object.fromEntries(KNOWN_ENVIRONMENT_VARIABLES.map((name) => [name, 'x']));

  assert.doesNotThrow(() => checkEnvironment({ ...env, PATH: '/usr/bin', HOME: '/root' }));
});

test('security environment variables rejected', () => {
  for (const name of ['SEALMESH_DEFAULT_POLICY', 'SEALMESH_ACL_ENABLED', 'SEALMESH_TRUST_DOMAIN', 'SEALMESH_TLS_MIN_VERSION', 'SEALMESH_SVID_TTL', 'SEALMESH_MANIFEST']) {
    assert.throws(() => checkEnvironment({ [name]: 'allow', SEALMESH_ADDR: 'x' }), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', new RegExp(name), /signed manifest/), name);
  }
});

test('unknown environment variable rejected', () => {
  assert.throws(() => checkEnvironment({ SEALMESH_ADRR: 'x' }), hasCode('SEALMESH_ERR_CONFIG_UNKNOWN_KEY', /SEALMESH_ADRR \(did you mean SEALMESH_ADDR\?\)/));
  assert.throws(() => checkEnvironment({ SEALMESH_COLOUR: 'x' }), hasCode('SEALMESH_ERR_CONFIG_UNKNOWN_KEY', /SEALMESH_COLOUR/));
});

test('environment values never appear in errors', () => {
  assert.throws(
    () => checkEnvironment({ SEALMESH_DEFAULT_POLICY: 'secret-value-123', SEALMESH_OTHER: 'secret-value-456' }),
    (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_CONFIG_SECURITY_SETTING'));
      assert.doesNotMatch(error.message, /secret-value/);
      return true;
    },
  );
});

test('security flags rejected', () => {
  for (const flag of ['--default-policy', 'trust-domain', '--acl-enabled', '--tls-min-version', '--svid-ttl', '--insecure', '--allow-dev-provider']) {
    assert.throws(() => checkFlagName(flag), hasCode('SEALMESH_ERR_CONFIG_SECURITY_SETTING', /signed manifest/), flag);
  }
});

test('ordinary flags pass', () => {
  for (const flag of ['--addr', '--data-dir', '--lease', '--log-level', '--listen', '--app', '--upstream', '--advertise', '--admin', '--drain', '--ca-file', '--join-token', '--json', '--token', '--service']) {
    assert.doesNotThrow(() => checkFlagName(flag), flag);
  }
});
