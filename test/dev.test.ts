import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { freePort, processExists, runCli, spawnCli, waitForExit, waitForOutput, type CliProcess } from './helpers/cli.ts';
import { httpGet } from './helpers/mesh.ts';

const READY_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 20_000;

interface DevOutput {
  allowedPort: number;
  deniedPort: number;
  pids: number[];
  workDir: string;
}

/** Reads the demo URLs, the child pids and the temporary directory from the banner of `sealmesh dev`. */
function parseBanner(text: string): DevOutput {
  const allowed = /curl http:\/\/127\.0\.0\.1:(\d+)\/$/m.exec(text);
  const denied = /curl http:\/\/127\.0\.0\.1:(\d+)\/db$/m.exec(text);
  const processes = /^Processes: ([\d ]+)$/m.exec(text);
  const serverLog = /\(log: (\S+)\/server\.log\)/.exec(text);
  assert.ok(allowed !== null, `no allowed URL in:\n${text}`);
  assert.ok(denied !== null, `no denied URL in:\n${text}`);
  assert.ok(processes !== null, `no process list in:\n${text}`);
  assert.ok(serverLog !== null, `no server log path in:\n${text}`);
  return {
    allowedPort: Number(allowed[1]),
    deniedPort: Number(denied[1]),
    pids: (processes[1] ?? '').trim().split(/\s+/).map(Number),
    workDir: serverLog[1] ?? '',
  };
}

describe('sealmesh dev', () => {
  let dev: CliProcess;
  let banner: DevOutput;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  before(async () => {
    const port = await freePort();
    dev = spawnCli(['dev', '--port', String(port)]);
    const text = await waitForOutput(dev, /^Press Ctrl-C/m, READY_TIMEOUT_MS);
    banner = parseBanner(text);
  });

  after(async () => {
    // Killing dev closes the standard input of its children, which makes them exit too.
    if (dev !== undefined && dev.child.exitCode === null && dev.child.signalCode === null) {
      dev.child.kill('SIGKILL');
      await waitForExit(dev.child, EXIT_TIMEOUT_MS);
    }
    if (banner !== undefined && /sealmesh-dev-[^/]+$/.test(banner.workDir)) rmSync(banner.workDir, { recursive: true, force: true });
  });

  test('banner lists the server and three proxies', () => {
    assert.equal(banner.pids.length, 4, dev.stdout());
    for (const pid of banner.pids) assert.ok(Number.isInteger(pid) && pid > 0, `pid ${pid} in ${dev.stdout()}`);
    assert.ok(existsSync(banner.workDir), `${banner.workDir} exists while dev runs`);
  });

  test('banner names its own pid for SIGINT', () => {
    assert.match(dev.stdout(), new RegExp(`^From a script, send SIGINT to this process instead: kill -INT ${dev.child.pid}$`, 'm'));
  });

  test('allowed call goes web -> api -> db', async () => {
    const response = await httpGet(banner.allowedPort, '/');
    assert.equal(response.status, 200, response.body);
    const body = JSON.parse(response.body) as { service?: string; api?: { service?: string; db?: { service?: string; rows?: unknown[] } } };
    assert.equal(body.service, 'web');
    assert.equal(body.api?.service, 'api');
    assert.equal(body.api?.db?.service, 'db');
    assert.ok(Array.isArray(body.api?.db?.rows), response.body);
    assert.ok((body.api?.db?.rows?.length ?? 0) > 0, response.body);
  });

  test('denied call web -> db returns 502', async () => {
    const response = await httpGet(banner.deniedPort, '/db');
    assert.equal(response.status, 502, response.body);
    const body = JSON.parse(response.body) as { service?: string; error?: string };
    assert.equal(body.service, 'web');
    assert.match(body.error ?? '', /no intention allows web to call db/);
  });

  test('SIGINT stops dev with exit code 0', async () => {
    dev.child.kill('SIGINT');
    exit = await waitForExit(dev.child, EXIT_TIMEOUT_MS);
    assert.equal(exit.signal, null, dev.stderr());
    assert.equal(exit.code, 0, dev.stderr());
    assert.match(dev.stdout(), /^Dev mesh stopped/m);
  });

  test('every dev process has exited', () => {
    assert.ok(exit !== undefined, 'dev has exited');
    for (const pid of banner.pids) assert.equal(processExists(pid), false, `pid ${pid} is still running`);
  });

  test('temporary directory is removed', () => {
    assert.ok(exit !== undefined, 'dev has exited');
    assert.equal(existsSync(banner.workDir), false, `${banner.workDir} still exists`);
  });
});

test('dev with a bad port is a usage error', async () => {
  const result = await runCli(['dev', '--port', 'abc']);
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /--port "abc" is invalid/);
});
