import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../src/client/index.ts';
import { readCaFile } from '../src/cli/output.ts';
import { freePort, runCli, spawnCli, waitForExit, type CliProcess, type CliResult } from './helpers/cli.ts';
import { eventually, httpGet, startHttpApp, tempDir } from './helpers/mesh.ts';

const SERVER_READY_TIMEOUT_MS = 30_000;
const PROXY_READY_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 15_000;

interface ServiceListing {
  services: Array<{ name: string; namespace: string; instances: Array<{ id: string; address: string; port: number }> }>;
}

interface IntentionListing {
  intentions: Array<{ source: string; destination: string; action: string }>;
}

/** Parses a command's standard output as JSON, failing with the whole output when it is not. */
function parseJson<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    assert.fail(`stdout is not JSON (exit ${result.code})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
}

/** Formats a result for assertion messages. */
function describeResult(result: CliResult): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

describe('sealmesh CLI against a server process', () => {
  const dir = tempDir('sealmesh-cli-test-');
  const dataDir = join(dir.path, 'data');
  const bundlePath = join(dataDir, 'trust-bundle.pem');
  const running: CliProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  let server: CliProcess;
  let addr = '';
  let init: CliResult;
  let operatorToken = '';

  /** Flags that point a command at the test server with the operator token. */
  const connection = (): string[] => ['--addr', addr, '--ca-file', bundlePath, '--token', operatorToken];

  before(async () => {
    const port = await freePort();
    addr = `127.0.0.1:${port}`;
    server = spawnCli(['server', '--data-dir', dataDir, '--addr', addr, '--log-level', 'warn']);
    running.push(server);

    const serverExited = (): boolean => server.child.exitCode !== null || server.child.signalCode !== null;
    await eventually(
      () => {
        if (serverExited()) throw new Error(`the server exited before it was ready\nstderr: ${server.stderr()}`);
        return existsSync(bundlePath);
      },
      SERVER_READY_TIMEOUT_MS,
      bundlePath,
    );
    const client = new ApiClient({ url: `https://${addr}`, ca: readCaFile(bundlePath), timeoutMs: 2_000 });
    await eventually(
      async () => {
        if (serverExited()) throw new Error(`the server exited before it was ready\nstderr: ${server.stderr()}`);
        return client.get('/v1/status').then(
          () => true,
          () => false,
        );
      },
      SERVER_READY_TIMEOUT_MS,
      'GET /v1/status to succeed',
    );

    init = await runCli(['operator', 'init', '--addr', addr, '--ca-file', bundlePath, '--json']);
    operatorToken = (parseJson<{ token?: unknown }>(init).token as string | undefined) ?? '';
  });

  after(async () => {
    for (const close of closers) await close();
    for (const cli of running) {
      if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL');
    }
    dir.remove();
  });

  test('operator init prints a token', () => {
    assert.equal(init.code, 0, describeResult(init));
    const result = parseJson<{ token?: unknown; accessorId?: unknown; trustDomain?: unknown }>(init);
    assert.equal(typeof result.token, 'string');
    assert.ok(operatorToken.length > 0, 'token is not empty');
    assert.equal(typeof result.accessorId, 'string');
    assert.equal(typeof result.trustDomain, 'string');
  });

  test('second operator init fails', async () => {
    const result = await runCli(['operator', 'init', '--addr', addr, '--ca-file', bundlePath, '--json']);
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED/);
    assert.equal(result.stdout, '');
  });

  test('environment variables replace flags', async () => {
    const env = { SEALMESH_ADDR: addr, SEALMESH_CACERT: bundlePath, SEALMESH_TOKEN: operatorToken };
    const result = await runCli(['intention', 'list', '--json'], { env });
    assert.equal(result.code, 0, describeResult(result));
    assert.ok(Array.isArray(parseJson<IntentionListing>(result).intentions));
  });

  test('flags take precedence over environment variables', async () => {
    const env = { SEALMESH_ADDR: addr, SEALMESH_CACERT: bundlePath, SEALMESH_TOKEN: 'smt_not-a-real-token' };
    const result = await runCli(['service', 'list', '--json', '--token', operatorToken], { env });
    assert.equal(result.code, 0, describeResult(result));
  });

  test('missing token fails before any request', async () => {
    const result = await runCli(['service', 'list', '--addr', addr, '--ca-file', bundlePath]);
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_ACL_TOKEN_MISSING/);
  });

  test('token create prints a join token', async () => {
    const result = await runCli(['token', 'create', '--service', 'api', '--json', ...connection()]);
    assert.equal(result.code, 0, describeResult(result));
    const created = parseJson<{ token?: unknown; kind?: unknown; service?: unknown }>(result);
    assert.equal(typeof created.token, 'string');
    assert.notEqual(created.token, '');
    assert.equal(created.kind, 'join');
    assert.equal(created.service, 'api');
  });

  test('token create prints text', async () => {
    const result = await runCli(['token', 'create', '--service', 'api', ...connection()]);
    assert.equal(result.code, 0, describeResult(result));
    assert.match(result.stdout, /^Token:\s+\S+$/m);
    assert.match(result.stdout, /^Kind:\s+join \(service default\/api\)$/m);
  });

  test('intention create, list and delete', async () => {
    const allowed = await runCli(['intention', 'create', 'web', 'api', '--allow', '--json', ...connection()]);
    assert.equal(allowed.code, 0, describeResult(allowed));
    const created = parseJson<{ intention: { source: string; destination: string; action: string } }>(allowed);
    assert.equal(created.intention.source, 'web');
    assert.equal(created.intention.destination, 'api');
    assert.equal(created.intention.action, 'allow');

    const denied = await runCli(['intention', 'create', 'web', 'db', '--deny', ...connection()]);
    assert.equal(denied.code, 0, describeResult(denied));
    assert.equal(denied.stdout, 'Created: web => db (deny)\n');

    const listed = await runCli(['intention', 'list', '--json', ...connection()]);
    assert.equal(listed.code, 0, describeResult(listed));
    const pairs = parseJson<IntentionListing>(listed).intentions.map((entry) => `${entry.source} ${entry.destination} ${entry.action}`);
    assert.deepEqual(pairs.sort(), ['web api allow', 'web db deny']);

    const text = await runCli(['intention', 'list', ...connection()]);
    assert.equal(text.code, 0, describeResult(text));
    const lines = text.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^SOURCE\s+DESTINATION\s+ACTION\s+PERMISSIONS\s+PRECEDENCE\s+CREATED$/);
    assert.equal(lines.length, 3, text.stdout);
    assert.ok(lines.some((line) => /^web\s+api\s+allow\s+-\s/.test(line)), text.stdout);
    assert.ok(lines.some((line) => /^web\s+db\s+deny\s/.test(line)), text.stdout);

    const deletedJson = await runCli(['intention', 'delete', 'web', 'db', '--json', ...connection()]);
    assert.equal(deletedJson.code, 0, describeResult(deletedJson));
    assert.deepEqual(parseJson<{ deleted: unknown }>(deletedJson).deleted, { source: 'web', destination: 'db' });

    const deletedText = await runCli(['intention', 'delete', 'web', 'api', ...connection()]);
    assert.equal(deletedText.code, 0, describeResult(deletedText));
    assert.equal(deletedText.stdout, 'Deleted: web => api\n');

    const empty = await runCli(['intention', 'list', '--json', ...connection()]);
    assert.equal(empty.code, 0, describeResult(empty));
    assert.deepEqual(parseJson<IntentionListing>(empty).intentions, []);
  });

  test('intention create conflict fails', async () => {
    const first = await runCli(['intention', 'create', 'a', 'b', '--allow', ...connection()]);
    assert.equal(first.code, 0, describeResult(first));
    const second = await runCli(['intention', 'create', 'a', 'b', '--deny', ...connection()]);
    assert.equal(second.code, 1, describeResult(second));
    assert.match(second.stderr, /SEALMESH_ERR_CONFLICT/);
    const replaced = await runCli(['intention', 'create', 'a', 'b', '--deny', '--replace', ...connection()]);
    assert.equal(replaced.code, 0, describeResult(replaced));
    const removed = await runCli(['intention', 'delete', 'a', 'b', ...connection()]);
    assert.equal(removed.code, 0, describeResult(removed));
  });

  test('intention delete of unknown pair fails', async () => {
    const result = await runCli(['intention', 'delete', 'nobody', 'nothing', ...connection()]);
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_NOT_FOUND/);
  });

  test('service list on an empty catalog', async () => {
    const json = await runCli(['service', 'list', '--json', ...connection()]);
    assert.equal(json.code, 0, describeResult(json));
    assert.deepEqual(parseJson<ServiceListing>(json).services, []);

    const text = await runCli(['service', 'list', ...connection()]);
    assert.equal(text.code, 0, describeResult(text));
    assert.match(text.stdout, /^SERVICE\s+INSTANCE\s+ADDRESS\s+HEALTH\s+SPIFFE ID\s+SVID EXPIRES\n$/);
  });

  test('proxy registers and deregisters on SIGTERM', async () => {
    const app = await startHttpApp('api');
    closers.push(app.close);
    const adminPort = await freePort();
    const created = await runCli(['token', 'create', '--service', 'api', '--json', ...connection()]);
    assert.equal(created.code, 0, describeResult(created));
    const joinToken = parseJson<{ token: string }>(created).token;

    const proxy = spawnCli([
      'proxy',
      '--service', 'api',
      '--join-token', joinToken,
      '--listen', '127.0.0.1:0',
      '--app', `127.0.0.1:${app.port}`,
      '--admin', `127.0.0.1:${adminPort}`,
      '--addr', addr,
      '--ca-file', bundlePath,
      '--drain', '1s',
    ]);
    running.push(proxy);
    await eventually(
      async () => {
        if (proxy.child.exitCode !== null) throw new Error(`the proxy exited with ${proxy.child.exitCode}\nstderr: ${proxy.stderr()}\nstdout: ${proxy.stdout()}`);
        const ready = await httpGet(adminPort, '/ready').catch(() => ({ status: 0 }));
        return ready.status === 200;
      },
      PROXY_READY_TIMEOUT_MS,
      'the proxy admin endpoint to report ready',
    );

    const registered = await runCli(['service', 'list', '--json', ...connection()]);
    assert.equal(registered.code, 0, describeResult(registered));
    const api = parseJson<ServiceListing>(registered).services.find((entry) => entry.name === 'api');
    assert.ok(api !== undefined, `api is missing from ${registered.stdout}`);
    assert.equal(api.namespace, 'default');
    assert.equal(api.instances.length, 1);
    assert.equal(api.instances[0]?.address, '127.0.0.1');

    const text = await runCli(['service', 'list', ...connection()]);
    assert.equal(text.code, 0, describeResult(text));
    assert.match(text.stdout, /^api\s+\S+\s+127\.0\.0\.1:\d+\s+\S+\s+spiffe:\/\/\S+\/ns\/default\/svc\/api\s/m);

    proxy.child.kill('SIGTERM');
    const exit = await waitForExit(proxy.child, EXIT_TIMEOUT_MS);
    assert.equal(exit.signal, null, proxy.stderr());
    assert.equal(exit.code, 0, proxy.stderr());

    // The lease is 30 s, so an instance gone this soon was removed by deregistration.
    const deregistered = await runCli(['service', 'list', '--json', ...connection()]);
    assert.equal(deregistered.code, 0, describeResult(deregistered));
    assert.equal(parseJson<ServiceListing>(deregistered).services.find((entry) => entry.name === 'api'), undefined, deregistered.stdout);
  });

  test('join token is single use', async () => {
    const created = await runCli(['token', 'create', '--service', 'once', '--json', ...connection()]);
    assert.equal(created.code, 0, describeResult(created));
    const joinToken = parseJson<{ token: string }>(created).token;
    const args = ['proxy', '--service', 'once', '--join-token', joinToken, '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9', '--addr', addr, '--ca-file', bundlePath, '--drain', '1s'];

    const first = spawnCli(args);
    running.push(first);
    await eventually(() => /"msg":"enrolled"/.test(first.stderr()) || first.child.exitCode !== null, PROXY_READY_TIMEOUT_MS, 'the first proxy to enroll');
    assert.equal(first.child.exitCode, null, first.stderr());

    const second = await runCli(args);
    assert.equal(second.code, 1, describeResult(second));
    assert.match(second.stderr, /SEALMESH_ERR_ACL_TOKEN_USED/);

    first.child.kill('SIGTERM');
    const exit = await waitForExit(first.child, EXIT_TIMEOUT_MS);
    assert.equal(exit.code, 0, first.stderr());
  });

  test('unknown option is a usage error', async () => {
    const result = await runCli(['service', 'list', '--no-such-option', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /unknown option '--no-such-option' \(SEALMESH_ERR_CONFIG_INVALID\)$/m);
  });

  test('usage error under --json is JSON', async () => {
    const result = await runCli(['service', 'list', '--no-such-option', '--json', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.deepEqual(JSON.parse(result.stderr), { error: { code: 'SEALMESH_ERR_CONFIG_INVALID', message: "unknown option '--no-such-option'" } });
  });

  test('unknown command is a usage error', async () => {
    const result = await runCli(['no-such-command']);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /unknown command 'no-such-command' \(SEALMESH_ERR_CONFIG_INVALID\)$/m);
  });

  test('missing required option is a usage error', async () => {
    const result = await runCli(['proxy', '--service', 'api', '--app', '127.0.0.1:9']);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /required option '--listen <host:port>' not specified/);
  });

  test('server without data dir is a usage error', async () => {
    const result = await runCli(['server', '--addr', '127.0.0.1:1']);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /required option '--data-dir <dir>' not specified/);
  });

  test('missing argument is a usage error', async () => {
    const result = await runCli(['intention', 'delete', 'web', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /missing required argument 'dst' \(SEALMESH_ERR_CONFIG_INVALID\)$/m);
  });

  test('intention create without action is a usage error', async () => {
    const result = await runCli(['intention', 'create', 'a', 'b', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /exactly one of --allow and --deny/);
  });

  test('intention create with both actions is a usage error', async () => {
    const result = await runCli(['intention', 'create', 'a', 'b', '--allow', '--deny', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /exactly one of --allow and --deny/);
  });

  test('token create without service or kind is a usage error', async () => {
    const result = await runCli(['token', 'create', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_CONFIG_INVALID/);
  });

  test('bad listen address is a usage error', async () => {
    const result = await runCli(['proxy', '--service', 'api', '--join-token', 'smt_unused', '--listen', 'nope', '--app', '127.0.0.1:9', '--addr', addr, '--ca-file', bundlePath]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /--listen "nope" is invalid/);
  });

  test('bad duration is a usage error', async () => {
    const result = await runCli(['token', 'create', '--service', 'api', '--ttl', 'soon', ...connection()]);
    assert.equal(result.code, 2, describeResult(result));
    assert.match(result.stderr, /--ttl "soon" is invalid/);
  });

  test('wrong token fails', async () => {
    const result = await runCli(['service', 'list', '--addr', addr, '--ca-file', bundlePath, '--token', 'smt_not-a-real-token']);
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_ACL_TOKEN_INVALID/);
  });

  test('wrong token with --json prints a JSON error', async () => {
    const result = await runCli(['service', 'list', '--json', '--addr', addr, '--ca-file', bundlePath, '--token', 'smt_not-a-real-token']);
    assert.equal(result.code, 1, describeResult(result));
    assert.equal(result.stdout, '');
    const body = JSON.parse(result.stderr) as { error?: { code?: string } };
    assert.equal(body.error?.code, 'SEALMESH_ERR_ACL_TOKEN_INVALID');
  });

  test('unreachable server fails', async () => {
    const closedPort = await freePort();
    const result = await runCli(['service', 'list', '--addr', `127.0.0.1:${closedPort}`, '--ca-file', bundlePath, '--token', operatorToken]);
    assert.equal(result.code, 1, describeResult(result));
    assert.match(result.stderr, /SEALMESH_ERR_SERVER_UNREACHABLE/);
  });

  const helpCommands: string[][] = [
    [],
    ['server'],
    ['operator'],
    ['operator', 'init'],
    ['token'],
    ['token', 'create'],
    ['token', 'list'],
    ['token', 'delete'],
    ['intention'],
    ['intention', 'create'],
    ['intention', 'list'],
    ['intention', 'delete'],
    ['service'],
    ['service', 'list'],
    ['proxy'],
    ['dev'],
  ];
  describe('help', { concurrency: 4 }, () => {
    for (const command of helpCommands) {
      const name = ['sealmesh', ...command].join(' ');
      test(`${name} --help exits 0`, async () => {
        const result = await runCli([...command, '--help']);
        assert.equal(result.code, 0, describeResult(result));
        assert.ok(result.stdout.startsWith(`Usage: ${name} `), result.stdout);
      });
    }
  });

  test('server exits 0 on SIGTERM', async () => {
    server.child.kill('SIGTERM');
    const exit = await waitForExit(server.child, EXIT_TIMEOUT_MS);
    assert.equal(exit.signal, null, server.stderr());
    assert.equal(exit.code, 0, server.stderr());
  });
});
