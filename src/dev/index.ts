import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, existsSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../client/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { readCaFile } from '../cli/output.ts';
import { httpGet, startDemoApps, type DemoApp } from './apps.ts';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort(preferred = 0): Promise<number> {
  const tryPort = (port: number): Promise<number | undefined> =>
    new Promise((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(undefined));
      server.listen(port, '127.0.0.1', () => {
        const address = server.address();
        const bound = typeof address === 'object' && address !== null ? address.port : undefined;
        server.close(() => resolve(bound));
      });
    });
  if (preferred !== 0) {
    const port = await tryPort(preferred);
    if (port !== undefined) return port;
  }
  const port = await tryPort(0);
  if (port === undefined) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no free TCP port on 127.0.0.1');
  return port;
}

function parsePort(value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : 0;
  if (port < 1 || port > 65535) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--port ${JSON.stringify(value)} is invalid; use a TCP port from 1 to 65535`);
  }
  return port;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, children: ChildProcess[]): Promise<T> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const dead = children.find((child) => child.exitCode !== null || child.signalCode !== null);
    if (dead !== undefined) throw new SealmeshError('SEALMESH_ERR_INTERNAL', `a dev mesh process (pid ${dead.pid}) exited while waiting for ${what}; see its log`);
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new SealmeshError('SEALMESH_ERR_INTERNAL', `timed out after ${READY_TIMEOUT_MS} ms waiting for ${what}`);
}

/** Returns the CLI entry of this build, `main.ts` when run from source and `main.js` from dist. */
function cliEntry(): string {
  const self = fileURLToPath(import.meta.url);
  return join(self, '..', '..', 'cli', self.endsWith('.ts') ? 'main.ts' : 'main.js');
}

/**
 * Runs the dev mesh: a server on a temporary data directory, three demo apps (web, api, db), each
 * behind its own proxy process, and intentions allowing web → api and api → db while web → db is
 * denied by the default policy. Ctrl-C stops every process it started and removes the directory.
 */
export async function runDev(flags: { port?: string }): Promise<void> {
  const requestedPort = flags.port !== undefined ? parsePort(flags.port) : undefined;
  const workDir = mkdtempSync(join(tmpdir(), 'sealmesh-dev-'));
  const dataDir = join(workDir, 'data');
  const logDir = workDir;
  const children: ChildProcess[] = [];
  let server: ChildProcess | undefined;
  let apps: DemoApp[] = [];
  let stopping: Promise<void> | undefined;
  let started = false;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.stdout.write('\nStopping the dev mesh...\n');
      // Proxies stop first, so that they can still deregister from the server.
      await Promise.all(children.filter((child) => child !== server).map((child) => stopChild(child)));
      if (server !== undefined) await stopChild(server);
      // close() waits for open connections, so they are closed right after it is called.
      const closed = apps.map((app) => new Promise<void>((resolve) => app.server.close(() => resolve())));
      for (const app of apps) app.server.closeAllConnections();
      await Promise.all(closed);
      if (started) {
        rmSync(workDir, { recursive: true, force: true });
      } else {
        // A failed start keeps the directory so that the logs named in the error can be read.
        rmSync(dataDir, { recursive: true, force: true });
        process.stdout.write(`The dev mesh failed to start; its logs are kept in ${logDir}\n`);
      }
      process.stdout.write('Dev mesh stopped; every process it started has exited.\n');
    })();
    return stopping;
  };
  const signalled = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });

  const spawnCli = (name: string, args: string[], env: Record<string, string> = {}): ChildProcess => {
    const logFd = openSync(join(logDir, `${name}.log`), 'a', 0o600);
    const child = spawn(process.execPath, [cliEntry(), ...args], {
      // Standard input stays open as a pipe: a child exits when it closes, so nothing outlives this
      // process even when it is killed without a chance to clean up.
      stdio: ['pipe', logFd, logFd],
      env: { ...process.env, ...env, SEALMESH_EXIT_WITH_PARENT: '1' },
    });
    closeSync(logFd);
    children.push(child);
    return child;
  };

  try {
    const serverPort = requestedPort ?? (await freePort(8501));
    const addr = `https://127.0.0.1:${serverPort}`;
    server = spawnCli('server', ['server', '--data-dir', dataDir, '--addr', `127.0.0.1:${serverPort}`, '--lease', '10s']);
    const bundlePath = join(dataDir, 'trust-bundle.pem');
    await waitFor('the server trust bundle', async () => (existsSync(bundlePath) ? true : undefined), children);
    const ca = readCaFile(bundlePath);
    const anonymous = new ApiClient({ url: addr, ca });
    await waitFor('the server API', () => anonymous.get('/v1/status'), children);

    const { token } = await anonymous.post<{ token: string }>('/v1/operator/init', {});
    const operator = anonymous.with({ token });
    await operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', description: 'dev mesh demo' });
    await operator.post('/v1/intentions', { source: 'api', destination: 'db', action: 'allow', description: 'dev mesh demo' });

    const upstreamPorts = { web: { api: await freePort(), db: await freePort() }, api: { db: await freePort() } };
    apps = await startDemoApps(upstreamPorts);
    const appPort = (name: string): number => apps.find((app) => app.name === name)?.port ?? 0;
    const upstreamFlags: Record<string, string[]> = {
      web: ['--upstream', `api=127.0.0.1:${upstreamPorts.web.api}`, '--upstream', `db=127.0.0.1:${upstreamPorts.web.db}`],
      api: ['--upstream', `db=127.0.0.1:${upstreamPorts.api.db}`],
      db: [],
    };
    const adminPorts: Record<string, number> = {};
    for (const name of ['db', 'api', 'web']) {
      const join = await operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service: name, ttlSeconds: 600, description: 'dev mesh proxy' });
      adminPorts[name] = await freePort();
      spawnCli(
        `proxy-${name}`,
        [
          'proxy',
          '--service', name,
          '--listen', '127.0.0.1:0',
          '--app', `127.0.0.1:${appPort(name)}`,
          '--admin', `127.0.0.1:${adminPorts[name]}`,
          '--addr', addr,
          '--ca-file', bundlePath,
          '--drain', '2s',
          ...(upstreamFlags[name] ?? []),
        ],
        // The join token travels in the environment, not in argv, where other users could read it.
        { SEALMESH_JOIN_TOKEN: join.token },
      );
    }
    for (const name of ['db', 'api', 'web']) {
      const adminPort = adminPorts[name] ?? 0;
      await waitFor(`the ${name} proxy`, async () => ((await httpGet(adminPort, '/ready')).status === 200 ? true : undefined), children);
    }

    const webPort = appPort('web');
    const allowed = await httpGet(webPort, '/');
    const denied = await httpGet(webPort, '/db');
    const lines = [
      '',
      'sealmesh dev mesh is running. DEV MODE IS NOT FOR PRODUCTION: its data directory is temporary,',
      'its keys and tokens are thrown away on exit, and it prints an operator token to the terminal.',
      '',
      `  control plane   ${addr}   (log: ${join(logDir, 'server.log')})`,
      `  services        web -> api -> db, each app behind its own proxy (logs: ${join(logDir, 'proxy-*.log')})`,
      '  intentions      web -> api allow, api -> db allow, everything else denied by default',
      '',
      `Allowed call, web -> api -> db (status ${allowed.status}):`,
      `  curl http://127.0.0.1:${webPort}/`,
      `  ${summarise(allowed.body)}`,
      `Denied call, web -> db (status ${denied.status}):`,
      `  curl http://127.0.0.1:${webPort}/db`,
      `  ${summarise(denied.body)}`,
      '',
      'Use the CLI against this mesh:',
      `  export SEALMESH_ADDR=${addr}`,
      `  export SEALMESH_CACERT=${bundlePath}`,
      `  export SEALMESH_TOKEN=${token}`,
      '  npm run sealmesh -- service list',
      '  npm run sealmesh -- intention create web db --allow   # then repeat the denied call',
      '',
      `Processes: ${children.map((child) => child.pid).join(' ')}`,
      'Press Ctrl-C to stop every process of the dev mesh.',
      `From a script, send SIGINT to this process instead: kill -INT ${process.pid}`,
      '',
    ];
    started = true;
    process.stdout.write(lines.join('\n'));
    await signalled;
  } finally {
    await stop();
  }
}

/** Returns a response body as one line of at most 160 characters. */
function summarise(body: unknown): string {
  const text = typeof body === 'string' ? body.trim() : JSON.stringify(body);
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

/** Sends SIGTERM, waits for the child to exit, and kills it when it does not within the timeout. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
