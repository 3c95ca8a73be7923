import { execFileSync, spawn, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { stripTypeScriptTypes } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../src/client/index.ts';
import { silentLogger } from '../src/log/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../src/pki/index.ts';
import { ControlPlane } from '../src/server/index.ts';
import { formatSpiffeId } from '../src/spiffe/index.ts';
import { integerSetting } from './settings.ts';

/**
 * The processes behind the data-path benchmark, all on 127.0.0.1: one nginx backend and three
 * pairs of proxies in front of it (sealmesh, HAProxy, nginx stream). In each pair a client-side
 * proxy takes plaintext and originates mTLS to a server-side proxy that terminates it.
 */

/** Debian packages of the external tools, by executable. */
export const TOOL_PACKAGES: Record<string, string> = {
  wrk: 'wrk',
  h2load: 'nghttp2-client',
  haproxy: 'haproxy',
  nginx: 'nginx',
};
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';
/** HAProxy's buffer size (tune.bufsize), which bounds each read and each TLS write. 16 KiB is HAProxy's default. */
const HAPROXY_BUFSIZE = integerSetting('SEALMESH_BENCH_HAPROXY_BUFSIZE', 16384);

export const SERVER_SERVICE = 'bench-server';
export const CLIENT_SERVICE = 'bench-client';

export interface ProxyPair {
  name: 'sealmesh' | 'haproxy' | 'nginx';
  /** Plaintext port of the client-side proxy, where the load generator connects. */
  port: number;
  client: ChildProcess;
  server: ChildProcess;
}

export interface Bench {
  dir: string;
  backendPort: number;
  backend: ChildProcess;
  pairs: ProxyPair[];
  control: ControlPlane;
  /** Asks one sealmesh proxy process to renew its SVID and resolves when it has. */
  renew: (side: 'client' | 'server') => Promise<void>;
  stop: () => Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  return address.port;
}

/** Resolves once something accepts TCP connections on the port. */
async function waitForPort(port: number, what: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode} before listening on ${port}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} did not listen on ${port} within 10 s`);
}

function start(command: string, args: string[], dir: string, name: string): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    if (stderr.length > 4096) stderr = stderr.slice(-4096);
  });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal === null) process.stderr.write(`${name} exited with code ${code}: ${stderr}\n`);
  });
  writeFileSync(join(dir, `${name}.cmd`), `${command} ${args.join(' ')}\n`);
  return child;
}

function nginxMain(dir: string, name: string, body: string, module = false): string {
  const path = join(dir, `${name}.conf`);
  writeFileSync(
    path,
    [
      module ? `load_module ${NGINX_STREAM_MODULE};` : '',
      'daemon off;',
      'master_process off;',
      'worker_processes 1;',
      `pid ${join(dir, `${name}.pid`)};`,
      `error_log ${join(dir, `${name}.error.log`)} error;`,
      'events { worker_connections 16384; }',
      body,
    ].join('\n'),
  );
  return path;
}

/** Issues an SVID for `service` from the mesh CA and writes its key, chain and the bundle as PEM files. */
async function issueFiles(control: ControlPlane, trustDomain: string, service: string, dir: string): Promise<{ key: string; chain: string; combined: string; bundle: string }> {
  const keys = await generateKeyPair();
  const entitled = { trustDomain, namespace: 'default', service };
  const csrPem = await generateCsr(formatSpiffeId(entitled), keys);
  const issued = await control.ca.issueSvid({ csrPem, entitled, ttlSeconds: 24 * 3600 });
  const keyPem = (await privateKeyToPem(keys.privateKey)).toString('utf8');
  const files = {
    key: join(dir, `${service}.key`),
    chain: join(dir, `${service}.crt`),
    combined: join(dir, `${service}.pem`),
    bundle: join(dir, 'bundle.pem'),
  };
  writeFileSync(files.key, keyPem, { mode: 0o600 });
  writeFileSync(files.chain, issued.chainPem);
  writeFileSync(files.combined, issued.chainPem + keyPem, { mode: 0o600 });
  writeFileSync(files.bundle, control.ca.bundle().join(''));
  return files;
}

async function startBackend(dir: string): Promise<{ port: number; child: ChildProcess }> {
  const root = join(dir, 'www');
  mkdirSync(root);
  writeFileSync(join(root, '1k'), randomBytes(1024));
  writeFileSync(join(root, '1m'), randomBytes(1024 * 1024));
  const port = await freePort();
  const config = nginxMain(
    dir,
    'backend',
    `http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port} backlog=4096; root ${root}; }
}`,
  );
  const child = start('nginx', ['-c', config, '-e', join(dir, 'backend.error.log')], dir, 'backend');
  await waitForPort(port, 'nginx backend', child);
  return { port, child };
}

async function startHaproxy(dir: string, backendPort: number, client: { combined: string; bundle: string }, server: { combined: string; bundle: string }): Promise<ProxyPair> {
  const clientPort = await freePort();
  const serverPort = await freePort();
  const common = `global
  nbthread 1
  maxconn 8000
  tune.bufsize ${HAPROXY_BUFSIZE}
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
`;
  const serverConfig = join(dir, 'haproxy-server.cfg');
  writeFileSync(
    serverConfig,
    `${common}frontend mtls
  bind 127.0.0.1:${serverPort} ssl crt ${server.combined} ca-file ${server.bundle} verify required ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app 127.0.0.1:${backendPort}
`,
  );
  const clientConfig = join(dir, 'haproxy-client.cfg');
  writeFileSync(
    clientConfig,
    `${common}frontend local
  bind 127.0.0.1:${clientPort}
  default_backend peer
backend peer
  server peer 127.0.0.1:${serverPort} ssl crt ${client.combined} ca-file ${client.bundle} verify required verifyhost ${SERVER_SERVICE} ssl-min-ver TLSv1.3
`,
  );
  const serverChild = start('haproxy', ['-db', '-f', serverConfig], dir, 'haproxy-server');
  const clientChild = start('haproxy', ['-db', '-f', clientConfig], dir, 'haproxy-client');
  await waitForPort(serverPort, 'haproxy server-side', serverChild);
  await waitForPort(clientPort, 'haproxy client-side', clientChild);
  return { name: 'haproxy', port: clientPort, client: clientChild, server: serverChild };
}

async function startNginxStream(dir: string, backendPort: number, client: { key: string; chain: string; bundle: string }, server: { key: string; chain: string; bundle: string }): Promise<ProxyPair> {
  const clientPort = await freePort();
  const serverPort = await freePort();
  const serverConfig = nginxMain(
    dir,
    'nginx-server',
    `stream {
  server {
    listen 127.0.0.1:${serverPort} ssl backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate ${server.chain};
    ssl_certificate_key ${server.key};
    ssl_client_certificate ${server.bundle};
    ssl_verify_client on;
    ssl_verify_depth 3;
    proxy_pass 127.0.0.1:${backendPort};
  }
}`,
    true,
  );
  // nginx checks the server's name against proxy_ssl_name; an SVID has no DNS name, so OpenSSL falls
  // back to the subject's common name, which the mesh CA sets to the service name.
  const clientConfig = nginxMain(
    dir,
    'nginx-client',
    `stream {
  server {
    listen 127.0.0.1:${clientPort} backlog=4096;
    proxy_pass 127.0.0.1:${serverPort};
    proxy_ssl on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_certificate ${client.chain};
    proxy_ssl_certificate_key ${client.key};
    proxy_ssl_trusted_certificate ${client.bundle};
    proxy_ssl_verify on;
    proxy_ssl_verify_depth 3;
    proxy_ssl_name ${SERVER_SERVICE};
    proxy_ssl_session_reuse on;
  }
}`,
    true,
  );
  const serverChild = start('nginx', ['-c', serverConfig, '-e', join(dir, 'nginx-server.error.log')], dir, 'nginx-server');
  const clientChild = start('nginx', ['-c', clientConfig, '-e', join(dir, 'nginx-client.error.log')], dir, 'nginx-client');
  await waitForPort(serverPort, 'nginx server-side', serverChild);
  await waitForPort(clientPort, 'nginx client-side', clientChild);
  return { name: 'nginx', port: clientPort, client: clientChild, server: serverChild };
}

function forkProxy(config: Record<string, unknown>, entry: string): Promise<{ child: ChildProcess; started: { inboundPort: number; upstreamPort?: number } }> {
  const child = fork(entry, [JSON.stringify(config)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: process.env.SEALMESH_BENCH_PROXY_ARGS?.split(' ').filter(Boolean) ?? [] });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`sealmesh proxy ${String(config.service)} exited with code ${code} before it started`)));
    child.on('message', (message: { type: string; inboundPort: number; upstreamPort?: number }) => {
      if (message.type === 'started') resolve({ child, started: message });
    });
  });
}

/**
 * Compiles the sources as `npm run build` does, into .tmp/bench-build, so that the proxies run as
 * the published package runs them rather than through Node's type stripping, which by itself adds
 * 15 to 20 MiB of resident memory to a process. The entry script is stripped of its types too,
 * because a TypeScript entry alone loads the type stripper. Returns the build directory and the
 * entry script; SEALMESH_BENCH_PROXY_BUILD=0 runs the sources instead.
 */
function buildProxy(): { build?: string; entry: string } {
  const source = join(import.meta.dirname, 'proxy-process.ts');
  if (process.env.SEALMESH_BENCH_PROXY_BUILD === '0') return { entry: source };
  const root = join(import.meta.dirname, '..');
  const outDir = join(root, '.tmp', 'bench-build');
  rmSync(outDir, { recursive: true, force: true });
  execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', join(root, 'tsconfig.build.json'), '--outDir', outDir, '--declaration', 'false', '--sourceMap', 'false'], { stdio: 'inherit' });
  const entry = join(outDir, 'proxy-process.js');
  writeFileSync(entry, stripTypeScriptTypes(readFileSync(source, 'utf8')));
  return { build: outDir, entry };
}

async function startSealmesh(control: ControlPlane, operator: ApiClient, backendPort: number): Promise<ProxyPair> {
  const { build, entry } = buildProxy();
  const token = async (service: string): Promise<string> => (await operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'join', service })).token;
  await operator.post('/v1/intentions', { source: CLIENT_SERVICE, destination: SERVER_SERVICE, action: 'allow', replace: true });
  const common = { serverUrl: control.url, serverCa: control.ca.bundle(), ...(build !== undefined ? { build } : {}) };
  const server = await forkProxy({ ...common, service: SERVER_SERVICE, joinToken: await token(SERVER_SERVICE), appPort: backendPort }, entry);
  // The client-side proxy fronts no app of its own; its app address only feeds its health checks.
  const client = await forkProxy({ ...common, service: CLIENT_SERVICE, joinToken: await token(CLIENT_SERVICE), appPort: backendPort, upstream: SERVER_SERVICE }, entry);
  return { name: 'sealmesh', port: client.started.upstreamPort ?? 0, client: client.child, server: server.child };
}

function renewIn(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: { type: string; reason?: string }): void => {
      if (message.type === 'renewed') resolve();
      else if (message.type === 'renew-failed') reject(new Error(`SVID renewal failed: ${message.reason}`));
      else return;
      child.off('message', onMessage);
    };
    child.on('message', onMessage);
    child.send({ type: 'renew' });
  });
}

/** Starts the control plane, the backend and every proxy pair. */
export async function startBench(): Promise<Bench> {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-bench-'));
  const control = new ControlPlane({ dataDir: join(dir, 'data'), host: '127.0.0.1', port: 0, leaseSeconds: 30, log: silentLogger() });
  await control.start();
  const anonymous = new ApiClient({ url: control.url, ca: control.ca.bundle() });
  const { token } = await anonymous.post<{ token: string }>('/v1/operator/init', {});
  const operator = anonymous.with({ token });
  const { trustDomain } = await anonymous.get<{ trustDomain: string }>('/v1/bundle');

  const certs = join(dir, 'certs');
  mkdirSync(certs, { mode: 0o700 });
  const clientFiles = await issueFiles(control, trustDomain, CLIENT_SERVICE, certs);
  const serverFiles = await issueFiles(control, trustDomain, SERVER_SERVICE, certs);

  const backend = await startBackend(dir);
  const pairs: ProxyPair[] = [];
  const children: ChildProcess[] = [backend.child];
  try {
    const sealmesh = await startSealmesh(control, operator, backend.port);
    pairs.push(sealmesh);
    children.push(sealmesh.client, sealmesh.server);
    const haproxy = await startHaproxy(dir, backend.port, clientFiles, serverFiles);
    pairs.push(haproxy);
    children.push(haproxy.client, haproxy.server);
    const nginx = await startNginxStream(dir, backend.port, clientFiles, serverFiles);
    pairs.push(nginx);
    children.push(nginx.client, nginx.server);
  } catch (error) {
    for (const child of children) child.kill('SIGTERM');
    await control.stop();
    throw error;
  }
  const sealmesh = pairs[0] as ProxyPair;
  return {
    dir,
    backendPort: backend.port,
    backend: backend.child,
    pairs,
    control,
    renew: (side) => renewIn(side === 'client' ? sealmesh.client : sealmesh.server),
    stop: async () => {
      // A forked proxy exits on its own when the IPC channel closes, which lets --cpu-prof write its profile.
      for (const pair of pairs.filter((entry) => entry.name === 'sealmesh')) {
        pair.client.disconnect();
        pair.server.disconnect();
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      for (const child of children) {
        if (child.exitCode === null) child.kill('SIGTERM');
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const child of children) {
        if (child.exitCode === null) child.kill('SIGKILL');
        // The stderr pipe can outlive the process and would keep this one from exiting.
        child.stderr?.destroy();
      }
      await control.stop();
      if (process.env.SEALMESH_BENCH_KEEP !== '1') {
        rmSync(dir, { recursive: true, force: true });
        rmSync(`${join(dir, 'data')}.seal-key`, { force: true });
      }
    },
  };
}

/**
 * Resident set size in bytes and CPU time in milliseconds (user plus system) of a process, from
 * /proc. The resident set splits into anonymous memory, which is the process's own, and
 * file-backed pages such as those of the executable, which processes running the same file share.
 */
export function processUsage(pid: number): { rssBytes: number; rssAnonBytes: number; rssFileBytes: number; cpuMs: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  const rssKiB = kib('VmRSS');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssBytes: rssKiB * 1024, rssAnonBytes: kib('RssAnon') * 1024, rssFileBytes: kib('RssFile') * 1024, cpuMs: (ticks * 1000) / 100 };
}
